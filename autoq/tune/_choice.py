"""Which measured plans race, go deep and become tiers: the statistics of tier choice.

Images are spent where they decide something: after the search, the plans that could
still be on the feasible front (not surely dominated, not surely below the quality floor:
`finalists`) are extended to the full set; the raced plans whose verdict on the floor is
still open and that would widen the tiers' span (`borderline_corners`) go to the deep set.
Tiers are then chosen (`choose`) from the raced plans, on their side-by-side latencies
when those cover every candidate. Deterministic, so a tune and `autoq profile export`
choose the same tiers.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints, Metrics
from autoq.tune._evidence import Assessed, assess, evalset_of, reference_clip
from autoq.tune._measure import p90
from autoq.tune._record import StudyRecord, StudyView, Timings, plan_key
from autoq.tune._tiers import Chosen, select_tiers

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_TIER_DROP_PCT",
    "Choice",
    "borderline_corners",
    "candidates",
    "choose",
    "choose_among",
    "finalists",
    "meets",
    "side_by_side",
    "tier_constraints",
]

DEFAULT_TIER_DROP_PCT = 10.0
"""Without a quality limit, tiers keep CLIP within this many percent of the reference
(judged on the paired interval), so the fastest and smallest tiers are still usable."""


def tier_constraints(constraints: Constraints) -> Constraints:
    """The limits tiers are chosen under: the given ones, plus the default quality floor
    (`DEFAULT_TIER_DROP_PCT`) when no quality limit was given."""
    if constraints.has_quality_floor:
        return constraints
    return constraints.model_copy(update={"max_clip_drop_pct": DEFAULT_TIER_DROP_PCT})


def meets(constraints: Constraints, metrics: Metrics, reference_clip: float) -> bool:
    return all(v <= 0 for v in constraints.violations(metrics, reference_clip))


def _optimistic(metrics: Metrics) -> Metrics:
    """``metrics`` with quality at the top of its intervals (could it still qualify?)."""
    high = metrics.clip_ci[1] if metrics.clip_ci else metrics.clip_score
    change = metrics.clip_vs_reference_ci
    return metrics.model_copy(
        update={
            "clip_ci": (high, high),
            "clip_vs_reference_ci": (change[1], change[1]) if change else None,
        }
    )


def _central(metrics: Metrics) -> Metrics:
    """``metrics`` judged on its point estimates alone (does it look like it qualifies?)."""
    return metrics.model_copy(update={"clip_ci": None, "clip_vs_reference_ci": None})


def finalists(
    assessed: Sequence[Assessed],
    constraints: Constraints,
    reference_clip: float,
    count: int,
    full: int,
    since: int = -1,
) -> list[Assessed]:
    """Plans worth extending to the ``full`` evaluation set: not surely infeasible, not
    surely dominated, not measured on the full set already, measured by a trial numbered
    above ``since`` (the plans an earlier race already weighed are not weighed again).

    Surely dominated: another plan's CLIP interval lies wholly above this one's and it is
    no slower and no larger. If more than ``count`` remain, the plans whose point estimate
    meets the limits go first, the ones only the top of their interval could carry after;
    within each group the spanning choice of `select_tiers` (corners first, then spread)
    picks.
    """
    hopeful = [a for a in assessed if meets(constraints, _optimistic(a.metrics), reference_clip)]

    def surely_beats(b: Metrics, a: Metrics) -> bool:
        low_b = b.clip_ci[0] if b.clip_ci else b.clip_score
        high_a = a.clip_ci[1] if a.clip_ci else a.clip_score
        return (
            low_b > high_a
            and b.latency_s <= a.latency_s
            and b.peak_memory_bytes <= a.peak_memory_bytes
        )

    pending = [a for a in hopeful if a.metrics.n_images < full and a.trial.number > since]
    open_ = [a for a in pending if not any(surely_beats(b.metrics, a.metrics) for b in hopeful)]
    likely = [a for a in open_ if meets(constraints, _central(a.metrics), reference_clip)]
    picks: list[Assessed] = []
    for group in (likely, [a for a in open_ if a not in likely]):
        room = count - len(picks)
        if room <= 0:
            break
        if len(group) <= room:
            picks += group
        else:
            spanning = select_tiers([(a, a.metrics) for a in group], room, cover=False)
            picks += [c.item for c in spanning]
    return picks


def borderline_corners(
    assessed: Sequence[Assessed], constraints: Constraints, reference_clip: float, full: int
) -> list[Assessed]:
    """Raced plans whose verdict on the tier floor the full set leaves open and that would
    widen the tiers' span: the smallest one smaller than every plan surely within the
    floor, and the fastest one faster than all of them. Racing them to the deep set
    spends images where they decide a tier.
    """
    limits = tier_constraints(constraints)
    raced = [
        a
        for a in assessed
        if a.metrics.n_images >= full and meets(constraints, a.metrics, reference_clip)
    ]
    sure = [a for a in raced if meets(limits, a.metrics, reference_clip)]
    if not sure:
        return []
    unsure = [
        a for a in raced if a not in sure and meets(limits, _optimistic(a.metrics), reference_clip)
    ]
    smallest = min(a.metrics.peak_memory_bytes for a in sure)
    fastest = min(a.metrics.latency_s for a in sure)
    picks: list[Assessed] = []
    smaller = [a for a in unsure if a.metrics.peak_memory_bytes < smallest]
    if smaller:
        picks.append(min(smaller, key=lambda a: a.metrics.peak_memory_bytes))
    faster = [a for a in unsure if a.metrics.latency_s < fastest]
    if faster:
        quickest = min(faster, key=lambda a: a.metrics.latency_s)
        if quickest not in picks:
            picks.append(quickest)
    return picks


def side_by_side(timing: Timings | None, plan: PipelinePlan, steps: int) -> list[float] | None:
    """``plan``'s timings at ``steps`` in ``timing``, if it was timed so."""
    return (timing or {}).get(plan_key(plan), {}).get(str(steps))


