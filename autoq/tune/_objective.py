"""One worker's objective: build a plan from a trial, measure it, record the result."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.errors import ConfigError
from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints, Metrics
from autoq.tune._config import TuneConfig
from autoq.tune._evaluate import Evaluator, Measured
from autoq.tune._measure import EvalSet, TooSlowError
from autoq.tune._optuna import CONSTRAINTS
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


class Tuner(Search):
    """One worker's view of the study on a real model: builds plans, measures them."""

    def __init__(
        self,
        config: TuneConfig,
        loaded: LoadedModel,
        device: torch.device,
        fingerprint: Fingerprint,
        workdir: Path,
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
        self.space = build_space(config, loaded, device)
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
        self.base_modules = module_components(loaded.pipe)
        base_bytes = sum(weight_bytes(m) for m in self.base_modules.values())
        budget = config.cache_bytes or max(4 * base_bytes, available_memory() // 4)
        self.cache = ComponentCache(loaded.pipe, budget, model_hash=loaded.identity.content_hash)
        self._estimates: dict[tuple[str, str], float] = {}
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

    def ensure_reference(self, study: optuna.Study) -> Metrics:
        """Measure the reference plan on the full evaluation set once per study."""
        self.reference = self.evaluator.ensure_reference(study)
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
        return None

    def reference_twin(self, trial: optuna.Trial) -> tuple[float, float, float]:
        reference = self.reference or self.ensure_reference(trial.study)
        for key, value in self.evaluator.reference_attrs(trial.study).items():
            trial.set_user_attr(key, value)
        self._constrain(trial, reference)
        return _values(reference)

    def measure_trial(self, trial: optuna.Trial, plan: PipelinePlan) -> tuple[float, float, float]:
        """Measure ``plan`` for ``trial`` and record its metrics, images and constraints."""
        import optuna

        started = time.perf_counter()
        folder = self.workdir / "trials" / f"{trial.number:04d}"
        try:
            measured = self.measure(plan, folder, trial.study)
        except TooSlowError as slow:
            # Measured, not estimated: a warm generation was twice the latency limit.
            trial.set_user_attr("pruned", str(slow))
            trial.set_user_attr("outcome", "too_slow")
            raise optuna.TrialPruned(str(slow)) from None
        except Exception as exc:
            from autoq.device import release_memory

            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            trial.set_user_attr("outcome", "error")
            log.warning("trial_failed", trial=trial.number, plan=plan.describe(), error=str(exc))
            release_memory(self.device)
            raise
        metrics = measured.metrics
        for key, value in measured.attrs.items():  # evidence, metrics, images
            trial.set_user_attr(key, value)
        if measured.baseline is not None:
            self._add_baseline(trial.study, *measured.baseline)
        trial.set_user_attr(
            "timing",
            {"trial_s": time.perf_counter() - started, "generation_s": measured.generation_s},
        )
        violations = self._constrain(trial, metrics)
        log.info(
            "trial_done",
            trial=trial.number,
            plan=plan.describe(),
            clip=round(metrics.clip_score, 2),
            latency_s=round(metrics.latency_s, 3),
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
            study, self.space, plan, _values(measured.metrics), constraints, measured.attrs
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
