"""Memory limits of this process as the kernel enforces them: host RAM and cgroups v1/v2.

A container sees the host's RAM in ``/proc/meminfo`` (and so in psutil), but the kernel
kills it at its cgroup limit. Every limit on the path from the process's cgroup up to the
root applies, so the whole chain is read and the smallest wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["available_memory", "effective_memory_limit"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX rounded down to the page size, which
# differs between 4 KiB and 64 KiB pages; no real machine has anywhere near 2**62 bytes.
_V1_UNLIMITED = 2**62


@dataclass(frozen=True)
class _Layout:
    """File names one cgroup version uses for the memory controller."""

    limit: str
    usage: str
    inactive_file: str


_V2 = _Layout(limit="memory.max", usage="memory.current", inactive_file="inactive_file")
# `total_inactive_file` covers the whole subtree, like `memory.usage_in_bytes` does.
_V1 = _Layout(
    limit="memory.limit_in_bytes",
    usage="memory.usage_in_bytes",
    inactive_file="total_inactive_file",
)


@dataclass(frozen=True)
class _Cgroup:
    """One memory cgroup directory on the path from this process to the root."""

    path: Path
    layout: _Layout


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:  # "max" in v2, or a file we do not understand
        return None


def _limit(cgroup: _Cgroup) -> int | None:
    value = _read_int(cgroup.path / cgroup.layout.limit)
    if value is None or value >= _V1_UNLIMITED:
        return None
    return value


def _inactive_file(cgroup: _Cgroup) -> int:
    try:
        lines = (cgroup.path / "memory.stat").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        key, _, value = line.partition(" ")
        if key == cgroup.layout.inactive_file and value.strip().isdigit():
            return int(value)
    return 0


def _with_ancestors(mount: Path, cgroup_path: str, layout: _Layout) -> list[_Cgroup]:
    """Existing directories from ``mount/cgroup_path`` up to ``mount``, innermost first.

    Inside a container without its own cgroup namespace, ``/proc/self/cgroup`` names the
    host's path while the mount shows the container's cgroup as its root; the missing
    inner directories are skipped so the mount root (the container's cgroup) still counts.
    """
    parts = [part for part in cgroup_path.split("/") if part]
    found = []
    for depth in range(len(parts), -1, -1):
        directory = mount.joinpath(*parts[:depth])
        if directory.is_dir():
            found.append(_Cgroup(directory, layout))
    return found


def _memory_cgroups(cgroup_root: Path, proc_cgroup: Path) -> list[_Cgroup]:
    """The memory cgroups whose limits apply to the process described by ``proc_cgroup``."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:  # not Linux, or /proc not mounted
        return []
    cgroups: list[_Cgroup] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, cgroup_path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            # Unified (v2) hierarchy: at the root of the mount, or under "unified" on hosts
            # that mount v1 and v2 side by side.
            for mount in (cgroup_root, cgroup_root / "unified"):
                cgroups += _with_ancestors(mount, cgroup_path, _V2)
        elif "memory" in controllers.split(","):
            cgroups += _with_ancestors(cgroup_root / controllers, cgroup_path, _V1)
    return cgroups


def effective_memory_limit(
    cgroup_root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP
) -> int | None:
    """The most memory this process may use, when a cgroup limits it.

    Reads the memory limit of the process's cgroup and of every parent cgroup (v2
    ``memory.max`` or v1 ``memory.limit_in_bytes``) and caps the smallest at host RAM.

    Args:
        cgroup_root: Where the cgroup filesystems are mounted.
        proc_cgroup: The process's cgroup membership file, ``/proc/self/cgroup`` format.

    Returns:
        The limit in bytes, at most the host's total RAM, or ``None`` when no cgroup sets
        a memory limit.
    """
    limits = [
        limit
        for cgroup in _memory_cgroups(cgroup_root, proc_cgroup)
        if (limit := _limit(cgroup)) is not None
    ]
    if not limits:
        return None
    return min(*limits, psutil.virtual_memory().total)


def available_memory(cgroup_root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP) -> int:
    """Bytes this process can still allocate on the CPU side without hitting a limit.

    The smallest of the host's available memory and, for every cgroup with a limit, that
    limit minus the cgroup's working set (usage less the reclaimable inactive page cache,
    which loading weights from disk fills and the kernel drops before killing anything).

    Args:
        cgroup_root: Where the cgroup filesystems are mounted.
        proc_cgroup: The process's cgroup membership file, ``/proc/self/cgroup`` format.

    Returns:
        Available bytes, never negative.
    """
    available = psutil.virtual_memory().available
    for cgroup in _memory_cgroups(cgroup_root, proc_cgroup):
        limit = _limit(cgroup)
        usage = _read_int(cgroup.path / cgroup.layout.usage)
        if limit is None or usage is None:
            continue
        working_set = max(usage - _inactive_file(cgroup), 0)
        available = min(available, limit - working_set)
    return max(available, 0)
