"""What a trial measures: evaluation sets, paired estimates, racing, step curves, timing."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints, Metrics
from autoq.tune._choice import Choice, choose_among, finalists, tier_constraints
from autoq.tune._evidence import Assessed, tier_curve, tune_conditions
from autoq.tune._measure import EvalSet, TooSlowError, run_images, summarize
from autoq.tune._record import StudyContext, StudyView, plan_key
from autoq.tune._tiers import Chosen

PROMPTS = [f"prompt {i}" for i in range(16)]
BASE = [60.0 + (i % 4) * 5 for i in range(16)]  # prompts differ, as they do on shapes


def _summary(scores, fp32=None, reference=None, evalset=None) -> Metrics:
    return summarize(
        evalset or EvalSet(tuple(PROMPTS), (0,), 6),
        scores=scores,
        fp32=fp32,
        reference=reference,
        seconds=[0.5, 0.4, 0.6],
        peak_bytes=100,
        weight_bytes=80,
        memory_method="cpu_dispatch_tracker",
    )


def test_full_set_has_enough_images_and_the_screen_is_its_prefix() -> None:
    wide = EvalSet.build(PROMPTS, screen=6, seed=0)
    assert (len(wide.prompts), wide.screen, wide.full) == (16, 6, 32)
    assert (wide.seeds, wide.size) == ((0, 1, 2, 3), 64)  # the deep set: twice the full set
    narrow = EvalSet.build(PROMPTS[:6], screen=6, seed=7, full_images=16)
    assert (narrow.full, narrow.size, narrow.seeds) == (18, 36, (7, 8, 9, 10, 11, 12))
    # Round-major, and every image draws its own noise: round seed x prompts + prompt index.
    assert [narrow.image(i) for i in range(6)] == [(p, 42 + i) for i, p in enumerate(PROMPTS[:6])]
    assert narrow.image(6) == (PROMPTS[0], 48)  # the next round
    assert narrow.clusters(3, start=5) == [5, 0, 1]


def test_a_plan_is_fp32_at_its_steps_plus_its_paired_damage() -> None:
    plan = [b - 2.0 for b in BASE[:6]]  # screened on 6 images, fp32 known on 16
    metrics = _summary(plan, fp32=BASE)
    assert metrics.clip_vs_fp32 == pytest.approx(-2.0)
    assert metrics.clip_vs_fp32_ci == pytest.approx((-2.0, -2.0))
    assert metrics.clip_score == pytest.approx(sum(BASE) / 16 - 2.0)
    assert metrics.n_images == 6
    low, high = metrics.clip_ci or (0, 0)
    assert low < metrics.clip_score < high


def test_the_change_against_the_reference_is_paired() -> None:
    reference = [b + 3.0 for b in BASE]  # more steps: +3 on every image
    metrics = _summary(BASE, fp32=BASE, reference=reference)
    assert metrics.clip_vs_reference == pytest.approx(-3.0)
    assert metrics.clip_vs_reference_ci == pytest.approx((-3.0, -3.0))
    low, high = metrics.clip_ci or (0, 0)
    assert high - low > 3  # while the plan's own interval is several points wide


def test_an_fp32_plan_is_its_own_baseline_and_the_reference_changes_nothing() -> None:
    metrics = _summary(BASE)
    assert (metrics.clip_vs_fp32, metrics.clip_vs_reference) == (0.0, 0.0)
    assert metrics.latency_s == 0.5


def test_fewer_fp32_scores_than_plan_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="fp32 scores"):
        _summary(BASE, fp32=BASE[:3])


FP32 = PipelinePlan(precisions=dict.fromkeys(("unet", "text_encoder", "vae"), "fp32"), steps=30)


def _view(reference_scores=(70.0,), reference_clip=70.0, reference_plan=FP32, **attrs) -> StudyView:
    """A study's record as a tune on `PROMPTS` with the given reference leaves it."""
    context = StudyContext(
        fingerprint={},
        model={},
        constraints=Constraints(),
        prompts=PROMPTS,
        seeds=[0, 1],
        screen=6,
        full=32,
        guidance_scale=5.0,
        tiers=3,
        sampler="tpe",
        seed=0,
    )
    metrics = _assessed(0, reference_clip, 0, 1.0, 48).metrics
    reference = {
        "plan": reference_plan.model_dump(mode="json"),
        "evidence": {"scores": list(reference_scores)},
        "metrics": metrics.model_dump(mode="json"),
    }
    return StudyView({**context.model_dump(mode="json"), "reference": reference, **attrs})


