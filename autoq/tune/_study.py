"""`tune`: the Optuna study behind `autoq tune`: open it, run the objective, write the profile."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.tune._config import TuneConfig
from autoq.tune._objective import Tuner
from autoq.tune._optuna import DIRECTIONS, open_storage, redact, sampler, storage_url
from autoq.tune._tiers import feasible
from autoq.tune._write import TuneResult, write_study_profile

if TYPE_CHECKING:
    import optuna

__all__ = ["tune"]

log = get_logger("autoq.tune")


def _counted(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: everything finished except interruptions."""
    from optuna.trial import TrialState

    done = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    return sum(1 for t in done if not t.user_attrs.get("interrupted"))


def _study_context(tuner: Tuner) -> dict[str, Any]:
    """Everything `export_profile` needs to write a profile from the study alone."""
    config = tuner.config
    return {
        "fingerprint": tuner.fingerprint.model_dump(mode="json"),
        "model": tuner.loaded.identity.model_dump(),
        "constraints": tuner.constraints.model_dump(),
        "prompts": tuner.prompts,
        "seeds": tuner.seeds,
        "screen": tuner.evalset.screen,
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
    storage = storage_url(config, stem)
    # Per-trial images are working files: they live in the cache (not beside profiles),
    # one folder per study, so studies that share a name in other storages never mix.
    digest = hashlib.sha256(f"{storage}|{study_name}".encode()).hexdigest()[:10]
    workdir = cache_dir() / "tune" / f"{study_name}-{digest}"
    tuner = Tuner(config, loaded, device, device_fingerprint, workdir)
    study = optuna.create_study(
        storage=open_storage(storage),
        study_name=study_name,
        directions=DIRECTIONS,
        sampler=sampler(config, tuner.space),
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
        storage=redact(storage),
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
    if not interrupted:
        try:  # racing and step curves: measured once, kept in the study
            tuner.evaluator.finish(study, config.tiers)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("tune_interrupted", done=_counted(study), phase="race")
    path, profile = write_study_profile(
        study, storage, tuner.workdir, config.profiles_dir / f"{stem}.json"
    )
    log.info("profile_written", path=str(path), tiers=[t.name for t in profile.tiers])
    return TuneResult(path, profile, interrupted)


def _best_feasible_clip(study: optuna.Study, tuner: Tuner) -> float | None:
    if tuner.reference is None:
        return None
    ok = feasible(study.get_trials(deepcopy=False), tuner.constraints, tuner.reference.clip_score)
    return max((m.clip_score for _, m in ok), default=None)
