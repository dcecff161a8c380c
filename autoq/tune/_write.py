"""The profile written from a study: tiers, samples, trial points."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.errors import ConfigError
from autoq.pipeline import PipelinePlan
from autoq.profile import BatchPoint as ProfileBatchPoint
from autoq.profile import (
    Constraints,
    ModelIdentity,
    Profile,
    StudyInfo,
    Tier,
    TrialPoint,
    write_profile,
)
from autoq.profile import TrialState as TrialStateName
from autoq.tune._choice import choose
from autoq.tune._evidence import assess, evalset_of, tier_curve, tune_conditions
from autoq.tune._optuna import open_storage, redact
from autoq.tune._record import BatchPoint, StudyRecord, TimeBudget, TrialRecord, WorkFolder
from autoq.tune._tiers import tier_names

if TYPE_CHECKING:
    import optuna

__all__ = ["TuneResult", "export_profile", "trial_points", "write_study_profile"]

log = get_logger("autoq.tune")


class TuneResult:
    """What a tune produced: the profile file and its parsed content."""

    def __init__(
        self, path: Path, profile: Profile, interrupted: bool, signal_name: str | None = None
    ) -> None:
        self.path = path
        self.profile = profile
        self.interrupted = interrupted
        self.signal_name = signal_name
        """``SIGINT`` or ``SIGTERM`` when a signal stopped the tune."""


def write_study_profile(
    study: optuna.Study,
    storage: str,
    workdir: Path,
    path: Path,
    time_budget: TimeBudget | None = None,
) -> tuple[Path, Profile]:
    """Choose tiers from the study's evidence (see `autoq.tune._choice.choose`) and
    write the profile with every trial's evidence.

    ``time_budget`` is what the writing run's budget left out;
    without it, the study's record of the last run that stored one (workers sharing a
    study each pass their own).

    Raises:
        ConfigError: No reference yet, or no feasible plan.
    """
    from optuna.trial import TrialState

    from autoq._version import __version__
    from autoq.device import Fingerprint

    view = StudyRecord(study).snapshot()
    stored = view.reference() if view.has_reference() else None
    if stored is None or stored.metrics is None or not view.has_context():
        raise ConfigError(
            f"Study {study.study_name!r} has no reference measurement yet; "
            "run `autoq tune` against it first."
        )
    context = view.context()
    reference_metrics = stored.metrics
    trials = study.get_trials(deepcopy=False)
    choice = choose(study, context.tiers)
    if not choice.tiers:
        states = {s.name: sum(1 for t in trials if t.state == s) for s in TrialState}
        raise ConfigError(
            f"No trial of study {study.study_name!r} meets the constraints "
            f"(trials by state: {states}); relax --max-memory / --max-latency / "
            "--min-clip-score, or run more --trials."
        )
    evalset = evalset_of(view)
    profile_dir = path.with_suffix("")
    tiers = []
    names = tier_names([c.cheapest_in for c in choice.tiers])
    for name, chosen in zip(names, choice.tiers, strict=True):
        trial = chosen.item.trial
        samples = _copy_samples(
            TrialRecord(trial).images() or Path(),
            profile_dir / "tiers" / name,
            len(evalset.prompts),
        )
        curve, min_steps = tier_curve(
            view, chosen, choice.constraints, choice.step_dial(chosen.item.plan)
        )
        batches, max_batch = _batch_curve(view.batch_curve(chosen.item.plan), choice.constraints)
        tiers.append(
            Tier(
                name=name,
                plan=chosen.item.plan,
                metrics=chosen.metrics,
                trial=trial.number,
                samples=[str(p.relative_to(path.parent)) for p in samples],
                cheapest_in=chosen.cheapest_in,
                steps_curve=curve,
                min_steps=min_steps,
                batch_curve=batches,
                max_batch=max_batch,
            )
        )
    reference_plan = stored.plan
    reference_samples = _copy_samples(
        WorkFolder(workdir).fp32(reference_plan.steps, reference_plan.scheduler),
        profile_dir / "reference",
        len(evalset.prompts),
    )
    budget = time_budget if time_budget is not None else view.time_budget()
    timed_reference = choice.timed(reference_plan, reference_metrics)
    conditions = tune_conditions(view)
    if conditions is not None and choice.timing is not None:
        ratios = [
            after.latency_s / before.latency_s
            for before, after in [
                (reference_metrics, timed_reference),
                *((c.item.metrics, c.metrics) for c in choice.tiers),
            ]
        ]
        conditions = conditions.model_copy(update={"latency_drift": (min(ratios), max(ratios))})
    if conditions is not None and conditions.busy:
        log.warning(
            "machine_busy",
            message=(
                f"Load average {conditions.load_avg_1m:.1f} on {conditions.cpu_count} CPUs "
                "while timing: other work shared the machine, latencies are inflated; "
                "re-run the tune on an idle machine."
            ),
        )
    profile = Profile(
        autoq_version=__version__,
        created=datetime.now(timezone.utc),
        fingerprint=Fingerprint.model_validate(context.fingerprint),
        model=ModelIdentity.model_validate(context.model),
        constraints=context.constraints,
        quality_floor=choice.floor,
        prompts=context.prompts,
        seeds=context.seeds,
        guidance_scale=context.guidance_scale,
        height=context.height,
        width=context.width,
        reference=Tier(
            name="reference",
            plan=reference_plan,
            metrics=timed_reference,
            samples=[str(p.relative_to(path.parent)) for p in reference_samples],
        ),
        tiers=tiers,
        study=StudyInfo(
            storage=redact(storage),
            study_name=study.study_name,
            sampler=context.sampler,
            seed=context.seed,
            trials_completed=sum(1 for t in trials if t.state == TrialState.COMPLETE),
            trials_failed=sum(1 for t in trials if t.state == TrialState.FAIL),
            trials_pruned=sum(1 for t in trials if t.state == TrialState.PRUNED),
            timeout_s=budget.seconds,
            left_out=budget.cuts,
            tiers_asked=context.tiers,
        ),
        trials=trial_points(study, choice.feasible),
        conditions=conditions,
    )
    written = write_profile(profile, path)
    for folder in (profile_dir / "tiers").glob("*"):  # an earlier run's tiers, now gone
        if folder.is_dir() and folder.name not in names:
            shutil.rmtree(folder)
    return written, profile


_STATES: dict[str, TrialStateName] = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
}


def trial_points(study: optuna.Study, feasible: set[int]) -> list[TrialPoint]:
    """Every trial with its evidence: plan, state, per-image scores, metrics, or why it
    was pruned or failed. A twin (a plan proposed again) carries its first trial's
    evidence and metrics."""
    by_plan = {_plan_json_key(a.plan.model_dump(mode="json")): a for a in assess(study)}
    points = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "WAITING":  # queued for a later run (a corner over the budget)
            continue
        record = TrialRecord(t)
        raw_plan = record.plan_json()
        assessed = by_plan.get(_plan_json_key(raw_plan)) if raw_plan else None
        m = assessed.metrics if assessed is not None else None
        reason = record.pruned() or record.error()
        if record.interrupted():
            reason = reason or "interrupted"
        points.append(
            TrialPoint(
                number=t.number,
                state=_STATES.get(t.state.name, "failed"),
                plan=PipelinePlan.model_validate(raw_plan) if raw_plan else None,
                clip_score=m.clip_score if m else None,
                clip_ci=m.clip_ci if m else None,
                n_images=m.n_images if m else 0,
                scores=list(assessed.evidence.scores) if assessed else [],
                latency_s=m.latency_s if m else None,
                peak_memory_bytes=m.peak_memory_bytes if m else None,
                feasible=assessed is not None and assessed.trial.number in feasible,
                reason=str(reason) if reason else None,
            )
        )
    return points


def _plan_json_key(raw: dict[str, Any]) -> str:
    return json.dumps(raw, sort_keys=True)


def _copy_samples(source: Path, target: Path, count: int) -> list[Path]:
    """Copy a plan's first ``count`` images (one per prompt) next to the profile (none if
    this machine lacks them)."""
    if not source.is_dir() or source.resolve() == target.resolve():
        return sorted(target.glob("*.png")) if target.is_dir() else []
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for image in sorted(source.glob("*.png"))[:count]:
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
    view = StudyRecord(study).snapshot()
    fid = view.fingerprint_id()
    slug = study.study_name if not fid or fid in study.study_name else f"{study.study_name}-{fid}"
    workdir = Path(view.workdir() or profiles_dir / slug)
    path, profile = write_study_profile(study, storage, workdir, profiles_dir / f"{slug}.json")
    return TuneResult(path, profile, interrupted=False)


def _batch_curve(
    points: Sequence[BatchPoint], constraints: Constraints
) -> tuple[list[ProfileBatchPoint], int | None]:
    """A tier's batch curve for the profile, and the largest measured batch within the
    memory limit (``None`` with fewer than two sizes measured: nothing to go by)."""
    curve = [
        ProfileBatchPoint(batch_size=p.batch, latency_s=p.seconds, peak_memory_bytes=p.peak_bytes)
        for p in points
    ]
    limit = constraints.max_memory_bytes
    fits = [p.batch for p in points if limit is None or p.peak_bytes <= limit]
    return curve, (max(fits, default=1) if len(points) >= 2 else None)
