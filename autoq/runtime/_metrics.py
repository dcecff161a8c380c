"""Counters the runtime keeps for its operators (and that `autoq serve` exports).

Latency statistics are bounded: a fixed-size uniform reservoir per tier (Vitter's
Algorithm R) plus exact count, sum and maximum, so a long-running service holds the same
few kilobytes after a million requests as after a thousand.
"""

from __future__ import annotations

import random
import statistics
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LatencyReservoir", "RuntimeMetrics"]


@dataclass
class LatencyReservoir:
    """A uniform sample of at most ``capacity`` latencies, plus exact count, sum and max."""

    capacity: int = 1024
    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    samples: list[float] = field(default_factory=list)
    _rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)
        if len(self.samples) < self.capacity:
            self.samples.append(seconds)
        else:
            slot = self._rng.randrange(self.count)
            if slot < self.capacity:
                self.samples[slot] = seconds

    def summary(self) -> dict[str, float | int]:
        """Count, mean, max and reservoir estimates of p50 / p95."""
        if not self.samples:
            return {"count": 0}
        ordered = sorted(self.samples)
        return {
            "count": self.count,
            "mean": self.total_s / self.count,
            "p50": statistics.median(ordered),
            "p95": ordered[int(0.95 * (len(ordered) - 1))],
            "max": self.max_s,
        }


@dataclass
class RuntimeMetrics:
    """Requests per tier and per (tier, steps), bounded latency statistics per tier, calls
    per batch size, tier switches and OOM retries. Thread-safe."""

    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    served: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    latency: dict[str, LatencyReservoir] = field(
        default_factory=lambda: defaultdict(LatencyReservoir)
    )
    batches: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    """Pipeline calls per batch size (with batching on)."""
    switches: int = 0
    oom_retries: int = 0
    current_tier: str | None = None
    available_memory_bytes: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_request(self, tier: str, seconds: float, steps: int = 0) -> None:
        with self._lock:
            self.requests[tier] += 1
            self.served[(tier, steps)] += 1
            self.latency[tier].add(seconds)

    def record_batch(self, size: int) -> None:
        with self._lock:
            self.batches[size] += 1

    def record_switch(self, to_tier: str) -> None:
        with self._lock:
            self.switches += 1
            self.current_tier = to_tier

    def record_oom(self) -> None:
        with self._lock:
            self.oom_retries += 1

    def record_memory(self, available: int) -> None:
        with self._lock:
            self.available_memory_bytes = available

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy, safe to serialise. ``served`` maps tier -> steps -> count;
        ``latency_s`` maps tier -> count, mean, p50, p95, max."""
        with self._lock:
            served: dict[str, dict[int, int]] = {}
            for (tier, steps), n in self.served.items():
                served.setdefault(tier, {})[steps] = n
            return {
                "requests": dict(self.requests),
                "served": served,
                "latency_s": {k: v.summary() for k, v in self.latency.items()},
                "batches": dict(self.batches),
                "switches": self.switches,
                "oom_retries": self.oom_retries,
                "current_tier": self.current_tier,
                "available_memory_bytes": self.available_memory_bytes,
            }