def _assessed(
    number: int, clip: float, half: float, latency: float, mib: float, n: int = 6
) -> Assessed:
    metrics = Metrics(
        clip_score=clip,
        clip_score_std=1.0,
        clip_ci=(clip - half, clip + half),
        clip_vs_reference=clip - 70,
        clip_vs_reference_ci=(clip - 70 - half, clip - 70 + half),
        n_images=n,
        latency_s=latency,
        latency_p90_s=latency,
        peak_memory_bytes=int(mib * 2**20),
        weight_bytes=int(mib * 2**20),
        memory_method="x",
    )
    trial = SimpleNamespace(number=number)  # what racing reads of a trial
    return Assessed(trial=trial, plan=None, metrics=metrics, evidence={})  # type: ignore[arg-type]


def test_racing_keeps_plans_that_could_still_make_a_tier() -> None:
    plans = [
        _assessed(0, 70, 2, 1.0, 40),
        _assessed(1, 60, 2, 1.1, 41),  # surely worse than 0, and slower and larger: out
        _assessed(2, 66, 5, 1.1, 41),  # worse than 0 but the intervals overlap: kept
        _assessed(3, 55, 2, 0.2, 10),  # surely under a 10% floor (63): out
        _assessed(4, 62, 2, 0.3, 12),  # straddles the floor: could qualify, kept
        _assessed(5, 69, 2, 0.9, 30, n=32),  # already on the full set: nothing to extend
    ]
    limits = tier_constraints(Constraints())
    kept = finalists(plans, limits, reference_clip=70.0, count=8, full=32)
    assert [a.trial.number for a in kept] == [0, 2, 4]


def test_a_later_race_weighs_only_the_trials_since_the_last() -> None:
    raced = [_assessed(i, 69, 2, 0.9 + i / 10, 30 + i, n=32) for i in range(3)]
    passed_over = _assessed(3, 68, 3, 0.7, 26)  # weighed by the first race, not picked
    new = [_assessed(4, 70, 2, 0.5, 20), _assessed(5, 68, 3, 0.6, 25)]
    limits = tier_constraints(Constraints())
    plans = [*raced, passed_over, *new]
    assert finalists(plans[:4], limits, 70.0, count=3, full=32, since=3) == []  # a rerun
    kept = finalists(plans, limits, 70.0, count=1, full=32, since=3)
    assert [a.trial.number for a in kept] == [4]  # the new trials' best: they compete among them
    assert {a.trial.number for a in finalists(plans, limits, 70.0, count=3, full=32)} == {3, 4, 5}


def test_racing_spends_scarce_slots_on_plans_that_look_feasible_first() -> None:
    plans = [
        _assessed(0, 70, 2, 1.0, 40),
        _assessed(1, 62, 9, 0.2, 10),  # the fastest and smallest, but its estimate misses 63
        _assessed(2, 66, 5, 1.1, 41),
        _assessed(3, 67, 5, 0.6, 20),
    ]
    limits = tier_constraints(Constraints())

    def picked(count: int) -> set[int]:
        return {a.trial.number for a in finalists(plans, limits, 70.0, count=count, full=32)}  # type: ignore[misc]

    assert picked(3) == {0, 2, 3}
    assert picked(2) == {0, 3}  # the spanning choice among them: best and fastest/smallest
    assert picked(4) == {0, 1, 2, 3}  # room left after them goes to the long shot


def test_racing_fills_its_slots_with_plans_that_only_looked_covered() -> None:
    # From a make demo study: fp32 at 10 steps screened faster than a 4-bit plan by less
    # than latency noise, 9 CLIP points under it on 6 images, and larger: covered on
    # screening, so never raced, while long shots were. Raced, the 4-bit plans lost 3
    # points; the profile's best plan was its fastest. A slot covering would leave empty
    # goes to a plan of the likely group, not to a long shot.
    plans = [
        _assessed(0, 74.5, 15, 0.410, 23.5),  # the best estimate
        _assessed(1, 74.1, 15, 0.318, 26.2),  # 4-bit, 10 steps
        _assessed(2, 65.5, 25, 0.293, 48.1),  # fp32, 10 steps: looks covered by 1
        _assessed(3, 71.2, 18, 0.868, 11.6),  # the smallest
        _assessed(4, 70.8, 18, 0.587, 24.5),  # covered by 0
        _assessed(5, 59.9, 9, 0.133, 48.1),  # 5 steps: a long shot under the 63 floor
    ]
    limits = tier_constraints(Constraints())
    kept = finalists(plans, limits, reference_clip=70.0, count=4, full=32)
    assert {a.trial.number for a in kept} == {0, 1, 2, 3}


