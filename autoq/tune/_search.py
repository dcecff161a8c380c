"""How one worker spends a study's trial budget, whatever a measurement is.

A trial's plan (under the scheduler that stands for its own at its steps: schedulers that
draw the same images are one, `SearchSpace.canonical`) is measured only if no other trial
of the study has measured it, is measuring it, or failed on it; a repeat becomes a twin
(the earlier result, copied), or a pruned trial when the plan is still running elsewhere.
Only measurements count towards the budget: twins, fp32 baselines (measured anyway to
pair a plan with, and added as trials of their own), plans taken by another worker, plans
pruned on their estimated weights and interrupted trials do not. `Tuner` measures real
pipelines; the sampler benchmark replays a measured grid through the same control flow.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.pipeline import PipelinePlan
from autoq.tune._record import Result, TrialRecord
from autoq.tune._space import SearchSpace

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "COUNTED",
    "Interrupted",
    "Search",
    "add_baseline",
    "counted",
    "fail_orphans",
    "outcome",
    "run_search",
    "worker_id",
]

log = get_logger("autoq.tune")

COUNTED = frozenset({"measured", "too_slow", "error"})
"""Trial outcomes that spent a measurement, and so count towards ``--trials``."""

STALL_LIMIT = 200
"""Uncounted trials in a row after which a worker stops: its sampler only repeats itself."""


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM) asked the tune to stop; ``signal_name`` says which."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"{signal_name} received")
        self.signal_name = signal_name


def worker_id() -> str:
    """``host:pid`` of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def outcome(trial: FrozenTrial) -> str:
    """What happened to a trial: measured, twin, baseline (fp32 measured as another
    plan's paired baseline), taken, over_budget, too_slow, error, interrupted, stale, or
    running/waiting while it is not finished."""
    from optuna.trial import TrialState

    record = TrialRecord(trial)
    recorded = record.outcome()
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return trial.state.name.lower()
    if recorded is not None:
        return str(recorded)
    if record.interrupted():
        return "interrupted"
    if trial.state == TrialState.COMPLETE:
        return "twin" if record.is_twin() else "measured"
    if trial.state == TrialState.PRUNED:
        return "too_slow" if "warm-up" in str(record.pruned()) else "over_budget"
    # FAIL without a recorded outcome: the worker died (heartbeat) or the trial raised
    # before it could record anything.
    return "error" if record.error() is not None else "stale"


def counted(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count towards ``--trials``: those that spent a measurement."""
    return sum(1 for t in trials if outcome(t) in COUNTED)


def _same_plan(
    trials: Sequence[FrozenTrial], number: int, plan: dict[str, Any]
) -> FrozenTrial | None:
    """The trial that already settles ``plan``: a measured one if any, else one that is
    measuring it or failed on it."""
    blocker = None
    for other in trials:
        if other.number == number or TrialRecord(other).plan_json() != plan:
            continue
        kind = outcome(other)
        if kind in ("measured", "twin", "baseline") and other.values is not None:
            return other
        if kind in ("running", "error", "too_slow") and blocker is None:
            blocker = other
    return blocker


class Search:
    """One worker's control flow: draw a plan, settle repeats, prune, measure.

    Subclasses say how a plan is measured (`measure_trial`), what the reference plan's
    result is (`reference_twin`) and which plans are ruled out before measuring
    (`over_budget`).
    """

    space: SearchSpace
    reference_plan: PipelinePlan
    aliases: Mapping[int, Mapping[str, str]] = {}
    """Per step count, the scheduler that stands for each (`SearchSpace.canonical`)."""

    def measure_trial(self, trial: optuna.Trial, plan: PipelinePlan) -> tuple[float, ...]:
        raise NotImplementedError

    def reference_twin(self, trial: optuna.Trial) -> tuple[float, ...]:
        raise NotImplementedError

    def over_budget(self, plan: PipelinePlan) -> str | None:
        """Why ``plan`` cannot meet the constraints without being measured, or ``None``."""
        return None

    def component_bytes(self, component: str, precision: str) -> float:
        """Estimated weight bytes of ``component`` at ``precision`` (for the corners)."""
        from autoq.backends import get_precision

        return float(get_precision(precision).weight_bits)

    def objective(self, trial: optuna.Trial) -> tuple[float, ...]:
        import optuna
        from optuna.trial import TrialState

        record = TrialRecord(trial)
        try:
            plan = self.space.canonical(self.space.suggest(trial), self.aliases)
            plan_json = plan.model_dump(mode="json")
            # Recorded before looking for repeats: of two workers drawing the same plan at
            # once, the later one to look always sees the other.
            record.set_drawn(plan, worker_id())
            if plan == self.reference_plan:  # measured once per study, before any trial
                record.set_twin("reference")
                return self.reference_twin(trial)
            other = _same_plan(trial.study.get_trials(deepcopy=False), trial.number, plan_json)
            if other is not None and other.state == TrialState.COMPLETE:
                return _copy_twin(trial, other)
            if other is not None:
                doing = "is being measured" if other.state == TrialState.RUNNING else "failed"
                reason = f"the same plan {doing} in trial {other.number}"
                record.set_outcome("taken", reason)
                raise optuna.TrialPruned(reason)
            too_big = self.over_budget(plan)
            if too_big is not None:
                record.set_outcome("over_budget", too_big)
                raise optuna.TrialPruned(too_big)
            log.info("trial_start", trial=trial.number, plan=plan.describe())
            values = self.measure_trial(trial, plan)
            record.set_outcome("measured")
            return values
        except KeyboardInterrupt as stop:
            reason = str(stop) if isinstance(stop, Interrupted) else "SIGINT received"
            record.set_outcome("interrupted", reason)
            raise


def add_baseline(
    study: optuna.Study,
    space: SearchSpace,
    plan: PipelinePlan,
    values: Sequence[float],
    constraints: dict[str, float],
    result: Result | None,
) -> bool:
    """Add ``plan``, fp32 measured as another plan's paired baseline, to ``study`` as a
    trial of its own (outcome ``baseline``, not counted towards the budget): a candidate
    for the tiers and evidence for the sampler, at no cost. Returns whether it was added:
    not when the space does not hold it or a trial of the study has it already."""
    import optuna

    params = space.params(plan)
    plan_json = plan.model_dump(mode="json")
    trials = study.get_trials(deepcopy=False)
    if params is None or any(TrialRecord(t).plan_json() == plan_json for t in trials):
        return False
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=space.distributions(),
            values=list(values),
            user_attrs=TrialRecord.baseline_attrs(result, plan, worker_id()),
            constraints=constraints,
        )
    )
    return True


def _copy_twin(trial: optuna.Trial, source: FrozenTrial) -> tuple[float, ...]:
    """Record ``source``'s result on ``trial``: a repeat costs no measurement."""
    TrialRecord(trial).copy_result(source)
    for key, value in source.constraints.items():
        trial.set_constraint(key, value)
    assert source.values is not None  # _same_plan only returns completed trials with values
    return tuple(source.values)


def fail_orphans(study: optuna.Study, *, include_self: bool = False) -> list[int]:
    """Fail the running trials of dead worker processes on this host (and, with
    ``include_self``, this process's own), recording why; returns their numbers.

    Heartbeats find dead workers on any host, but only after a grace period; a process
    that is gone from this host is known dead at once, so a rerun after ``kill -9`` does
    not wait for it.
    """
    from optuna.trial import TrialState

    host, me = socket.gethostname(), os.getpid()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name, _, pid_text = str(TrialRecord(trial).worker() or "").rpartition(":")
        if name != host or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == me:
            if not include_self:
                continue
            reason = "interrupted before it finished"
        elif _alive(pid):
            continue
        else:
            reason = f"worker process {pid} on {host} died"
        try:
            TrialRecord.mark_stale(study, trial, reason)
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        except Exception:  # finished meanwhile by another worker: nothing left to do
            continue
        failed.append(trial.number)
        log.warning("trial_orphaned", trial=trial.number, reason=reason)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def on_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat callback: a trial whose worker went silent was failed; retry its plan once."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    log.warning(
        "trial_stale",
        trial=trial.number,
        worker=TrialRecord(trial).worker(),
        reason="its worker stopped sending heartbeats",
    )
    RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)


