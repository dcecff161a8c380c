"""Memory limits read from fake cgroup v1/v2 trees, so no test depends on the host's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from autoq.device import _cgroup, available_memory, effective_memory_limit

GIB = 2**30
HOST_TOTAL = 64 * GIB
HOST_AVAILABLE = 48 * GIB
V1_UNLIMITED = "9223372036854771712"  # what v1 writes in memory.limit_in_bytes for "none"


@pytest.fixture(autouse=True)
def _host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 GiB host with 48 GiB available, whatever machine runs the tests."""
    memory = SimpleNamespace(total=HOST_TOTAL, available=HOST_AVAILABLE)
    monkeypatch.setattr(_cgroup.psutil, "virtual_memory", lambda: memory)


def _tree(tmp_path: Path, proc_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """Write ``files`` (paths relative to the cgroup mount) and a /proc/self/cgroup."""
    root = tmp_path / "sys_fs_cgroup"
    root.mkdir()
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(proc_cgroup)
    return root, proc


def test_v2_numeric_limit(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/user.slice/app.scope\n",
        {
            "user.slice/app.scope/memory.max": str(4 * GIB),
        },
    )
    assert effective_memory_limit(root, proc) == 4 * GIB


def test_v2_max_means_no_limit(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/user.slice/app.scope\n",
        {
            "user.slice/memory.max": "max",
            "user.slice/app.scope/memory.max": "max",
        },
    )
    assert effective_memory_limit(root, proc) is None


def test_v2_parent_limit_smaller_than_child_wins(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/kubepods/pod1/container\n",
        {
            "kubepods/memory.max": str(16 * GIB),
            "kubepods/pod1/memory.max": str(2 * GIB),
            "kubepods/pod1/container/memory.max": str(8 * GIB),
        },
    )
    assert effective_memory_limit(root, proc) == 2 * GIB


def test_v2_limit_on_parent_only_applies(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/batch/job\n",
        {
            "batch/memory.max": str(3 * GIB),
            "batch/job/memory.max": "max",
        },
    )
    assert effective_memory_limit(root, proc) == 3 * GIB


def test_v2_in_hybrid_layout_under_unified(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "0::/job\n", {"unified/job/memory.max": str(5 * GIB)})
    assert effective_memory_limit(root, proc) == 5 * GIB


def test_v1_memory_limit_in_bytes(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
        {
            "memory/memory.limit_in_bytes": V1_UNLIMITED,
            "memory/docker/memory.limit_in_bytes": V1_UNLIMITED,
            "memory/docker/abc/memory.limit_in_bytes": str(6 * GIB),
            "cpu,cpuacct/docker/abc/cpu.shares": "1024",
        },
    )
    assert effective_memory_limit(root, proc) == 6 * GIB


def test_v1_unlimited_value_means_no_limit(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "4:memory:/docker/abc\n",
        {
            "memory/memory.limit_in_bytes": V1_UNLIMITED,
            "memory/docker/abc/memory.limit_in_bytes": V1_UNLIMITED,
        },
    )
    assert effective_memory_limit(root, proc) is None


def test_v1_parent_limit_smaller_than_child_wins(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "4:memory:/docker/abc\n",
        {
            "memory/docker/memory.limit_in_bytes": str(1 * GIB),
            "memory/docker/abc/memory.limit_in_bytes": str(6 * GIB),
        },
    )
    assert effective_memory_limit(root, proc) == 1 * GIB


def test_limit_above_host_ram_is_capped_at_host_ram(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "0::/big\n", {"big/memory.max": str(4 * HOST_TOTAL)})
    assert effective_memory_limit(root, proc) == HOST_TOTAL


def test_host_path_missing_inside_container_falls_back_to_mount_root(tmp_path: Path) -> None:
    # Without a cgroup namespace the process sees the host's path, the mount its own cgroup.
    root, proc = _tree(
        tmp_path,
        "4:memory:/docker/abc\n",
        {
            "memory/memory.limit_in_bytes": str(7 * GIB),
        },
    )
    assert effective_memory_limit(root, proc) == 7 * GIB


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert effective_memory_limit(tmp_path / "absent", tmp_path / "absent_proc") is None
    assert available_memory(tmp_path / "absent", tmp_path / "absent_proc") == HOST_AVAILABLE


def test_available_v2_is_limit_minus_working_set(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/job\n",
        {
            "job/memory.max": str(4 * GIB),
            "job/memory.current": str(3 * GIB),
            # Page cache the kernel reclaims before an OOM kill does not count as used.
            "job/memory.stat": f"anon {2 * GIB}\ninactive_file {1 * GIB}\nactive_file 0",
        },
    )
    assert available_memory(root, proc) == 2 * GIB


def test_available_v1_is_limit_minus_working_set(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "4:memory:/docker/abc\n",
        {
            "memory/docker/abc/memory.limit_in_bytes": str(8 * GIB),
            "memory/docker/abc/memory.usage_in_bytes": str(5 * GIB),
            "memory/docker/abc/memory.stat": f"inactive_file 1\ntotal_inactive_file {2 * GIB}",
        },
    )
    assert available_memory(root, proc) == 5 * GIB


def test_available_uses_the_tightest_parent(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/pod/container\n",
        {
            "pod/memory.max": str(10 * GIB),
            "pod/memory.current": str(9 * GIB),
            "pod/container/memory.max": str(8 * GIB),
            "pod/container/memory.current": str(1 * GIB),
        },
    )
    assert available_memory(root, proc) == 1 * GIB


def test_available_never_exceeds_host_available(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/job\n",
        {
            "job/memory.max": str(60 * GIB),
            "job/memory.current": "0",
        },
    )
    assert available_memory(root, proc) == HOST_AVAILABLE


def test_available_is_zero_over_the_limit(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/job\n",
        {
            "job/memory.max": str(1 * GIB),
            "job/memory.current": str(2 * GIB),
        },
    )
    assert available_memory(root, proc) == 0
