"""Each plan dimension on its own: what a trial draws, the way back from a plan, its part
of the component cache key, how it is applied and what plain diffusers code it exports."""

from __future__ import annotations

from typing import Any

import diffusers
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution

from autoq.errors import ConfigError
from autoq.pipeline import (
    MEMORY_TOOLS,
    PROTECT_GROUPS,
    Dimension,
    Draft,
    ExecutionDimension,
    MemoryDimension,
    PipelinePlan,
    PrecisionDimension,
    SchedulerDimension,
    StepsDimension,
    build_scheduler,
)

FP32 = {"unet": "fp32", "vae": "fp32"}


def drawn(dimension: Dimension, params: dict[str, Any], **fields: Any) -> PipelinePlan:
    """The plan ``dimension`` writes from ``params`` over a draft of ``fields``."""
    draft = Draft(**{"precisions": dict(FP32), **fields})
    dimension.write(params, draft)
    return draft.plan()


def test_precision_draws_a_precision_and_protection_that_reads_back() -> None:
    unet = PrecisionDimension("unet", ("fp32", "bnb_int8"))
    assert {n: d.choices for n, d in unet.distributions().items()} == {
        "unet.precision": ("fp32", "bnb_int8"),
        "unet.protect": (False, True),
    }
    plan = drawn(unet, {"unet.precision": "bnb_int8", "unet.protect": True})
    assert plan.precisions["unet"] == "bnb_int8" and plan.protect == {"unet": PROTECT_GROUPS}
    assert unet.read(plan) == {"unet.precision": "bnb_int8", "unet.protect": True}
    # Protecting fp32 keeps nothing more: the same plan as unprotected.
    assert drawn(unet, {"unet.precision": "fp32", "unet.protect": True}).protect == {}


def test_precision_reads_none_for_what_its_values_do_not_hold() -> None:
    unprotected = PrecisionDimension("unet", ("fp32", "bnb_int8"), protect=False)
    assert set(unprotected.distributions()) == {"unet.precision"}
    plan = PipelinePlan(precisions={**FP32, "unet": "bnb_int8"}, steps=4)
    assert unprotected.read(plan) == {"unet.precision": "bnb_int8"}
    protected = plan.model_copy(update={"protect": {"unet": PROTECT_GROUPS}})
    partly = plan.model_copy(update={"protect": {"unet": ("norms",)}})
    other = PipelinePlan(precisions={**FP32, "unet": "bf16"}, steps=4)
    assert unprotected.read(protected) is None  # no protect toggle to draw it with
    assert PrecisionDimension("unet", ("fp32", "bnb_int8")).read(partly) is None
    assert unprotected.read(other) is None


def test_an_execution_that_does_not_fit_the_precision_falls_back_to_eager() -> None:
    unet = ExecutionDimension("unet", ("eager", "openvino"))
    params = {"unet.execution": "openvino"}
    assert drawn(unet, params).executor("unet") == "openvino"
    # OpenVINO converts fp32 weights: beside bnb_int8 the UNet runs eagerly.
    assert drawn(unet, params, precisions={**FP32, "unet": "bnb_int8"}).execution == {}
    # One executor: nothing to draw, and only eager plans read back.
    alone = ExecutionDimension("vae")
    assert alone.distributions() == {} and alone.read(PipelinePlan(precisions=FP32, steps=4)) == {}
    compiled = PipelinePlan(precisions=FP32, execution={"vae": "compile"}, steps=4)
    assert alone.read(compiled) is None
    with pytest.raises(ValueError, match="must start with 'eager'"):
        ExecutionDimension("unet", ("openvino",))


def test_component_dimensions_make_the_cache_key() -> None:
    plan = PipelinePlan(
        precisions={"unet": "bnb_int8", "vae": "fp32", "text_encoder": "fp32"},
        protect={"unet": ("norms", "io")},
        execution={"vae": "compile"},
        memory=("vae_tiling", "vae_slicing"),
        steps=4,
    )
    assert PrecisionDimension.key(plan, "unet") == ("bnb_int8", ("io", "norms"))
    assert ExecutionDimension.key(plan, "vae") == "compile"
    assert MemoryDimension.key(plan, "vae") == ("vae_slicing", "vae_tiling")
    assert MemoryDimension.key(plan, "unet") == ()
    assert plan.component_key("unet") == ("unet", "bnb_int8", ("io", "norms"), "eager", ())
    assert plan.component_key("vae") == (
        "vae", "fp32", (), "compile", ("vae_slicing", "vae_tiling"),
    )  # fmt: skip


def test_memory_tools_are_toggles_on_a_copy_and_export_as_enable_calls() -> None:
    memory = MemoryDimension(("vae_tiling", "vae_slicing"))
    params = {"memory.vae_tiling": True, "memory.vae_slicing": False}
    plan = drawn(memory, params)
    assert plan.memory == ("vae_tiling",) and memory.read(plan) == params
    assert MemoryDimension(("vae_slicing",)).read(plan) is None
    vae = diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4)
    tiled = MemoryDimension.apply(vae, plan.memory)
    assert tiled.use_tiling and not vae.use_tiling  # the stored component is untouched
    assert tiled.encoder is vae.encoder  # same weights
    assert MemoryDimension.export(plan) == ["pipe.vae.enable_tiling()"]
    # Each tool's export is a method diffusers' VAE really has.
    assert all(callable(getattr(vae, tool.enable)) for tool in MEMORY_TOOLS.values())


def test_steps_draw_on_their_grid_and_are_the_runtime_toggle() -> None:
    steps = StepsDimension(5, 30, 5)
    (distribution,) = steps.distributions().values()
    assert isinstance(distribution, IntDistribution) and distribution.step == 5
    assert steps.values() == [5, 10, 15, 20, 25, 30]
    assert drawn(steps, {"steps": 15}).steps == 15
    assert steps.read(PipelinePlan(precisions=FP32, steps=12)) is None
    runtime = [d for d in Dimension.__subclasses__() if d.runtime_toggle]
    assert runtime == [StepsDimension]  # the step dial: no rebuild
    with pytest.raises(ValueError, match="1 <= low <= high"):
        StepsDimension(8, 4)


def test_the_scheduler_is_built_in_one_place_from_the_models_config() -> None:
    from autoq.zoo import load_pipeline

    pipe = load_pipeline("shapes")
    names = SchedulerDimension(("default", "euler"))
    assert isinstance(next(iter(names.distributions().values())), CategoricalDistribution)
    plan = drawn(names, {"scheduler": "euler"})
    assert plan.scheduler == "euler" and names.read(plan) == {"scheduler": "euler"}
    euler = SchedulerDimension.apply(pipe, "euler")
    assert isinstance(euler, diffusers.EulerDiscreteScheduler)
    assert euler.config.num_train_timesteps == pipe.scheduler.config.num_train_timesteps
    own = build_scheduler(pipe, "default")
    assert type(own) is type(pipe.scheduler) and own is not pipe.scheduler


def test_a_scheduler_the_model_cannot_use_is_a_config_error() -> None:
    from autoq.zoo import load_pipeline

    pipe = load_pipeline("shapes")
    pipe.scheduler = diffusers.FlowMatchEulerDiscreteScheduler()
    with pytest.raises(ConfigError, match=r"'ddim' is not compatible.*valid here"):
        build_scheduler(pipe, "ddim")


def test_a_draft_makes_a_valid_plan() -> None:
    plan = Draft(precisions=dict(FP32), execution={"unet": "eager"}, steps=3).plan()
    assert plan == PipelinePlan(precisions=FP32, steps=3)  # eager is no execution entry
