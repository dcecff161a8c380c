"""Which tier to serve: the highest quality that fits memory and meets the latency SLO.

Downgrades happen at once; upgrades only after ``dwell_s`` of continuously good signals
(asymmetric hysteresis, as INFaaS and Ray Serve do), so an oscillating signal costs at
most one switch per dwell window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from autoq.errors import ConfigError
from autoq.runtime._signals import Signals

__all__ = ["Decision", "DefaultPolicy", "Policy", "TierView"]


@dataclass(frozen=True)
class TierView:
    """What a policy knows of a tier (from its profile measurements)."""

    name: str
    peak_memory_bytes: int
    weight_bytes: int
    latency_s: float


@dataclass(frozen=True)
class Decision:
    """The tier index to serve next (0 is the best quality) and why."""

    tier: int
    reason: str


@runtime_checkable
class Policy(Protocol):
    """Chooses a tier from the signals; ``excluded`` tiers are cooling down after an OOM."""

    def decide(
        self,
        tiers: Sequence[TierView],
        current: int,
        signals: Signals,
        now: float,
        excluded: frozenset[int] = frozenset(),
    ) -> Decision: ...


@dataclass
class DefaultPolicy:
    """The documented default.

    A tier fits when (1) its measured peak memory plus a reserve of
    ``max(reserve_bytes, reserve_fraction * peak)`` fits in the available memory, counting
    the current tier's weights as available (a switch frees them) and, for the current
    tier, only its activations (its weights are already resident); and (2) with an SLO,
    its predicted latency (profiled latency x the observed/profiled ratio x the requests
    ahead + 1, as Little's law) is within ``slo_s``. The best-quality fitting tier wins;
    when none fits, the lowest tier.

    Args:
        slo_s: Latency objective per request, seconds (``None``: memory only).
        dwell_s: Seconds of continuously good signals before an upgrade.
        reserve_bytes: Memory kept free beyond a tier's peak, at least.
        reserve_fraction: ... or this share of the tier's peak, if larger.
    """

    slo_s: float | None = None
    dwell_s: float = 10.0
    reserve_bytes: int = 16 * 2**20
    reserve_fraction: float = 0.10
    _good_since: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.slo_s is not None and self.slo_s <= 0:
            raise ConfigError(f"slo_s must be positive, but got {self.slo_s}.")
        if self.dwell_s < 0:
            raise ConfigError(f"dwell_s must be >= 0, but got {self.dwell_s}.")
        if self.reserve_bytes < 0 or not 0 <= self.reserve_fraction < 1:
            raise ConfigError(
                "reserve_bytes must be >= 0 and reserve_fraction in [0, 1), but got "
                f"{self.reserve_bytes} and {self.reserve_fraction}."
            )

    def _memory_ok(self, tiers: Sequence[TierView], i: int, current: int, s: Signals) -> bool:
        tier = tiers[i]
        reserve = max(self.reserve_bytes, int(self.reserve_fraction * tier.peak_memory_bytes))
        if i == current:
            need = tier.peak_memory_bytes - tier.weight_bytes
            budget = s.available_memory_bytes
        else:
            need = tier.peak_memory_bytes
            budget = s.available_memory_bytes + tiers[current].weight_bytes
        return need + reserve <= budget

    def predicted_latency(self, tier: TierView, s: Signals) -> float:
        """Seconds until a new request on ``tier`` completes, queue included."""
        ahead = s.queue_depth + max(s.in_flight - 1, 0)
        return tier.latency_s * s.latency_ratio * (ahead + 1)

    def decide(
        self,
        tiers: Sequence[TierView],
        current: int,
        signals: Signals,
        now: float,
        excluded: frozenset[int] = frozenset(),
    ) -> Decision:
        best = None
        for i, tier in enumerate(tiers):
            if i in excluded or not self._memory_ok(tiers, i, current, signals):
                continue
            if self.slo_s is not None and self.predicted_latency(tier, signals) > self.slo_s:
                continue
            best = i
            break
        if best is None:
            lowest = max(
                (i for i in range(len(tiers)) if i not in excluded), default=len(tiers) - 1
            )
            best, why = lowest, "no tier fits: lowest"
        else:
            why = "fits"
        if best > current:
            self._good_since = None
            return Decision(best, f"downgrade: {why}")
        if best == current:
            self._good_since = None
            return Decision(current, "steady")
        if self._good_since is None:
            self._good_since = now
        if now - self._good_since >= self.dwell_s:
            self._good_since = None
            return Decision(best, f"upgrade after {self.dwell_s:g}s of good signals")
        return Decision(current, "dwell: waiting before upgrade")
