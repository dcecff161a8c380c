"""One worker's objective: build a plan from a trial, measure it, record the result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.errors import ConfigError
from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints, Metrics
from autoq.tune._budget import Sizing, size_tune
from autoq.tune._config import TuneConfig
from autoq.tune._evaluate import PROBE_IMAGES, Evaluator, Measured
from autoq.tune._measure import EvalSet, TooSlowError
from autoq.tune._optuna import CONSTRAINTS
from autoq.tune._predict import LatencyModel
from autoq.tune._record import StudyRecord, TrialRecord
from autoq.tune._search import Search, add_baseline
from autoq.tune._space import build_space

if TYPE_CHECKING:
    import optuna
    import torch

    from autoq.device import Fingerprint
    from autoq.pipeline import LoadedModel

__all__ = ["Tuner"]

log = get_logger("autoq.tune")

FEW_PROMPTS = 8
"""Below this many prompts in the evaluation set, a tune warns that its intervals are wide."""
MIN_CACHE_BYTES = 512 * 2**20
"""The component cache of a tune holds at least this much, however small the model."""


class Tuner(Search):
    """One worker's view of the study on a real model: builds plans, measures them."""

    def __init__(
        self,
        config: TuneConfig,
        loaded: LoadedModel,
        device: torch.device,
        fingerprint: Fingerprint,
        workdir: Path,
        *,
        screen_budget_s: float | None = None,
        on_screen: Callable[[int, int], None] | None = None,
    ) -> None:
        from autoq.backends import weight_bytes
        from autoq.device import available_memory
        from autoq.pipeline import ComponentCache, module_components

        self.config = config
        self.loaded = loaded
        self.device = device
        self.fingerprint = fingerprint
        self.workdir = workdir
        loaded.pipe.to(device)
        loaded.pipe.set_progress_bar_config(disable=True)
        self.base_modules = module_components(loaded.pipe)
        base_bytes = sum(weight_bytes(m) for m in self.base_modules.values())
        # Built components beside the fp32 pipeline: at most its own size (the tune then
        # holds about twice the model), a quarter of the free memory, and no less than
        # `MIN_CACHE_BYTES` (a small model keeps every variant it built).
        budget = config.cache_bytes or max(
            min(base_bytes, available_memory() // 4), MIN_CACHE_BYTES
        )
        self.cache = ComponentCache(loaded.pipe, budget, model_hash=loaded.identity.content_hash)
        # The screen builds through the cache: what it quantized, the search reuses.
        self.space, self.screened = build_space(
            config,
            loaded,
            device,
            screen_budget_s=screen_budget_s,
            on_screen=on_screen,
            build=self.cache.get,
        )
        prompts = list(config.prompts or loaded.default_prompts or [])
        if not prompts:
            raise ConfigError("This model has no default prompts; pass --prompts FILE.")
        self.evalset = EvalSet.build(prompts, config.n_prompts, config.seed, config.eval_images)
        self.prompts = list(self.evalset.prompts)
        self.seeds = list(self.evalset.seeds)
        if len(self.prompts) < FEW_PROMPTS:
            log.warning(
                "few_prompts",
                prompts=len(self.prompts),
                message=f"quality intervals over {len(self.prompts)} prompts are wide (a 95% "
                f"t interval with {len(self.prompts) - 1} degrees of freedom), so few plans "
                f"can be vouched for; pass at least {FEW_PROMPTS} prompts (--prompts FILE).",
            )
        self.size = (config.height, config.width) if config.height and config.width else None
        self.guidance = (
            config.guidance_scale if config.guidance_scale is not None else loaded.default_guidance
        )
        self.constraints = Constraints(
            max_memory_bytes=config.max_memory_bytes,
            max_latency_s=config.max_latency_s,
            min_clip_score=config.min_clip_score,
            max_clip_drop_pct=config.max_clip_drop_pct,
        )
        self._estimates: dict[tuple[str, str], float] = {}
        # What `size_phases` gave the budget's first phases, and the latency predictor
        # it builds from fp32's measured generation (``None``: not sized yet).
        self.sizing: Sizing | None = None
        self.latency: LatencyModel | None = None
        self.reference: Metrics | None = None
        self.reference_plan = self.space.reference()
        self.evaluator = Evaluator(
            self.cache,
            self.evalset,
            scorer=loaded.scorer,
            device=device,
            guidance_scale=self.guidance,
            workdir=workdir,
            reference_plan=self.reference_plan,
            size=self.size,
            max_batch=config.max_batch,
            memory_limit=config.max_memory_bytes,
        )

    # -- measurement ---------------------------------------------------------------

    def measure(self, plan: PipelinePlan, folder: Path, study: optuna.Study) -> Measured:
        """Screen ``plan`` (see `autoq.tune._evaluate`): its images go to ``folder``.

        Raises:
            TooSlowError: A warm generation already took twice ``--max-latency``.
        """
        limit = self.config.max_latency_s
        return self.evaluator.screen(
            study, plan, folder, give_up_after_s=2 * limit if limit is not None else None
        )

    def size_phases(self, study: optuna.Study, left: float | None) -> Sizing:
        """Size the first phases to the ``left`` seconds of the budget (`size_tune`) from
        what an fp32 generation costs here, and apply it: the screening set, the step
        range (its top is the reference's steps) and the schedulers searched. A study that
        has its reference keeps the screening set and steps it was measured with.

        Raises:
            ConfigError: The budget cannot hold the reference and one plan beside it.
        """
        cost = self.evaluator.fp32_cost()
        log.info("fp32_cost", fixed_s=round(cost.fixed, 3), per_step_s=round(cost.per_step, 3))
        self.latency = LatencyModel(cost, self.screened.fp32_seconds, self.screened.seconds)
        schedulers = sorted(self.space.schedulers, key=lambda s: s != "default")
        sizing = size_tune(
            left,
            cost,
            steps=self.space.step_values(),
            schedulers=schedulers,
            screen_images=self.evalset.screen,
            full_images=self.evalset.full,
            probe_images=PROBE_IMAGES,
            budget_s=self.config.timeout_s,
        )
        record = StudyRecord(study)
        if record.has_reference():  # measured already: keep what it was measured with
            screened = record.screen_images()
            sizing = replace(
                sizing,
                screen_images=screened if screened is not None else self.evalset.screen,
                max_steps=record.reference().plan.steps,
                cuts=tuple(c for c in sizing.cuts if c.startswith("schedulers")),
            )
        low, high = self.space.steps
        self.space = replace(
            self.space,
            steps=(min(low, sizing.max_steps), min(high, sizing.max_steps)),
            schedulers=tuple(s for s in self.space.schedulers if s in sizing.schedulers),
        )
        self.evalset = replace(self.evalset, screen=min(sizing.screen_images, self.evalset.full))
        self.reference_plan = self.space.reference()
        self.evaluator.evalset = self.evalset
        self.evaluator.reference_plan = self.reference_plan
        self.sizing = sizing
        return sizing

    def race_seconds(self) -> float:
        """Expected seconds to race one plan as fast as the reference to the full set
        (its own images and its fp32 baseline's), from the reference's latency."""
        if self.reference is None:
            return 0.0
        missing = max(0, self.evalset.full - self.evalset.screen)
        return 2 * missing * self.reference.latency_s

    def ensure_reference(
        self, study: optuna.Study, progress: Callable[[str, int, int], None] | None = None
    ) -> Metrics:
        """Measure the reference plan once per study: on the images `size_phases` gave it."""
        images = self.sizing.reference_images if self.sizing is not None else None
        self.reference = self.evaluator.ensure_reference(study, images, progress)
        if self.latency is not None:
            self.latency = self.latency.calibrated(
                self.reference.latency_s, self.reference_plan.steps
            )
        return self.reference

    def probe_schedulers(self, study: optuna.Study) -> None:
        """Find which schedulers make the same images at which step counts (`aliases`):
        a plan drawn under one is measured once, under the first."""
        self.aliases = self.evaluator.scheduler_aliases(
            study, self.space.step_values(), self.space.schedulers
        )
        alike = {
            n: {s: a for s, a in aliases.items() if s != a}
            for n, aliases in self.aliases.items()
            if any(s != a for s, a in aliases.items())
        }
        if alike:
            log.info("schedulers_alike", same_images=alike)

    def estimate_weight_bytes(self, plan: PipelinePlan) -> float:
        """Weights of ``plan`` from layer shapes and storage formats, without building it."""
        from autoq.backends import get_precision, targets_for, weight_bytes

        total = 0.0
        for name, precision in plan.precisions.items():
            key = (name, precision)
            if key not in self._estimates:
                module, spec = self.base_modules[name], get_precision(precision)
                targets = targets_for(module, spec)
                if spec.is_float_cast:
                    self._estimates[key] = weight_bytes(module) * spec.weight_bits / 32
                else:
                    weights: list[Any] = [m.weight for _, m in targets]
                    shapes = [tuple(w.shape) for w in weights]
                    full = sum(4 * _numel(s) for s in shapes)
                    packed = sum(spec.expected_bytes(s) for s in shapes)
                    self._estimates[key] = weight_bytes(module) - full + packed
            total += self._estimates[key]
        return total

    # -- the objective ---------------------------------------------------------------

    def _constrain(self, trial: optuna.Trial, metrics: Metrics) -> list[float]:
        reference = self.reference or self.ensure_reference(trial.study)
        violations = self.constraints.violations(metrics, reference.clip_score)
        for key, value in zip(CONSTRAINTS, violations, strict=True):
            trial.set_constraint(key, value)
        return violations

    def component_bytes(self, component: str, precision: str) -> float:
        return self.estimate_weight_bytes(PipelinePlan(precisions={component: precision}, steps=1))

    def over_budget(self, plan: PipelinePlan) -> str | None:
        estimate = self.estimate_weight_bytes(plan)
        budget = self.config.max_memory_bytes
        if budget is not None and estimate > budget:
            return f"estimated weights {estimate / 2**20:.1f} MiB exceed the memory budget"
        limit = self.config.max_latency_s
        predicted = self.predict_latency(plan)
        if limit is not None and predicted is not None and predicted > 2 * limit:
            # The same margin as a measured warm-up (`measure`): far past the limit.
            return f"predicted latency {predicted:.2f} s is over twice --max-latency"
        return None

    def predict_latency(
        self, plan: PipelinePlan, study: optuna.Study | None = None
    ) -> float | None:
        """``plan``'s generation seconds from its components' timings (`LatencyModel`),
        on fp32's measured latency at its steps and scheduler where ``study`` has it;
        ``None`` before `size_phases` or where a part of it was not timed."""
        if self.latency is None:
            return None
        fp32_s = None
        if study is not None:
            fp32_s = self.evaluator.fp32_latency(study, plan.steps, plan.scheduler)
        return self.latency.predict(plan, fp32_s)

    def reference_twin(self, trial: optuna.Trial) -> tuple[float, float, float]:
        reference = self.reference or self.ensure_reference(trial.study)
        TrialRecord(trial).set_result(self.evaluator.reference_result(trial.study))
        self._constrain(trial, reference)
        return _values(reference)

    def measure_trial(self, trial: optuna.Trial, plan: PipelinePlan) -> tuple[float, float, float]:
        """Measure ``plan`` for ``trial`` and record its metrics, images and constraints."""
        import optuna

        started = time.perf_counter()
        record = TrialRecord(trial)
        folder = self.evaluator.folder.trial(trial.number)
        predicted = self.predict_latency(plan, trial.study)
        try:
            measured = self.measure(plan, folder, trial.study)
        except TooSlowError as slow:
            # Measured, not estimated: a warm generation was twice the latency limit.
            record.set_outcome("too_slow", str(slow))
            raise optuna.TrialPruned(str(slow)) from None
        except Exception as exc:
            from autoq.device import release_memory

            record.set_outcome("error", f"{type(exc).__name__}: {exc}"[:500])
            log.warning("trial_failed", trial=trial.number, plan=plan.describe(), error=str(exc))
            release_memory(self.device)
            raise
        result = measured.result
        if predicted is not None:  # in the evidence: the profile keeps it beside latency_s
            update = {"predicted_latency_s": predicted}
            result = result.model_copy(
                update={
                    "evidence": result.evidence.model_copy(update=update),
                    "metrics": result.metrics.model_copy(update=update),
                }
            )
        metrics = result.metrics
        record.set_result(result)
        if measured.baseline is not None:
            self._add_baseline(trial.study, *measured.baseline)
        record.set_timing(time.perf_counter() - started, measured.generation_s)
        violations = self._constrain(trial, metrics)
        log.info(
            "trial_done",
            trial=trial.number,
            plan=plan.describe(),
            clip=round(metrics.clip_score, 2),
            latency_s=round(metrics.latency_s, 3),
            predicted_latency_s=None if predicted is None else round(predicted, 3),
            peak_mib=round(metrics.peak_memory_bytes / 2**20, 1),
            feasible=all(v <= 0 for v in violations),
        )
        return _values(metrics)

    def _add_baseline(self, study: optuna.Study, plan: PipelinePlan, measured: Measured) -> None:
        """fp32 at a screened plan's steps and scheduler, measured as its paired baseline,
        joins the study as a trial (on CPUs fp32 is often the fastest precision)."""
        reference = self.reference or self.ensure_reference(study)
        violations = self.constraints.violations(measured.metrics, reference.clip_score)
        constraints = dict(zip(CONSTRAINTS, violations, strict=True))
        if add_baseline(
            study, self.space, plan, _values(measured.metrics), constraints, measured.result
        ):
            log.info(
                "baseline_added",
                plan=plan.describe(),
                clip=round(measured.metrics.clip_score, 2),
                latency_s=round(measured.metrics.latency_s, 3),
            )


def _values(metrics: Metrics) -> tuple[float, float, float]:
    """The study's objectives: CLIP score, latency s, peak memory MiB."""
    return metrics.clip_score, metrics.latency_s, metrics.peak_memory_bytes / 2**20


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
