"""Which tier, at how many steps: the best measured quality that fits memory and meets the
latency SLO, chosen by each tier's measured cost, never by its position in the list.

Under memory pressure: the best tier that fits, else the smallest. Under latency pressure:
the best tier that meets the SLO, served at the most steps that meet it (never below its
``min_steps``), else the fastest at its fewest steps. Meeting the SLO includes keeping up
with the requests arriving (cost x arrival rate within ``max_utilization`` of the
generation slots); otherwise the queue, and every later request's wait, would grow.
Because each tier's step dial is tried before the next-best tier, load first costs steps,
then a component switch.

Leaving a tier that no longer fits or meets the SLO happens at once; moving to a better
tier only after ``dwell_s`` of continuously good signals (asymmetric hysteresis, as INFaaS
and Ray Serve do), so an oscillating signal costs at most one switch per dwell window.
Steps change per request and cost no switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from autoq.errors import ConfigError
from autoq.runtime._cost import TierView
from autoq.runtime._signals import Signals

__all__ = ["Decision", "DefaultPolicy", "Policy", "RequestShape", "TierView"]


@dataclass(frozen=True)
class RequestShape:
    """What a request asks that changes its cost.

    Attributes:
        steps: Steps the request named: honoured as given, never dialed (``None``: the
            policy chooses).
        pixels: Height x width of the image (``None``: the size the profile measured).
    """

    steps: int | None = None
    pixels: int | None = None


@dataclass(frozen=True)
class Decision:
    """The tier index to serve next, at how many steps, and why.

    ``steps`` is ``None`` when the tier's own step count applies (no dial, no request steps).
    """

    tier: int
    reason: str
    steps: int | None = None


@runtime_checkable
class Policy(Protocol):
    """Chooses a tier (and steps) from the signals; ``excluded`` tiers are cooling down
    after an OOM; ``request`` is the shape of the request being placed."""

    def decide(
        self,
        tiers: Sequence[TierView],
        current: int,
        signals: Signals,
        now: float,
        excluded: frozenset[int] = frozenset(),
        request: RequestShape | None = None,
    ) -> Decision: ...


@dataclass
class DefaultPolicy:
    """The documented default.

    A tier fits memory when its measured peak (activations scaled to the request's
    pixels) plus a reserve of ``max(reserve_bytes, reserve_fraction * peak)`` fits in the
    available memory, counting the current tier's weights as available (a switch frees
    them) and, for the current tier, only its activations. With an SLO, a tier meets it at
    ``steps`` when its predicted completion at those steps and the request's pixels
    (`TierView.completion`, x the observed/profiled ratio), behind the requests ahead in
    batches as large as the tier takes, is within ``slo_s``, and its cost per request with
    full batches x the arrival rate stays within ``max_utilization`` of the slots: under
    load, a tier that batches well sustains more.
    Tiers are ranked by measured CLIP score (ties: the faster first).

    Args:
        slo_s: Latency objective per request, seconds (``None``: memory only).
        dwell_s: Seconds of continuously good signals before moving to a better tier.
        reserve_bytes: Memory kept free beyond a tier's peak, at least.
        reserve_fraction: ... or this share of the tier's peak, if larger.
        max_utilization: With an SLO, the share of the generation slots the arriving
            requests may keep busy (cost x arrival rate / slots).
    """

    slo_s: float | None = None
    dwell_s: float = 10.0
    reserve_bytes: int = 16 * 2**20
    reserve_fraction: float = 0.10
    max_utilization: float = 0.9
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
        if not 0 < self.max_utilization <= 1:
            raise ConfigError(f"max_utilization must be in (0, 1], but got {self.max_utilization}.")

    def fits_memory(
        self, tiers: Sequence[TierView], i: int, current: int, s: Signals, pixels: int | None
    ) -> bool:
        """Whether tier ``i`` fits the available memory, serving ``current`` now."""
        tier = tiers[i]
        peak = tier.peak_at(pixels)
        reserve = max(self.reserve_bytes, int(self.reserve_fraction * peak))
        if i == current:
            need = peak - tier.weight_bytes
            budget = s.available_memory_bytes
        else:
            need = peak
            budget = s.available_memory_bytes + tiers[current].weight_bytes
        return need + reserve <= budget

    def predicted_latency(
        self, tier: TierView, s: Signals, steps: int | None = None, pixels: int | None = None
    ) -> float:
        """Seconds until a new request on ``tier`` completes, queue included."""
        ahead = s.queue_depth + max(s.in_flight - 1, 0)
        return tier.completion(steps, pixels, ahead, s.slots, s.max_batch) * s.latency_ratio

    def steps_within_slo(
        self, tier: TierView, s: Signals, request: RequestShape
    ) -> tuple[bool, int | None]:
        """Whether ``tier`` meets the SLO, and at the most steps on its dial (or the
        request's own) that do; steps ``None`` means the tier's own."""
        if request.steps is not None:
            return self._meets(tier, s, request.steps, request.pixels), request.steps
        dial = tier.dial
        if not dial:
            return self._meets(tier, s, None, request.pixels), None
        # Cost grows with steps: binary search for the most steps that meet the SLO.
        if not self._meets(tier, s, dial[-1], request.pixels):
            return False, None
        lo, hi = 0, len(dial) - 1  # dial[hi] meets; find the first index that meets
        while lo < hi:
            mid = (lo + hi) // 2
            if self._meets(tier, s, dial[mid], request.pixels):
                hi = mid
            else:
                lo = mid + 1
        return True, dial[lo]

    def _meets(self, tier: TierView, s: Signals, steps: int | None, pixels: int | None) -> bool:
        if self.slo_s is None:
            return True
        per_request = tier.throughput_cost(steps, pixels, s.max_batch) * s.latency_ratio
        if per_request * s.arrival_rps > self.max_utilization * s.slots:
            return False  # the queue would grow without bound
        return self.predicted_latency(tier, s, steps, pixels) <= self.slo_s

    def _fewest(self, tier: TierView, request: RequestShape) -> int | None:
        if request.steps is not None:
            return request.steps
        return tier.dial[-1] if tier.dial else None

    def decide(
        self,
        tiers: Sequence[TierView],
        current: int,
        signals: Signals,
        now: float,
        excluded: frozenset[int] = frozenset(),
        request: RequestShape | None = None,
    ) -> Decision:
        ask = request or RequestShape()
        usable = [i for i in range(len(tiers)) if i not in excluded] or list(range(len(tiers)))
        fits = [i for i in usable if self.fits_memory(tiers, i, current, signals, ask.pixels)]
        ranked = sorted(fits, key=lambda i: (-tiers[i].clip_score, tiers[i].cost(None)))
        meets: dict[int, int | None] = {}
        for i in ranked:
            ok, steps = self.steps_within_slo(tiers[i], signals, ask)
            if ok:
                meets[i] = steps
        if meets:
            best = next(i for i in ranked if i in meets)
            steps, why = meets[best], "fits"
        elif fits:  # latency pressure: nothing meets the SLO
            best = min(fits, key=lambda i: tiers[i].cost(self._fewest(tiers[i], ask), ask.pixels))
            steps, why = self._fewest(tiers[best], ask), "no tier meets the SLO: fastest"
        else:  # memory pressure: nothing fits
            best = min(usable, key=lambda i: tiers[i].peak_at(ask.pixels))
            steps, why = self._fewest(tiers[best], ask), "no tier fits memory: smallest"
        if best == current:
            self._good_since = None
            return Decision(current, "steady", steps)
        if current not in meets:
            # The current tier fails now (memory, SLO or cooling): leave it at once.
            self._good_since = None
            return Decision(best, f"leave {tiers[current].name}: {why}", steps)
        # The current tier is fine and a better one would be too: wait out the dwell.
        if self._good_since is None:
            self._good_since = now
        if now - self._good_since >= self.dwell_s:
            self._good_since = None
            return Decision(best, f"upgrade after {self.dwell_s:g}s of good signals", steps)
        return Decision(current, "dwell: waiting before upgrade", meets[current])