@dataclass
class Choice:
    """The tiers a study yields and the floor they were chosen under."""

    tiers: list[Chosen[Assessed]]
    constraints: Constraints
    floor: float | None
    feasible: set[int]
    """Trial numbers of every feasible plan (under the user's own constraints)."""
    timing: Timings | None = None
    """The side-by-side timings the tiers were chosen on and the tiers' and the
    reference's latencies come from, when they cover the reference and every candidate
    (else every latency is the plan's own, from its screening)."""
    dial: Timings = field(default_factory=dict)
    """The tiers' step-dial timings."""

    def timed(self, plan: PipelinePlan, metrics: Metrics) -> Metrics:
        """``metrics`` of ``plan`` with its latency from the side-by-side timing, if any."""
        seconds = side_by_side(self.timing, plan, plan.steps)
        if not seconds:
            return metrics
        return metrics.model_copy(
            update={"latency_s": statistics.median(seconds), "latency_p90_s": p90(seconds)}
        )

    def step_dial(self, plan: PipelinePlan) -> dict[int, list[float]]:
        """``plan``'s timings at its step curve's step counts, on the side-by-side timing's
        scale: timed beside its own steps, and multiplied by how its own steps timed in the
        side-by-side timing over how they timed then (empty when either is missing)."""
        own = side_by_side(self.timing, plan, plan.steps)
        dial = self.dial.get(plan_key(plan), {})
        base = dial.get(str(plan.steps))
        if not own or not base:
            return {}
        scale = statistics.median(own) / statistics.median(base)
        return {int(n): [t * scale for t in seconds] for n, seconds in dial.items()}


def candidates(
    view: StudyView, assessed: Sequence[Assessed]
) -> tuple[list[Assessed], Constraints, set[int]]:
    """The plans tiers are chosen from, the limits they meet (the user's plus the default
    floor, or the user's alone when nothing meets both) and every feasible trial number.

    The candidates are the plans raced to the full set whenever there are any (a race the
    time budget or a signal cut short included); before racing, the screened plans."""
    constraints = view.context().constraints
    reference = reference_clip(view)
    ok = [a for a in assessed if meets(constraints, a.metrics, reference)]
    limits = tier_constraints(constraints)
    floored = [a for a in ok if meets(limits, a.metrics, reference)]
    if not floored:  # nothing within the default floor: the user's limits alone
        floored, limits = ok, constraints
    full = evalset_of(view).full
    pool = [a for a in floored if a.metrics.n_images >= full] or floored
    return pool, limits, {a.trial.number for a in ok}


def choose(study: optuna.Study, k: int) -> Choice:
    """Tiers from the study's evidence: deterministic, so tune and export agree."""
    view = StudyRecord(study).snapshot()
    return choose_among(view, assess(study, view), k)


def choose_among(view: StudyView, assessed: Sequence[Assessed], k: int) -> Choice:
    """`choose` over plans already assessed."""
    pool, limits, feasible = candidates(view, assessed)
    floor = limits.effective_min_clip(reference_clip(view))
    # Latencies timed side by side replace the screening's once they cover the reference
    # and every candidate: timed at different moments, a drifting machine misorders them.
    timing = view.side_by_side()
    reference = view.reference().plan
    lined_up = bool(pool) and all(
        side_by_side(timing, p, p.steps) for p in [reference, *(a.plan for a in pool)]
    )
    choice = Choice([], limits, floor, feasible, timing if lined_up else None, view.step_dial())
    choice.tiers = select_tiers([(a, choice.timed(a.plan, a.metrics)) for a in pool], k)
    return choice
