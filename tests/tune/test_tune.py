"""`autoq tune` end to end on the shapes model: profile, constraints, resume, failures."""

from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoq.errors import ConfigError
from autoq.profile import read_profile, write_report
from autoq.tune import _objective, export_profile, tune
from autoq.tune._choice import candidates as tier_candidates
from autoq.tune._evidence import assess
from autoq.tune._record import StudyRecord, TimeBudget, plan_key
from autoq.tune._search import outcome
from autoq.tune._write import write_study_profile
from tests.tune.conftest import fast_config


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, zoo_weight_bytes: int):
    """One small tune whose memory budget rules out the fp32 reference: fp32 weights fit
    (so fp32 plans are measured), their activations do not."""
    budget = zoo_weight_bytes + 2**20
    profiles = tmp_path_factory.mktemp("profiles")
    config = fast_config(
        profiles,
        trials=8,
        tiers=3,
        max_memory_bytes=budget,
        # Tiny eval sets at 4-8 steps spread widely: a lax floor, so tiers are about
        # memory and order here (the default 10% floor would vouch for one plan only).
        max_clip_drop_pct=40,
        precisions=("fp32", "ao_int8wo", "bnb_nf4", "bnb_int8", "quanto_int8"),
    )
    result = tune(config)
    return result, budget


@pytest.mark.slow
def test_profile_has_ordered_tiers_within_constraints(tuned) -> None:
    result, budget = tuned
    profile = read_profile(result.path)  # what is on disk validates
    assert profile == result.profile
    assert len(profile.tiers) >= 2
    assert profile.study.trials_failed == 0  # every precision mix builds and runs
    assert profile.reference.metrics.peak_memory_bytes > budget  # the budget binds
    for tier in profile.tiers:
        assert tier.metrics.peak_memory_bytes <= budget
        assert len(tier.samples) == len(profile.prompts)
        assert all((result.path.parent / s).is_file() for s in tier.samples)
    scores = [t.metrics.clip_score for t in profile.tiers]
    assert scores == sorted(scores, reverse=True)
    assert len({t.name for t in profile.tiers}) == len(profile.tiers)
    assert all(t.metrics.psnr is not None and t.metrics.ssim is not None for t in profile.tiers)


@pytest.mark.slow
def test_tiers_are_chosen_on_latencies_timed_side_by_side(tuned) -> None:
    from autoq.tune._measure import SIDE_BY_SIDE_REPEATS

    result, _ = tuned
    profile = result.profile
    study = optuna.load_study(study_name=profile.study.study_name, storage=_db(result.path.parent))
    record = StudyRecord(study)
    timing, dial = record.side_by_side(), record.step_dial()
    candidates, _, _ = tier_candidates(record, assess(study))  # the plans tiers came from
    assert {t.trial for t in profile.tiers} <= {a.trial.number for a in candidates}
    for plan in [profile.reference.plan, *(a.plan for a in candidates)]:  # all lined up
        assert len(timing[plan_key(plan)][str(plan.steps)]) == 2 * SIDE_BY_SIDE_REPEATS
    for tier in [profile.reference, *profile.tiers]:
        own = timing[plan_key(tier.plan)][str(tier.plan.steps)]
        assert tier.metrics.latency_s == statistics.median(own)
        if not tier.steps_curve:
            continue
        # The step dial's points: timed beside the tier's own steps, on the line-up's scale.
        dialled = dial[plan_key(tier.plan)]
        scale = statistics.median(own) / statistics.median(dialled[str(tier.plan.steps)])
        for point in tier.steps_curve:
            expected = statistics.median(t * scale for t in dialled[str(point.steps)])
            assert point.latency_s == pytest.approx(expected)
    assert profile.conditions is not None and profile.conditions.latency_drift is not None
    low, high = profile.conditions.latency_drift
    assert 0 < low <= high
    fastest = min(profile.tiers, key=lambda t: (t.metrics.latency_s, -t.metrics.clip_score))
    assert "latency" in fastest.cheapest_in  # the resources follow the side-by-side timing


@pytest.mark.slow
def test_no_plan_is_measured_under_a_scheduler_that_stands_for_another(tuned) -> None:
    result, _ = tuned
    study = optuna.load_study(
        study_name=result.profile.study.study_name, storage=_db(result.path.parent)
    )
    aliases = StudyRecord(study).scheduler_aliases()
    assert {a for per_steps in aliases.values() for s, a in per_steps.items() if s != a}
    for trial in study.trials:
        if "plan" in trial.user_attrs:
            plan = trial.user_attrs["plan"]
            assert aliases[plan["steps"]][plan["scheduler"]] == plan["scheduler"]


