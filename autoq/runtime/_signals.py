"""What the runtime watches: memory, utilisation, and its own load."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

__all__ = ["ResourceMonitor", "ScriptedMonitor", "Signals", "SystemMonitor"]


@dataclass(frozen=True)
class Signals:
    """One sample of the conditions a tier decision depends on.

    Attributes:
        available_memory_bytes: What this process may still allocate on its device.
        rss_bytes: The process's resident memory.
        gpu_utilization: 0-100 where NVML reports it (not on MIG), else ``None``.
        in_flight: Requests currently generating.
        queue_depth: Requests waiting for a generation slot.
        latency_ratio: EWMA of observed / profiled latency (1.0: as tuned).
        slots: Generations that run at once (requests ahead drain this many at a time).
        max_batch: Requests one generation may take together (each tier's batch curve
            bounds it further).
        arrival_rps: Requests offered per second lately (0: unknown or idle).
        timestamp: ``time.monotonic()`` of the sample.
    """

    available_memory_bytes: int
    rss_bytes: int = 0
    gpu_utilization: float | None = None
    in_flight: int = 0
    queue_depth: int = 0
    latency_ratio: float = 1.0
    timestamp: float = 0.0
    slots: int = 1
    arrival_rps: float = 0.0
    max_batch: int = 1

    def with_load(
        self,
        in_flight: int,
        queue_depth: int,
        latency_ratio: float,
        slots: int = 1,
        arrival_rps: float = 0.0,
        max_batch: int = 1,
    ) -> Signals:
        """The same sample with the runtime's own load figures filled in."""
        return replace(
            self,
            in_flight=in_flight,
            queue_depth=queue_depth,
            latency_ratio=latency_ratio,
            slots=slots,
            arrival_rps=arrival_rps,
            max_batch=max_batch,
        )


@runtime_checkable
class ResourceMonitor(Protocol):
    """Anything that can report `Signals`; the runtime adds its own load figures."""

    def sample(self) -> Signals: ...


class SystemMonitor:
    """Real signals, cached for ``interval_s`` so a burst of requests samples once.

    CPU: cgroup-aware available memory (`autoq.device.available_memory`: psutil alone sees
    the host, not the container limit). CUDA: ``torch.cuda.mem_get_info`` plus the bytes
    PyTorch reserved but does not use (they are free to this process), and NVML
    utilisation matched by UUID, skipped on MIG slices where NVML cannot attribute it.

    Args:
        device: The device generations run on.
        interval_s: Minimum seconds between two real samples.
        memory_limit_bytes: Treat this process as limited to this many bytes in all
            (available = limit - RSS, if smaller): a budget for sharing a machine.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        interval_s: float = 0.5,
        memory_limit_bytes: int | None = None,
    ) -> None:
        import torch

        from autoq.errors import ConfigError

        if interval_s < 0:
            raise ConfigError(f"interval_s must be >= 0, but got {interval_s}.")
        if memory_limit_bytes is not None and memory_limit_bytes <= 0:
            raise ConfigError(f"memory_limit_bytes must be positive, but got {memory_limit_bytes}.")
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.memory_limit_bytes = memory_limit_bytes
        self._last: Signals | None = None

    def _gpu_utilization(self) -> float | None:
        try:
            import pynvml
            import torch

            props = torch.cuda.get_device_properties(self.device)
            uuid = str(getattr(props, "uuid", ""))
            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                if str(pynvml.nvmlDeviceGetUUID(handle)).removeprefix("GPU-") == uuid.removeprefix(
                    "GPU-"
                ):
                    return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # NVML absent, MIG slice or driver mismatch: no utilisation figure
            return None
        return None

    def sample(self) -> Signals:
        now = time.monotonic()
        if self._last is not None and now - self._last.timestamp < self.interval_s:
            return self._last
        import psutil

        rss = psutil.Process().memory_info().rss
        utilization = None
        if self.device.type == "cuda":
            import torch

            free, _total = torch.cuda.mem_get_info(self.device)
            unused = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(
                self.device
            )
            available = free + unused
            utilization = self._gpu_utilization()
        else:
            from autoq.device import available_memory

            available = available_memory()
            if self.memory_limit_bytes is not None:
                available = min(available, self.memory_limit_bytes - rss)
        self._last = Signals(
            available_memory_bytes=max(int(available), 0),
            rss_bytes=rss,
            gpu_utilization=utilization,
            timestamp=now,
        )
        return self._last


class ScriptedMonitor:
    """Replays given signals one sample at a time (the last repeats): for tests and
    simulations through the same interface as `SystemMonitor`."""

    def __init__(self, samples: list[Signals]) -> None:
        from autoq.errors import ConfigError

        if not samples:
            raise ConfigError("ScriptedMonitor needs at least one Signals sample.")
        self._samples = list(samples)
        self._index = 0

    def sample(self) -> Signals:
        sample = self._samples[min(self._index, len(self._samples) - 1)]
        self._index += 1
        return sample
