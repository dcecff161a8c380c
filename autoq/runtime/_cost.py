"""What a request costs on a tier: the runtime's one latency model.

A tier's profile gives its latency at its own step count and image size, and optionally a
curve of latencies at other step counts. A request's cost on the tier is that latency
interpolated at the request's steps and scaled by its pixels over the measured pixels;
its predicted completion adds the requests ahead of it (Little's law). The policy, OOM
step-down and the service's admission all use `TierView.cost` and `predict_latency`.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoq.profile import Tier

__all__ = ["TierView", "predict_latency", "tier_views"]


def predict_latency(cost_s: float, ahead: int, slots: int = 1) -> float:
    """Seconds until a new request completes: its own cost after the requests ``ahead``
    of it, ``slots`` of them generating at once, each costing about as much."""
    return cost_s * (max(ahead, 0) // max(slots, 1) + 1)


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

    def cost(self, steps: int | None = None, pixels: int | None = None) -> float:
        """Seconds of one generation at ``steps`` (default: the tier's) and ``pixels``."""
        return self.latency_at(steps) * self.size_factor(pixels)

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
        )
        for t in tiers
    ]
