"""The evaluation protocol: screen every plan, race the front, measure tiers' step curves.

What a plan changes is measured in two parts. Quantization damage: the plan's images
against fp32's at the *same* steps and scheduler, same prompts and seeds (paired CLIP
difference, PSNR, SSIM). The step/scheduler effect: fp32's CLIP at those steps and
scheduler, generated once per study and kept in it (``fp32:<steps>:<scheduler>``), on as
many images as any plan needed there. A plan's CLIP estimate is their sum.

Images are spent where they decide something: every trial is screened on the first
`EvalSet.screen` images; after the search, the plans that could still be on the feasible
front (not surely dominated, not surely below the quality floor) are extended to the full
set (one racing round). The raced plans and the reference are then timed again side by
side, so that their latencies compare, and only then are tiers chosen. Each chosen tier
is then measured at about half its steps for the runtime's step dial, and timed there
beside its own steps. Under a time budget (`Deadline`) these phases run in that order of
importance (the curves leaving the dial's timing its time) and stop where the budget
ends; a rerun finishes them.

Everything lives in the study (user attributes) and the work folder, so a resumed tune
reuses it and `export_profile` rebuilds the same tiers without measuring.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints, Metrics, StepPoint, TuneConditions
from autoq.quality import Part, clustered_mean, clustered_sum
from autoq.tune._budget import Deadline, StepCost
from autoq.tune._measure import (
    SIDE_BY_SIDE_REPEATS,
    EvalSet,
    Run,
    fidelity,
    generate,
    p90,
    run_images,
    summarize,
    synchronize,
    time_side_by_side,
)
from autoq.tune._tiers import Chosen, select_tiers

if TYPE_CHECKING:
    import optuna
    import torch
    from optuna.trial import FrozenTrial
    from PIL.Image import Image

    from autoq.pipeline import ComponentCache
    from autoq.quality import ClipScorer

__all__ = [
    "DEFAULT_TIER_DROP_PCT",
    "Assessed",
    "Deadline",
    "Evaluator",
    "assess",
    "borderline_corners",
    "choose",
    "choose_among",
    "finalists",
    "tier_constraints",
    "tune_conditions",
]

log = get_logger("autoq.tune")

DEFAULT_TIER_DROP_PCT = 10.0
"""Without a quality limit, tiers keep CLIP within this many percent of the reference
(judged on the paired interval), so the fastest and smallest tiers are still usable."""

RACE_FACTOR = 2
"""Plans extended to the full set after the search: this many per wanted tier."""

RACE = "race"
"""Study attribute: ``{"through": last trial number weighed, "picked": [trial numbers]}``
of the races so far (`Evaluator.race`)."""

SIDE_BY_SIDE = "side_by_side"
"""Study attribute: ``{plan key: {steps: seconds}}`` of the reference and every plan tiers
are chosen from, at its own steps, timed together before the tiers are chosen
(`Evaluator.line_up`)."""

SCHEDULER_ALIASES = "scheduler_aliases"
"""Study attribute: ``{steps: {scheduler: the scheduler that stands for it}}`` for every
step count of the space (`Evaluator.scheduler_aliases`)."""

SAME_IMAGE_PSNR = 70.0
"""PSNR (dB) at or above which two fp32 images are the same image. On the shapes model,
Euler and DDIM (one method, one schedule) differ by rounding at most: 89-100 dB; DPM-Solver++
and Euler, even where both have converged to what looks like one image, by 23-51 dB."""

PROBE_IMAGES = 2
"""Evaluation images compared per scheduler and step count (`Evaluator.scheduler_aliases`)."""

STEP_DIAL = "step_dial_timing"
"""Study attribute: ``{plan key: {steps: seconds}}`` of each tier at its own steps and its
step curve's, timed together (`Evaluator.time_step_dials`). Only their ratios are used:
they scale the tier's `SIDE_BY_SIDE` latency (`Choice.step_dial`)."""


