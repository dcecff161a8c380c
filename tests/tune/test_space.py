"""Execution and memory tools as search dimensions, beside precision, steps and scheduler."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import FixedTrial, create_trial

from autoq.errors import ConfigError
from autoq.execution import EXECUTORS, Executor
from autoq.pipeline import PipelinePlan
from autoq.tune import SearchSpace
from autoq.tune._space import component_executors, default_executors

optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = SearchSpace(
    precisions={"unet": ("fp32", "bnb_int8"), "vae": ("fp32",)},
    steps=(4, 8),
    step_size=4,
    schedulers=("default",),
    protect=False,
    executions={"unet": ("eager", "openvino"), "vae": ("eager", "openvino_int8")},
    memory=("vae_tiling",),
)


@pytest.fixture(scope="module")
def pipe():
    from autoq.zoo import load_pipeline

    return load_pipeline("shapes")


def test_drawn_plans_name_executors_only_where_they_fit() -> None:
    explore = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        plan = SPACE.suggest(explore.ask())
        # OpenVINO converts fp32 weights; drawn beside bnb_int8 the UNet runs eagerly.
        if plan.precisions["unet"] == "bnb_int8":
            assert plan.executor("unet") == "eager"
        params = SPACE.params(plan)
        assert params is not None and SPACE.suggest(FixedTrial(params)) == plan
        create_trial(params=params, distributions=SPACE.distributions(), values=[1.0])
        seen.add((plan.executor("unet"), plan.executor("vae"), plan.memory))
    assert ("openvino", "openvino_int8", ("vae_tiling",)) in seen
    assert ("eager", "eager", ()) in seen


def test_size_counts_each_executor_on_the_precisions_it_runs() -> None:
    # unet: fp32 eager/openvino + bnb_int8 eager; vae: fp32 eager/openvino_int8;
    # tiling on/off; 2 step counts.
    assert SPACE.size() == 3 * 2 * 2 * 2


def test_plans_outside_the_dimensions_are_not_in_the_space() -> None:
    fp32 = {"unet": "fp32", "vae": "fp32"}
    outside = [
        PipelinePlan(precisions=fp32, execution={"unet": "compile"}, steps=4),
        PipelinePlan(precisions=fp32, execution={"vae": "openvino"}, steps=4),
        PipelinePlan(precisions=fp32, memory=("vae_slicing",), steps=4),
    ]
    assert [SPACE.params(p) for p in outside] == [None] * 3
    inside = PipelinePlan(precisions=fp32, execution={"vae": "openvino_int8"}, steps=8)
    assert SPACE.params(inside) == {
        "unet.precision": "fp32",
        "vae.precision": "fp32",
        "unet.execution": "eager",
        "vae.execution": "openvino_int8",
        "memory.vae_tiling": False,
        "steps": 8,
        "scheduler": "default",
    }


def test_corners_run_the_reference_weights_under_each_executor() -> None:
    plans = [SPACE.suggest(FixedTrial(params)) for params in SPACE.corners(lambda c, p: 1.0)]
    executed = [p.execution for p in plans if set(p.precisions.values()) == {"fp32"}]
    assert {"unet": "openvino"} in executed  # the executors the UNet has
    assert {"vae": "openvino_int8"} in executed


def test_executors_must_start_with_eager() -> None:
    with pytest.raises(ValueError, match="must start with 'eager'"):
        SearchSpace(
            precisions={"unet": ("fp32",)},
            steps=(4, 8),
            schedulers=("default",),
            executions={"unet": ("openvino",)},
        )


def test_components_get_the_executors_that_apply_to_them(pipe) -> None:
    cpu = torch.device("cpu")
    assert default_executors(cpu) == ("eager", "openvino", "openvino_int8")
    assert default_executors(torch.device("cuda")) == ("eager", "compile")
    found = component_executors(pipe, None, cpu)
    assert found["unet"] == ("eager", "openvino", "openvino_int8")
    assert found["vae"] == ("eager", "openvino", "openvino_int8")
    asked = component_executors(pipe, ["channels_last"], cpu)
    assert asked["unet"] == asked["vae"] == ("eager", "channels_last")
    assert asked["text_encoder"] == ("eager",)  # no convolutions to reorder
    assert set(component_executors(pipe, ["eager"], cpu).values()) == {("eager",)}


def test_an_executor_asked_for_that_cannot_run_is_a_clear_error(pipe, monkeypatch) -> None:
    nowhere = Executor("nowhere", "a test executor", lambda m, c: m, check=lambda d: "no such hw")
    monkeypatch.setitem(EXECUTORS, "nowhere", nowhere)
    with pytest.raises(
        ConfigError, match=r"'nowhere' cannot run on cpu: no such hw.*autoq backends"
    ):
        component_executors(pipe, ["nowhere"], torch.device("cpu"))
    with pytest.raises(ConfigError, match="Unknown executor 'warp'"):
        component_executors(pipe, ["warp"], torch.device("cpu"))
