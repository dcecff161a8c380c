"""`tune`: the Optuna study behind `autoq tune`: open it, run the objective, write the profile."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from autoq._logging import get_logger
from autoq.errors import ConfigError
from autoq.profile import ModelIdentity
from autoq.tune._budget import SCREEN_SHARE, Deadline
from autoq.tune._config import TuneConfig
from autoq.tune._measure import EVAL_PROTOCOL
from autoq.tune._objective import Tuner
from autoq.tune._optuna import DIRECTIONS, open_storage, redact, sampler, storage_url
from autoq.tune._progress import Progress
from autoq.tune._record import StudyContext, StudyRecord, TimeBudget, WorkFolder
from autoq.tune._search import Interrupted, counted, fail_orphans, on_stale_trial, run_search
from autoq.tune._tiers import feasible
from autoq.tune._write import TuneResult, write_study_profile

if TYPE_CHECKING:
    import optuna
    import torch

__all__ = ["tune"]

log = get_logger("autoq.tune")

SEARCH_SHARE = 0.5
"""Under a time budget, the search may spend this share of what the reference left; the
rest is for racing, the deep set, the side-by-side timing, the step curves and their
timing, which at the default settings take longer than the search (docs/benchmarks.md)."""
SEARCH_SHARE_NO_RACE = 0.9
"""The search's share when the rest could not race even one plan to the full set (a
real-size model on a short budget): what racing would not use goes to more plans."""


def _study_context(tuner: Tuner) -> StudyContext:
    """Everything `export_profile` needs to write a profile from the study alone."""
    config = tuner.config
    return StudyContext(
        fingerprint=tuner.fingerprint.model_dump(mode="json"),
        model=tuner.loaded.identity.model_dump(),
        constraints=tuner.constraints,
        prompts=tuner.prompts,
        seeds=tuner.seeds,
        screen=tuner.evalset.screen,
        full=tuner.evalset.full,
        eval_protocol=EVAL_PROTOCOL,
        guidance_scale=tuner.guidance,
        height=config.height,
        width=config.width,
        tiers=config.tiers,
        sampler=config.sampler,
        seed=config.seed,
        workdir=str(tuner.workdir.resolve()),
    )


def _check_identity(
    study: optuna.Study,
    identity: ModelIdentity,
    explicit: bool,
    size: tuple[int | None, int | None] = (None, None),
) -> None:
    """Refuse to resume a study of another model or image size; say when a model's
    weights changed since its earlier studies."""
    record = StudyRecord(study)
    view = record.snapshot()
    stored = view.stored_model()
    protocol = view.eval_protocol()
    if view.has_measured() and protocol != EVAL_PROTOCOL:
        raise ConfigError(
            f"Study {study.study_name!r} was measured under evaluation protocol {protocol} "
            f"(this autoq draws images under protocol {EVAL_PROTOCOL}), so its scores cannot "
            "be mixed with new ones; pass another --study, or delete the old one "
            f"(optuna delete-study --study-name {study.study_name} --storage URL)."
        )
    measured_at = view.size()
    if stored is not None and measured_at != size:
        raise ConfigError(
            f"Study {study.study_name!r} was measured at height x width {measured_at} "
            f"(None: the model's default), not {size}; pass the same --height/--width, or "
            "another --study."
        )
    if stored is not None:
        if (stored.get("content_hash"), stored.get("pipeline_class")) != (
            identity.content_hash,
            identity.pipeline_class,
        ):
            raise ConfigError(
                f"Study {study.study_name!r} was tuned for {stored.get('pipeline_class')} "
                f"{stored.get('source')!r} (content hash {stored.get('content_hash')}), but "
                f"{identity.source!r} is {identity.pipeline_class} with content hash "
                f"{identity.content_hash}: its weights changed or it is another model; "
                "pass another --study (or omit it: studies are named by content hash)."
            )
        return
    if explicit:
        return
    stem = study.study_name.split(f"-{identity.content_hash}")[0]
    older = [
        name
        for name, content_hash in record.summaries_tuned_for()
        if (name == stem or name.startswith(f"{stem}-")) and content_hash != identity.content_hash
    ]
    if older:
        log.warning(
            "model_changed",
            model=identity.source,
            content_hash=identity.content_hash,
            study=study.study_name,
            earlier=older,
            message="the model's weights differ from those of the earlier studies; "
            "starting a new study",
        )


def _install_signal_handlers() -> Callable[[], None]:
    """SIGINT and SIGTERM raise `Interrupted` once (later ones are ignored, so the profile
    still gets written); returns a function that restores the previous handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    fired = {"n": 0}

    def handler(signum: int, _frame: object) -> None:
        fired["n"] += 1
        name = signal.Signals(signum).name
        if fired["n"] == 1:
            raise Interrupted(name)
        log.warning("signal_ignored", signal=name, reason="writing the profile")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def tune(
    config: TuneConfig,
    *,
    on_trial: Callable[[int, int, float | None], None] | None = None,
    on_phase: Callable[[str, int, int], None] | None = None,
) -> TuneResult:
    """Search per-component precision, steps and scheduler; write a profile of tiers.

    Re-running the same config resumes the study without repeating a measured plan;
    SIGINT (Ctrl-C) or SIGTERM stops after writing the profile from the trials done so far
    (the interrupted trial is failed with its reason; the study stays resumable). Studies
    are named by the model's content hash: other weights start another study.

    Args:
        config: What to tune and under which constraints.
        on_trial: Progress callback ``(trials counted, trials wanted, best feasible CLIP)``.
        on_phase: Progress callback ``(phase, done, total)`` of every phase: ``"load"``,
            ``"screen"``, ``"fp32 cost"``, ``"reference"``, ``"schedulers"``,
            ``"search"``, ``"racing"``, ``"deep set"``, ``"side-by-side timing"``,
            ``"step curves"`` and ``"step dial timing"``. Off a terminal, the log says
            the same (`autoq.tune._progress`): a line per phase start, one a minute.

    Returns:
        The profile's path and content.

    Raises:
        ConfigError: Bad input, or no trial met the constraints.
        ModelNotFoundError: The model or scorer cannot be loaded offline.
    """
    from autoq.pipeline import find_sources

    deadline = Deadline.after(config.timeout_s)  # from the start: the libraries' import counts
    progress = Progress(on_phase, budget_left=deadline.left)
    deadline.progress = progress
    find_sources(config.model, config.scorer)  # a wrong path: one line before ~10 s of imports
    progress("load", 0, 0)  # the first line, within seconds of the start
    progress.start()
    try:
        import optuna

        from autoq.backends._quiet import silence_libraries
        from autoq.device import resolve_device

        silence_libraries()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        device = resolve_device(config.device)
        return _tune(config, deadline, progress, device, on_trial)
    finally:
        progress.stop()


