"""`tune`: the Optuna study behind `autoq tune`, and the profile written from it."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from autoq._logging import get_logger
from autoq.errors import ConfigError
from autoq.pipeline import PipelinePlan
from autoq.profile import (
    Constraints,
    Metrics,
    ModelIdentity,
    Profile,
    StudyInfo,
    Tier,
    TrialPoint,
    write_profile,
)
from autoq.tune._config import TuneConfig
from autoq.tune._measure import TooSlowError
from autoq.tune._space import SearchSpace
from autoq.tune._tiers import feasible, select_tiers, tier_names, trial_metrics

if TYPE_CHECKING:
    import optuna
    import torch
    from PIL.Image import Image

    from autoq.device import Fingerprint
    from autoq.pipeline import LoadedModel

__all__ = ["TuneResult", "export_profile", "tune"]

log = get_logger("autoq.tune")

# CLIP score, latency s, peak memory MiB
DIRECTIONS: list[Literal["minimize", "maximize"]] = ["maximize", "minimize", "minimize"]
CONSTRAINTS = ("memory", "latency", "quality")  # Trial.set_constraint keys, <= 0 is feasible


class TuneResult:
    """What a tune produced: the profile file and its parsed content."""

    def __init__(self, path: Path, profile: Profile, interrupted: bool) -> None:
        self.path = path
        self.profile = profile
        self.interrupted = interrupted


def _space(config: TuneConfig, loaded: LoadedModel, device: torch.device) -> SearchSpace:
    from autoq.backends import available_precisions
    from autoq.pipeline import compatible_schedulers, module_components, screen
    from autoq.tune._space import PROTECT_GROUPS

    usable = available_precisions(device)
    wanted = list(config.precisions) if config.precisions else usable
    unusable = [p for p in wanted if p not in usable]
    if unusable:
        raise ConfigError(
            f"Precision(s) {unusable} are not usable on {device}; "
            "`autoq backends` lists the usable ones and why the others are not."
        )
    options = tuple(p for p in usable if p in wanted)
    schedulers = compatible_schedulers(loaded.pipe)
    if config.schedulers:
        bad = [s for s in config.schedulers if s not in schedulers]
        if bad:
            raise ConfigError(f"Scheduler(s) {bad} do not fit this model; valid: {schedulers}.")
        schedulers = list(config.schedulers)
    # The compatibility screen: every pairing the search may draw runs once on real inputs
    # first; what fails, or strays past its precision's bound, never reaches a trial.
    prompts = config.prompts or loaded.default_prompts or ["a photo"]
    screened = screen(
        loaded.pipe,
        dict.fromkeys(module_components(loaded.pipe), options),
        [(), PROTECT_GROUPS] if config.protect else [()],
        prompt=prompts[0],
        guidance_scale=(
            config.guidance_scale if config.guidance_scale is not None else loaded.default_guidance
        ),
        model_hash=loaded.identity.content_hash,
    )
    for out in screened.dropped:
        log.warning(
            "screened_out",
            component=out.component,
            precision=out.precision,
            protect=list(out.protect),
            reason=out.reason,
        )
    return SearchSpace(
        precisions=screened.kept,
        steps=config.steps or (10, 30),
        step_size=config.step_size,
        schedulers=tuple(schedulers),
        protect=config.protect,
    )


def _sampler(config: TuneConfig, space: SearchSpace) -> optuna.samplers.BaseSampler:
    import optuna

    # Constraints reach NSGA-II and TPE through `Trial.set_constraint` in the objective.
    if config.sampler == "nsga2":
        # A population sized to the budget, so short tunes still evolve a few generations.
        population = max(8, min(50, config.trials // 4))
        return optuna.samplers.NSGAIISampler(seed=config.seed, population_size=population)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=config.seed, multivariate=True)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    return optuna.samplers.GridSampler(space.grid(), seed=config.seed)


def _storage(config: TuneConfig, stem: str) -> str:
    if config.storage:
        return config.storage
    config.profiles_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(config.profiles_dir / f'{stem}.optuna.db').resolve()}"


def _open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage; a missing database driver or server becomes a clear error."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except ImportError:
        raise ConfigError(
            f"No database driver for {_redact(url)}; for PostgreSQL "
            "`pip install 'autoq[postgres]'` (psycopg)."
        ) from None
    except Exception as exc:  # sqlalchemy: bad URL, unreachable server, auth
        raise ConfigError(f"Cannot open study storage {_redact(url)}: {exc}") from None


def _save_images(images: list[Image], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i:02d}.png")


def _load_images(folder: Path, count: int) -> list[Image] | None:
    from PIL import Image as PILImage

    paths = [folder / f"{i:02d}.png" for i in range(count)]
    if not all(p.is_file() for p in paths):
        return None
    return [PILImage.open(p).convert("RGB") for p in paths]


class _Tuner:
    """One worker's view of the study: builds plans, measures them, records results."""

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
        self.space = _space(config, loaded, device)
        prompts = list(config.prompts or loaded.default_prompts or [])
        if not prompts:
            raise ConfigError("This model has no default prompts; pass --prompts FILE.")
        self.prompts = prompts[: config.n_prompts]
        self.seeds = [config.seed + i for i in range(len(self.prompts))]
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
        self.reference_images: list[Image] | None = None

    # -- measurement ---------------------------------------------------------------

    def measure(
        self, plan: PipelinePlan, reference: list[Image] | None
    ) -> tuple[Metrics, list[Image], float]:
        from autoq.pipeline import assemble
        from autoq.tune._measure import measure_pipeline

        pipe = assemble(self.cache, plan)
        limit = self.config.max_latency_s
        return measure_pipeline(
            pipe,
            give_up_after_s=2 * limit if limit is not None and reference is not None else None,
            prompts=self.prompts,
            seeds=self.seeds,
            steps=plan.steps,
            guidance_scale=self.guidance,
            scorer=self.loaded.scorer,
            device=self.device,
            reference=reference,
        )

    def ensure_reference(self, study: optuna.Study) -> Metrics:
        """Measure the reference plan once per study; later runs reuse it and its images."""
        folder = self.workdir / "reference"
        stored = study.user_attrs.get("reference")
        images = _load_images(folder, len(self.prompts))
        if stored is not None and images is not None:
            self.reference = Metrics.model_validate(stored["metrics"])
            self.reference_images = images
            return self.reference
        log.info("reference_start", plan=self.reference_plan.describe())
        metrics, images, _ = self.measure(self.reference_plan, None)
        _save_images(images, folder)
        study.set_user_attr(
            "reference",
            {"metrics": metrics.model_dump(), "plan": self.reference_plan.model_dump(mode="json")},
        )
        self.reference, self.reference_images = metrics, images
        log.info("reference_done", **metrics.model_dump())
        return metrics

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

    def objective(self, trial: optuna.Trial) -> tuple[float, float, float]:
        import optuna

        started = time.perf_counter()
        plan = self.space.suggest(trial)
        plan_json = plan.model_dump(mode="json")
        trial.set_user_attr("plan", plan_json)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        same = _measured_twin(trial.study, plan_json)
        if same is not None:  # a sampler may propose a plan again: reuse, don't re-measure
            for key in ("metrics", "images"):
                trial.set_user_attr(key, same.user_attrs[key])
            trial.set_user_attr("twin_of", same.number)
            self._constrain(trial, Metrics.model_validate(same.user_attrs["metrics"]))
            clip, latency, memory = same.values
            return clip, latency, memory
        estimate = self.estimate_weight_bytes(plan)
        budget = self.config.max_memory_bytes
        if budget is not None and estimate > budget:
            reason = f"estimated weights {estimate / 2**20:.1f} MiB exceed the memory budget"
            trial.set_user_attr("pruned", reason)
            raise optuna.TrialPruned(reason)
        try:
            metrics, images, generation_s = self.measure(plan, self.reference_images)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except TooSlowError as slow:
            # Measured, not estimated: the warm-up alone was twice the latency limit.
            trial.set_user_attr("pruned", str(slow))
            raise optuna.TrialPruned(str(slow)) from None
        except Exception as exc:
            from autoq.device import release_memory

            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            log.warning("trial_failed", trial=trial.number, plan=plan.describe(), error=str(exc))
            release_memory(self.device)
            raise
        folder = self.workdir / "trials" / f"{trial.number:04d}"
        _save_images(images, folder)
        trial.set_user_attr("metrics", metrics.model_dump())
        trial.set_user_attr("images", str(folder))
        trial.set_user_attr(
            "timing", {"trial_s": time.perf_counter() - started, "generation_s": generation_s}
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
        return metrics.clip_score, metrics.latency_s, metrics.peak_memory_bytes / 2**20


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _measured_twin(
    study: optuna.Study, plan_json: dict[str, Any]
) -> optuna.trial.FrozenTrial | None:
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.user_attrs.get("plan") == plan_json and "metrics" in other.user_attrs:
            return other
    return None


def _counted(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: everything finished except interruptions."""
    from optuna.trial import TrialState

    done = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    return sum(1 for t in done if not t.user_attrs.get("interrupted"))


def _study_context(tuner: _Tuner) -> dict[str, Any]:
    """Everything `export_profile` needs to write a profile from the study alone."""
    config = tuner.config
    return {
        "fingerprint": tuner.fingerprint.model_dump(mode="json"),
        "model": tuner.loaded.identity.model_dump(),
        "constraints": tuner.constraints.model_dump(),
        "prompts": tuner.prompts,
        "seeds": tuner.seeds,
        "guidance_scale": tuner.guidance,
        "tiers": config.tiers,
        "sampler": config.sampler,
        "seed": config.seed,
        "workdir": str(tuner.workdir.resolve()),
    }


def tune(
    config: TuneConfig,
    *,
    on_trial: Callable[[int, int, float | None], None] | None = None,
) -> TuneResult:
    """Search per-component precision, steps and scheduler; write a profile of tiers.

    Re-running the same config resumes the study; Ctrl-C stops after writing the profile
    from the trials done so far (the study stays resumable).

    Args:
        config: What to tune and under which constraints.
        on_trial: Progress callback ``(trials counted, trials wanted, best feasible CLIP)``.

    Returns:
        The profile's path and content.

    Raises:
        ConfigError: Bad input, or no trial met the constraints.
        ModelNotFoundError: The model or scorer cannot be loaded offline.
    """
    import optuna

    from autoq.backends import cache_dir
    from autoq.backends._quiet import silence_libraries
    from autoq.device import fingerprint, resolve_device
    from autoq.pipeline import load_model

    silence_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    device = resolve_device(config.device)
    loaded = load_model(config.model, config.scorer)
    device_fingerprint = fingerprint(bench=False)
    stem = f"{loaded.slug}-{device_fingerprint.fingerprint_id}"
    study_name = config.study_name or stem
    storage = _storage(config, stem)
    # Per-trial images are working files: they live in the cache (not beside profiles),
    # one folder per study, so studies that share a name in other storages never mix.
    digest = hashlib.sha256(f"{storage}|{study_name}".encode()).hexdigest()[:10]
    workdir = cache_dir() / "tune" / f"{study_name}-{digest}"
    tuner = _Tuner(config, loaded, device, device_fingerprint, workdir)
    study = optuna.create_study(
        storage=_open_storage(storage),
        study_name=study_name,
        directions=DIRECTIONS,
        sampler=_sampler(config, tuner.space),
        load_if_exists=True,
    )
    for key, value in _study_context(tuner).items():
        study.set_user_attr(key, value)
    if on_trial is not None:  # the model loaded: report before the (long) reference run
        on_trial(_counted(study), config.trials, None)
    tuner.ensure_reference(study)
    log.info(
        "tune_start",
        study=study_name,
        storage=_redact(storage),
        done=_counted(study),
        wanted=config.trials,
    )

    def progress(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            best = _best_feasible_clip(study, tuner)
            on_trial(_counted(study), config.trials, best)

    interrupted = False
    remaining = config.trials - _counted(study)
    if on_trial is not None:
        on_trial(_counted(study), config.trials, _best_feasible_clip(study, tuner))
    if remaining > 0:
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        try:
            study.optimize(
                tuner.objective,
                n_trials=remaining,
                timeout=config.timeout_s,
                catch=(Exception,),
                callbacks=[
                    progress,
                    # Stops every worker of a shared study at the wanted total; failures
                    # are bounded per worker by n_trials instead, since an interrupted
                    # trial (also FAIL) must be redone.
                    MaxTrialsCallback(
                        config.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)
                    ),
                ],
                gc_after_trial=True,
            )
        except KeyboardInterrupt:
            interrupted = True
            log.warning("tune_interrupted", done=_counted(study))
    path, profile = _write(study, storage, tuner.workdir, config.profiles_dir / f"{stem}.json")
    log.info("profile_written", path=str(path), tiers=[t.name for t in profile.tiers])
    return TuneResult(path, profile, interrupted)


def _best_feasible_clip(study: optuna.Study, tuner: _Tuner) -> float | None:
    if tuner.reference is None:
        return None
    ok = feasible(study.get_trials(deepcopy=False), tuner.constraints, tuner.reference.clip_score)
    return max((m.clip_score for _, m in ok), default=None)


def _redact(url: str) -> str:
    """A storage URL without its password."""
    import re

    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


def _write(study: optuna.Study, storage: str, workdir: Path, path: Path) -> tuple[Path, Profile]:
    from optuna.trial import TrialState

    from autoq._version import __version__
    from autoq.device import Fingerprint

    attrs = study.user_attrs
    if "reference" not in attrs or "fingerprint" not in attrs:
        raise ConfigError(
            f"Study {study.study_name!r} has no reference measurement yet; "
            "run `autoq tune` against it first."
        )
    constraints = Constraints.model_validate(attrs["constraints"])
    reference_metrics = Metrics.model_validate(attrs["reference"]["metrics"])
    trials = study.get_trials(deepcopy=False)
    chosen = select_tiers(
        feasible(trials, constraints, reference_metrics.clip_score), attrs["tiers"]
    )
    if not chosen:
        states = {s.name: sum(1 for t in trials if t.state == s) for s in TrialState}
        raise ConfigError(
            f"No trial of study {study.study_name!r} meets the constraints "
            f"(trials by state: {states}); relax --max-memory / --max-latency / "
            "--min-clip-score, or run more --trials."
        )
    profile_dir = path.with_suffix("")
    tiers = []
    for name, (trial, metrics) in zip(tier_names(len(chosen)), chosen, strict=True):
        samples = _copy_samples(
            Path(trial.user_attrs.get("images", "")), profile_dir / "tiers" / name
        )
        tiers.append(
            Tier(
                name=name,
                plan=PipelinePlan.model_validate(trial.user_attrs["plan"]),
                metrics=metrics,
                trial=trial.number,
                samples=[str(p.relative_to(path.parent)) for p in samples],
            )
        )
    reference_samples = _copy_samples(workdir / "reference", profile_dir / "reference")
    ok = {t.number for t, _ in feasible(trials, constraints, reference_metrics.clip_score)}
    points = [
        TrialPoint(
            number=t.number,
            clip_score=m.clip_score,
            latency_s=m.latency_s,
            peak_memory_bytes=m.peak_memory_bytes,
            feasible=t.number in ok,
        )
        for t in trials
        if t.state == TrialState.COMPLETE and (m := trial_metrics(t)) is not None
    ]
    profile = Profile(
        autoq_version=__version__,
        created=datetime.now(timezone.utc),
        fingerprint=Fingerprint.model_validate(attrs["fingerprint"]),
        model=ModelIdentity.model_validate(attrs["model"]),
        constraints=constraints,
        prompts=attrs["prompts"],
        seeds=attrs["seeds"],
        guidance_scale=attrs["guidance_scale"],
        reference=Tier(
            name="reference",
            plan=PipelinePlan.model_validate(attrs["reference"]["plan"]),
            metrics=reference_metrics,
            samples=[str(p.relative_to(path.parent)) for p in reference_samples],
        ),
        tiers=tiers,
        study=StudyInfo(
            storage=_redact(storage),
            study_name=study.study_name,
            sampler=attrs["sampler"],
            seed=attrs["seed"],
            trials_completed=sum(1 for t in trials if t.state == TrialState.COMPLETE),
            trials_failed=sum(1 for t in trials if t.state == TrialState.FAIL),
            trials_pruned=sum(1 for t in trials if t.state == TrialState.PRUNED),
        ),
        trials=points,
    )
    return write_profile(profile, path), profile


def _copy_samples(source: Path, target: Path) -> list[Path]:
    """Copy a trial's images next to the profile (none if this machine lacks them)."""
    if not source.is_dir() or source.resolve() == target.resolve():
        return sorted(target.glob("*.png")) if target.is_dir() else []
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for image in sorted(source.glob("*.png")):
        shutil.copy2(image, target / image.name)
    return sorted(target.glob("*.png"))


def export_profile(storage: str, study_name: str, profiles_dir: Path) -> TuneResult:
    """Write the profile of a (possibly distributed) study from its storage alone.

    Raises:
        ConfigError: The study does not exist or has no feasible trial.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name=study_name, storage=_open_storage(storage))
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(
            f"No study {study_name!r} in {_redact(storage)}; studies: {names}."
        ) from None
    fid = study.user_attrs.get("fingerprint", {}).get("fingerprint_id", "unknown")
    slug = study.study_name if not fid or fid in study.study_name else f"{study.study_name}-{fid}"
    workdir = Path(study.user_attrs.get("workdir", profiles_dir / slug))
    path, profile = _write(study, storage, workdir, profiles_dir / f"{slug}.json")
    return TuneResult(path, profile, interrupted=False)
