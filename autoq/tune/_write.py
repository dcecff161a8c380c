"""The profile written from a study: tiers, samples, trial points."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

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
from autoq.tune._optuna import open_storage, redact
from autoq.tune._tiers import feasible, select_tiers, tier_names, trial_metrics

if TYPE_CHECKING:
    import optuna

__all__ = ["TuneResult", "export_profile", "write_study_profile"]


class TuneResult:
    """What a tune produced: the profile file and its parsed content."""

    def __init__(self, path: Path, profile: Profile, interrupted: bool) -> None:
        self.path = path
        self.profile = profile
        self.interrupted = interrupted


def write_study_profile(
    study: optuna.Study, storage: str, workdir: Path, path: Path
) -> tuple[Path, Profile]:
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
            storage=redact(storage),
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
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(
            f"No study {study_name!r} in {redact(storage)}; studies: {names}."
        ) from None
    fid = study.user_attrs.get("fingerprint", {}).get("fingerprint_id", "unknown")
    slug = study.study_name if not fid or fid in study.study_name else f"{study.study_name}-{fid}"
    workdir = Path(study.user_attrs.get("workdir", profiles_dir / slug))
    path, profile = write_study_profile(study, storage, workdir, profiles_dir / f"{slug}.json")
    return TuneResult(path, profile, interrupted=False)
