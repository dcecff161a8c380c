"""From a study's evidence to metrics, without measuring: a plan's `Metrics`, every distinct
measured plan (`assess`), a tier's step curve and the machine's conditions.

What a plan changes is measured in two parts. Quantization damage: the plan's images
against fp32's at the *same* steps and scheduler, same prompts and seeds (paired CLIP
difference, PSNR, SSIM). The step/scheduler effect: fp32's CLIP at those steps and
scheduler, generated once per study and kept in it, on as many images as any plan needed
there. A plan's CLIP estimate is their sum. All of it is read from the study record, so a
resumed tune and `autoq profile export` compute the same numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints, Metrics, StepPoint, TuneConditions
from autoq.quality import Part, clustered_mean, clustered_sum
from autoq.tune._measure import EvalSet, Run, summarize
from autoq.tune._record import CurvePoint, Evidence, StudyRecord, StudyView, TrialRecord, plan_key
from autoq.tune._tiers import Chosen

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "Assessed",
    "assess",
    "curve_point_meets",
    "evalset_of",
    "evidence_of",
    "plan_metrics",
    "reference_clip",
    "tier_curve",
    "trial_evidence",
    "tune_conditions",
]


def evalset_of(view: StudyView) -> EvalSet:
    """The evaluation set a study measured on."""
    context = view.context()
    prompts = tuple(context.prompts)
    screen = context.screen if context.screen is not None else len(prompts)
    return EvalSet(prompts, tuple(context.seeds), screen, full=context.full)


def reference_clip(view: StudyView) -> float:
    """The reference plan's CLIP score (the quality floor is relative to it)."""
    metrics = view.reference().metrics
    if metrics is None:
        raise ValueError("The study's reference has no metrics yet.")
    return metrics.clip_score


def evidence_of(run: Run) -> Evidence:
    """What a run of a plan records as its evidence."""
    return Evidence(
        scores=run.scores,
        seconds=run.seconds,
        psnr=run.psnr,
        ssim=run.ssim,
        peak_bytes=run.peak_bytes,
        weight_bytes=run.weight_bytes,
        memory_method=run.memory_method,
        build_s=run.build_s,
    )


def trial_evidence(view: StudyView, trial: FrozenTrial) -> Evidence | None:
    """A trial's measured evidence: its screening plus any racing extension."""
    evidence = TrialRecord(trial).evidence()
    if evidence is None:
        return None
    return evidence.extended(view.extension(trial.number))


def plan_metrics(
    view: StudyView, plan: PipelinePlan, evidence: Evidence, *, is_reference: bool | None = None
) -> Metrics:
    """`Metrics` of ``plan`` from its evidence and the study's fp32 and reference scores
    (``is_reference``: whether ``plan`` is the reference; read from the study if not given).
    """
    evalset = evalset_of(view)
    scores = evidence.scores
    stored = view.fp32(plan.steps, plan.scheduler).scores
    fp32 = stored if len(stored) >= len(scores) else None
    if fp32 is None and not plan.is_fp32:
        raise ValueError(f"No fp32 scores at {plan.steps} steps {plan.scheduler} in the study.")
    if is_reference is None:
        is_reference = view.reference().plan == plan
    return summarize(
        evalset,
        scores=scores,
        fp32=fp32,
        reference=None if is_reference else view.reference().evidence.scores,
        seconds=evidence.seconds,
        peak_bytes=evidence.peak_bytes or 0,
        weight_bytes=evidence.weight_bytes,
        memory_method=evidence.memory_method,
        psnr=None if is_reference else evidence.psnr,
        ssim=None if is_reference else evidence.ssim,
        build_s=evidence.build_s,
        predicted_latency_s=evidence.predicted_latency_s,
    )


@dataclass
class Assessed:
    """One distinct measured plan of the study: the first trial that measured it."""

    trial: FrozenTrial
    plan: PipelinePlan
    metrics: Metrics
    evidence: Evidence


