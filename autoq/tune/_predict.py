"""A plan's latency predicted from its components' timings, before it is built.

A generation is close to the text encoders' calls, plus steps times the denoiser's call,
plus the VAE decode, plus the pipeline's own overhead. fp32's generation is measured
(`StepCost`); the screen timed each (component, precision) on the calls the pipeline
makes (`autoq.pipeline.ScreenResult.seconds`). A plan's prediction is fp32's generation
at its steps with each component's fp32 time swapped for its precision's, scaled by how
the reference's measured latency compares with its own prediction (the machine's speed
when the search runs, not when the screen did). Executors and memory tools are not timed
per component, so plans that use them get no prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from autoq.pipeline import PipelinePlan
from autoq.tune._budget import StepCost

__all__ = ["DENOISERS", "LatencyModel"]

DENOISERS = frozenset({"unet", "transformer"})
"""Components called once per denoising step (the others once per generation)."""


@dataclass(frozen=True)
class LatencyModel:
    """Predicts plan latency from fp32's generation and per-component replay seconds."""

    cost: StepCost
    fp32: Mapping[str, float]
    """fp32's replay seconds per component: one step of a denoiser, one generation's
    calls of the others."""
    seconds: Mapping[tuple[str, str, tuple[str, ...]], float]
    """Replay seconds per (component, precision, protect groups), on the same calls."""
    scale: float = 1.0
    """Measured over predicted latency of fp32 (`calibrated`)."""

    def calibrated(self, measured_s: float, steps: int) -> LatencyModel:
        """This model scaled so fp32 at ``steps`` predicts the ``measured_s`` seconds."""
        raw = self.cost.image(steps)
        return replace(self, scale=measured_s / raw if raw > 0 else 1.0)

    def predict(self, plan: PipelinePlan, fp32_s: float | None = None) -> float | None:
        """Seconds of one generation of ``plan``; ``None`` where a part of it was not
        timed (an executor, a memory tool, a pairing the screen did not time).
        ``fp32_s``: fp32's measured latency at the plan's steps and scheduler, where the
        study has it (its paired baseline), for the base instead of `cost`."""
        if plan.execution or plan.memory:
            return None
        total = self.cost.image(plan.steps) if fp32_s is None else fp32_s / self.scale
        for component, precision in plan.precisions.items():
            if precision == "fp32" or component not in self.fp32:
                continue
            protect = tuple(plan.protect.get(component, ()))
            seconds = self.seconds.get((component, precision, protect))
            if seconds is None:
                return None
            calls = plan.steps if component in DENOISERS else 1
            total += calls * (seconds - self.fp32[component])
        return max(total, 0.0) * self.scale
