"""CUDA devices as torch numbers them, described by torch and, where it answers, NVML.

Torch decides which GPUs autoq can use (``CUDA_VISIBLE_DEVICES``, MIG slices), so the list
follows torch's ordinals; NVML adds what torch does not know (driver version, MIG mode) and
is matched to torch's devices by UUID. Nothing here touches CUDA or NVML unless
``torch.cuda.is_available()`` says there is a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autoq._logging import get_logger

__all__ = ["GpuInfo", "collect_gpus"]


class GpuInfo(BaseModel):
    """One CUDA device visible to torch.

    Attributes:
        index: Torch's ordinal, as in ``cuda:<index>``.
        name: Marketing name; for a MIG slice NVML's name, which includes the profile.
        total_memory_bytes: Device memory (of the slice, on MIG).
        compute_capability: ``"MAJOR.MINOR"``, e.g. ``"9.0"``.
        uuid: Device or MIG-instance UUID; ``None`` when neither torch nor NVML reports it.
        driver_version: NVIDIA driver version; ``None`` without NVML.
        mig_mode: Whether this device is a MIG instance; ``None`` without NVML.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    name: str
    total_memory_bytes: int = Field(gt=0)
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    uuid: str | None
    driver_version: str | None
    mig_mode: bool | None


@dataclass(frozen=True)
class _TorchDevice:
    index: int
    name: str
    total_memory_bytes: int
    compute_capability: str
    uuid: str | None


@dataclass(frozen=True)
class _NvmlDevice:
    uuid: str
    name: str
    total_memory_bytes: int
    driver_version: str
    mig_mode: bool


def _uuid_key(uuid: str) -> str:
    """NVML writes ``GPU-<hex>``/``MIG-<hex>``, torch the bare ``<hex>``: compare the hex."""
    uuid = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        uuid = uuid.removeprefix(prefix)
    return uuid


def _torch_devices() -> list[_TorchDevice]:
    import torch

    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        uuid = getattr(props, "uuid", None)  # absent on old torch and some ROCm builds
        devices.append(
            _TorchDevice(
                index=index,
                name=props.name,
                total_memory_bytes=props.total_memory,
                compute_capability=f"{props.major}.{props.minor}",
                uuid=str(uuid) if uuid is not None else None,
            )
        )
    return devices


def _nvml_record(pynvml: Any, handle: Any, driver_version: str, *, mig: bool) -> _NvmlDevice:
    return _NvmlDevice(
        uuid=pynvml.nvmlDeviceGetUUID(handle),
        name=pynvml.nvmlDeviceGetName(handle),
        total_memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
        driver_version=driver_version,
        mig_mode=mig,
    )


def _mig_enabled(pynvml: Any, handle: Any) -> bool:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:  # NotSupported on GPUs without MIG
        return False
    return bool(current == pynvml.NVML_DEVICE_MIG_ENABLE)


def _nvml_physical(pynvml: Any, index: int, driver_version: str) -> list[_NvmlDevice]:
    """The CUDA-visible devices of physical GPU ``index``: itself, or its MIG instances."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    if not _mig_enabled(pynvml, handle):
        return [_nvml_record(pynvml, handle, driver_version, mig=False)]
    instances = []
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig_handle = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except pynvml.NVMLError_NotFound:  # empty slot
            continue
        instances.append(_nvml_record(pynvml, mig_handle, driver_version, mig=True))
    return instances


def _nvml_devices() -> list[_NvmlDevice]:
    """Every device NVML can describe, or an empty list when NVML is unusable."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError) as exc:  # no driver, no libnvidia-ml, ROCm host
        get_logger(__name__).debug("nvml_unavailable", error=str(exc))
        return []
    try:
        driver_version = pynvml.nvmlSystemGetDriverVersion()
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                devices += _nvml_physical(pynvml, index, driver_version)
            except pynvml.NVMLError as exc:  # e.g. a GPU outside this container's cgroup
                get_logger(__name__).debug("nvml_device_skipped", index=index, error=str(exc))
        return devices
    except pynvml.NVMLError as exc:
        get_logger(__name__).debug("nvml_unavailable", error=str(exc))
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            get_logger(__name__).debug("nvml_shutdown_failed", error=str(exc))


def collect_gpus() -> tuple[GpuInfo, ...]:
    """Describe torch's CUDA devices; empty, without probing anything, when there are none."""
    torch_devices = _torch_devices()
    if not torch_devices:
        return ()
    nvml = {_uuid_key(device.uuid): device for device in _nvml_devices()}
    gpus = []
    for device in torch_devices:
        match = nvml.get(_uuid_key(device.uuid)) if device.uuid is not None else None
        gpus.append(
            GpuInfo(
                index=device.index,
                name=match.name if match else device.name,
                total_memory_bytes=device.total_memory_bytes,
                compute_capability=device.compute_capability,
                uuid=match.uuid if match else device.uuid,
                driver_version=match.driver_version if match else None,
                mig_mode=match.mig_mode if match else None,
            )
        )
    return tuple(gpus)
