"""Device fingerprint: what this machine is, how fast it measured, and how much memory it has.

Importing this package is cheap: torch is imported, and hardware probed, only when a
function is called.
"""

from __future__ import annotations

from autoq.device._bench import ComputeMeasurements, Measurements
from autoq.device._cgroup import available_memory, effective_memory_limit
from autoq.device._fingerprint import SCHEMA_VERSION, Fingerprint, class_differences, fingerprint
from autoq.device._gpu import GpuInfo
from autoq.device._identity import CpuInfo, DeviceIdentity, SoftwareVersions
from autoq.device._memory import PeakMemory
from autoq.device._torch import release_memory, resolve_device

__all__ = [
    "SCHEMA_VERSION",
    "ComputeMeasurements",
    "CpuInfo",
    "DeviceIdentity",
    "Fingerprint",
    "GpuInfo",
    "Measurements",
    "PeakMemory",
    "SoftwareVersions",
    "available_memory",
    "class_differences",
    "effective_memory_limit",
    "fingerprint",
    "release_memory",
    "resolve_device",
]
