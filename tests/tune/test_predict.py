"""A plan's latency predicted from fp32's generation and its components' replay times."""

from __future__ import annotations

import pytest

from autoq.pipeline import PROTECT_GROUPS, PipelinePlan
from autoq.tune._budget import StepCost
from autoq.tune._predict import LatencyModel

FP32 = {"unet": 3.0, "text_encoder": 0.2, "vae": 4.0}  # one step; one generation's calls
SECONDS = {
    ("unet", "bf16", ()): 1.5,
    ("unet", "bf16", PROTECT_GROUPS): 1.8,
    ("vae", "bf16", ()): 2.0,
    ("text_encoder", "ao_int8wo", ()): 0.3,
}
MODEL = LatencyModel(StepCost(fixed=4.5, per_step=3.0), FP32, SECONDS)


def _plan(steps: int = 10, **precisions: str) -> PipelinePlan:
    every = dict.fromkeys(FP32, "fp32")
    return PipelinePlan(precisions={**every, **precisions}, steps=steps)


def test_fp32_is_its_measured_generation() -> None:
    assert MODEL.predict(_plan(steps=10)) == pytest.approx(34.5)


def test_each_component_swaps_its_fp32_time_for_its_precisions() -> None:
    """The denoiser once per step, the others once per generation."""
    plan = _plan(steps=10, unet="bf16", vae="bf16", text_encoder="ao_int8wo")
    assert MODEL.predict(plan) == pytest.approx(34.5 - 10 * 1.5 - 2.0 + 0.1)
    protected = plan.model_copy(update={"protect": {"unet": PROTECT_GROUPS}})
    assert MODEL.predict(protected) == pytest.approx(34.5 - 10 * 1.2 - 2.0 + 0.1)


def test_what_was_not_timed_is_not_predicted() -> None:
    assert MODEL.predict(_plan(unet="bnb_nf4")) is None  # the screen did not time it
    assert MODEL.predict(_plan().model_copy(update={"execution": {"unet": "openvino"}})) is None
    assert MODEL.predict(_plan().model_copy(update={"memory": ("vae_tiling",)})) is None


def test_calibrated_on_the_measured_reference() -> None:
    """The machine ran the reference 20% faster than the first timings said: every
    prediction follows."""
    calibrated = MODEL.calibrated(measured_s=0.8 * 34.5, steps=10)
    assert calibrated.predict(_plan(steps=10)) == pytest.approx(0.8 * 34.5)
    plan = _plan(steps=5, unet="bf16")
    assert calibrated.predict(plan) == pytest.approx(0.8 * (4.5 + 15.0 - 5 * 1.5))


def test_a_plan_predicted_far_over_the_latency_limit_is_pruned_before_it_is_built() -> None:
    """The tuner rules out what its prediction puts over twice ``--max-latency`` (the
    margin a measured warm-up gets), and keeps what it cannot predict."""
    from autoq.tune._config import TuneConfig
    from autoq.tune._objective import Tuner

    tuner = Tuner.__new__(Tuner)  # the pruning rule alone, without a model to load
    tuner.config = TuneConfig.create(max_latency_s=10.0)
    tuner.estimate_weight_bytes = lambda plan: 0.0  # type: ignore[method-assign]
    tuner.latency = MODEL
    assert tuner.over_budget(_plan(steps=10)) == (
        "predicted latency 34.50 s is over twice --max-latency"
    )
    assert tuner.over_budget(_plan(steps=10, unet="bf16", vae="bf16")) is None  # 17.5 s
    assert tuner.over_budget(_plan(steps=10, unet="bnb_nf4")) is None  # not predicted


def test_fp32_measured_at_the_plans_steps_and_scheduler_is_the_base() -> None:
    """Where the study has fp32's latency at the plan's own steps and scheduler (its
    paired baseline), that measurement replaces the predicted base."""
    plan = _plan(steps=10, unet="bf16")
    assert MODEL.predict(plan, fp32_s=30.0) == pytest.approx(30.0 - 10 * 1.5)
    calibrated = MODEL.calibrated(measured_s=0.5 * 34.5, steps=10)
    assert calibrated.predict(plan, fp32_s=30.0) == pytest.approx(30.0 - 0.5 * 10 * 1.5)