def test_default_tier_floor_only_without_a_quality_limit() -> None:
    assert tier_constraints(Constraints()).max_clip_drop_pct == 10.0
    assert tier_constraints(Constraints(min_clip_score=50)).max_clip_drop_pct is None


def test_step_curve_is_ascending_and_min_steps_keeps_to_the_floor() -> None:
    plan = PipelinePlan(
        precisions={"unet": "bnb_nf4", "text_encoder": "fp32", "vae": "fp32"}, steps=20
    )
    reference = [70.0 + (i % 4) for i in range(16)]
    key = f"curve:{plan_key(plan)}"
    attrs = _view(
        reference,
        71.5,
        **{
            f"{key}:10": {"steps": 10, "scores": [r - 1 for r in reference], "seconds": [0.2]},
            f"{key}:5": {"steps": 5, "scores": [r - 20 for r in reference], "seconds": [0.1]},
        },
    )
    own = _assessed(0, 71.0, 1, 0.4, 30).metrics
    chosen = Chosen(Assessed(0, plan, own, {}), own)  # type: ignore[arg-type]
    curve, min_steps = tier_curve(attrs, chosen, tier_constraints(Constraints()))
    assert [p.steps for p in curve] == [5, 10, 20]
    assert [p.latency_s for p in curve] == [0.1, 0.2, 0.4]
    assert min_steps == 10  # 5 steps lose 20 points: under the floor
    # Timed later beside its own steps, on a machine then 2x slower than in the line-up
    # (0.4 s there): the dial keeps the ratios and takes the line-up's scale.
    choice = Choice(
        [],
        Constraints(),
        None,
        set(),
        timing={plan_key(plan): {"20": [0.4]}},
        dial={plan_key(plan): {"20": [0.8], "10": [0.6, 1.0], "5": [0.4]}},
    )
    dial = choice.step_dial(plan)
    assert dial == {20: [0.4], 10: [0.3, 0.5], 5: [0.2]}
    timed, _ = tier_curve(attrs, chosen, tier_constraints(Constraints()), dial)
    assert [p.latency_s for p in timed] == [0.2, 0.4, 0.4]
    assert Choice([], Constraints(), None, set()).step_dial(plan) == {}  # no line-up: no dial


def _raced(steps: int, clip: float, latency: float) -> Assessed:
    """A plan raced to the full set (32 images), screened at ``latency`` seconds."""
    plan = PipelinePlan(
        precisions=dict.fromkeys(("unet", "text_encoder", "vae"), "fp32"), steps=steps
    )
    return replace(_assessed(steps, clip, 2, latency, 48, n=32), plan=plan)


def test_tiers_are_chosen_on_the_side_by_side_latencies() -> None:
    best, early, late = _raced(15, 74, 0.50), _raced(10, 70, 0.30), _raced(12, 70, 0.40)
    reference = FP32
    attrs = _view()
    plans = [best, early, late]

    def fastest(choice: Choice) -> Assessed:
        return next(c.item for c in choice.tiers if "latency" in c.cheapest_in)

    # Screened minutes apart: `early` ran while the machine was fast, so looks fastest.
    assert choose_among(attrs, plans, 3).timing is None
    assert fastest(choose_among(attrs, plans, 3)) is early
    # Timed side by side, `late` is the faster one.
    line_up = {
        plan_key(reference): {"30": [1.0, 1.0]},
        plan_key(best.plan): {"15": [0.50, 0.52]},
        plan_key(early.plan): {"10": [0.40, 0.42]},
        plan_key(late.plan): {"12": [0.30, 0.31]},
    }
    choice = choose_among(_view(side_by_side=line_up), plans, 3)
    assert choice.timing == line_up
    assert fastest(choice) is late
    assert {c.item.trial.number: c.metrics.latency_s for c in choice.tiers}[12] == 0.305
    # A line-up missing a candidate (a rerun raced a new plan since) is not used at all.
    partial_line_up = {k: v for k, v in line_up.items() if k != plan_key(late.plan)}
    stale = choose_among(_view(side_by_side=partial_line_up), plans, 3)
    assert stale.timing is None
    assert fastest(stale) is early