def run_search(
    study: optuna.Study,
    search: Search,
    *,
    wanted: int,
    timeout_s: float | None = None,
    on_trial: Callable[[optuna.Study], None] | None = None,
    corners: bool = True,
    gc_after_trial: bool = True,
) -> str:
    """Run trials until ``wanted`` trials of the study (all workers) spent a measurement,
    the space is exhausted, or ``timeout_s`` passes: no trial starts that is expected (as
    long as this run's measured trials took on average) to end after it. With
    ``corners``, the space's corner plans are enqueued first.

    Returns:
        Why it stopped: ``"done"``, ``"exhausted"``, ``"stalled"`` or ``"timeout"``.
    """
    import warnings

    import optuna

    fail_orphans(study)
    with warnings.catch_warnings():  # enqueue_trial's `skip_if_exists` is experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for params in search.space.corners(search.component_bytes) if corners else []:
            study.enqueue_trial(params, skip_if_exists=True)
    size = search.space.size(search.aliases)
    idle = {"n": 0}
    why = {"stopped": "timeout"}  # what optimize returning without a study.stop() means
    began = time.monotonic()
    took: list[float] = []

    def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        idle["n"] = 0 if outcome(trial) in COUNTED else idle["n"] + 1
        if outcome(trial) in COUNTED and trial.datetime_start and trial.datetime_complete:
            took.append((trial.datetime_complete - trial.datetime_start).total_seconds())
        settled = {
            str(TrialRecord(t).plan_json())
            for t in trials
            if TrialRecord(t).plan_json() is not None
            and outcome(t) not in ("interrupted", "stale", "running", "waiting", "taken")
        }
        if on_trial is not None:
            on_trial(study)
        if counted(trials) >= wanted:
            why["stopped"] = "done"
        elif len(settled) >= size:
            log.info("search_exhausted", plans=size)
            why["stopped"] = "exhausted"
        elif idle["n"] >= STALL_LIMIT:
            log.warning("search_stalled", repeats=idle["n"], measured=counted(trials))
            why["stopped"] = "stalled"
        elif (
            timeout_s is not None
            and took
            and (time.monotonic() - began + statistics.fmean(took) > timeout_s)
        ):
            why["stopped"] = "timeout"  # the next trial is expected to end past it
        else:
            fail_orphans(study)
            return
        study.stop()

    if counted(study.get_trials(deepcopy=False)) >= wanted:
        return "done"
    study.optimize(
        search.objective,
        timeout=timeout_s,
        catch=(Exception,),
        callbacks=[stop_when_done],
        gc_after_trial=gc_after_trial,
    )
    return why["stopped"]
