"""`PeakMemory` measures the peak tensor memory of a block of work on CPU and CUDA."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from autoq.device import PeakMemory
from autoq.errors import AutoqError

MB = 2**20
_FLOATS_PER_MB = MB // 4


def test_known_allocations_give_the_exact_peak() -> None:
    with PeakMemory("cpu") as peak:
        first = torch.empty(64 * _FLOATS_PER_MB)
        second = torch.ones(128 * _FLOATS_PER_MB)  # peak here: 64 + 128 MB
        del first
        third = torch.zeros(32 * _FLOATS_PER_MB)
    del second, third
    assert peak.method == "cpu_dispatch_tracker"
    assert peak.peak_bytes == pytest.approx(192 * MB, rel=0.02)


def test_views_and_in_place_ops_do_not_count() -> None:
    with PeakMemory(torch.device("cpu")) as peak:
        base = torch.zeros(64 * _FLOATS_PER_MB)
        view = base[4:].view(-1, 4)
        view.add_(1.0)
        torch.relu_(base)
        transposed = view.t()
    del base, view, transposed
    assert peak.peak_bytes == pytest.approx(64 * MB, rel=0.02)


def test_tensors_from_before_the_block_do_not_count() -> None:
    before = torch.zeros(64 * _FLOATS_PER_MB)
    with PeakMemory("cpu") as peak:
        before.mul_(2.0)
        head = before[:10]
        fresh = before + 1.0  # the only allocation: 64 MB
    del before, head, fresh
    assert peak.peak_bytes == pytest.approx(64 * MB, rel=0.02)


def test_freed_memory_is_reused_without_raising_the_peak() -> None:
    with PeakMemory("cpu") as peak:
        for _ in range(5):
            temporary = torch.ones(32 * _FLOATS_PER_MB)
            del temporary
    assert peak.peak_bytes == pytest.approx(32 * MB, rel=0.02)


def test_tensor_subclass_work_is_counted_through_its_inner_ops() -> None:
    from torch.testing._internal.two_tensor import TwoTensor

    pair = TwoTensor(torch.zeros(16 * _FLOATS_PER_MB), torch.zeros(16 * _FLOATS_PER_MB))
    with PeakMemory("cpu") as peak:
        doubled = pair * 2.0  # two 16 MB inner results
    del doubled
    assert peak.peak_bytes == pytest.approx(32 * MB, rel=0.02)


_RSS_SCRIPT = textwrap.dedent(
    """
    import psutil
    import torch

    from autoq.device import PeakMemory


    def work(n):
        a = torch.randn(n, 64)
        b = torch.randn(64, n)
        hidden = a @ b  # n*n floats
        gated = torch.sigmoid(hidden)  # a second n*n block while the first is alive
        del hidden
        out = gated @ b.T
        del gated
        return float(out.sum())


    def high_water_mark():
        # VmHWM belongs to this address space; ru_maxrss would not do: it survives exec and
        # so starts at the (possibly much larger) RSS of the process that forked us.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024


    torch.set_num_threads(1)
    with PeakMemory("cpu"):  # warm up torch, the kernels and the tracker
        work(64)
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset the high-water mark to the current RSS
    except OSError:
        pass  # older kernels: the mark may then include import-time peaks, never less
    rss_before = psutil.Process().memory_info().rss
    with PeakMemory("cpu") as peak:
        work(8192)
    print(peak.peak_bytes, high_water_mark() - rss_before)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status and glibc")
def test_cpu_peak_matches_resident_memory_growth() -> None:
    # A fresh process keeps earlier tests' allocations and caches out of the RSS numbers.
    # glibc serves blocks above its mmap threshold (at most 32 MiB) with mmap and unmaps
    # them on free, so the 256 MiB blocks here show up in RSS exactly while they live and
    # no MALLOC_* settings are needed.
    result = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT], check=True, capture_output=True, text=True
    )
    tracked, rss_growth = (int(word) for word in result.stdout.split()[-2:])
    assert tracked >= 300 * MB
    assert abs(tracked - rss_growth) <= 0.25 * rss_growth, (tracked, rss_growth)


def _tiny_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128),
        layers_per_block=1,
        cross_attention_dim=64,
        norm_num_groups=32,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


@pytest.mark.slow
def test_unet_peak_grows_with_batch() -> None:
    unet = _tiny_unet()
    peaks = {}
    for batch in (1, 4):
        sample = torch.randn(batch, 4, 32, 32)
        context = torch.randn(batch, 8, 64)
        with torch.no_grad(), PeakMemory("cpu") as peak:
            unet(sample, torch.tensor([10]), encoder_hidden_states=context)
        peaks[batch] = peak.peak_bytes
    assert 0 < peaks[1] < peaks[4]


def test_peak_is_counted_when_the_block_raises() -> None:
    tracker = PeakMemory("cpu")
    with pytest.raises(RuntimeError, match="boom"), tracker:
        kept = torch.ones(16 * _FLOATS_PER_MB)
        raise RuntimeError("boom")
    del kept
    assert tracker.peak_bytes == pytest.approx(16 * MB, rel=0.02)


def test_cuda_peak_is_max_allocated_minus_allocated_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, object]] = []
    allocated = {"now": 3_000, "max": 3_000}

    def synchronize(device: object = None) -> None:
        calls.append(("synchronize", device))

    def reset_peak_memory_stats(device: object = None) -> None:
        calls.append(("reset", device))
        allocated["max"] = allocated["now"]

    def memory_allocated(device: object = None) -> int:
        calls.append(("allocated", device))
        return allocated["now"]

    def max_memory_allocated(device: object = None) -> int:
        calls.append(("max", device))
        return allocated["max"]

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset_peak_memory_stats)
    monkeypatch.setattr(torch.cuda, "memory_allocated", memory_allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", max_memory_allocated)

    allocated["max"] = 50_000  # a peak from before the block must be reset away
    with PeakMemory("cuda:1") as peak:
        allocated["max"] = 10_000  # the block rose 7,000 bytes above its start
        allocated["now"] = 4_000
    assert peak.method == "cuda_max_memory_allocated"
    assert peak.peak_bytes == 7_000
    assert {device for _, device in calls} == {"cuda:1"}
    assert [name for name, _ in calls][-2:] == ["synchronize", "max"]


@pytest.mark.parametrize("device", ["mps", "meta", "xpu:0"])
def test_unsupported_device_is_rejected(device: str) -> None:
    with pytest.raises(AutoqError, match="'cpu' or 'cuda"):
        PeakMemory(device)