def test_side_by_side_timing_cancels_a_drifting_machine() -> None:
    from autoq.tune._measure import time_side_by_side

    clock = {"now": 0.0}
    calls: list[tuple[str, int]] = []

    def job(name: str, cost: float):
        def start():
            def run(steps: int) -> None:
                calls.append((name, steps))
                slowdown = 1 + clock["now"] / 100  # the machine slows (30% by the end)
                clock["now"] += cost * steps * slowdown

            return run

        return start

    jobs = [(job("a", 0.1), [10, 5]), (job("b", 0.1), [10]), (job("c", 0.2), [10])]
    turns: list[tuple[int, int]] = []
    timings = time_side_by_side(
        jobs, repeats=2, clock=lambda: clock["now"], on_turn=lambda *t: turns.append(t)
    )
    assert turns == [(n, 6) for n in range(7)]  # each job twice, then done
    assert [name for name, _ in calls[::5]][:2] == ["a", "b"]  # forward...
    assert [sorted(t) for t in timings] == [[5, 10], [10], [10]]
    assert all(len(seconds) == 4 for t in timings for seconds in t.values())  # 2 passes x 2
    assert calls.count(("a", 10)) == 2 * 1 + 2 * 2  # a warm-up (untimed) each turn

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    assert clock["now"] > 25  # long enough for the drift to matter
    # a and b cost the same: in mirrored passes the drift weighs on both alike, where one
    # pass (a first, b later) would call b slower
    a, b, c = (mean(t[10]) for t in timings)
    assert a == pytest.approx(b, rel=0.01)
    assert timings[1][10][0] > 1.03 * timings[0][10][0]  # a single pass misorders them
    assert c == pytest.approx(2 * a, rel=0.05)


def test_machine_counts_as_busy_when_others_take_cores() -> None:
    def conditions(load: list[float]):
        raw = {"torch_threads": 2, "cpu_count": 2, "load": load}
        return tune_conditions(StudyView({"conditions": raw}))

    assert not conditions([2.0, 2.2]).busy  # the tune's own two threads
    assert conditions([4.0, 5.0]).busy
    assert tune_conditions(StudyView({})) is None


@pytest.fixture(scope="module")
def shapes():
    import torch

    from autoq.zoo import load_pipeline, scorer

    pipe = load_pipeline("shapes")
    pipe.set_progress_bar_config(disable=True)
    return pipe, scorer("shapes"), torch.device("cpu")


@pytest.mark.slow
def test_warm_up_is_untimed_and_memory_is_tracked_on_it(shapes) -> None:
    pipe, clip, device = shapes
    evalset = EvalSet(tuple(PROMPTS[:3]), (0,), 2)
    run = run_images(
        pipe,
        evalset,
        0,
        3,
        steps=2,
        guidance_scale=5.0,
        scorer=clip,
        device=device,
        track_memory=True,
    )
    assert (len(run.images), len(run.scores), len(run.seconds)) == (3, 3, 2)
    assert run.peak_bytes is not None and run.peak_bytes > run.weight_bytes > 0
    again = run_images(pipe, evalset, 2, 3, steps=2, guidance_scale=5.0, scorer=clip, device=device)
    assert len(again.seconds) == 1 and again.peak_bytes is None  # one image: timed once more
    assert again.scores == pytest.approx(run.scores[2:], abs=1e-3)  # same seed, same image


@pytest.mark.slow
def test_schedulers_that_draw_the_same_images_stand_for_each_other(
    shapes, tmp_path, monkeypatch
) -> None:
    import optuna

    from autoq.pipeline import ComponentCache
    from autoq.tune import _evaluate

    pipe, clip, device = shapes
    evaluator = _evaluate.Evaluator(
        ComponentCache(pipe, 2**30),
        EvalSet(tuple(PROMPTS[:2]), (0,), 1),
        scorer=clip,
        device=device,
        guidance_scale=5.0,
        workdir=tmp_path,
        reference_plan=PipelinePlan(
            precisions=dict.fromkeys(("unet", "text_encoder", "vae"), "fp32"), steps=8
        ),
    )
    study = optuna.create_study()
    schedulers = ["default", "euler", "ddim"]
    aliases = evaluator.scheduler_aliases(study, [3, 6], schedulers)
    # DDIM is Euler's method on the same timesteps: the same images. The model's own
    # DPM-Solver++ is another method: other images, even at 6 steps on flat shapes.
    assert aliases == {n: {"default": "default", "euler": "euler", "ddim": "euler"} for n in (3, 6)}

    def unexpected(*args: object) -> None:
        raise AssertionError("probed twice")

    monkeypatch.setattr(_evaluate, "generate", unexpected)  # once per study
    assert evaluator.scheduler_aliases(study, [3, 6], schedulers) == aliases
    single = evaluator.scheduler_aliases(study, [4], ["default"])  # nothing to compare
    assert single == {4: {"default": "default"}}


