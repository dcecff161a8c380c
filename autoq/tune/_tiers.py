"""Choosing a profile's tiers: the feasible Pareto front, spanned from best quality to
least memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from autoq.profile import Constraints, Metrics

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["feasible", "pareto_front", "select_tiers", "tier_names", "trial_metrics"]


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
    raw = trial.user_attrs.get("metrics")
    return Metrics.model_validate(raw) if raw else None


def feasible(
    trials: Sequence[FrozenTrial], constraints: Constraints, reference_clip: float
) -> list[tuple[FrozenTrial, Metrics]]:
    """Completed trials that meet every constraint, judged on their measured metrics."""
    from optuna.trial import TrialState

    kept = []
    for trial in trials:
        metrics = trial_metrics(trial)
        if trial.state != TrialState.COMPLETE or metrics is None:
            continue
        if all(v <= 0 for v in constraints.violations(metrics, reference_clip)):
            kept.append((trial, metrics))
    return kept


def select_tiers(
    candidates: Sequence[tuple[FrozenTrial, Metrics]], k: int
) -> list[tuple[FrozenTrial, Metrics]]:
    """Up to ``k`` Pareto-optimal candidates spanning the front, best quality first.

    The best-quality and the least-memory points are always kept; the rest are spread
    evenly by memory in between. Identical plans count once.
    """
    unique: dict[str, tuple[FrozenTrial, Metrics]] = {}
    for trial, metrics in candidates:
        unique.setdefault(str(trial.user_attrs.get("plan")), (trial, metrics))
    pool = list(unique.values())
    front = [pool[i] for i in pareto_front([m for _, m in pool])]
    front.sort(key=lambda tm: tm[1].peak_memory_bytes, reverse=True)
    if len(front) > k:
        best = max(range(len(front)), key=lambda i: front[i][1].clip_score)
        picks = {best, len(front) - 1}
        for j in range(k):
            if len(picks) >= k:
                break
            picks.add(round(j * (len(front) - 1) / max(k - 1, 1)))
        front = [front[i] for i in sorted(picks)]
    front.sort(key=lambda tm: (-tm[1].clip_score, tm[1].peak_memory_bytes))
    return front


def tier_names(count: int) -> list[str]:
    """``quality``, ``balanced``, ``balanced-2`` ..., ``minimal``."""
    if count == 1:
        return ["quality"]
    middle = ["balanced"] + [f"balanced-{i}" for i in range(2, count - 1)]
    return ["quality", *middle[: count - 2], "minimal"]
