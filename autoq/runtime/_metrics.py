"""Counters the runtime keeps for its operators (and that `autoq serve` exports)."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RuntimeMetrics"]


@dataclass
class RuntimeMetrics:
    """Requests, latency and memory per tier, tier switches and OOM retries. Thread-safe."""

    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    latency_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    switches: int = 0
    oom_retries: int = 0
    current_tier: str | None = None
    available_memory_bytes: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_request(self, tier: str, seconds: float) -> None:
        with self._lock:
            self.requests[tier] += 1
            self.latency_s[tier].append(seconds)

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
        """A plain-dict copy, safe to serialise."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "latency_s": {k: list(v) for k, v in self.latency_s.items()},
                "switches": self.switches,
                "oom_retries": self.oom_retries,
                "current_tier": self.current_tier,
                "available_memory_bytes": self.available_memory_bytes,
            }