@pytest.mark.slow
def test_a_plan_slower_than_the_give_up_limit_stops_after_one_timed_image(shapes) -> None:
    pipe, clip, device = shapes
    evalset = EvalSet(tuple(PROMPTS[:4]), (0,), 4)
    with pytest.raises(TooSlowError):
        run_images(
            pipe,
            evalset,
            0,
            4,
            steps=2,
            guidance_scale=5.0,
            scorer=clip,
            device=device,
            give_up_after_s=1e-6,
        )


@pytest.mark.slow
def test_a_tune_keeps_intervals_evidence_step_curves_and_conditions(tmp_path, caplog) -> None:
    from autoq.profile import read_profile
    from autoq.tune import export_profile, tune
    from tests.tune.conftest import fast_config

    config = fast_config(  # screen 2 images, race to 4
        tmp_path, trials=4, tiers=3, steps=(2, 4), precisions=("fp32", "bnb_nf4", "quanto_int8"),
        max_batch=4,
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="autoq"):
        result = tune(config)
    events = [getattr(r, "autoq_event", {}).get("event") for r in caplog.records]
    assert "few_prompts" in events  # 2 prompts: the tune says its intervals are wide
    profile = read_profile(result.path)
    assert profile.conditions is not None and profile.conditions.torch_threads >= 1
    assert profile.reference.metrics.n_images in (4, 8)  # the full set, or the deep one
    resources = [r for t in profile.tiers for r in t.cheapest_in]
    assert sorted(resources) == ["latency", "memory", "quality"]  # each resource once
    for tier in profile.tiers:
        low, high = tier.metrics.clip_ci or (1, 0)
        assert low <= tier.metrics.clip_score <= high
        assert tier.metrics.n_images in (4, 8)  # raced to the full (or deep) set first
        assert tier.metrics.clip_vs_fp32 is not None
        assert (tier.metrics.psnr is None) == (tier.plan == profile.reference.plan)
        steps = [p.steps for p in tier.steps_curve]
        assert len(steps) >= 2 and steps == sorted(steps) and tier.plan.steps in steps
        assert tier.min_steps is not None and tier.min_steps <= tier.plan.steps
        # Batch curves: 1, 2, 4 in one call each; activations grow with the batch.
        assert [p.batch_size for p in tier.batch_curve] == [1, 2, 4] and tier.max_batch == 4
        peaks = [p.peak_memory_bytes for p in tier.batch_curve]
        assert tier.metrics.weight_bytes < peaks[0] < peaks[-1]
    measured = [p for p in profile.trials if p.state == "complete"]
    assert measured and all(p.plan is not None for p in profile.trials)
    assert all(len(p.scores) == p.n_images >= 2 for p in measured)
    exported = export_profile(
        f"sqlite:///{tmp_path / (result.path.stem + '.optuna.db')}",
        profile.study.study_name,
        tmp_path / "exported",
    )
    assert [t.plan for t in exported.profile.tiers] == [t.plan for t in profile.tiers]
    assert [t.steps_curve for t in exported.profile.tiers] == [t.steps_curve for t in profile.tiers]
    assert [t.batch_curve for t in exported.profile.tiers] == [t.batch_curve for t in profile.tiers]


def test_borderline_plans_that_would_widen_the_span_go_to_the_deep_set() -> None:
    from autoq.profile import Constraints
    from autoq.tune._choice import borderline_corners

    sure = _assessed(0, 70, 2, 1.0, 40)  # change to the reference [-2, 2]: within 10%
    small = _assessed(1, 66, 5, 1.2, 20)  # [-9, 1]: the floor (-7) undecided, smallest
    small_2 = _assessed(2, 66, 5, 1.2, 30)  # undecided and smaller, but not the smallest
    fast = _assessed(3, 65, 4, 0.5, 45)  # [-9, -1]: undecided, fastest
    below = _assessed(4, 60, 2, 0.3, 10)  # [-12, -8]: surely below the floor
    middle = _assessed(5, 66, 5, 1.5, 50)  # undecided, but neither smaller nor faster
    unraced = _assessed(6, 66, 5, 0.2, 5)
    unraced.metrics = unraced.metrics.model_copy(update={"n_images": 3})
    plans = [sure, small, small_2, fast, below, middle, unraced]
    picks = borderline_corners(plans, Constraints(), 70.0, full=6)
    assert [a.trial.number for a in picks] == [1, 3]
    assert borderline_corners([small, fast], Constraints(), 70.0, full=6) == []  # no anchor