def _tune(
    config: TuneConfig,
    deadline: Deadline,
    progress: Progress,
    device: torch.device,
    on_trial: Callable[[int, int, float | None], None] | None,
) -> TuneResult:
    """`tune` once its clock and progress lines run: load, screen, size, search, finish."""
    import optuna

    from autoq.backends import cache_dir
    from autoq.device import fingerprint
    from autoq.pipeline import load_model

    loaded = load_model(config.model, config.scorer)
    device_fingerprint = fingerprint(bench=False)
    stem = f"{loaded.slug}-{device_fingerprint.fingerprint_id}"
    sized = f"-{config.height}x{config.width}" if config.height is not None else ""
    study_name = config.study_name or f"{stem}-{loaded.identity.content_hash}{sized}"
    storage = storage_url(config, stem)
    # Per-trial images are working files: they live in the cache (not beside profiles),
    # one folder per study, so studies that share a name in other storages never mix.
    workdir = WorkFolder.of(cache_dir(), study_name, storage).root
    # The storage first: a bad URL is one line now, not after the screen and reference.
    opened = open_storage(storage, on_stale=on_stale_trial)
    tuner = Tuner(
        config,
        loaded,
        device,
        device_fingerprint,
        workdir,
        screen_budget_s=deadline.share(SCREEN_SHARE),
        on_screen=lambda done, total: progress("screen", done, total),
    )
    if tuner.screened.unscreened:
        deadline.cut(
            f"screen: {len(tuner.screened.unscreened)} pairing(s) not screened within its "
            f"{SCREEN_SHARE:.0%} share of the budget (a rerun screens them)"
        )
    study = optuna.create_study(
        storage=opened,
        study_name=study_name,
        directions=DIRECTIONS,
        load_if_exists=True,
    )
    _check_identity(
        study,
        loaded.identity,
        explicit=config.study_name is not None,
        size=(config.height, config.width),
    )
    progress("fp32 cost", 0, 0)
    for cut in tuner.size_phases(study, deadline.left()).cuts:
        deadline.cut(cut)
    # A seed of its own per run and per worker: a rerun or a second worker draws new plans
    # instead of replaying the first run's sequence.
    existing = len(study.get_trials(deepcopy=False))
    run_seed = config.seed + existing + (os.getpid() if config.storage else 0)
    study.sampler = sampler(config.sampler, run_seed, config.trials, tuner.space)
    StudyRecord(study).set_context(_study_context(tuner))

    def report(study: optuna.Study) -> None:
        done = counted(study.get_trials(deepcopy=False))
        progress("search", done, config.trials)
        if on_trial is not None:
            on_trial(done, config.trials, _best_feasible_clip(study, tuner))

    if on_trial is not None:  # the model loaded: report before the (long) reference run
        on_trial(counted(study.get_trials(deepcopy=False)), config.trials, None)
    restore = _install_signal_handlers()
    stopped_by = None
    try:
        try:
            progress("reference", 0, tuner.sizing.reference_images if tuner.sizing else 0)
            tuner.ensure_reference(study, progress)
            progress("schedulers", 0, 0)
            tuner.probe_schedulers(study)
            log.info(
                "tune_start",
                study=study_name,
                storage=redact(storage),
                done=counted(study.get_trials(deepcopy=False)),
                wanted=config.trials,
                sampler=config.sampler,
                sampler_seed=run_seed,
                plans=tuner.space.size(tuner.aliases),
                schedulers=list(tuner.space.schedulers),
            )
            report(study)
            if deadline.at is not None and not counted(study.get_trials(deepcopy=False)):
                # A profile needs one measured plan, however little time the budget left.
                run_search(study, tuner, wanted=1, on_trial=report)
            left, race_one = deadline.left(), tuner.race_seconds()
            no_race = left is not None and race_one > left * (1 - SEARCH_SHARE)
            search_s = deadline.share(SEARCH_SHARE_NO_RACE if no_race else SEARCH_SHARE)
            stopped = run_search(
                study, tuner, wanted=config.trials, timeout_s=search_s, on_trial=report
            )
            if stopped == "timeout":
                done = counted(study.get_trials(deepcopy=False))
                deadline.cut(f"search: {done} of {config.trials} trials measured")
            # After the search: race the front to the full set, then the tiers' step curves.
            tuner.evaluator.finish(study, config.tiers, deadline)
        except KeyboardInterrupt as stop:
            stopped_by = stop.signal_name if isinstance(stop, Interrupted) else "SIGINT"
            fail_orphans(study, include_self=True)  # a trial the signal left RUNNING
            log.warning(
                "tune_interrupted",
                signal=stopped_by,
                done=counted(study.get_trials(deepcopy=False)),
            )
        budget = TimeBudget(seconds=config.timeout_s, cuts=deadline.cuts)
        StudyRecord(study).set_time_budget(budget)  # for `autoq profile export`
        try:
            path, profile = write_study_profile(
                study, storage, tuner.workdir, config.profiles_dir / f"{stem}.json", budget
            )
        except ConfigError:
            if stopped_by is None:
                raise
            raise Interrupted(stopped_by) from None  # nothing to write yet: still a stop
    finally:
        restore()
    log.info("profile_written", path=str(path), tiers=[t.name for t in profile.tiers])
    return TuneResult(path, profile, stopped_by is not None, stopped_by)


def _best_feasible_clip(study: optuna.Study, tuner: Tuner) -> float | None:
    if tuner.reference is None:
        return None
    ok = feasible(study.get_trials(deepcopy=False), tuner.constraints, tuner.reference.clip_score)
    return max((m.clip_score for _, m in ok), default=None)
