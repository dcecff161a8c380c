"""The device fingerprint: identity, optional measurements and a stable id of the identity."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    computed_field,
    field_validator,
    model_validator,
)

from autoq._dicts import flatten
from autoq.device._bench import Measurements, measure
from autoq.device._identity import DeviceIdentity, collect_identity

__all__ = ["MEMORY_TOLERANCE", "SCHEMA_VERSION", "Fingerprint", "class_differences", "fingerprint"]

SCHEMA_VERSION = 1

_MAJOR_MINOR = re.compile(r"\d+(?:\.\d+)?")


def _major_minor(version: str | None) -> str | None:
    """``"2.13.0+cu124"`` -> ``"2.13"``: patch releases do not change tuned results."""
    if version is None:
        return None
    match = _MAJOR_MINOR.match(version)
    return match.group() if match else version


def _gib(nbytes: int) -> float:
    """Round to 0.1 GiB: the kernel's reserved memory shifts MemTotal by a few MiB."""
    return round(nbytes / 2**30, 1)


def _identity_key(identity: DeviceIdentity) -> dict[str, Any]:
    """The parts of an identity that decide how a pipeline should be tuned.

    Left out on purpose: the OS release (kernel updates), patch versions, and GPU UUIDs,
    so identical machines share an id and profiles.
    """
    software = {
        name: _major_minor(version) for name, version in identity.software.model_dump().items()
    }
    return {
        "system": identity.system,
        "machine": identity.machine,
        "python": _major_minor(identity.python_version),
        "software": software,
        "cpu": identity.cpu.model_dump(),
        "total_memory_gib": _gib(identity.total_memory_bytes),
        "memory_limit_gib": _gib(identity.memory_limit_bytes),
        "gpus": [
            {
                "name": gpu.name,
                "memory_gib": _gib(gpu.total_memory_bytes),
                "compute_capability": gpu.compute_capability,
                "driver": _major_minor(gpu.driver_version),
                "mig_mode": gpu.mig_mode,
            }
            for gpu in identity.gpus
        ],
    }


MEMORY_TOLERANCE = 0.02
"""Memory sizes this close (relative) belong to one device class: the kernel's reserved
memory differs between machines of one kind by a few hundred KB to MB."""

_CLASS_SOFTWARE = ("torch", "torch_cuda", "diffusers")
"""Libraries whose MAJOR.MINOR must match for a profile to hold: the kernels that run
every component. The others (transformers, the quantization libraries) are noted."""


def class_differences(theirs: DeviceIdentity, ours: DeviceIdentity) -> tuple[list[str], list[str]]:
    """How a device differs from the one a profile was tuned on: ``(refusing, noted)``.

    Refusing: another CPU (model, cores, ISA), GPUs (name, compute capability, MIG mode,
    memory beyond `MEMORY_TOLERANCE`), system memory beyond it, OS, architecture, Python,
    or torch / CUDA / diffusers MAJOR.MINOR: what changes how fast each component runs or
    what fits. Noted: everything else that differs (the kernel release, memory within the
    tolerance, drivers, patch versions, other libraries): machines of one kind differ
    there, and a fleet of them can share one tune.
    """

    def close(a: int, b: int) -> bool:
        return abs(a - b) <= MEMORY_TOLERANCE * max(a, b)

    refusing: list[str] = []

    def check(name: str, a: Any, b: Any, same: bool | None = None) -> None:
        if not (a == b if same is None else same):
            refusing.append(f"{name}: {a!r} != {b!r}")

    for name in ("system", "machine"):
        check(name, getattr(theirs, name), getattr(ours, name))
    check("python_version", _major_minor(theirs.python_version), _major_minor(ours.python_version))
    for name in _CLASS_SOFTWARE:
        a, b = getattr(theirs.software, name), getattr(ours.software, name)
        check(f"software.{name}", _major_minor(a), _major_minor(b))
    for name in ("model", "physical_cores", "logical_cores", "usable_cores", "isa_flags"):
        check(f"cpu.{name}", getattr(theirs.cpu, name), getattr(ours.cpu, name))
    check("cpu.torch_capability", theirs.cpu.torch_capability, ours.cpu.torch_capability)
    for name in ("total_memory_bytes", "memory_limit_bytes"):
        a, b = getattr(theirs, name), getattr(ours, name)
        check(name, a, b, close(a, b))
    check("gpus", len(theirs.gpus), len(ours.gpus))
    for i, (g, h) in enumerate(zip(theirs.gpus, ours.gpus, strict=False)):  # counts: above
        for name in ("name", "compute_capability", "mig_mode"):
            check(f"gpus[{i}].{name}", getattr(g, name), getattr(h, name))
        a, b = g.total_memory_bytes, h.total_memory_bytes
        check(f"gpus[{i}].total_memory_bytes", a, b, close(a, b))
    flat_theirs = flatten(theirs.model_dump(mode="json"))
    flat_ours = flatten(ours.model_dump(mode="json"))
    refused_keys = {line.split(":", 1)[0] for line in refusing}
    noted = [
        f"{key}: {flat_theirs.get(key)!r} != {flat_ours.get(key)!r}"
        for key in sorted(set(flat_theirs) | set(flat_ours))
        if flat_theirs.get(key) != flat_ours.get(key)
        and not any(key == k or key.startswith(f"{k}.") for k in refused_keys)
        and not key.endswith(".uuid")
    ]
    return refusing, noted


class Fingerprint(BaseModel):
    """What this device is and, optionally, how fast it measured.

    Serialises to versioned JSON including `fingerprint_id`; loading checks both the schema
    version and that a stored id still matches the identity.

    Attributes:
        schema_version: Layout version of this model, `SCHEMA_VERSION`.
        identity: Hardware and software; the only input of `fingerprint_id`.
        measurements: Benchmarks, or ``None`` when taken without them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    identity: DeviceIdentity
    measurements: Measurements | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fingerprint_id(self) -> str:
        """12 hex digits of SHA-256 over the identity's hardware and MAJOR.MINOR versions."""
        key = json.dumps(_identity_key(self.identity), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version must be {SCHEMA_VERSION}, but got {value}; "
                "re-create the fingerprint with `autoq fingerprint`."
            )
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _matching_id(cls, data: Any, handler: ModelWrapValidatorHandler[Fingerprint]) -> Any:
        """Accept the `fingerprint_id` that serialising writes, if it matches the identity."""
        claimed = None
        if isinstance(data, dict) and "fingerprint_id" in data:
            data = dict(data)
            claimed = data.pop("fingerprint_id")
        model = handler(data)
        if claimed is not None and claimed != model.fingerprint_id:
            raise ValueError(
                f"fingerprint_id {claimed!r} does not match its identity, which hashes to "
                f"{model.fingerprint_id!r}; the file was edited or written by another "
                "autoq version. Re-create it with `autoq fingerprint`."
            )
        return model


def fingerprint(*, bench: bool = True) -> Fingerprint:
    """Fingerprint this machine.

    Args:
        bench: Also run the micro-benchmarks (a few seconds); without them only the identity
            is collected and `Fingerprint.measurements` is ``None``.

    Returns:
        The fingerprint; its `fingerprint_id` is the same on every call on this machine.
    """
    identity = collect_identity()
    measurements = measure(tuple(gpu.index for gpu in identity.gpus)) if bench else None
    return Fingerprint(identity=identity, measurements=measurements)