def test_a_deadline_starts_no_work_that_would_not_end_in_time(monkeypatch) -> None:
    from autoq.tune import _budget

    clock = {"now": 100.0}
    monkeypatch.setattr(_budget.time, "monotonic", lambda: clock["now"])
    deadline = _budget.Deadline.after(10.0)
    told = []
    deadline.progress = lambda *state: told.append(state)
    done = []
    for item in deadline.each("phase", ["a", "b", "c", "d"], lambda n: f"{n} of 4 left out"):
        clock["now"] += 4.0  # every item takes 4 s
        done.append(item)
    assert done == ["a", "b"]  # at 8 s a third would end at 12 s, past the budget
    assert deadline.cuts == ["2 of 4 left out"]
    assert told == [("phase", 0, 4), ("phase", 1, 4), ("phase", 2, 4)]
    clock["now"] = 100.0
    earlier = deadline.reserving(5.0)  # work that must leave 5 s to what follows it
    assert deadline.allows(6.0) and not earlier.allows(6.0) and earlier.allows(4.0)
    earlier.cut("x")
    assert deadline.cuts[-1] == "x"  # one record of what was left out
    unbounded = _budget.Deadline()
    assert list(unbounded.each("phase", ["a", "b"], str)) == ["a", "b"]
    assert unbounded.cuts == []


@pytest.mark.slow
def test_a_tune_searches_openvino_and_records_its_build_cost(tmp_path) -> None:
    from autoq.profile import read_profile
    from autoq.tune import tune
    from tests.tune.conftest import fast_config

    config = fast_config(tmp_path, trials=3, steps=(4, 4), precisions=("fp32",),
                         executions=("openvino",))  # fmt: skip
    profile = read_profile(tune(config).path)
    measured = {t.plan.describe(): t for t in profile.trials if t.state == "complete"}
    converted = [t for t in measured.values() if t.plan.execution]
    # The corner: the reference's fp32 weights, every component converted.
    assert any(set(t.plan.execution.values()) == {"openvino"} for t in converted)
    tiers = [profile.reference, *profile.tiers]
    built = [t for t in tiers if t.plan.execution]
    assert built and all(t.metrics.build_s is not None and t.metrics.build_s > 0 for t in built)
    assert all(t.metrics.build_s is None for t in tiers if not t.plan.execution)


def test_a_tiers_largest_batch_is_the_largest_measured_within_the_memory_limit() -> None:
    from autoq.profile import Constraints
    from autoq.tune._record import BatchPoint
    from autoq.tune._write import _batch_curve

    points = [
        BatchPoint(batch=1, seconds=0.2, peak_bytes=100),
        BatchPoint(batch=2, seconds=0.3, peak_bytes=150),
        BatchPoint(batch=4, seconds=0.5, peak_bytes=250),
    ]
    curve, largest = _batch_curve(points, Constraints(max_memory_bytes=200))
    assert [(p.batch_size, p.latency_s) for p in curve] == [(1, 0.2), (2, 0.3), (4, 0.5)]
    assert largest == 2
    assert _batch_curve(points, Constraints())[1] == 4
    assert _batch_curve(points[:1], Constraints())[1] is None  # nothing to go by


def test_a_batch_size_that_fails_ends_its_curve_and_the_tune_goes_on(
    tmp_path, monkeypatch, caplog
) -> None:
    """An executor that cannot take a new input shape must not cost the profile: the
    failing size ends that tier's curve with a warning, and the profile is written."""
    from autoq.tune import tune
    from autoq.tune._evaluate import Evaluator
    from tests.tune.conftest import fast_config

    measure = Evaluator._time_batch

    def second_fails(self, plan, batch):
        if batch > 1:
            raise RuntimeError("Couldn't get TorchScript module by tracing")
        return measure(self, plan, batch)

    monkeypatch.setattr(Evaluator, "_time_batch", second_fails)
    config = fast_config(tmp_path, trials=2, tiers=1, steps=(2, 2), precisions=("fp32",),
                         max_batch=2)  # fmt: skip
    with caplog.at_level("WARNING", logger="autoq"):
        result = tune(config)
    assert [[p.batch_size for p in t.batch_curve] for t in result.profile.tiers] == [[1]]
    assert result.profile.tiers[0].max_batch is None  # one size: nothing to go by
    assert "batch_curve_failed" in caplog.text