def assess(study: optuna.Study, view: StudyView | None = None) -> list[Assessed]:
    """Every distinct plan the study measured, with metrics from all its evidence
    (``view``: a snapshot of the study's attributes to read them from)."""
    from optuna.trial import TrialState

    view = view or StudyRecord(study).snapshot()
    seen: set[str] = set()
    kept = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        evidence = trial_evidence(view, trial)
        plan = TrialRecord(trial).plan()
        if evidence is None or plan is None:
            continue
        key = plan_key(plan)
        if key in seen:
            continue
        seen.add(key)
        kept.append(Assessed(trial, plan, plan_metrics(view, plan, evidence), evidence))
    return kept


def tune_conditions(view: StudyView) -> TuneConditions | None:
    """How busy the machine was while the study measured (from its load samples)."""
    conditions = view.conditions()
    if conditions is None:
        return None
    samples = conditions.load
    load = sum(samples) / len(samples) if samples else None
    return TuneConditions(
        torch_threads=conditions.torch_threads,
        cpu_count=conditions.cpu_count,
        load_avg_1m=load,
        busy=load is not None and load > conditions.cpu_count + 0.5,
    )


# -- step curves --------------------------------------------------------------------------


def _point_metrics(
    evalset: EvalSet, point: CurvePoint, reference: Sequence[float]
) -> tuple[StepPoint, tuple[float, float]]:
    """A step-curve point (direct mean of the plan's own full-set images) and its paired
    change against the reference."""
    scores = point.scores
    own = clustered_mean(scores, evalset.clusters(len(scores)))
    change = clustered_sum(
        [
            Part(scores, evalset.clusters(len(scores))),
            Part([-r for r in reference], evalset.clusters(len(reference))),
        ]
    )
    step = StepPoint(
        steps=point.steps,
        latency_s=statistics.median(point.seconds),
        clip_score=own.estimate,
        clip_ci=(own.low, own.high),
    )
    return step, (change.low, change.high)


def curve_point_meets(view: StudyView, point: CurvePoint, limits: Constraints) -> bool:
    """Whether a step-curve point meets the quality floor of ``limits`` (with intervals)."""
    reference = view.reference().evidence.scores
    step, change = _point_metrics(evalset_of(view), point, reference)
    probe = Metrics(
        clip_score=step.clip_score,
        clip_score_std=0.0,
        clip_ci=step.clip_ci,
        clip_vs_reference=(change[0] + change[1]) / 2,
        clip_vs_reference_ci=change,
        latency_s=step.latency_s,
        latency_p90_s=step.latency_s,
        peak_memory_bytes=1,
        weight_bytes=1,
        memory_method="",
    )
    return limits.quality_shortfall(probe, reference_clip(view)) <= 0


def tier_curve(
    view: StudyView,
    chosen: Chosen[Assessed],
    limits: Constraints,
    dial: dict[int, list[float]] | None = None,
) -> tuple[list[StepPoint], int | None]:
    """A tier's step curve (ascending, its own steps included) and its ``min_steps``: the
    fewest measured steps still meeting the quality floor (judged with intervals). With
    ``dial`` (`Choice.step_dial`), the points' latencies come from it."""
    plan, metrics = chosen.item.plan, chosen.metrics
    reference = view.reference().evidence.scores
    evalset = evalset_of(view)
    points = [
        StepPoint(
            steps=plan.steps,
            latency_s=metrics.latency_s,
            clip_score=metrics.clip_score,
            clip_ci=metrics.clip_ci,
        )
    ]
    floor_met = limits.quality_shortfall(metrics, reference_clip(view)) <= 0
    min_steps = plan.steps if floor_met else None
    for point in view.curve(plan):
        seconds = (dial or {}).get(point.steps)
        if seconds:
            point = point.model_copy(update={"seconds": seconds})
        step, _ = _point_metrics(evalset, point, reference)
        points.append(step)
        if min_steps is not None and curve_point_meets(view, point, limits):
            min_steps = min(min_steps, step.steps)
    points.sort(key=lambda p: p.steps)
    return points, min_steps
