"""The tune's measuring phases after the search: race the front, go deep, time side by
side, measure the tiers' step curves and time their step dials.

Every trial is screened on the first `EvalSet.screen` images (`Evaluator.screen`); after
the search, the plans that could still be on the feasible front (`finalists`) are
extended to the full set (one racing round). The raced plans and the reference are then
timed again side by side, so that their latencies compare, and only then are tiers chosen
(`choose`). Each chosen tier is then measured at about half its steps for the runtime's
step dial, and timed there beside its own steps. Under a time budget (`Deadline`) these
phases run in that order of importance (the curves leaving the dial's timing its time) and
stop where the budget ends; a rerun finishes them.

Everything lives in the study record (`autoq.tune._record`) and the work folder, so a
resumed tune reuses it and `export_profile` rebuilds the same tiers without measuring.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from autoq._logging import get_logger
from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints, Metrics
from autoq.tune._budget import Deadline, StepCost
from autoq.tune._choice import (
    Choice,
    borderline_corners,
    candidates,
    choose,
    finalists,
    tier_constraints,
)
from autoq.tune._evidence import (
    Assessed,
    assess,
    curve_point_meets,
    evidence_of,
    plan_metrics,
    reference_clip,
)
from autoq.tune._measure import (
    SIDE_BY_SIDE_REPEATS,
    EvalSet,
    Run,
    fidelity,
    generate,
    run_images,
    synchronize,
    time_batch,
    time_side_by_side,
)
from autoq.tune._record import (
    BatchPoint,
    Conditions,
    CurvePoint,
    RaceState,
    Reference,
    Result,
    Samples,
    StudyRecord,
    Timings,
    TrialRecord,
    WorkFolder,
    plan_key,
)
from autoq.tune._tiers import Chosen

if TYPE_CHECKING:
    import optuna
    import torch
    from PIL.Image import Image

    from autoq.pipeline import ComponentCache
    from autoq.quality import ClipScorer

__all__ = ["PROBE_IMAGES", "Evaluator", "Measured"]

log = get_logger("autoq.tune")

RACE_FACTOR = 2
"""Plans extended to the full set after the search: this many per wanted tier."""

SAME_IMAGE_PSNR = 70.0
"""PSNR (dB) at or above which two fp32 images are the same image: schedulers that are one
method on one schedule differ by rounding at most, different methods by far more
(`docs/tuning.md` has the measured spread)."""

PROBE_IMAGES = 2
"""Evaluation images compared per scheduler and step count (`Evaluator.scheduler_aliases`)."""


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


def _timed_already(stored: Timings, steps: dict[str, list[int]]) -> bool:
    """Whether ``stored`` timings cover every plan and step count of ``steps``."""
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


@dataclass
class Measured:
    """A screened plan: what its trial records, and its generation seconds."""

    result: Result
    generation_s: float
    baseline: tuple[PipelinePlan, Measured] | None = None
    """fp32 at the plan's steps and scheduler, when this screening measured it first: the
    paired baseline is a plan like any other, so the study gets it as a trial too."""

    @property
    def metrics(self) -> Metrics:
        return self.result.metrics


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
        max_batch: int = 1,
        memory_limit: int | None = None,
    ) -> None:
        self.cache = cache
        self.max_batch = max_batch
        self.memory_limit = memory_limit
        self.evalset = evalset
        self.scorer = scorer
        self.device = device
        self.guidance = guidance_scale
        self.folder = WorkFolder(workdir)
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
        record = StudyRecord(study)
        stored = record.conditions()
        load = list(stored.load) if stored is not None else []
        if hasattr(os, "getloadavg"):
            load.append(round(os.getloadavg()[0], 2))
        record.set_conditions(
            Conditions(torch_threads=torch.get_num_threads(), cpu_count=cpus, load=load[-200:])
        )

    # fp32 at a plan's steps and scheduler

    def scheduler_aliases(
        self, study: optuna.Study, steps: Sequence[int], schedulers: Sequence[str]
    ) -> dict[int, dict[str, str]]:
        """Per step count, the scheduler that stands for each of ``schedulers``: the first
        one whose fp32 images (`_probe`) are the same images.

        Schedulers of different classes and configs can still take the same steps: DDIM
        is Euler's method on the same ODE (Karras et al. 2022), so where their timesteps
        coincide, every plan under one is a plan under the other, and measuring both
        spends trials on identical images. Probed once per study, on `PROBE_IMAGES`
        images."""
        record = StudyRecord(study)
        stored = record.scheduler_aliases()
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
            record.set_scheduler_aliases(stored)
        return {n: stored.get(n) or {name: name for name in schedulers} for n in steps}

    def _probe(self, steps: int, scheduler: str) -> list[Image]:
        """fp32's first `PROBE_IMAGES` images at ``steps`` and ``scheduler``: the study's
        baseline images where made already, else generated (and not kept)."""
        from autoq.pipeline import assemble

        count = min(PROBE_IMAGES, self.evalset.size)
        made = _load(self.folder.fp32(steps, scheduler), count)
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

    def _store_fp32(
        self, study: optuna.Study, steps: int, scheduler: str, run: Run, start: int
    ) -> None:
        record = StudyRecord(study)
        stored = record.fp32(steps, scheduler)
        if len(stored.scores) != start:
            return  # another worker got there first
        _save(run.images, self.folder.fp32(steps, scheduler), start)
        record.set_fp32(steps, scheduler, stored + Samples(scores=run.scores, seconds=run.seconds))

    def fp32(self, study: optuna.Study, steps: int, scheduler: str, count: int) -> list[Image]:
        """fp32's first ``count`` images at ``steps`` and ``scheduler``, generated once per
        study (scores kept in the study, images in the work folder)."""
        folder = self.folder.fp32(steps, scheduler)
        have = len(StudyRecord(study).fp32(steps, scheduler).scores)
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
        record = StudyRecord(study)
        if record.has_reference():
            stored = record.reference().metrics
            if stored is not None:
                return stored
        plan = self.reference_plan
        images = min(images or self.evalset.full, self.evalset.full)
        log.info("reference_start", plan=plan.describe(), images=images)
        self.record_conditions(study)
        count = images

        def on_image(done: int) -> None:
            if progress is not None:
                progress("reference", done, count)

        run = self._run(plan, 0, images, track_memory=True, on_image=on_image)
        self._store_fp32(study, plan.steps, plan.scheduler, run, 0)
        evidence = evidence_of(run)
        metrics = plan_metrics(record, plan, evidence, is_reference=True)
        record.set_reference(Reference(plan=plan, evidence=evidence, metrics=metrics))
        log.info("reference_done", clip=metrics.quality_text(), latency_s=metrics.latency_s)
        return metrics

    def reference_result(self, study: optuna.Study) -> Result:
        """What a trial that drew the reference plan records: the reference's result."""
        stored = StudyRecord(study).reference()
        assert stored.metrics is not None  # `ensure_reference` ran first
        plan = self.reference_plan
        images = self.folder.fp32(plan.steps, plan.scheduler)
        return Result(evidence=stored.evidence, metrics=stored.metrics, images=str(images))

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
        record = StudyRecord(study)
        self.record_conditions(study)
        n = self.evalset.screen
        run = self._run(plan, 0, n, track_memory=True, give_up_after_s=give_up_after_s)
        baseline = None
        if plan.is_fp32:
            run.psnr, run.ssim = [100.0] * n, [1.0] * n
            self._store_fp32(study, plan.steps, plan.scheduler, run, 0)
        else:
            if not record.fp32(plan.steps, plan.scheduler).scores:
                fp32 = plan.fp32()
                folder_fp32 = self.folder.fp32(plan.steps, plan.scheduler)
                baseline = (fp32, self.screen(study, fp32, folder_fp32))
            base = self.fp32(study, plan.steps, plan.scheduler, n)
            run.psnr, run.ssim = fidelity(run.images, base)
        _save(run.images, folder, 0)
        evidence = evidence_of(run)
        metrics = plan_metrics(record, plan, evidence)
        result = Result(evidence=evidence, metrics=metrics, images=str(folder))
        return Measured(result, run.generation_s, baseline)

    def extend(self, study: optuna.Study, assessed: Assessed, to: int | None = None) -> None:
        """Measure a screened plan on the rest of the full set (racing), or of the first
        ``to`` images."""
        record = StudyRecord(study)
        trial, plan = assessed.trial, assessed.plan
        have, full = len(assessed.evidence.scores), to or self.evalset.full
        if have >= full:
            return
        if plan.is_fp32:  # its images are the study's fp32 baseline, made once and shared
            images = self.fp32(study, plan.steps, plan.scheduler, full)[have:]
            scores = record.fp32(plan.steps, plan.scheduler).scores
            # No new timings: the screening timed this plan, the baseline may have been
            # generated by another worker.
            run = Run(images, scores[have:full], seconds=[])
            run.psnr, run.ssim = [100.0] * len(images), [1.0] * len(images)
        else:
            run = self._run(plan, have, full)
            base = self.fp32(study, plan.steps, plan.scheduler, full)[have:]
            run.psnr, run.ssim = fidelity(run.images, base)
        folder = TrialRecord(trial).images() or self.folder.trial(trial.number)
        _save(run.images, folder, have)
        extension = record.extension(trial.number) or Samples()
        own = TrialRecord(trial).evidence()
        screened = len(own.scores) if own is not None else 0
        if screened + len(extension.scores) != have:
            return  # another worker extended this plan meanwhile
        new = Samples(scores=run.scores, seconds=run.seconds, psnr=run.psnr, ssim=run.ssim)
        record.set_extension(trial.number, extension + new)

    def race(self, study: optuna.Study, tiers: int, deadline: Deadline) -> None:
        """Extend the plans that could still make a tier to the full evaluation set, the
        likeliest first, while ``deadline`` allows.

        Each race weighs the trials measured since the last one (the last trial weighed
        and the plans picked), so a rerun of a finished study races nothing, a rerun with
        more trials races what they brought, and one after a race the budget cut short
        finishes it."""
        record = StudyRecord(study)
        view = record.snapshot()
        constraints = tier_constraints(view.context().constraints)
        assessed = assess(study, view)
        full = self.evalset.full
        newest = max((a.trial.number for a in assessed), default=-1)
        state = view.race()
        if state is None:  # a study raced before this record was kept weighed them all
            state = RaceState(through=newest if view.raced_any() else -1)
        if newest > state.through:
            fresh = finalists(
                assessed,
                constraints,
                reference_clip(view),
                RACE_FACTOR * tiers,
                full,
                since=state.through,
            )
            state = RaceState(
                through=newest, picked=[*state.picked, *(a.trial.number for a in fresh)]
            )
            record.set_race(state)
        by_number = {a.trial.number: a for a in assessed}
        chosen = [  # in the order picked: the likeliest first
            by_number[n]
            for n in state.picked
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
        view = StudyRecord(study).snapshot()
        picks = borderline_corners(
            assess(study, view),
            view.context().constraints,
            reference_clip(view),
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
        seconds = StudyRecord(study).fp32(steps, scheduler).seconds
        return statistics.median(seconds) if seconds else None

    def _fp32_seconds(self, study: optuna.Study, steps: int, scheduler: str, to: int) -> float:
        """Expected seconds to take fp32's baseline at ``steps`` to ``to`` images."""
        record = StudyRecord(study)
        missing = max(0, to - len(record.fp32(steps, scheduler).scores))
        if not missing:
            return 0.0
        per_image = self.fp32_latency(study, steps, scheduler)
        if per_image is None:  # the reference's latency, scaled to these steps
            reference = record.reference()
            seconds = reference.evidence.seconds
            scaled = steps / reference.plan.steps
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
        record = StudyRecord(study)
        stored = record.reference()
        if len(stored.evidence.scores) >= count:
            return
        plan = stored.plan
        self.fp32(study, plan.steps, plan.scheduler, count)
        scores = record.fp32(plan.steps, plan.scheduler).scores
        evidence = stored.evidence.model_copy(update={"scores": list(scores[:count])})
        metrics = plan_metrics(record, plan, evidence, is_reference=True)
        record.set_reference(stored.model_copy(update={"evidence": evidence, "metrics": metrics}))

    def finish(self, study: optuna.Study, tiers: int, deadline: Deadline | None = None) -> None:
        """After the search: race the front to the full set, take the borderline corners
        to the deep set, time the raced plans and the reference side by side, choose the
        tiers, measure their step curves and time those beside the tiers' own steps; each
        step only while ``deadline`` allows. Writing the profile afterwards chooses the
        same tiers."""
        deadline = deadline or Deadline()
        record = StudyRecord(study)
        evidence = record.reference().evidence
        have, full = len(evidence.scores), self.evalset.full
        if have < full:  # the plans raced to the full set are paired with it there
            expected = statistics.median(evidence.seconds or [0.0]) * (full - have)
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
        view = record.snapshot()
        plans, steps = self._dial_work(view.curve, choice, curves_to_come=True)
        timing = 0.0 if _timed_already(view.step_dial(), steps) else _timing_seconds(plans, steps)

        def expect(chosen: Chosen[Assessed]) -> float:  # its first point: half its steps
            plan = chosen.item.plan
            if record.curve_point(plan, max(1, round(plan.steps / 2))) is not None:
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
        self.batch_curves(study, choice, deadline)

    def batch_curves(self, study: optuna.Study, choice: Choice, deadline: Deadline) -> None:
        """Time each tier's plan as one call of 1, 2, 4, ... prompts (each its own seed) up
        to ``max_batch``, with each call's peak memory, into the study's batch curves; a
        size is measured while the peak predicted from the last one fits the memory
        limit (the tune's, else the device's) and ``deadline`` allows. A tier's sizes are
        timed in one run, so their ratios hold whatever else the machine did before. A
        size that fails (an executor that cannot take the new shape) ends that tier's
        curve with a warning; the tiers stand without it."""
        sizes = [1 << i for i in range(self.max_batch.bit_length()) if 1 << i <= self.max_batch]
        if len(sizes) < 2:
            return
        record = StudyRecord(study)
        limit = self.memory_limit or _device_memory(self.device)
        for done, chosen in enumerate(choice.tiers):
            plan, metrics = chosen.item.plan, chosen.metrics
            measured = {p.batch: p for p in record.batch_curve(plan)}
            last: BatchPoint | None = None
            for batch in sizes:
                point = measured.get(batch)
                if point is None:
                    if last is not None:
                        activations = (last.peak_bytes - metrics.weight_bytes) / last.batch
                        if metrics.weight_bytes + activations * batch > limit:
                            break  # the next size would not fit: the curve ends here
                    expected = metrics.latency_s * batch * 1.5 + (metrics.build_s or 0.0)
                    if not deadline.allows(expected):
                        deadline.cut(
                            f"batch curves: {len(choice.tiers) - done} of "
                            f"{len(choice.tiers)} tiers not measured past batch "
                            f"{last.batch if last else 0}"
                        )
                        return
                    if deadline.progress is not None:
                        deadline.progress("batch curves", done, len(choice.tiers))
                    try:
                        point = self._time_batch(plan, batch)
                    except Exception as exc:  # a curve is extra: the tiers stand without it
                        log.warning(
                            "batch_curve_failed", plan=plan.describe(), batch=batch,
                            error=f"{type(exc).__name__}: {str(exc)[:300]}",
                        )  # fmt: skip
                        break
                    record.set_batch_point(plan, point)
                last = point
                if point.peak_bytes > limit:
                    break

    def _time_batch(self, plan: PipelinePlan, batch: int) -> BatchPoint:
        """One call of ``batch`` images of ``plan`` (`time_batch`)."""
        from autoq.pipeline import assemble

        images = [self.evalset.image(i % self.evalset.size) for i in range(batch)]
        seconds, peak = time_batch(
            assemble(self.cache, plan), images, plan.steps, self.guidance, self.size, self.device
        )
        log.info("batch_timed", plan=plan.describe(), batch=batch, seconds=round(seconds, 3))
        return BatchPoint(batch=batch, seconds=seconds, peak_bytes=peak)

    def line_up(self, study: optuna.Study, deadline: Deadline) -> None:
        """Time the reference and every plan tiers are chosen from (`candidates`), at its
        own steps, side by side, while ``deadline`` allows."""
        record = StudyRecord(study)
        view = record.snapshot()
        pool, _, _ = candidates(view, assess(study, view))
        if not pool:
            return  # nothing to compare the reference with
        reference = view.reference().metrics
        assert reference is not None  # `ensure_reference` ran first
        plans = {plan_key(self.reference_plan): (self.reference_plan, reference.latency_s)}
        for a in pool:
            plans.setdefault(plan_key(a.plan), (a.plan, a.metrics.latency_s))
        steps = {key: [plan.steps] for key, (plan, _) in plans.items()}
        if _timed_already(view.side_by_side(), steps):
            return  # timed together already: a resumed tune
        timings = self._time_together(
            plans,
            steps,
            deadline,
            ("side-by-side timing", "tiers chosen on screening latencies"),
        )
        if timings is not None:
            record.set_side_by_side(timings)

    def time_step_dials(self, study: optuna.Study, choice: Choice, deadline: Deadline) -> None:
        """Time each tier at its own steps and its step curve's, side by side, while
        ``deadline`` allows (only onto a side-by-side timing: the dial's latencies are
        scaled to it)."""
        if choice.timing is None:
            return
        record = StudyRecord(study)
        view = record.snapshot()
        plans, steps = self._dial_work(view.curve, choice)
        if not plans or _timed_already(view.step_dial(), steps):
            return  # timed together already: a resumed tune
        timings = self._time_together(
            plans,
            steps,
            deadline,
            ("step dial timing", "step-curve latencies from their own runs"),
        )
        if timings is not None:
            record.set_step_dial(timings)

    def _time_together(
        self,
        plans: dict[str, tuple[PipelinePlan, float]],
        steps: dict[str, list[int]],
        deadline: Deadline,
        phase: tuple[str, str],
    ) -> Timings | None:
        """`time_side_by_side` of ``plans`` at their ``steps``, unless ``deadline`` leaves
        too little time (``phase``: its name, and what a cut leaves in its place)."""
        from autoq.pipeline import assemble

        name, instead = phase
        expected = _timing_seconds(plans, steps)
        if not deadline.allows(expected):
            deadline.cut(f"{name} of {len(plans)} plans: {instead}")
            return None
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
        return {
            key: {str(n): t for n, t in timed.items()}
            for key, timed in zip(plans, timings, strict=True)
        }

    @staticmethod
    def _dial_work(
        curve: Callable[[PipelinePlan], list[CurvePoint]],
        choice: Choice,
        curves_to_come: bool = False,
    ) -> tuple[dict[str, tuple[PipelinePlan, float]], dict[str, list[int]]]:
        """What `time_step_dials` times: the tiers with a step curve (``curve``: its points
        so far) by plan key, each with its latency so far, and their step counts: its own,
        then its curve's (with ``curves_to_come``, a tier whose curve is not measured yet
        counts about half and three quarters of its steps)."""
        plans, steps = {}, {}
        for chosen in choice.tiers:
            plan = chosen.item.plan
            counts = sorted(p.steps for p in curve(plan))
            if not counts and curves_to_come:
                counts = sorted({max(1, round(plan.steps * f)) for f in (0.5, 0.75)} - {plan.steps})
            if counts:
                key = plan_key(plan)
                plans[key] = (plan, chosen.metrics.latency_s)
                steps[key] = [plan.steps, *counts]
        return plans, steps

    def steps_curve(
        self, study: optuna.Study, chosen: Chosen[Assessed], limits: Constraints
    ) -> None:
        """Measure a tier's plan at about half its steps (and three quarters when half
        misses the floor) on the full set, into the study's step curves."""
        record = StudyRecord(study)
        plan = chosen.item.plan
        for steps in sorted({max(1, round(plan.steps / 2)), max(1, round(plan.steps * 3 / 4))}):
            if steps >= plan.steps:
                continue
            point = record.curve_point(plan, steps)
            if point is None:
                run = self._run(plan.model_copy(update={"steps": steps}), 0, self.evalset.full)
                point = CurvePoint(steps=steps, scores=run.scores, seconds=run.seconds)
                record.set_curve_point(plan, point)
            if curve_point_meets(record, point, limits):
                break  # fewer steps already meet the floor: three quarters adds nothing


def _same(a: Sequence[Image], b: Sequence[Image]) -> bool:
    psnr, _ = fidelity(a, b)
    return min(psnr) >= SAME_IMAGE_PSNR


def _device_memory(device: torch.device) -> int:
    """What a generation on ``device`` may use at most: the GPU's memory, or the memory
    this process may have (its cgroup limit, else the host's)."""
    import psutil
    import torch

    from autoq.device import effective_memory_limit

    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return effective_memory_limit() or int(psutil.virtual_memory().total)
