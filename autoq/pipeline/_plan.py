"""A pipeline plan: which precision each component gets, plus steps and scheduler."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["PLAN_VERSION", "SCHEDULERS", "PipelinePlan"]

PLAN_VERSION = 1

SCHEDULERS: dict[str, str | None] = {
    "default": None,  # the model's own scheduler, as saved with it
    "dpmpp": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
}
"""Scheduler names a plan may use, mapped to their diffusers class names."""


class PipelinePlan(BaseModel):
    """An explicit ``component -> precision`` mapping plus generation settings.

    Attributes:
        precisions: Precision name per pipeline component (``unet``, ``text_encoder``, ...).
        protect: Per component, names of `autoq.backends.PROTECT_PRESETS` groups kept at
            the component's original precision.
        steps: Denoising steps.
        scheduler: A key of `SCHEDULERS`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = PLAN_VERSION
    precisions: dict[str, str]
    protect: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    steps: int = Field(ge=1, le=1000)
    scheduler: str = "default"

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != PLAN_VERSION:
            raise ValueError(f"plan version must be {PLAN_VERSION}, but got {value}.")
        return value

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, value: dict[str, str]) -> dict[str, str]:
        from autoq.backends import get_precision

        if not value:
            raise ValueError("a plan needs at least one component precision.")
        for precision in value.values():
            get_precision(precision)  # raises with the list of valid names
        return value

    @field_validator("protect")
    @classmethod
    def _known_presets(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        from autoq.backends import PROTECT_PRESETS

        for component, presets in value.items():
            unknown = set(presets) - set(PROTECT_PRESETS)
            if unknown:
                raise ValueError(
                    f"unknown protect group(s) {sorted(unknown)} for {component!r}; "
                    f"valid groups: {sorted(PROTECT_PRESETS)}."
                )
        return value

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {value!r}; valid: {sorted(SCHEDULERS)}.")
        return value

    def skip_patterns(self, component: str) -> list[str]:
        """The skip globs that the protect groups of ``component`` stand for."""
        from autoq.backends import PROTECT_PRESETS

        return [p for group in self.protect.get(component, ()) for p in PROTECT_PRESETS[group]]

    @property
    def is_fp32(self) -> bool:
        """Every component in fp32, none protected: a paired baseline."""
        return all(p == "fp32" for p in self.precisions.values()) and not self.protect

    def fp32(self) -> PipelinePlan:
        """This plan's paired baseline: every component in fp32, same steps and scheduler."""
        return self.model_copy(
            update={"precisions": dict.fromkeys(self.precisions, "fp32"), "protect": {}}
        )

    def describe(self) -> str:
        """A one-line summary, e.g. ``unet=bnb_nf4+protect vae=fp32, 20 steps ddim``."""
        parts = [
            f"{component}={precision}" + ("+protect" if self.protect.get(component) else "")
            for component, precision in self.precisions.items()
        ]
        return f"{' '.join(parts)}, {self.steps} steps {self.scheduler}"