def _plan_key(plan: PipelinePlan) -> str:
    dump = plan.model_dump(mode="json")
    for added in ("execution", "memory"):  # absent at their defaults: older keys still hold
        if not dump[added]:
            del dump[added]
    text = json.dumps(dump, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fp32_key(steps: int, scheduler: str) -> str:
    return f"fp32:{steps}:{scheduler}"


def evalset_of(attrs: dict[str, Any]) -> EvalSet:
    """The evaluation set a study measured on (its user attributes)."""
    prompts = tuple(attrs["prompts"])
    return EvalSet(
        prompts,
        tuple(attrs["seeds"]),
        int(attrs.get("screen", len(prompts))),
        full=int(attrs.get("full", 0)),
    )


def _reference_clip(attrs: dict[str, Any]) -> float:
    return float(attrs["reference"]["metrics"]["clip_score"])


def tier_constraints(constraints: Constraints) -> Constraints:
    """The limits tiers are chosen under: the given ones, plus the default quality floor
    (`DEFAULT_TIER_DROP_PCT`) when no quality limit was given."""
    if constraints.has_quality_floor:
        return constraints
    return constraints.model_copy(update={"max_clip_drop_pct": DEFAULT_TIER_DROP_PCT})


def _save(images: Sequence[Image], folder: Path, start: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images, start):
        image.save(folder / f"{i:03d}.png")


def _load(folder: Path, count: int) -> list[Image] | None:
    from PIL import Image as PILImage

    paths = [folder / f"{i:03d}.png" for i in range(count)]
    if not all(p.is_file() for p in paths):
        return None
    return [PILImage.open(p).convert("RGB") for p in paths]


# -- evidence -> metrics, from the study alone ----------------------------------------------


def trial_evidence(attrs: dict[str, Any], trial: FrozenTrial) -> dict[str, Any] | None:
    """A trial's measured evidence: its screening plus any racing extension."""
    evidence = trial.user_attrs.get("evidence")
    if evidence is None:
        return None
    extension = attrs.get(f"extension:{trial.number}")
    if not extension:
        return dict(evidence)
    merged = dict(evidence)
    for key in ("scores", "seconds", "psnr", "ssim"):
        merged[key] = list(evidence.get(key, [])) + list(extension.get(key, []))
    return merged


def plan_metrics(attrs: dict[str, Any], plan: PipelinePlan, evidence: dict[str, Any]) -> Metrics:
    """`Metrics` of ``plan`` from its evidence and the study's fp32 and reference scores."""
    evalset = evalset_of(attrs)
    scores = evidence["scores"]
    stored = attrs.get(_fp32_key(plan.steps, plan.scheduler), {}).get("scores", [])
    fp32 = stored if len(stored) >= len(scores) else None
    if fp32 is None and not plan.is_fp32:
        raise ValueError(f"No fp32 scores at {plan.steps} steps {plan.scheduler} in the study.")
    reference = attrs["reference"]
    is_reference = PipelinePlan.model_validate(reference["plan"]) == plan
    return summarize(
        evalset,
        scores=scores,
        fp32=fp32,
        reference=None if is_reference else reference["evidence"]["scores"],
        seconds=evidence["seconds"],
        peak_bytes=evidence["peak_bytes"],
        weight_bytes=evidence["weight_bytes"],
        memory_method=evidence["memory_method"],
        psnr=None if is_reference else evidence.get("psnr"),
        ssim=None if is_reference else evidence.get("ssim"),
        build_s=evidence.get("build_s"),
        predicted_latency_s=evidence.get("predicted_latency_s"),
    )


@dataclass
class Assessed:
    """One distinct measured plan of the study: the first trial that measured it."""

    trial: FrozenTrial
    plan: PipelinePlan
    metrics: Metrics
    evidence: dict[str, Any]


def assess(study: optuna.Study) -> list[Assessed]:
    """Every distinct plan the study measured, with metrics from all its evidence."""
    from optuna.trial import TrialState

    attrs = study.user_attrs
    seen: set[str] = set()
    kept = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        evidence = trial_evidence(attrs, trial)
        if evidence is None or "plan" not in trial.user_attrs:
            continue
        plan = PipelinePlan.model_validate(trial.user_attrs["plan"])
        key = _plan_key(plan)
        if key in seen:
            continue
        seen.add(key)
        kept.append(Assessed(trial, plan, plan_metrics(attrs, plan, evidence), evidence))
    return kept


def _meets(constraints: Constraints, metrics: Metrics, reference_clip: float) -> bool:
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
    hopeful = [a for a in assessed if _meets(constraints, _optimistic(a.metrics), reference_clip)]

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
    likely = [a for a in open_ if _meets(constraints, _central(a.metrics), reference_clip)]
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
        if a.metrics.n_images >= full and _meets(constraints, a.metrics, reference_clip)
    ]
    sure = [a for a in raced if _meets(limits, a.metrics, reference_clip)]
    if not sure:
        return []
    unsure = [
        a for a in raced if a not in sure and _meets(limits, _optimistic(a.metrics), reference_clip)
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


@dataclass
class Choice:
    """The tiers a study yields and the floor they were chosen under."""

    tiers: list[Chosen[Assessed]]
    constraints: Constraints
    floor: float | None
    feasible: set[int]
    """Trial numbers of every feasible plan (under the user's own constraints)."""
    timing: dict[str, dict[str, list[float]]] | None = None
    """The side-by-side timings (`SIDE_BY_SIDE`) the tiers were chosen on and the tiers'
    and the reference's latencies come from, when they cover the reference and every
    candidate (else every latency is the plan's own, from its screening)."""
    dial: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """The tiers' step-dial timings (`STEP_DIAL`)."""

    def timed(self, plan: PipelinePlan, metrics: Metrics) -> Metrics:
        """``metrics`` of ``plan`` with its latency from the side-by-side timing, if any."""
        seconds = _side_by_side(self.timing, plan, plan.steps)
        if not seconds:
            return metrics
        return metrics.model_copy(
            update={"latency_s": statistics.median(seconds), "latency_p90_s": p90(seconds)}
        )

    def step_dial(self, plan: PipelinePlan) -> dict[int, list[float]]:
        """``plan``'s timings at its step curve's step counts, on the side-by-side timing's
        scale: timed beside its own steps, and multiplied by how its own steps timed in the
        side-by-side timing over how they timed then (empty when either is missing)."""
        own = _side_by_side(self.timing, plan, plan.steps)
        dial = self.dial.get(_plan_key(plan), {})
        base = dial.get(str(plan.steps))
        if not own or not base:
            return {}
        scale = statistics.median(own) / statistics.median(base)
        return {int(n): [t * scale for t in seconds] for n, seconds in dial.items()}


def _candidates(
    attrs: dict[str, Any], assessed: Sequence[Assessed]
) -> tuple[list[Assessed], Constraints, set[int]]:
    """The plans tiers are chosen from, the limits they meet (the user's plus the default
    floor, or the user's alone when nothing meets both) and every feasible trial number.

    The candidates are the plans raced to the full set whenever there are any (a race the
    time budget or a signal cut short included); before racing, the screened plans."""
    constraints = Constraints.model_validate(attrs["constraints"])
    reference_clip = _reference_clip(attrs)
    ok = [a for a in assessed if _meets(constraints, a.metrics, reference_clip)]
    limits = tier_constraints(constraints)
    floored = [a for a in ok if _meets(limits, a.metrics, reference_clip)]
    if not floored:  # nothing within the default floor: the user's limits alone
        floored, limits = ok, constraints
    full = evalset_of(attrs).full
    pool = [a for a in floored if a.metrics.n_images >= full] or floored
    return pool, limits, {a.trial.number for a in ok}


def choose(study: optuna.Study, k: int) -> Choice:
    """Tiers from the study's evidence: deterministic, so tune and export agree."""
    return choose_among(study.user_attrs, assess(study), k)


def choose_among(attrs: dict[str, Any], assessed: Sequence[Assessed], k: int) -> Choice:
    """`choose` over plans already assessed (``attrs``: the study's user attributes)."""
    pool, limits, feasible = _candidates(attrs, assessed)
    floor = limits.effective_min_clip(_reference_clip(attrs))
    # Latencies timed side by side replace the screening's once they cover the reference
    # and every candidate: timed at different moments, a drifting machine misorders them.
    timing = attrs.get(SIDE_BY_SIDE) or {}
    reference = PipelinePlan.model_validate(attrs["reference"]["plan"])
    lined_up = bool(pool) and all(
        _side_by_side(timing, p, p.steps) for p in [reference, *(a.plan for a in pool)]
    )
    choice = Choice(
        [], limits, floor, feasible, timing if lined_up else None, attrs.get(STEP_DIAL) or {}
    )
    choice.tiers = select_tiers([(a, choice.timed(a.plan, a.metrics)) for a in pool], k)
    return choice


def _side_by_side(
    timing: dict[str, dict[str, list[float]]] | None, plan: PipelinePlan, steps: int
) -> list[float] | None:
    """``plan``'s timings at ``steps`` in ``timing`` (`SIDE_BY_SIDE`), if it was timed so."""
    return (timing or {}).get(_plan_key(plan), {}).get(str(steps))


def _timed_already(stored: dict[str, Any] | None, steps: dict[str, list[int]]) -> bool:
    """Whether ``stored`` timings cover every plan and step count of ``steps``."""
    stored = stored or {}
    return all(
        {str(n) for n in counts} <= set(stored.get(key, {})) for key, counts in steps.items()
    )


def _timing_seconds(
    plans: dict[str, tuple[PipelinePlan, float]], steps: dict[str, list[int]]
) -> float:
    """Expected seconds of `time_side_by_side` over ``plans``: two passes, each a warm-up
    and `SIDE_BY_SIDE_REPEATS` generations per step count (time scaling with steps)."""
    return 2 * sum(
        latency * (1 + SIDE_BY_SIDE_REPEATS * sum(n / plan.steps for n in steps[key]))
        for key, (plan, latency) in plans.items()
    )


def tune_conditions(attrs: dict[str, Any]) -> TuneConditions | None:
    """How busy the machine was while the study measured (from its load samples)."""
    raw = attrs.get("conditions")
    if not raw:
        return None
    samples = raw.get("load", [])
    load = sum(samples) / len(samples) if samples else None
    cpus = int(raw["cpu_count"])
    return TuneConditions(
        torch_threads=int(raw["torch_threads"]),
        cpu_count=cpus,
        load_avg_1m=load,
        busy=load is not None and load > cpus + 0.5,
    )


# -- measuring, with a pipeline ----------------------------------------------------------------


@dataclass
class Measured:
    """A screened plan: its metrics, what to record on the trial, generation seconds."""

    metrics: Metrics
    attrs: dict[str, Any]
    generation_s: float
    baseline: tuple[PipelinePlan, Measured] | None = None
    """fp32 at the plan's steps and scheduler, when this screening measured it first: the
    paired baseline is a plan like any other, so the study gets it as a trial too."""


class Evaluator:
    """Measures plans for one worker of a study; results go to the study and work folder."""

    def __init__(
        self,
        cache: ComponentCache,
        evalset: EvalSet,
        *,
        scorer: ClipScorer,
        device: torch.device,
        guidance_scale: float,
        workdir: Path,
        reference_plan: PipelinePlan,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.cache = cache
        self.evalset = evalset
        self.scorer = scorer
        self.device = device
        self.guidance = guidance_scale
        self.workdir = workdir
        self.reference_plan = reference_plan
        self.size = size

    def _run(
        self,
        plan: PipelinePlan,
        start: int,
        stop: int,
        *,
        track_memory: bool = False,
        give_up_after_s: float | None = None,
        on_image: Callable[[int], None] | None = None,
    ) -> Run:
        from autoq.pipeline import assemble

        return run_images(
            assemble(self.cache, plan),
            self.evalset,
            start,
            stop,
            steps=plan.steps,
            guidance_scale=self.guidance,
            scorer=self.scorer,
            device=self.device,
            size=self.size,
            track_memory=track_memory,
            give_up_after_s=give_up_after_s,
            on_image=on_image,
        )

    def record_conditions(self, study: optuna.Study) -> None:
        """Append the machine's 1-minute load average to the study's samples."""
        import torch

        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
        raw = dict(study.user_attrs.get("conditions") or {})
        load = list(raw.get("load", []))
        if hasattr(os, "getloadavg"):
            load.append(round(os.getloadavg()[0], 2))
        raw.update(torch_threads=torch.get_num_threads(), cpu_count=cpus, load=load[-200:])
        study.set_user_attr("conditions", raw)

    # fp32 at a plan's steps and scheduler

    def scheduler_aliases(
        self, study: optuna.Study, steps: Sequence[int], schedulers: Sequence[str]
    ) -> dict[int, dict[str, str]]:
        """Per step count, the scheduler that stands for each of ``schedulers``: the first
        one whose fp32 images (`_probe`) are the same images.

        Schedulers of different classes and configs can still take the same steps: DDIM
        is Euler's method on the same ODE (Karras et al. 2022), so where their timesteps
        coincide, every plan under one is a plan under the other, and measuring both
        spends trials on identical images. Probed once per study (`SCHEDULER_ALIASES`),
        on `PROBE_IMAGES` images."""
        stored = {int(n): a for n, a in (study.user_attrs.get(SCHEDULER_ALIASES) or {}).items()}
        missing = [n for n in steps if not set(schedulers) <= set(stored.get(n, {}))]
        if len(schedulers) > 1 and missing:
            for n in missing:
                images = {name: self._probe(n, name) for name in schedulers}
                aliases: dict[str, str] = {}
                for name in schedulers:
                    aliases[name] = next(
                        (
                            s
                            for s, a in aliases.items()
                            if a == s and _same(images[s], images[name])
                        ),
                        name,
                    )
                stored[n] = aliases
            study.set_user_attr(SCHEDULER_ALIASES, {str(n): a for n, a in stored.items()})
        return {n: stored.get(n) or {name: name for name in schedulers} for n in steps}

    def _probe(self, steps: int, scheduler: str) -> list[Image]:
        """fp32's first `PROBE_IMAGES` images at ``steps`` and ``scheduler``: the study's
        baseline images where made already, else generated (and not kept)."""
        from autoq.pipeline import assemble

        count = min(PROBE_IMAGES, self.evalset.size)
        made = _load(self._fp32_folder(steps, scheduler), count)
        if made is not None:
            return made
        pipe = assemble(self.cache, self._fp32_plan(steps, scheduler))
        return [
            generate(pipe, *self.evalset.image(i), steps, self.guidance, self.size)
            for i in range(count)
        ]

    def _fp32_plan(self, steps: int, scheduler: str) -> PipelinePlan:
        return self.reference_plan.fp32().model_copy(
            update={"steps": steps, "scheduler": scheduler}
        )

    def _fp32_folder(self, steps: int, scheduler: str) -> Path:
        return self.workdir / "fp32" / f"{steps}-{scheduler}"

    def _store_fp32(
        self, study: optuna.Study, steps: int, scheduler: str, run: Run, start: int
    ) -> None:
        key = _fp32_key(steps, scheduler)
        stored = dict(study.user_attrs.get(key) or {"scores": [], "seconds": []})
        if len(stored["scores"]) != start:
            return  # another worker got there first
        _save(run.images, self._fp32_folder(steps, scheduler), start)
        stored["scores"] = list(stored["scores"]) + run.scores
        stored["seconds"] = list(stored["seconds"]) + run.seconds
        study.set_user_attr(key, stored)

    def fp32(self, study: optuna.Study, steps: int, scheduler: str, count: int) -> list[Image]:
        """fp32's first ``count`` images at ``steps`` and ``scheduler``, generated once per
        study (scores kept in the study, images in the work folder)."""
        key = _fp32_key(steps, scheduler)
        folder = self._fp32_folder(steps, scheduler)
        have = len((study.user_attrs.get(key) or {}).get("scores", []))
        images = _load(folder, min(have, count)) if have else []
        if images is None:  # scores from another machine: regenerate the images here
            run = self._run(self._fp32_plan(steps, scheduler), 0, min(have, count))
            _save(run.images, folder, 0)
            images = run.images
        if have < count:
            run = self._run(self._fp32_plan(steps, scheduler), have, count)
            self._store_fp32(study, steps, scheduler, run, have)
            images = images + run.images
        return images[:count]

    def fp32_cost(self) -> StepCost:
        """What an fp32 generation costs here: a 1-step and a 2-step generation, timed
        after an untimed one (the budget sizes the tune's phases from it)."""
        from autoq.pipeline import assemble

        pipe = assemble(self.cache, self._fp32_plan(1, self.reference_plan.scheduler))
        prompt, seed = self.evalset.image(0)

        def timed(steps: int) -> float:
            began = time.perf_counter()
            generate(pipe, prompt, seed, steps, self.guidance, self.size)
            synchronize(self.device)
            return time.perf_counter() - began

        timed(1)
        return StepCost.from_timings(timed(1), timed(2))

    def ensure_reference(
        self,
        study: optuna.Study,
        images: int | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> Metrics:
        """Measure the reference plan once per study, on the first ``images`` images
        (default: the full set; `extend_reference` measures the rest); ``progress`` is
        told ``("reference", done, images)``."""
        stored = study.user_attrs.get("reference")
        plan = self.reference_plan
        if stored is not None and "evidence" in stored:
            return Metrics.model_validate(stored["metrics"])
        images = min(images or self.evalset.full, self.evalset.full)
        log.info("reference_start", plan=plan.describe(), images=images)
        self.record_conditions(study)
        count = images

        def on_image(done: int) -> None:
            if progress is not None:
                progress("reference", done, count)

        run = self._run(plan, 0, images, track_memory=True, on_image=on_image)
        self._store_fp32(study, plan.steps, plan.scheduler, run, 0)
        evidence = _evidence(run)
        study.set_user_attr(
            "reference",
            {"metrics": {}, "plan": plan.model_dump(mode="json"), "evidence": evidence},
        )
        metrics = plan_metrics(study.user_attrs, plan, evidence)
        study.set_user_attr(
            "reference",
            {
                "metrics": metrics.model_dump(),
                "plan": plan.model_dump(mode="json"),
                "evidence": evidence,
            },
        )
        log.info("reference_done", clip=metrics.quality_text(), latency_s=metrics.latency_s)
        return metrics

    def reference_attrs(self, study: optuna.Study) -> dict[str, Any]:
        """What a trial that drew the reference plan records: the reference's evidence."""
        stored = study.user_attrs["reference"]
        plan = self.reference_plan
        return {
            "evidence": stored["evidence"],
            "metrics": stored["metrics"],
            "images": str(self._fp32_folder(plan.steps, plan.scheduler)),
        }

    def screen(
        self,
        study: optuna.Study,
        plan: PipelinePlan,
        folder: Path,
        give_up_after_s: float | None = None,
    ) -> Measured:
        """Measure ``plan`` on the screening images (and fp32 there, if not yet done).

        Raises:
            TooSlowError: The first timed generation took longer than ``give_up_after_s``.
        """
        self.record_conditions(study)
        n = self.evalset.screen
        run = self._run(plan, 0, n, track_memory=True, give_up_after_s=give_up_after_s)
        baseline = None
        if plan.is_fp32:
            run.psnr, run.ssim = [100.0] * n, [1.0] * n
            self._store_fp32(study, plan.steps, plan.scheduler, run, 0)
        else:
            if not study.user_attrs.get(_fp32_key(plan.steps, plan.scheduler)):
                fp32 = plan.fp32()
                folder_fp32 = self._fp32_folder(plan.steps, plan.scheduler)
                baseline = (fp32, self.screen(study, fp32, folder_fp32))
            base = self.fp32(study, plan.steps, plan.scheduler, n)
            run.psnr, run.ssim = fidelity(run.images, base)
        _save(run.images, folder, 0)
        evidence = _evidence(run)
        metrics = plan_metrics(study.user_attrs, plan, evidence)
        attrs = {"evidence": evidence, "metrics": metrics.model_dump(), "images": str(folder)}
        return Measured(metrics, attrs, run.generation_s, baseline)

    def extend(self, study: optuna.Study, assessed: Assessed, to: int | None = None) -> None:
        """Measure a screened plan on the rest of the full set (racing), or of the first
        ``to`` images."""
        trial, plan = assessed.trial, assessed.plan
        have, full = len(assessed.evidence["scores"]), to or self.evalset.full
        if have >= full:
            return
        if plan.is_fp32:  # its images are the study's fp32 baseline, made once and shared
            images = self.fp32(study, plan.steps, plan.scheduler, full)[have:]
            scores = study.user_attrs[_fp32_key(plan.steps, plan.scheduler)]["scores"]
            # No new timings: the screening timed this plan, the baseline may have been
            # generated by another worker.
            run = Run(images, scores[have:full], seconds=[])
            run.psnr, run.ssim = [100.0] * len(images), [1.0] * len(images)
        else:
            run = self._run(plan, have, full)
            base = self.fp32(study, plan.steps, plan.scheduler, full)[have:]
            run.psnr, run.ssim = fidelity(run.images, base)
        folder = Path(trial.user_attrs.get("images", self.workdir / "trials" / str(trial.number)))
        _save(run.images, folder, have)
        key = f"extension:{trial.number}"
        extension = dict(study.user_attrs.get(key) or {})
        screened = len(trial.user_attrs["evidence"]["scores"])
        if screened + len(extension.get("scores", [])) != have:
            return  # another worker extended this plan meanwhile
        new = {"scores": run.scores, "seconds": run.seconds, "psnr": run.psnr, "ssim": run.ssim}
        study.set_user_attr(key, {k: list(extension.get(k, [])) + v for k, v in new.items()})

    def race(self, study: optuna.Study, tiers: int, deadline: Deadline) -> None:
        """Extend the plans that could still make a tier to the full evaluation set, the
        likeliest first, while ``deadline`` allows.

        Each race weighs the trials measured since the last one (`RACE`: the last trial
        weighed and the plans picked), so a rerun of a finished study races nothing, a
        rerun with more trials races what they brought, and one after a race the budget cut
        short finishes it."""
        attrs = study.user_attrs
        constraints = tier_constraints(Constraints.model_validate(attrs["constraints"]))
        assessed = assess(study)
        full = self.evalset.full
        newest = max((a.trial.number for a in assessed), default=-1)
        state = attrs.get(RACE)
        if state is None:  # a study raced before this record was kept weighed them all
            raced = any(key.startswith("extension:") for key in attrs)
            state = {"through": newest if raced else -1, "picked": []}
        if newest > state["through"]:
            fresh = finalists(
                assessed,
                constraints,
                _reference_clip(attrs),
                RACE_FACTOR * tiers,
                full,
                since=state["through"],
            )
            picked = [*state["picked"], *(a.trial.number for a in fresh)]
            state = {"through": newest, "picked": picked}
            study.set_user_attr(RACE, state)
        by_number = {a.trial.number: a for a in assessed}
        chosen = [  # in the order picked: the likeliest first
            by_number[n]
            for n in state["picked"]
            if n in by_number and by_number[n].metrics.n_images < full
        ]
        log.info("race_start", plans=len(chosen), images=full)
        for plan in deadline.each(
            "racing",
            chosen,
            lambda n: f"racing: {n} of {len(chosen)} plans not raced to {full} images",
            partial(self._extension_seconds, study, to=full),
        ):
            self.extend(study, plan)

    def deepen(self, study: optuna.Study, deadline: Deadline) -> None:
        """Measure the plans of `borderline_corners` (and the reference) on the deep set,
        while ``deadline`` allows."""
        attrs = study.user_attrs
        picks = borderline_corners(
            assess(study),
            Constraints.model_validate(attrs["constraints"]),
            _reference_clip(attrs),
            self.evalset.full,
        )
        # One already on the deep set stays as it came out: a rerun deepens nothing more.
        picks = [a for a in picks if a.metrics.n_images < self.evalset.size]
        if not picks:
            return
        log.info("deepen_start", plans=len(picks), images=self.evalset.size)
        # The reference first: the plans' verdicts on the floor are paired with it.
        steps = [None, *picks]

        def expect(assessed: Assessed | None) -> float:
            if assessed is None:
                plan = self.reference_plan
                return self._fp32_seconds(study, plan.steps, plan.scheduler, self.evalset.size)
            return self._extension_seconds(study, assessed, self.evalset.size)

        for assessed in deadline.each(
            "deep set",
            steps,
            lambda n: f"deep set: {min(n, len(picks))} of {len(picks)} plan(s) not measured",
            expect,
        ):
            if assessed is None:
                self.extend_reference(study, self.evalset.size)
            else:  # extending needs their evidence, not their metrics
                self.extend(study, assessed, to=self.evalset.size)

    @staticmethod
    def fp32_latency(study: optuna.Study, steps: int, scheduler: str) -> float | None:
        """fp32's measured median latency at ``steps`` and ``scheduler`` (its baseline),
        or ``None`` where the study has not timed it."""
        seconds = (study.user_attrs.get(_fp32_key(steps, scheduler)) or {}).get("seconds")
        return statistics.median(seconds) if seconds else None

    def _fp32_seconds(self, study: optuna.Study, steps: int, scheduler: str, to: int) -> float:
        """Expected seconds to take fp32's baseline at ``steps`` to ``to`` images."""
        stored = study.user_attrs.get(_fp32_key(steps, scheduler)) or {}
        missing = max(0, to - len(stored.get("scores", [])))
        if not missing:
            return 0.0
        per_image = self.fp32_latency(study, steps, scheduler)
        if per_image is None:  # the reference's latency, scaled to these steps
            reference = study.user_attrs["reference"]
            seconds = reference["evidence"]["seconds"]
            scaled = steps / int(reference["plan"]["steps"])
            per_image = statistics.median(seconds) * scaled if seconds else 0.0
        return missing * per_image

    def _extension_seconds(self, study: optuna.Study, assessed: Assessed, to: int) -> float:
        """Expected seconds to extend ``assessed`` to ``to`` images: its own images at its
        latency, and fp32's at its steps where the baseline lacks them."""
        plan, have = assessed.plan, assessed.metrics.n_images
        own = 0.0 if plan.is_fp32 else max(0, to - have) * assessed.metrics.latency_s
        return own + self._fp32_seconds(study, plan.steps, plan.scheduler, to)

    def extend_reference(self, study: optuna.Study, count: int) -> None:
        """The reference's scores on the first ``count`` images: the full set when the
        budget measured it on fewer, the deep set (fp32 at its steps: the same images)."""
        stored = study.user_attrs["reference"]
        evidence = dict(stored["evidence"])
        if len(evidence["scores"]) >= count:
            return
        plan = PipelinePlan.model_validate(stored["plan"])
        self.fp32(study, plan.steps, plan.scheduler, count)
        scores = study.user_attrs[_fp32_key(plan.steps, plan.scheduler)]["scores"]
        evidence["scores"] = list(scores[:count])
        metrics = plan_metrics(study.user_attrs, plan, evidence)
        study.set_user_attr(
            "reference", {**stored, "evidence": evidence, "metrics": metrics.model_dump()}
        )

    def finish(self, study: optuna.Study, tiers: int, deadline: Deadline | None = None) -> None:
        """After the search: race the front to the full set, take the borderline corners
        to the deep set, time the raced plans and the reference side by side, choose the
        tiers, measure their step curves and time those beside the tiers' own steps; each
        step only while ``deadline`` allows. Writing the profile afterwards chooses the
        same tiers."""
        deadline = deadline or Deadline()
        evidence = study.user_attrs["reference"]["evidence"]
        have, full = len(evidence["scores"]), self.evalset.full
        if have < full:  # the plans raced to the full set are paired with it there
            expected = statistics.median(evidence["seconds"] or [0.0]) * (full - have)
            if deadline.allows(expected):
                if deadline.progress is not None:
                    deadline.progress("reference", have, full)
                self.extend_reference(study, full)
            else:
                deadline.cut(f"reference: measured on {have} of the full set's {full} images")
        self.race(study, tiers, deadline)
        self.deepen(study, deadline)
        self.line_up(study, deadline)
        choice = choose(study, tiers)
        log.info("steps_curves_start", tiers=len(choice.tiers))
        count = len(choice.tiers)
        # The curves leave the dial's timing what it is expected to take: a dial whose
        # latencies compare with the tiers' comes before a longer one.
        plans, steps = self._dial_work(study.user_attrs, choice, curves_to_come=True)
        done = _timed_already(study.user_attrs.get(STEP_DIAL), steps)
        timing = 0.0 if done else _timing_seconds(plans, steps)
        full = self.evalset.full

        def expect(chosen: Chosen[Assessed]) -> float:  # its first point: half its steps
            plan = chosen.item.plan
            if f"curve:{_plan_key(plan)}:{max(1, round(plan.steps / 2))}" in study.user_attrs:
                return 0.0
            return full * chosen.item.metrics.latency_s / 2

        for chosen in deadline.reserving(timing).each(
            "step curves",
            choice.tiers,
            lambda n: f"step curves: {n} of {count} tiers not measured",
            expect,
        ):
            self.steps_curve(study, chosen, choice.constraints)
        self.time_step_dials(study, choice, deadline)

    def line_up(self, study: optuna.Study, deadline: Deadline) -> None:
        """Time the reference and every plan tiers are chosen from (`_candidates`), at its
        own steps, side by side into `SIDE_BY_SIDE`, while ``deadline`` allows."""
        attrs = study.user_attrs
        pool, _, _ = _candidates(attrs, assess(study))
        if not pool:
            return  # nothing to compare the reference with
        reference = Metrics.model_validate(attrs["reference"]["metrics"])
        plans = {_plan_key(self.reference_plan): (self.reference_plan, reference.latency_s)}
        for a in pool:
            plans.setdefault(_plan_key(a.plan), (a.plan, a.metrics.latency_s))
        steps = {key: [plan.steps] for key, (plan, _) in plans.items()}
        self._time_together(
            study,
            SIDE_BY_SIDE,
            plans,
            steps,
            deadline,
            ("side-by-side timing", "tiers chosen on screening latencies"),
        )

    def time_step_dials(self, study: optuna.Study, choice: Choice, deadline: Deadline) -> None:
        """Time each tier at its own steps and its step curve's, side by side into
        `STEP_DIAL`, while ``deadline`` allows (only onto a side-by-side timing: the dial's
        latencies are scaled to it)."""
        if choice.timing is None:
            return
        plans, steps = self._dial_work(study.user_attrs, choice)
        self._time_together(
            study,
            STEP_DIAL,
            plans,
            steps,
            deadline,
            ("step dial timing", "step-curve latencies from their own runs"),
        )

    def _time_together(
        self,
        study: optuna.Study,
        attr: str,
        plans: dict[str, tuple[PipelinePlan, float]],
        steps: dict[str, list[int]],
        deadline: Deadline,
        phase: tuple[str, str],
    ) -> None:
        """`time_side_by_side` of ``plans`` at their ``steps`` into study attribute
        ``attr``, unless timed there already or ``deadline`` leaves too little time
        (``phase``: its name, and what a cut leaves in its place)."""
        from autoq.pipeline import assemble

        name, instead = phase
        if not plans or _timed_already(study.user_attrs.get(attr), steps):
            return  # timed together already: a resumed tune
        expected = _timing_seconds(plans, steps)
        if not deadline.allows(expected):
            deadline.cut(f"{name} of {len(plans)} plans: {instead}")
            return
        log.info("side_by_side_start", phase=name, plans=len(plans), expected_s=round(expected, 1))
        prompt, seed = self.evalset.image(0)

        def ready(plan: PipelinePlan) -> Callable[[int], None]:
            pipe = assemble(self.cache, plan)

            def run(count: int) -> None:
                generate(pipe, prompt, seed, count, self.guidance, self.size)
                synchronize(self.device)

            return run

        def turn(done: int, total: int) -> None:
            if deadline.progress is not None:
                deadline.progress(name, done, total)

        jobs = [(partial(ready, plan), steps[key]) for key, (plan, _) in plans.items()]
        timings = time_side_by_side(jobs, on_turn=turn)
        study.set_user_attr(
            attr,
            {
                key: {str(n): t for n, t in timed.items()}
                for key, timed in zip(plans, timings, strict=True)
            },
        )

    def _dial_work(
        self, attrs: dict[str, Any], choice: Choice, curves_to_come: bool = False
    ) -> tuple[dict[str, tuple[PipelinePlan, float]], dict[str, list[int]]]:
        """What `time_step_dials` times: the tiers with a step curve by plan key, each with
        its latency so far, and their step counts: its own, then its curve's (with
        ``curves_to_come``, a tier whose curve is not measured yet counts about half and
        three quarters of its steps)."""
        plans, steps = {}, {}
        for chosen in choice.tiers:
            plan = chosen.item.plan
            key = _plan_key(plan)
            curve = sorted(p["steps"] for k, p in attrs.items() if k.startswith(f"curve:{key}:"))
            if not curve and curves_to_come:
                curve = sorted({max(1, round(plan.steps * f)) for f in (0.5, 0.75)} - {plan.steps})
            if curve:
                plans[key] = (plan, chosen.metrics.latency_s)
                steps[key] = [plan.steps, *curve]
        return plans, steps

    def steps_curve(
        self, study: optuna.Study, chosen: Chosen[Assessed], limits: Constraints
    ) -> None:
        """Measure a tier's plan at about half its steps (and three quarters when half
        misses the floor) on the full set; stored as ``curve:<plan>:<steps>``."""
        attrs = study.user_attrs
        plan = chosen.item.plan
        reference = attrs["reference"]["evidence"]["scores"]
        reference_clip = _reference_clip(attrs)
        for steps in sorted({max(1, round(plan.steps / 2)), max(1, round(plan.steps * 3 / 4))}):
            if steps >= plan.steps:
                continue
            key = f"curve:{_plan_key(plan)}:{steps}"
            point = attrs.get(key)
            if point is None:
                run = self._run(plan.model_copy(update={"steps": steps}), 0, self.evalset.full)
                point = {"steps": steps, "scores": run.scores, "seconds": run.seconds}
                study.set_user_attr(key, point)
            if _curve_point_meets(attrs, point, reference, limits, reference_clip):
                break  # fewer steps already meet the floor: three quarters adds nothing


def _same(a: Sequence[Image], b: Sequence[Image]) -> bool:
    psnr, _ = fidelity(a, b)
    return min(psnr) >= SAME_IMAGE_PSNR


def _evidence(run: Run) -> dict[str, Any]:
    return {
        "scores": run.scores,
        "seconds": run.seconds,
        "psnr": run.psnr,
        "ssim": run.ssim,
        "peak_bytes": run.peak_bytes,
        "weight_bytes": run.weight_bytes,
        "memory_method": run.memory_method,
        "build_s": run.build_s,
    }


def _point_metrics(
    attrs: dict[str, Any], point: dict[str, Any], reference: Sequence[float]
) -> tuple[StepPoint, tuple[float, float]]:
    """A step-curve point (direct mean of the plan's own full-set images) and its paired
    change against the reference."""
    import statistics

    evalset = evalset_of(attrs)
    scores = point["scores"]
    own = clustered_mean(scores, evalset.clusters(len(scores)))
    change = clustered_sum(
        [
            Part(scores, evalset.clusters(len(scores))),
            Part([-r for r in reference], evalset.clusters(len(reference))),
        ]
    )
    step = StepPoint(
        steps=point["steps"],
        latency_s=statistics.median(point["seconds"]),
        clip_score=own.estimate,
        clip_ci=(own.low, own.high),
    )
    return step, (change.low, change.high)


def _curve_point_meets(
    attrs: dict[str, Any],
    point: dict[str, Any],
    reference: Sequence[float],
    limits: Constraints,
    reference_clip: float,
) -> bool:
    step, change = _point_metrics(attrs, point, reference)
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
    return limits.quality_shortfall(probe, reference_clip) <= 0


def tier_curve(
    attrs: dict[str, Any],
    chosen: Chosen[Assessed],
    limits: Constraints,
    dial: dict[int, list[float]] | None = None,
) -> tuple[list[StepPoint], int | None]:
    """A tier's step curve (ascending, its own steps included) and its ``min_steps``: the
    fewest measured steps still meeting the quality floor (judged with intervals). With
    ``dial`` (`Choice.step_dial`), the points' latencies come from it."""
    plan, metrics = chosen.item.plan, chosen.metrics
    reference = attrs["reference"]["evidence"]["scores"]
    reference_clip = _reference_clip(attrs)
    points = [
        StepPoint(
            steps=plan.steps,
            latency_s=metrics.latency_s,
            clip_score=metrics.clip_score,
            clip_ci=metrics.clip_ci,
        )
    ]
    min_steps = plan.steps if limits.quality_shortfall(metrics, reference_clip) <= 0 else None
    prefix = f"curve:{_plan_key(plan)}:"
    for key, point in attrs.items():
        if not key.startswith(prefix):
            continue
        seconds = (dial or {}).get(point["steps"])
        if seconds:
            point = {**point, "seconds": seconds}
        step, _ = _point_metrics(attrs, point, reference)
        points.append(step)
        if min_steps is not None and _curve_point_meets(
            attrs, point, reference, limits, reference_clip
        ):
            min_steps = min(min_steps, step.steps)
    points.sort(key=lambda p: p.steps)
    return points, min_steps