@pytest.mark.slow
def test_infeasible_trials_are_kept_in_the_study(tuned) -> None:
    result, budget = tuned
    study = optuna.load_study(
        study_name=result.profile.study.study_name, storage=_db(result.path.parent)
    )
    over = [
        t
        for t in study.trials
        if outcome(t) == "measured" and t.user_attrs["metrics"]["peak_memory_bytes"] > budget
    ]
    assert over  # the fp32 corner was measured, and its peak broke the budget
    points = {p.number: p for p in result.profile.trials}
    for trial in over:
        assert trial.state == TrialState.COMPLETE
        assert points[trial.number].feasible is False
    assert all(p.peak_memory_bytes <= budget for p in points.values() if p.feasible)


@pytest.mark.slow
def test_report_is_self_contained_html(tuned, tmp_path: Path) -> None:
    result, _ = tuned
    page = write_report(result.profile, result.path, tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == len(result.profile.prompts) * (
        len(result.profile.tiers) + 1
    )
    assert page.count("<svg") == 2
    for tier in result.profile.tiers:
        assert tier.name in page


@pytest.mark.slow
def test_rerun_resumes_without_losing_or_repeating_trials(tmp_path: Path) -> None:
    first = tune(fast_config(tmp_path, trials=2, precisions=("fp32", "ao_int8wo")))
    storage = f"sqlite:///{tmp_path / (first.path.stem + '.optuna.db')}"
    study = optuna.load_study(study_name=first.profile.study.study_name, storage=storage)
    before = {t.number: t.values for t in study.trials}

    tune(fast_config(tmp_path, trials=4, precisions=("fp32", "ao_int8wo")))
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    measured = [t for t in trials if outcome(t) == "measured"]
    assert len(measured) == 4
    assert len({str(t.user_attrs["plan"]) for t in measured}) == 4  # no plan measured twice
    assert {t.number: t.values for t in trials[: len(before)]} == before


@pytest.mark.slow
def test_interrupted_tune_writes_profile_and_resumes(tmp_path: Path, monkeypatch) -> None:
    real = _objective.Tuner.measure
    calls = {"n": 0}

    def stop_on_second(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:  # one plan measured, then Ctrl-C during the next
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(_objective.Tuner, "measure", stop_on_second)
    config = fast_config(tmp_path, trials=3, precisions=("fp32", "ao_int8wo"))
    interrupted = tune(config)
    assert interrupted.interrupted and interrupted.signal_name == "SIGINT"
    assert read_profile(interrupted.path).tiers
    storage = _db(tmp_path)
    study = optuna.load_study(study_name=interrupted.profile.study.study_name, storage=storage)
    stopped = [t for t in study.trials if outcome(t) == "interrupted"]
    assert [t.state for t in stopped] == [TrialState.FAIL]
    assert stopped[0].user_attrs["interrupted"] == "SIGINT received"
    assert sum(outcome(t) == "measured" for t in study.trials) == 1

    monkeypatch.setattr(_objective.Tuner, "measure", real)
    resumed = tune(config)
    assert not resumed.interrupted
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert sum(outcome(t) == "measured" for t in trials) == 3  # the interrupted one is redone


@pytest.mark.slow
def test_a_trial_that_raises_does_not_stop_the_study(tmp_path: Path, monkeypatch) -> None:
    real = _objective.Tuner.measure
    calls = {"n": 0}

    def fail_second_trial(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:  # the reference is measured apart, not through `measure`
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, *args)

    monkeypatch.setattr(_objective.Tuner, "measure", fail_second_trial)
    result = tune(fast_config(tmp_path, trials=3, precisions=("fp32", "ao_int8wo")))
    storage = f"sqlite:///{tmp_path / (result.path.stem + '.optuna.db')}"
    trials = optuna.load_study(study_name=result.profile.study.study_name, storage=storage).trials
    assert [t.state for t in trials].count(TrialState.FAIL) == 1
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    assert "out of memory" in failed.user_attrs["error"]
    assert [outcome(t) for t in trials].count("measured") == 2  # the failure counted as one


@pytest.mark.slow
def test_a_time_budget_says_what_it_left_out_and_a_rerun_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autoq.tune import _objective

    config = fast_config(tmp_path, trials=3, precisions=("fp32", "ao_int8wo"), timeout_s=0.01)
    with pytest.raises(ConfigError, match=r"pass --timeout \d+ s or more") as error:
        tune(config)  # no time for the reference and a plan: said at once, nothing measured
    assert "the reference and one plan beside it need about" in str(error.value)

    # As if the screen and the reference had fitted, the budget is gone after the
    # reference: one trial, then the tiers.
    size_tune, build_space = _objective.size_tune, _objective.build_space
    monkeypatch.setattr(_objective, "size_tune", lambda _left, *a, **k: size_tune(None, *a, **k))
    monkeypatch.setattr(
        _objective, "build_space", lambda *a, screen_budget_s, **k: build_space(*a, **k)
    )
    cut = tune(config)
    left_out = cut.profile.study.left_out
    assert cut.profile.study.timeout_s == 0.01
    assert left_out[0] == "search: 1 of 3 trials measured"
    assert left_out[-2].startswith("side-by-side timing of ")  # before the tiers...
    assert left_out[-1].startswith("step curves: ")  # ...and after them (no dial to time)
    assert all(len(t.steps_curve) == 1 for t in cut.profile.tiers)  # their own steps only
    note = next(line for line in cut.profile.notes() if line.startswith("time budget"))
    assert "re-run" in note and left_out[0] in note
    assert read_profile(cut.path) == cut.profile  # what was left out is on disk too
    page = write_report(cut.profile, cut.path, tmp_path / "r.html").read_text()
    assert "left out: search: 1 of 3 trials measured" in page

    (cut.path.with_suffix("") / "tiers" / "a-tier-of-an-earlier-run").mkdir()

    phases: list[tuple[str, int, int]] = []
    done = tune(  # the same study, no budget
        config.model_copy(update={"timeout_s": None}), on_phase=lambda *p: phases.append(p)
    )
    racing = [(d, n) for phase, d, n in phases if phase == "racing"]
    assert racing[-1][0] == racing[-1][1]  # the progress of each phase reaches its total
    count = len(done.profile.tiers)
    assert ("step curves", count, count) in phases
    study = optuna.load_study(study_name=done.profile.study.study_name, storage=_db(tmp_path))
    candidates, _, _ = tier_candidates(StudyRecord(study), assess(study))
    plans = [done.profile.reference.plan, *(a.plan for a in candidates)]
    line_up = 2 * len({p.model_dump_json() for p in plans})  # two passes per plan
    assert ("side-by-side timing", line_up, line_up) in phases
    assert phases[-1] == ("step dial timing", 2 * count, 2 * count)  # two passes per tier
    assert done.profile.study.left_out == [] and done.profile.study.timeout_s is None
    assert not any(line.startswith("time budget") for line in done.profile.notes())
    assert sum(outcome(t) == "measured" for t in study.trials) == 3
    assert all(len(t.steps_curve) >= 2 for t in done.profile.tiers)
    samples = done.path.with_suffix("") / "tiers"  # only this profile's tiers keep samples
    assert {f.name for f in samples.iterdir()} == {t.name for t in done.profile.tiers}

    again: list[tuple[str, int, int]] = []  # a finished study: a rerun measures nothing
    same = tune(config.model_copy(update={"timeout_s": None}), on_phase=lambda *p: again.append(p))
    assert {total for phase, _, total in again if phase in ("racing", "deep set")} <= {0}
    assert not [p for p in again if p[0] in ("side-by-side timing", "step dial timing")]
    assert same.profile.tiers == done.profile.tiers

    # Workers sharing a study each write what their own budget left out; the study keeps
    # the last run's record, which an export reads.
    workdir = Path(study.user_attrs["workdir"])
    mine = TimeBudget(seconds=1.0, cuts=["racing: 1 of 2 plans not raced to 4 images"])
    _, worker = write_study_profile(study, _db(tmp_path), workdir, tmp_path / "w.json", mine)
    assert worker.study.left_out == mine.cuts and worker.study.timeout_s == 1.0
    exported = export_profile(_db(tmp_path), study.study_name, tmp_path / "x")
    assert exported.profile.study.left_out == []


@pytest.mark.slow
def test_a_race_cut_short_takes_the_tiers_from_the_raced_plans(tmp_path: Path, monkeypatch) -> None:
    from autoq.tune import _budget

    checks = {"n": 0}

    def allows(self, seconds: float = 0.0) -> bool:  # time for one racing extension
        checks["n"] += 1
        return checks["n"] == 1

    monkeypatch.setattr(_budget.Deadline, "allows", allows)
    config = fast_config(
        tmp_path, trials=4, max_clip_drop_pct=40, precisions=("fp32", "ao_int8wo", "bnb_nf4")
    )
    result = tune(config.model_copy(update={"timeout_s": 3600.0}))
    assert result.profile.study.left_out[0].startswith("racing: ")
    screened = [p for p in result.profile.trials if p.scores and len(p.scores) < 4]
    assert screened  # plans left on their screening images...
    assert all(t.metrics.n_images >= 4 for t in result.profile.tiers)  # ...are not tiers


def test_impossible_constraints_say_what_to_relax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="relax"):
        tune(fast_config(tmp_path, trials=1, precisions=("fp32",), max_latency_s=1e-6))


def _tried(folder: Path) -> list[optuna.trial.FrozenTrial]:
    trials = [
        t
        for name in optuna.get_all_study_names(_db(folder))
        for t in optuna.load_study(study_name=name, storage=_db(folder)).trials
    ]
    return [t for t in trials if outcome(t) != "twin"]  # twins: copies of the reference


def test_plans_far_over_the_latency_limit_are_pruned_before_they_are_built(
    tmp_path: Path,
) -> None:
    """A plan whose predicted latency (from fp32's generation and its components' timings)
    is over twice the limit is pruned without being built or generating anything."""
    config = fast_config(tmp_path, trials=2, precisions=("fp32",), max_latency_s=1e-6)
    with pytest.raises(ConfigError):  # nothing can meet a microsecond
        tune(config)
    tried = _tried(tmp_path)
    assert tried and all(outcome(t) == "over_budget" for t in tried)
    assert all("predicted latency" in t.user_attrs["pruned"] for t in tried)


def test_plans_far_over_the_latency_limit_stop_after_the_warm_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan without a prediction whose warm-up generation already takes twice the limit
    is pruned with the measured time, instead of generating every prompt."""
    from autoq.tune._objective import Tuner

    monkeypatch.setattr(Tuner, "predict_latency", lambda self, plan, study=None: None)
    config = fast_config(tmp_path, trials=2, precisions=("fp32",), max_latency_s=1e-6)
    with pytest.raises(ConfigError):
        tune(config)
    tried = _tried(tmp_path)
    assert tried and all(t.state == TrialState.PRUNED for t in tried)
    assert all("after the untimed warm-up" in t.user_attrs["pruned"] for t in tried)


def _db(folder: Path) -> str:
    return f"sqlite:///{next(folder.glob('*.optuna.db'))}"


@pytest.mark.slow
def test_fp32_baselines_become_trials_that_do_not_count(tuned) -> None:
    from autoq.tune._search import counted

    result, _ = tuned
    study = optuna.load_study(
        study_name=result.profile.study.study_name, storage=_db(result.path.parent)
    )
    trials = study.trials
    baselines = [t for t in trials if outcome(t) == "baseline"]
    # Plans at step counts and schedulers new to the study brought fp32 there along...
    assert baselines
    assert counted(trials) == 8  # ...and it does not count towards --trials.
    fp32_trials = {
        (t.user_attrs["plan"]["steps"], t.user_attrs["plan"]["scheduler"])
        for t in trials
        if t.state == TrialState.COMPLETE
        and set(t.user_attrs["plan"]["precisions"].values()) == {"fp32"}
    }
    generated = {
        (int(key.split(":")[1]), key.split(":")[2])
        for key in study.user_attrs
        if key.startswith("fp32:")
    }
    assert generated == fp32_trials  # every fp32 run of the study is a plan of it
    for trial in baselines:
        assert trial.user_attrs["evidence"]["peak_bytes"] > 0  # measured like any plan
        assert trial.values is not None and len(trial.values) == 3
    numbers = {t.number for t in baselines}
    assert numbers <= {a.trial.number for a in assess(study)}  # candidates for the tiers
    assert numbers <= {p.number for p in result.profile.trials if p.state == "complete"}


@pytest.mark.slow
def test_a_slow_reference_is_sized_to_the_budget(tmp_path: Path, monkeypatch) -> None:
    """As if each fp32 step took 10 s (a real-size model on a small CPU): the tune lowers
    its steps, shrinks the screening set, keeps one scheduler, measures the reference on
    those images only, and says each cut; nothing runs past what the sizing allowed."""
    from autoq.tune._budget import StepCost
    from autoq.tune._evaluate import Evaluator

    monkeypatch.setattr(Evaluator, "fp32_cost", lambda self: StepCost(fixed=2.0, per_step=10.0))
    config = fast_config(
        tmp_path, trials=1, n_prompts=4, eval_images=8, timeout_s=600.0,
        schedulers=("default", "euler"),
    )  # fmt: skip
    result = tune(config)
    left_out = result.profile.study.left_out
    assert any(c.startswith("steps: at most 4 instead of 8") for c in left_out)
    assert "screening set: 2 images instead of 4" in left_out
    assert any(c.startswith("schedulers: only 'default' searched") for c in left_out)
    study = optuna.load_study(study_name=result.profile.study.study_name, storage=_db(tmp_path))
    assert study.user_attrs["screen"] == 2
    assert study.user_attrs["reference"]["plan"]["steps"] == 4
    assert all(t.plan.steps == 4 and t.plan.scheduler == "default" for t in result.profile.tiers)
