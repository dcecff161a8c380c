"""What a device is: hardware and software versions, nothing measured.

Two runs on the same machine produce the same identity, so tuned profiles can be keyed on
it; measurements live in `autoq.device._bench`.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict, Field

from autoq.device._cgroup import effective_memory_limit
from autoq.device._gpu import GpuInfo, collect_gpus

__all__ = ["CpuInfo", "DeviceIdentity", "SoftwareVersions", "collect_identity"]

_CPUINFO = Path("/proc/cpuinfo")

# Instruction-set extensions that decide int8/bf16 kernel speed: x86 (AVX-512 VNNI/BF16,
# AVX-VNNI, AMX) and Arm (dot product, int8 matmul, bf16, SVE), as /proc/cpuinfo names them.
_ISA_FLAGS = (
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "asimddp",
    "avx2",
    "avx512_bf16",
    "avx512_vnni",
    "avx512f",
    "avx_vnni",
    "bf16",
    "i8mm",
    "sve",
    "sve2",
)


class SoftwareVersions(BaseModel):
    """Installed versions of the libraries autoq's results depend on; ``None`` if absent.

    Attributes:
        torch_cuda: CUDA version torch was built against; ``None`` on CPU-only builds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    torch: str | None
    torch_cuda: str | None
    diffusers: str | None
    transformers: str | None
    torchao: str | None
    bitsandbytes: str | None
    optimum_quanto: str | None
    gguf: str | None


class CpuInfo(BaseModel):
    """The host CPU.

    Attributes:
        model: Model name from ``/proc/cpuinfo``, else what ``platform`` knows.
        physical_cores: Physical cores of the host; ``None`` where psutil cannot tell.
        logical_cores: Hardware threads of the host.
        usable_cores: Hardware threads this process may run on (its CPU affinity).
        isa_flags: int8/bf16-relevant extensions (AVX-512 VNNI/BF16, AMX, Arm i8mm...), sorted.
        torch_capability: Torch's CPU kernel level, e.g. ``"AVX512"``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    physical_cores: int | None = Field(gt=0)
    logical_cores: int = Field(gt=0)
    usable_cores: int = Field(gt=0)
    isa_flags: tuple[str, ...]
    torch_capability: str | None


class DeviceIdentity(BaseModel):
    """Hardware and software of this machine, as seen by this process.

    Attributes:
        system: OS name, e.g. ``"Linux"``.
        release: OS release (kernel version on Linux).
        machine: CPU architecture, e.g. ``"x86_64"``.
        python_version: Full Python version.
        total_memory_bytes: Host RAM.
        memory_limit_bytes: RAM this process may use: host RAM or a smaller cgroup limit.
        gpus: CUDA devices visible to torch; empty without one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str
    release: str
    machine: str
    python_version: str
    software: SoftwareVersions
    cpu: CpuInfo
    total_memory_bytes: int = Field(gt=0)
    memory_limit_bytes: int = Field(gt=0)
    gpus: tuple[GpuInfo, ...]


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _software() -> SoftwareVersions:
    import torch

    return SoftwareVersions(
        torch=_distribution_version("torch"),
        torch_cuda=torch.version.cuda,
        diffusers=_distribution_version("diffusers"),
        transformers=_distribution_version("transformers"),
        torchao=_distribution_version("torchao"),
        bitsandbytes=_distribution_version("bitsandbytes"),
        optimum_quanto=_distribution_version("optimum-quanto"),
        gguf=_distribution_version("gguf"),
    )


def _cpuinfo_fields(cpuinfo: Path) -> dict[str, str]:
    """The first value of each key in ``/proc/cpuinfo`` (the first CPU's entry)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:  # not Linux
        return {}
    fields: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu(cpuinfo: Path = _CPUINFO) -> CpuInfo:
    import torch

    fields = _cpuinfo_fields(cpuinfo)
    # x86 lists extensions under "flags", Arm under "Features".
    present = set((fields.get("flags", "") + " " + fields.get("Features", "")).split())
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return CpuInfo(
        model=fields.get("model name") or platform.processor() or platform.machine(),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=logical,
        usable_cores=usable,
        isa_flags=tuple(sorted(present.intersection(_ISA_FLAGS))),
        torch_capability=torch.backends.cpu.get_cpu_capability(),
    )


def collect_identity() -> DeviceIdentity:
    """Describe this machine; imports torch but starts no CUDA work when it has no GPU."""
    total = psutil.virtual_memory().total
    return DeviceIdentity(
        system=platform.system(),
        release=platform.release(),
        machine=platform.machine(),
        python_version=platform.python_version(),
        software=_software(),
        cpu=_cpu(),
        total_memory_bytes=total,
        memory_limit_bytes=effective_memory_limit() or total,
        gpus=collect_gpus(),
    )
