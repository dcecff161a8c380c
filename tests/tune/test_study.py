"""The study mechanics without a model: budget, repeats, corners, workers, identity."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from autoq.errors import ConfigError
from autoq.pipeline import PipelinePlan
from autoq.profile import ModelIdentity
from autoq.tune import SearchSpace, TuneConfig
from autoq.tune._measure import EVAL_PROTOCOL, EvalSet
from autoq.tune._optuna import redact, sampler
from autoq.tune._search import Search, counted, fail_orphans, outcome, run_search
from autoq.tune._space import distinct_schedulers
from autoq.tune._study import _check_identity

optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = SearchSpace(
    precisions={"unet": ("fp32", "bnb_int8", "bnb_nf4"), "vae": ("fp32", "bnb_int8")},
    steps=(4, 8),
    step_size=4,
    schedulers=("default",),
    protect=False,
)  # 3 x 2 x 2 = 12 plans


def key(plan: PipelinePlan) -> str:
    return json.dumps(plan.model_dump(mode="json"), sort_keys=True)


class Fake(Search):
    """Made-up measurements; records which plans it measured."""

    def __init__(self, space: SearchSpace = SPACE, too_big: set[str] = frozenset()) -> None:
        self.space = space
        self.reference_plan = space.reference()
        self.too_big = too_big
        self.measured: list[str] = []

    def _values(self, plan: PipelinePlan) -> tuple[float, float, float]:
        bits = sum(
            8 if p == "bnb_int8" else 4 if p == "bnb_nf4" else 32 for p in plan.precisions.values()
        )
        return (float(bits + plan.steps), float(plan.steps), float(bits))

    def measure_trial(self, trial, plan):
        self.measured.append(key(plan))
        return self._values(plan)

    def reference_twin(self, trial):
        return self._values(self.reference_plan)

    def over_budget(self, plan):
        return "too big" if plan.precisions["unet"] in self.too_big else None


def study(seed: int = 0, name: str = "tpe") -> optuna.Study:
    return optuna.create_study(
        directions=["maximize", "minimize", "minimize"], sampler=sampler(name, seed, 6, SPACE)
    )


def test_repeats_and_plans_over_budget_do_not_count() -> None:
    s, fake = study(), Fake(too_big={"fp32"})
    run_search(s, fake, wanted=5, gc_after_trial=False)
    kinds = [outcome(t) for t in s.trials]
    assert counted(s.trials) == 5 == kinds.count("measured")
    assert len(fake.measured) == len(set(fake.measured)) == 5  # no plan measured twice
    assert "over_budget" in kinds  # the fp32 corners, pruned on estimated weights
    assert all(t.state == TrialState.PRUNED for t in s.trials if outcome(t) == "over_budget")


def test_no_trial_starts_that_is_expected_to_end_past_the_timeout() -> None:
    """Each trial takes 0.3 s: with 0.5 s, Optuna alone would start a second one at 0.3 s
    (ending at 0.6); the search stops instead, as that one would overrun."""
    import time

    class Slow(Fake):
        def measure_trial(self, trial, plan):
            time.sleep(0.3)
            return super().measure_trial(trial, plan)

    s, slow = study(), Slow()
    assert run_search(s, slow, wanted=10, timeout_s=0.5, corners=False) == "timeout"
    assert counted(s.trials) == 1
    assert run_search(s, slow, wanted=4, timeout_s=60.0, corners=False) == "done"  # room


def test_a_repeated_plan_is_a_twin_of_the_measured_one() -> None:
    s, fake = study(), Fake()
    params = {"unet.precision": "bnb_nf4", "vae.precision": "bnb_int8", "steps": 4,
              "scheduler": "default"}  # fmt: skip
    for _ in range(3):
        s.enqueue_trial(params)
    run_search(s, fake, wanted=2, corners=False, gc_after_trial=False)
    assert [outcome(t) for t in s.trials] == ["measured", "twin", "twin", "measured"]
    assert len(fake.measured) == 2  # the repeats cost nothing and did not count
    assert s.trials[1].values == s.trials[2].values == s.trials[0].values
    assert s.trials[1].user_attrs["twin_of"] == 0


def test_the_search_stops_when_every_plan_is_settled() -> None:
    s, fake = study(), Fake()
    run_search(s, fake, wanted=100, gc_after_trial=False)
    assert len(set(fake.measured)) == len(fake.measured) == SPACE.size() - 1  # - reference


def test_corner_plans_come_first() -> None:
    s, fake = study(), Fake()
    run_search(s, fake, wanted=3, gc_after_trial=False)
    first = [
        (t.params["unet.precision"], t.params["vae.precision"], t.params["steps"])
        for t in s.trials[:4]
    ]
    assert first == [
        ("fp32", "fp32", 4),  # fp32, fewest steps
        ("fp32", "fp32", 8),  # fp32, most steps: the reference, a free twin
        ("bnb_nf4", "bnb_int8", 8),  # every component at its smallest precision
        ("bnb_int8", "bnb_int8", 8),  # the all-8-bit plan
    ]
    assert outcome(s.trials[1]) == "twin"


def test_a_plan_running_in_another_worker_is_not_measured_again() -> None:
    s, fake = study(), Fake()
    plan = PipelinePlan(precisions={"unet": "bnb_int8", "vae": "fp32"}, steps=4)
    other = s.ask()  # another worker's trial, still measuring this plan
    other.set_user_attr("plan", plan.model_dump(mode="json"))
    other.set_user_attr("worker", "elsewhere:1")
    s.enqueue_trial({"unet.precision": "bnb_int8", "vae.precision": "fp32", "steps": 4,
                     "scheduler": "default"})  # fmt: skip
    run_search(s, fake, wanted=1, corners=False, gc_after_trial=False)
    taken = [t for t in s.trials if outcome(t) == "taken"]
    assert len(taken) == 1 and "being measured in trial 0" in taken[0].user_attrs["pruned"]
    assert key(plan) not in fake.measured and len(fake.measured) == 1


def test_a_dead_local_worker_trial_is_failed_with_its_reason() -> None:
    s = study()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    trial = s.ask()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.stdout.strip()}")
    alive = s.ask()
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    assert fail_orphans(s) == [0]
    frozen = s.trials[0]
    assert frozen.state == TrialState.FAIL and outcome(frozen) == "stale"
    assert "died" in frozen.user_attrs["interrupted"]
    assert s.trials[1].state == TrialState.RUNNING  # this process: alive
    assert counted(s.trials) == 0


def test_default_sampler_alternates_gp_and_grouped_multivariate_tpe() -> None:
    from autoq.tune._alternating import Alternating

    chosen = sampler(TuneConfig().sampler, 0, 30, SPACE)
    assert isinstance(chosen, Alternating)
    gp, tpe = chosen._samplers
    assert isinstance(gp, optuna.samplers.GPSampler)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._multivariate and tpe._group


@pytest.mark.parametrize("name", ["tpe", "gp", "gp-tpe", "grid"])
def test_samplers_settle_a_small_space_without_stalling(name: str) -> None:
    # Repeats are free twins; a sampler that kept proposing settled plans would stall.
    s, fake = study(name=name), Fake()
    run_search(s, fake, wanted=100, gc_after_trial=False)
    assert len(set(fake.measured)) == len(fake.measured) == SPACE.size() - 1  # - reference
    assert len(s.trials) < 5 * SPACE.size()


def test_alternating_sampler_takes_turns_and_tells_every_sampler() -> None:
    from autoq.tune._alternating import Alternating

    class Recorder(optuna.samplers.RandomSampler):
        def __init__(self, value: int) -> None:
            super().__init__(seed=0)
            self.value, self.drew, self.told = value, [], []

        def sample_independent(self, study, trial, name, distribution):  # type: ignore[no-untyped-def]
            self.drew.append(trial.number)
            return self.value

        def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
            self.told.append(trial.number)

    first, second = Recorder(1), Recorder(2)
    s = optuna.create_study(sampler=Alternating([first, second]))
    s.optimize(lambda t: t.suggest_int("x", 0, 5), n_trials=5)
    assert [t.params["x"] for t in s.trials] == [1, 2, 1, 2, 1]
    assert first.drew == [0, 2, 4] and second.drew == [1, 3]
    assert first.told == second.told == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="at least one"):
        Alternating([])


def test_equivalent_schedulers_are_searched_once() -> None:
    from types import SimpleNamespace

    from diffusers import DPMSolverMultistepScheduler

    from autoq.zoo import model_path

    own = DPMSolverMultistepScheduler.from_pretrained(
        model_path("shapes") / "pipeline", subfolder="scheduler"
    )
    pipe = SimpleNamespace(scheduler=own)  # the shapes model's own scheduler is DPM-Solver++
    assert distinct_schedulers(pipe, ["default", "dpmpp", "euler", "ddim"]) == [
        "default",
        "euler",
        "ddim",
    ]
    assert distinct_schedulers(pipe, ["dpmpp", "default"]) == ["dpmpp"]


def test_a_scheduler_drawing_the_same_images_is_measured_once() -> None:
    space = SearchSpace(
        precisions={"unet": ("fp32", "bnb_int8"), "vae": ("fp32",)},
        steps=(4, 8),
        step_size=4,
        schedulers=("default", "euler", "ddim"),
        protect=False,
    )
    aliases = {4: {"default": "default", "euler": "euler", "ddim": "euler"}}  # DDIM = Euler
    assert space.size() == 2 * 2 * 3
    assert space.size(aliases) == 2 * (2 + 3)  # at 4 steps two schedules, at 8 three
    s, fake = study(), Fake(space)
    fake.aliases = aliases
    for scheduler in ("euler", "ddim", "ddim"):
        s.enqueue_trial({"unet.precision": "bnb_int8", "vae.precision": "fp32", "steps": 4,
                         "scheduler": scheduler})  # fmt: skip
    s.enqueue_trial({"unet.precision": "bnb_int8", "vae.precision": "fp32", "steps": 8,
                     "scheduler": "ddim"})  # fmt: skip
    run_search(s, fake, wanted=2, corners=False, gc_after_trial=False)
    assert [outcome(t) for t in s.trials] == ["measured", "twin", "twin", "measured"]
    assert s.trials[1].user_attrs["plan"]["scheduler"] == "euler"  # the plan it stands for
    assert s.trials[3].user_attrs["plan"]["scheduler"] == "ddim"  # 8 steps: not the same
    # Every distinct plan settled ends the search, counting a stand-in as one.
    s, fake = study(), Fake(space)
    fake.aliases = aliases
    run_search(s, fake, wanted=100, gc_after_trial=False)
    assert len(set(fake.measured)) == len(fake.measured) == space.size(aliases) - 1


def test_space_size_counts_distinct_plans() -> None:
    protected = SearchSpace(
        precisions={"unet": ("fp32", "bnb_int8")}, steps=(1, 3), schedulers=("default", "ddim")
    )
    # fp32, int8, int8+protect; 3 step counts; 2 schedulers
    assert protected.size() == 3 * 3 * 2
    assert SPACE.size() == 12


def test_a_baseline_trial_is_a_twin_source_and_never_counts() -> None:
    from autoq.tune._search import add_baseline

    s = study()
    fp32 = PipelinePlan(precisions={"unet": "fp32", "vae": "fp32"}, steps=4)
    assert add_baseline(s, SPACE, fp32, (40.0, 4.0, 64.0), {"memory": 0.0}, None)
    assert not add_baseline(s, SPACE, fp32, (40.0, 4.0, 64.0), {}, None)  # the study has it
    off_grid = fp32.model_copy(update={"steps": 5})
    assert not add_baseline(s, SPACE, off_grid, (40.0, 4.0, 64.0), {}, None)
    (added,) = s.trials
    assert (outcome(added), counted(s.trials), added.constraints) == (
        "baseline",
        0,
        {"memory": 0.0},
    )
    # The sampler drawing that plan later gets the baseline's result: a twin, not counted.
    s.enqueue_trial(SPACE.params(fp32))
    fake = Fake()
    run_search(s, fake, wanted=1, corners=False)
    assert outcome(s.trials[1]) == "twin" and key(fp32) not in fake.measured
    assert counted(s.trials) == 1


def test_params_draw_back_the_plan_and_fit_the_distributions() -> None:
    from optuna.trial import FixedTrial, create_trial

    protected = SearchSpace(
        precisions={"unet": ("fp32", "bnb_int8"), "vae": ("fp32", "bnb_nf4")},
        steps=(2, 10),
        step_size=4,
        schedulers=("default", "euler"),
    )
    explore = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        plan = protected.suggest(explore.ask())
        params = protected.params(plan)
        assert params is not None
        assert protected.suggest(FixedTrial(params)) == plan
        # What `study.add_trial` checks: every value lies in its distribution.
        create_trial(params=params, distributions=protected.distributions(), values=[1.0])
    outside = [
        PipelinePlan(precisions={"unet": "bnb_nf4", "vae": "fp32"}, steps=2),  # not offered
        PipelinePlan(precisions={"unet": "fp32", "vae": "fp32"}, steps=4),  # off the grid
        PipelinePlan(precisions={"unet": "fp32", "vae": "fp32"}, steps=2, scheduler="ddim"),
        PipelinePlan(precisions={"unet": "fp32"}, steps=2),
    ]
    assert [protected.params(p) for p in outside] == [None] * 4


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:s3cr:et@db:5432/x", "postgresql://bob:***@db:5432/x"),
        ("postgresql://:pw@db/x", "postgresql://:***@db/x"),
        ("postgresql://bob@db/x", "postgresql://bob@db/x"),
        (
            "postgresql://db/x?user=a&password=zz&ssl=1",
            "postgresql://db/x?user=a&password=***&ssl=1",
        ),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
    ],
)
def test_storage_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


def _study_of(identity: ModelIdentity | None, name: str = "shapes-fp-aaaa") -> optuna.Study:
    storage = optuna.storages.InMemoryStorage()
    s = optuna.create_study(storage=storage, study_name=name, directions=["maximize"])
    if identity is not None:
        s.set_user_attr("model", identity.model_dump())
    return s


SHAPES = ModelIdentity(
    source="zoo:shapes", content_hash="aaaa", pipeline_class="StableDiffusionPipeline"
)


def test_a_study_of_another_model_is_not_resumed() -> None:
    other = ModelIdentity(
        source="other/shapes", content_hash="bbbb", pipeline_class="PixArtSigmaPipeline"
    )
    with pytest.raises(ConfigError, match="another model"):
        _check_identity(_study_of(SHAPES), other, explicit=True)
    _check_identity(_study_of(SHAPES), SHAPES, explicit=True)  # same model: fine
    with pytest.raises(ConfigError, match="height x width"):
        _check_identity(_study_of(SHAPES), SHAPES, explicit=True, size=(64, 64))


def test_a_study_measured_under_an_older_protocol_is_not_resumed() -> None:
    old = _study_of(SHAPES)
    old.set_user_attr("reference", {"metrics": {}})  # measured, without a protocol: version 1
    with pytest.raises(ConfigError, match="protocol 1"):
        _check_identity(old, SHAPES, explicit=True)
    old.set_user_attr("eval_protocol", EVAL_PROTOCOL)
    _check_identity(old, SHAPES, explicit=True)


def test_every_evaluation_image_draws_its_own_noise() -> None:
    evalset = EvalSet(("a", "b", "c"), (0, 1), screen=2)
    seeds = [evalset.image(i)[1] for i in range(evalset.size)]
    assert len(set(seeds)) == evalset.size
    assert [evalset.image(i)[0] for i in range(evalset.size)] == ["a", "b", "c"] * 2
    held_out = EvalSet(("a", "b", "c"), (1000,), screen=1)
    assert not {held_out.image(i)[1] for i in range(3)} & set(seeds)


def test_changed_weights_start_a_new_study_and_say_so(caplog: pytest.LogCaptureFixture) -> None:
    old = _study_of(SHAPES)
    changed = SHAPES.model_copy(update={"content_hash": "cccc"})
    new = optuna.create_study(
        storage=old._storage, study_name="shapes-fp-cccc", directions=["maximize"]
    )
    with caplog.at_level("WARNING", logger="autoq"):
        _check_identity(new, changed, explicit=False)
    events = [getattr(r, "autoq_event", {}) for r in caplog.records]
    said = [entry for entry in events if entry.get("event") == "model_changed"]
    assert len(said) == 1 and said[0]["earlier"] == ["shapes-fp-aaaa"]


def test_size_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="together"):
        TuneConfig.create(height=64)
    with pytest.raises(ConfigError, match="multiples of 8"):
        TuneConfig.create(height=60, width=64)
    assert TuneConfig.create(height=48, width=64, guidance_scale=3.0).height == 48
