"""What a request costs on a tier: the runtime's one latency model.

A tier's profile gives its latency at its own step count and image size, optionally a
curve of latencies at other step counts, and optionally a batch curve (one call's
latency and peak memory per batch size). A request's cost on the tier is that latency
interpolated at the request's steps, scaled by its pixels over the measured pixels and,
for a batch, by the batch curve's latency ratio (without a curve a batch of n costs n
requests: no gain is assumed that was not measured). Its predicted completion adds the
requests ahead of it, served ``slots`` calls at a time of up to the batch each call may
take (Little's law). The policy, OOM step-down and admission all use `TierView.cost` and
`TierView.completion`.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoq.profile import Tier
    from autoq.runtime._policy import RequestShape

__all__ = [
    "RATIO_HALF_LIFE_S",
    "TierView",
    "decayed_ratio",
    "predict_latency",
    "request_completion",
    "tier_views",
]


def predict_latency(cost_s: float, ahead: int, slots: int = 1, batch: int = 1) -> float:
    """Seconds until a new request completes behind ``ahead`` others: ``slots`` calls run
    at once, each serving up to ``batch`` requests in ``cost_s`` (one call's seconds)."""
    return cost_s * (max(ahead, 0) // (max(slots, 1) * max(batch, 1)) + 1)


@dataclass(frozen=True)
class TierView:
    """What a policy knows of a tier, from its profile measurements.

    Attributes:
        name: The tier's name.
        peak_memory_bytes: Weights plus activation peak of one generation, as measured.
        weight_bytes: The weights alone.
        latency_s: Seconds of one generation at ``steps`` and ``pixels``.
        clip_score: Measured quality at ``steps`` (higher is better): the ranking key.
        steps: The tier's own step count (``None``: unknown, latency does not scale).
        min_steps: Fewest steps within the profile's quality floor; the dial's bottom
            (``None``: no dial below ``steps``).
        curve: ``(steps, latency_s)`` measured at other step counts, ascending.
        pixels: Height x width the latencies were measured at (``None``: unknown, no
            size scaling).
        batch_curve: ``(batch size, latency_s, peak bytes)`` of one call, measured in one
            run, ascending.
        max_batch: The largest batch whose peak fits the device (``None``: unknown).
    """

    name: str
    peak_memory_bytes: int
    weight_bytes: int
    latency_s: float
    clip_score: float = 0.0
    steps: int | None = None
    min_steps: int | None = None
    curve: tuple[tuple[int, float], ...] = ()
    pixels: int | None = None
    batch_curve: tuple[tuple[int, float, int], ...] = ()
    max_batch: int | None = None

    def size_factor(self, pixels: int | None) -> float:
        """Request pixels over measured pixels (1 when either is unknown)."""
        if pixels is None or self.pixels is None:
            return 1.0
        return pixels / self.pixels

    def latency_at(self, steps: int | None) -> float:
        """Latency at ``steps``, at the measured size: interpolated on the curve between
        measured points, else proportional to steps from the nearest measured point."""
        if steps is None or self.steps is None:
            return self.latency_s
        points = self._points
        i = bisect.bisect_left(points, (steps,))
        if i < len(points) and points[i][0] == steps:
            return points[i][1]
        if 0 < i < len(points):
            (s0, t0), (s1, t1) = points[i - 1], points[i]
            return t0 + (t1 - t0) * (steps - s0) / (s1 - s0)
        nearest_steps, nearest_s = points[0] if i == 0 else points[-1]
        return nearest_s * steps / nearest_steps

    @functools.cached_property
    def _points(self) -> list[tuple[int, float]]:
        """The curve plus the tier's own point, ascending by steps."""
        return sorted({**dict(self.curve), self.steps or 0: self.latency_s}.items())

    def batch_factor(self, batch: int) -> float:
        """One call of ``batch`` requests over one request alone: from the batch curve,
        interpolated between measured sizes and per image beyond the largest; ``batch``
        itself without a curve."""
        points = [(n, t) for n, t, _ in self.batch_curve]
        if batch <= 1 or not points or points[0][0] != 1:
            return float(max(batch, 1))
        alone = points[0][1]
        i = bisect.bisect_left(points, (batch,))
        if i < len(points) and points[i][0] == batch:
            return points[i][1] / alone
        if i < len(points):
            (n0, t0), (n1, t1) = points[i - 1], points[i]
            return (t0 + (t1 - t0) * (batch - n0) / (n1 - n0)) / alone
        last_n, last_s = points[-1]
        return last_s / last_n * batch / alone

    def batch_limit(self, cap: int) -> int:
        """The largest batch to run on this tier: ``cap``, bounded by the measured
        ``max_batch``."""
        return max(1, min(cap, self.max_batch) if self.max_batch is not None else cap)

    def cost(self, steps: int | None = None, pixels: int | None = None, batch: int = 1) -> float:
        """Seconds of one call of ``batch`` generations at ``steps`` (default: the
        tier's) and ``pixels``."""
        return self.latency_at(steps) * self.size_factor(pixels) * self.batch_factor(batch)

    def completion(
        self,
        steps: int | None,
        pixels: int | None,
        ahead: int,
        slots: int = 1,
        max_batch: int = 1,
        images: int = 1,
    ) -> float:
        """Seconds until a new request completes behind ``ahead`` others (`predict_latency`)
        when each call may batch up to ``max_batch`` (bounded by `batch_limit`): queued
        requests fill batches, so a call serves ``min(limit, ahead + 1)`` of them. A
        request of several ``images`` runs as its own call of that many."""
        batch = min(self.batch_limit(max_batch), max(ahead, 0) + 1)
        call = self.cost(steps, pixels, batch)
        if images == 1:
            return predict_latency(call, ahead, slots, batch)
        waiting = call * (max(ahead, 0) // (max(slots, 1) * batch))
        return waiting + self.cost(steps, pixels, images)

    def throughput_cost(self, steps: int | None, pixels: int | None, max_batch: int = 1) -> float:
        """Seconds of generation slot per request when batches fill to `batch_limit`."""
        batch = self.batch_limit(max_batch)
        return self.cost(steps, pixels, batch) / batch

    def peak_at(self, pixels: int | None) -> int:
        """Peak memory at ``pixels``: weights plus activations scaled with the image."""
        activations = self.peak_memory_bytes - self.weight_bytes
        return self.weight_bytes + int(activations * max(self.size_factor(pixels), 1.0))

    @functools.cached_property
    def dial(self) -> range:
        """Step counts this tier may be served at, most first: from its own steps down to
        ``min_steps`` when the profile measured a curve and a floor, else its steps only."""
        if self.steps is None:
            return range(0)
        floor = self.min_steps if self.curve and self.min_steps is not None else self.steps
        return range(self.steps, min(floor, self.steps) - 1, -1)


RATIO_HALF_LIFE_S = 30.0
"""Without new generations, an observed/profiled latency ratio halves its distance to 1
in this time: a slowdown learned under load, which then had every request refused as too
costly (so nothing was observed again), is forgotten once load drops."""


def decayed_ratio(ratio: float, quiet_s: float) -> float:
    """``ratio`` after ``quiet_s`` seconds without an observation (`RATIO_HALF_LIFE_S`)."""
    return 1.0 + (ratio - 1.0) * 0.5 ** (max(quiet_s, 0.0) / RATIO_HALF_LIFE_S)


def request_completion(
    views: Sequence[TierView],
    indices: Sequence[int],
    shape: RequestShape,
    ahead: int,
    slots: int = 1,
    max_batch: int = 1,
    *,
    named: bool = False,
    images: int = 1,
) -> float:
    """Seconds until a new request of ``shape`` completes on the fastest of the tiers
    ``indices``, behind ``ahead`` others (`TierView.completion`): at the request's steps,
    or, unless its tier was ``named``, each tier's fewest allowed (its dial's bottom)."""
    costs = []
    for i in indices:
        view = views[i]
        steps = shape.steps
        if steps is None and not named:
            steps = view.dial[-1] if view.dial else None
        costs.append(view.completion(steps, shape.pixels, ahead, slots, max_batch, images))
    return min(costs)


def tier_views(tiers: Sequence[Tier], pixels: int | None = None) -> list[TierView]:
    """Policy views of profile tiers measured at ``pixels`` (``None``: unknown)."""
    return [
        TierView(
            name=t.name,
            peak_memory_bytes=t.metrics.peak_memory_bytes,
            weight_bytes=t.metrics.weight_bytes,
            latency_s=t.metrics.latency_s,
            clip_score=t.metrics.clip_score,
            steps=t.plan.steps,
            min_steps=t.min_steps,
            curve=tuple((p.steps, p.latency_s) for p in t.steps_curve),
            pixels=pixels,
            batch_curve=tuple(
                (p.batch_size, p.latency_s, p.peak_memory_bytes) for p in t.batch_curve
            ),
            max_batch=_max_batch(t),
        )
        for t in tiers
    ]


def _max_batch(tier: Tier) -> int | None:
    """The tier's batch bound: the profile's, or 1 for a tier whose components build
    per input shape (compiled, OpenVINO) when no batch size was measured: each new size
    would compile or convert again while requests wait."""
    from autoq.execution import get_executor

    if tier.max_batch is not None:
        return tier.max_batch
    per_shape = any(get_executor(e).builds_per_shape for e in tier.plan.execution.values())
    return 1 if per_shape else None
