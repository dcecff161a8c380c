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

from autoq.device._bench import Measurements, measure
from autoq.device._identity import DeviceIdentity, collect_identity

__all__ = ["SCHEMA_VERSION", "Fingerprint", "fingerprint"]

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
