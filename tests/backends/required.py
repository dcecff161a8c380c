"""Which precisions must work on each machine kind the suite runs on.

A precision listed here that stops being usable (a backend bug that makes its probe fail,
a library upgrade that drops a kernel) FAILS the contract suite; only the precisions
known to be unusable on a machine kind, with the reason, may skip there.
"""

from __future__ import annotations

import pytest

from autoq.backends import list_precisions, probe_precision

KNOWN_UNUSABLE: dict[str, dict[str, str]] = {
    # torchao 0.18's int4 weight-only layout needs the mslk kernels, not installed here.
    "cpu": {"ao_int4wo": "Requires mslk"},
    # Not yet measured on a CUDA machine: `make gpu-check` reports it; update from there.
    "cuda": {"ao_int4wo": "Requires mslk"},
}


def device_kind() -> str:
    """The machine kind the probes run on: the same default as `autoq.device.resolve_device`."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def required_here() -> list[str]:
    """Every registered precision except those known to be unusable on this machine kind."""
    unusable = KNOWN_UNUSABLE[device_kind()]
    return [p.name for p in list_precisions() if p.name not in unusable]


def usable_or_fail(name: str) -> None:
    """Return if ``name`` is usable here; fail when it must be, skip when it is known not."""
    result = probe_precision(name)
    if result.usable:
        return
    known = KNOWN_UNUSABLE[device_kind()].get(name)
    if known is not None and known in (result.reason or ""):
        pytest.skip(f"{name} is known to be unusable on {device_kind()}: {result.reason}")
    pytest.fail(
        f"{name} must be usable on {device_kind()} but its probe failed: {result.reason}",
        pytrace=False,
    )
