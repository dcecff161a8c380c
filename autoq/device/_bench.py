"""Short micro-benchmarks of a device: matmul throughput per dtype and memory bandwidth.

Each number is the median of a few runs after a warm-up, on operands sized so that one run
takes long enough to time but the whole bench stays within a few seconds on a laptop CPU.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from autoq._logging import get_logger
from autoq.device._cgroup import available_memory

if TYPE_CHECKING:
    import torch

__all__ = ["ComputeMeasurements", "Measurements", "measure"]

_REPEATS = 5
_MIN_REPEATS = 3  # enough for the median to drop one stalled run
_BUDGET_S = 0.3  # past the minimum, stop repeating once a measurement has spent this long
_CPU_SIZES = (512, 1024, 2048)
_CUDA_SIZES = (2048, 4096, 8192)
_CPU_MIN_RUN_S = 0.02  # grow the matmul until one run takes this long
_CUDA_MIN_RUN_S = 0.005
_CPU_COPY_BYTES = 256 * 2**20  # larger than any last-level cache
_CUDA_COPY_BYTES = 2**30


class ComputeMeasurements(BaseModel):
    """Measured throughput of one device.

    Attributes:
        device: Torch device string, ``"cpu"`` or ``"cuda:<index>"``.
        fp32_matmul_gflops: Square fp32 matmul (TF32 as configured in torch), GFLOP/s.
        bf16_matmul_gflops: Square bf16 matmul, GFLOP/s; ``None`` if the device lacks it.
        int8_matmul_gops: ``torch._int_mm`` (int8 in, int32 out), billions of integer
            operations per second; ``None`` if unsupported.
        memory_bandwidth_gbps: Large tensor copy, GB/s counting bytes read plus written.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str
    fp32_matmul_gflops: float = Field(gt=0)
    bf16_matmul_gflops: float | None = Field(gt=0)
    int8_matmul_gops: float | None = Field(gt=0)
    memory_bandwidth_gbps: float = Field(gt=0)


class Measurements(BaseModel):
    """Measured performance of this machine, kept apart from its identity.

    Attributes:
        torch_threads: Intra-op threads torch used for the CPU numbers.
        cpu: The CPU's numbers.
        gpus: One entry per GPU of the identity, in the same order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    torch_threads: int = Field(gt=0)
    cpu: ComputeMeasurements
    gpus: tuple[ComputeMeasurements, ...]


def _seconds(run: Callable[[], object], sync: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - start


def _median_rate(
    run: Callable[[], object], work: float, sync: Callable[[], None], first: float
) -> float:
    """``work`` per second, in billions: median over ``first`` and a few more runs."""
    times = [first]
    while len(times) < _MIN_REPEATS or (len(times) < _REPEATS and sum(times) < _BUDGET_S):
        times.append(_seconds(run, sync))
    return work / statistics.median(times) / 1e9


def _matmul_rate(
    device: torch.device,
    dtype: torch.dtype,
    sizes: tuple[int, ...],
    min_run_s: float,
    sync: Callable[[], None],
) -> float:
    """Rate of an ``n x n x n`` matmul, growing ``n`` until one run takes ``min_run_s``."""
    import torch

    for n in sizes:
        if dtype == torch.int8:
            a = torch.randint(-128, 128, (n, n), dtype=dtype, device=device)
            # Column-major right operand: the layout cuBLASLt's int8 kernels want.
            b = torch.randint(-128, 128, (n, n), dtype=dtype, device=device).t()
            run = functools.partial(torch._int_mm, a, b)
        else:
            a = torch.randn(n, n, dtype=dtype, device=device)
            b = torch.randn(n, n, dtype=dtype, device=device)
            run = functools.partial(torch.mm, a, b)
        run()
        sync()  # warm-up: kernel selection, thread pool and allocator start-up
        first = _seconds(run, sync)
        if first >= min_run_s:
            break
    return _median_rate(run, 2 * n**3, sync, first)


def _optional_matmul_rate(
    device: torch.device,
    dtype: torch.dtype,
    sizes: tuple[int, ...],
    min_run_s: float,
    sync: Callable[[], None],
) -> float | None:
    """`_matmul_rate`, or ``None`` where the device has no kernel for ``dtype``."""
    import torch

    try:
        return _matmul_rate(device, dtype, sizes, min_run_s, sync)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, NotImplementedError) as exc:
        get_logger(__name__).debug(
            "matmul_unsupported", device=str(device), dtype=str(dtype), error=str(exc)
        )
        return None


def _copy_rate(device: torch.device, nbytes: int, sync: Callable[[], None]) -> float:
    import torch

    source = torch.ones(nbytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)

    def run() -> object:
        return target.copy_(source)

    run()
    sync()
    return _median_rate(run, 2 * nbytes, sync, _seconds(run, sync))


def _measure_device(
    device: torch.device,
    sizes: tuple[int, ...],
    min_run_s: float,
    copy_bytes: int,
    sync: Callable[[], None],
) -> ComputeMeasurements:
    import torch

    return ComputeMeasurements(
        device=str(device),
        fp32_matmul_gflops=_matmul_rate(device, torch.float32, sizes, min_run_s, sync),
        bf16_matmul_gflops=_optional_matmul_rate(device, torch.bfloat16, sizes, min_run_s, sync),
        int8_matmul_gops=_optional_matmul_rate(device, torch.int8, sizes, min_run_s, sync),
        memory_bandwidth_gbps=_copy_rate(device, copy_bytes, sync),
    )


def _measure_cuda(index: int) -> ComputeMeasurements:
    import torch

    device = torch.device("cuda", index)

    def sync() -> None:
        torch.cuda.synchronize(device)

    free, _total = torch.cuda.mem_get_info(device)
    try:
        return _measure_device(
            device, _CUDA_SIZES, _CUDA_MIN_RUN_S, min(_CUDA_COPY_BYTES, free // 4), sync
        )
    finally:
        torch.cuda.empty_cache()  # hand the bench's buffers back before real work starts


def measure(gpu_indices: tuple[int, ...] = ()) -> Measurements:
    """Benchmark the CPU and the given CUDA devices.

    Args:
        gpu_indices: Torch ordinals of the GPUs to measure; empty measures only the CPU.

    Returns:
        The measurements, GPUs in the order given.
    """
    import torch

    with torch.inference_mode():
        cpu = _measure_device(
            torch.device("cpu"),
            _CPU_SIZES,
            _CPU_MIN_RUN_S,
            max(min(_CPU_COPY_BYTES, available_memory() // 8), 2**20),
            lambda: None,
        )
        gpus = tuple(_measure_cuda(index) for index in gpu_indices)
    return Measurements(torch_threads=torch.get_num_threads(), cpu=cpu, gpus=gpus)
