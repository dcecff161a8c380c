"""Choosing a profile's tiers: corners of the feasible Pareto front, then spread.

From the feasible plans (every limit met, quality judged with its interval), the tiers
are always the best-quality plan, the fastest plan and the smallest plan (up to noise:
of the plans within noise of the fastest or the smallest, the best CLIP estimate among
those no other of them covers); the remaining slots go to the front's points farthest, in
(log latency, log memory), from the tiers already chosen. A plan adds nothing, and is
skipped, when a chosen tier is within measurement noise of it in every objective
(overlapping quality intervals, latency and memory within their noise) or *covers* it: a
CLIP estimate as good or tied with it (overlapping intervals), and no slower and no
larger beyond noise. Each tier records which resource, among the chosen tiers, it is
cheapest in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from autoq.profile import Constraints, Metrics, Resource
from autoq.quality import overlap
from autoq.tune._record import TrialRecord

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = [
    "LATENCY_NOISE",
    "MEMORY_NOISE",
    "Chosen",
    "covers",
    "feasible",
    "mark_cheapest",
    "pareto_front",
    "select_tiers",
    "tier_names",
    "trial_metrics",
    "within_noise",
]

T = TypeVar("T")

LATENCY_NOISE = 0.10
"""Relative latency difference below which two plans count as equally fast (at least;
a plan's own p90/median spread widens it)."""
MEMORY_NOISE = 0.05
"""Relative peak-memory difference below which two plans count as equally small."""


def _objectives(metrics: Metrics) -> tuple[float, float, float]:
    """All minimised: -quality, latency, memory."""
    return (-metrics.clip_score, metrics.latency_s, float(metrics.peak_memory_bytes))


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def pareto_front(metrics: Sequence[Metrics]) -> list[int]:
    """Indices of the non-dominated entries (quality up, latency and memory down)."""
    points = [_objectives(m) for m in metrics]
    return [i for i, p in enumerate(points) if not any(_dominates(q, p) for q in points)]


def trial_metrics(trial: FrozenTrial) -> Metrics | None:
    return TrialRecord(trial).metrics()


def feasible(
    trials: Sequence[FrozenTrial], constraints: Constraints, reference_clip: float
) -> list[tuple[FrozenTrial, Metrics]]:
    """Completed trials that meet every constraint, judged on their measured metrics
    (quality conservatively: see `Constraints.quality_shortfall`)."""
    from optuna.trial import TrialState

    kept = []
    for trial in trials:
        metrics = trial_metrics(trial)
        if trial.state != TrialState.COMPLETE or metrics is None:
            continue
        if all(v <= 0 for v in constraints.violations(metrics, reference_clip)):
            kept.append((trial, metrics))
    return kept


def _latency_noise(a: Metrics, b: Metrics) -> float:
    spreads = [m.latency_p90_s / m.latency_s - 1 for m in (a, b) if m.latency_s > 0]
    return max([LATENCY_NOISE, *spreads])


def _close(x: float, y: float, relative: float) -> bool:
    return abs(math.log(max(x, 1e-12) / max(y, 1e-12))) <= math.log1p(relative)


def within_noise(a: Metrics, b: Metrics) -> bool:
    """Whether two plans are indistinguishable in every objective: overlapping CLIP
    intervals, latency within its noise, peak memory within `MEMORY_NOISE`."""
    return (
        overlap(_quality_bounds(a), _quality_bounds(b))
        and _close(a.latency_s, b.latency_s, _latency_noise(a, b))
        and _close(a.peak_memory_bytes, b.peak_memory_bytes, MEMORY_NOISE)
    )


def _quality_bounds(m: Metrics) -> tuple[float, float]:
    return m.clip_ci or (m.clip_score, m.clip_score)


def covers(p: Metrics, c: Metrics) -> bool:
    """Whether a tier ``p`` leaves nothing for ``c`` to add: a CLIP estimate at least as
    high or one it cannot be ranked against (overlapping intervals), and no slower and no
    larger beyond their noise (``c`` is better nowhere beyond noise)."""
    as_good = p.clip_score >= c.clip_score or overlap(_quality_bounds(p), _quality_bounds(c))
    return (
        as_good
        and p.latency_s <= c.latency_s * (1 + _latency_noise(p, c))
        and p.peak_memory_bytes <= c.peak_memory_bytes * (1 + MEMORY_NOISE)
    )


@dataclass
class Chosen(Generic[T]):
    """A selected tier: the caller's item, its metrics, and where it is cheapest."""

    item: T
    metrics: Metrics
    cheapest_in: list[Resource] = field(default_factory=list)


def _position(m: Metrics) -> tuple[float, float]:
    return (math.log(max(m.latency_s, 1e-9)), math.log(max(m.peak_memory_bytes, 1)))


def select_tiers(
    candidates: Sequence[tuple[T, Metrics]], k: int, *, cover: bool = True
) -> list[Chosen[T]]:
    """Up to ``k`` tiers from feasible ``candidates``, spanning quality, latency, memory.

    Args:
        candidates: Feasible ``(item, metrics)`` pairs, one per distinct plan, any order.
        k: Most tiers wanted.
        cover: Whether a plan a tier covers (`covers`, ties included) is skipped: so for
            tiers, whose intervals are final; not for the picks of a race, made on
            screening estimates the race is to correct (a plan that looked covered on 6
            images can turn out the faster or the better one).

    Returns:
        The tiers by CLIP estimate, best first, each with ``cheapest_in`` set: the
        resources (``quality``, ``latency``, ``memory``) in which no other chosen tier
        beats it. The order is not cost order.

    Raises:
        ValueError: ``k`` is not positive.
    """
    if k < 1:
        raise ValueError(f"k must be positive, but got {k}.")
    front = [candidates[i] for i in pareto_front([m for _, m in candidates])]
    if not front:
        return []

    def top(pool: Sequence[tuple[T, Metrics]]) -> tuple[T, Metrics]:
        return max(pool, key=lambda c: (c[1].clip_score, -c[1].latency_s, -c[1].peak_memory_bytes))

    def beats(p: Metrics, c: Metrics) -> bool:
        return cover and covers(p, c) and not covers(c, p)

    def corner(cost: Callable[[Metrics], float], noise: float) -> tuple[T, Metrics]:
        """The best plan among those within ``noise`` of the lowest ``cost`` that no other
        of them covers (one that is only better than noise there is not)."""
        low = min(cost(c[1]) for c in front)
        near = [c for c in front if cost(c[1]) <= low * (1 + noise)]
        return top([c for c in near if not any(beats(p[1], c[1]) for p in near)] or near)

    best = top(front)
    fastest = corner(lambda x: x.latency_s, LATENCY_NOISE)
    smallest = corner(lambda x: float(x.peak_memory_bytes), MEMORY_NOISE)
    picks: list[tuple[T, Metrics]] = [best]

    def distance(c: tuple[T, Metrics]) -> float:
        x = _position(c[1])
        return min(math.dist(x, _position(p[1])) for p in picks)

    def adds_something(c: tuple[T, Metrics]) -> bool:
        return all(
            c is not p and not within_noise(c[1], p[1]) and not (cover and covers(p[1], c[1]))
            for p in picks
        )

    corners = [c for c in (fastest, smallest) if adds_something(c)]
    corners.sort(key=distance, reverse=True)  # with k == 2, the corner spanning more
    for extreme in corners:
        if len(picks) < k and adds_something(extreme):
            picks.append(extreme)
    while len(picks) < k:
        rest = [c for c in front if adds_something(c)]
        if not rest:
            break
        picks.append(max(rest, key=lambda c: (distance(c), c[1].clip_score)))
    picks.sort(key=lambda c: (-c[1].clip_score, c[1].latency_s, c[1].peak_memory_bytes))
    chosen = [Chosen(item, metrics) for item, metrics in picks]
    mark_cheapest(chosen)
    return chosen


def mark_cheapest(chosen: Sequence[Chosen[T]]) -> None:
    """Set each tier's ``cheapest_in`` from its metrics: ``quality`` for the first (the
    best), ``latency`` and ``memory`` for the tiers no other tier beats there."""
    for c in chosen:
        c.cheapest_in.clear()
    if not chosen:
        return
    chosen[0].cheapest_in.append("quality")
    min(chosen, key=lambda c: (c.metrics.latency_s, -c.metrics.clip_score)).cheapest_in.append(
        "latency"
    )
    min(
        chosen, key=lambda c: (c.metrics.peak_memory_bytes, -c.metrics.clip_score)
    ).cheapest_in.append("memory")


def tier_names(cheapest: Sequence[Sequence[Resource]]) -> list[str]:
    """Names from what each tier is cheapest in: ``quality``, ``fast``, ``small``,
    ``minimal`` (fastest and smallest), others ``balanced``, ``balanced-2`` ..."""
    names, balanced = [], 0
    for resources in cheapest:
        if "quality" in resources:
            names.append("quality")
        elif "latency" in resources and "memory" in resources:
            names.append("minimal")
        elif "latency" in resources:
            names.append("fast")
        elif "memory" in resources:
            names.append("small")
        else:
            balanced += 1
            names.append("balanced" if balanced == 1 else f"balanced-{balanced}")
    return names
