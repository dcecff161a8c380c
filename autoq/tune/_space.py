"""The search space: per-component precision (and protection), steps and scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoq.errors import ConfigError
from autoq.pipeline import PipelinePlan

if TYPE_CHECKING:
    import optuna
    import torch

    from autoq.pipeline import LoadedModel
    from autoq.tune._config import TuneConfig

__all__ = ["PROTECT_GROUPS", "SearchSpace", "build_space"]

PROTECT_GROUPS = ("norms", "io", "embeddings")
"""What a component's "protect" toggle keeps at full precision."""


@dataclass(frozen=True)
class SearchSpace:
    """Everything a trial may choose.

    Attributes:
        precisions: Candidate precisions per component (usable on this device).
        steps: Inclusive ``(low, high)`` denoising-step range.
        step_size: Step-count granularity.
        schedulers: Candidate scheduler names (`autoq.pipeline.SCHEDULERS` keys).
        protect: Offer a per-component toggle that keeps `PROTECT_GROUPS` unquantized.
    """

    precisions: Mapping[str, tuple[str, ...]]
    steps: tuple[int, int]
    schedulers: tuple[str, ...]
    step_size: int = 1
    protect: bool = True

    def __post_init__(self) -> None:
        low, high = self.steps
        if not 1 <= low <= high:
            raise ValueError(f"steps must satisfy 1 <= low <= high, but got {self.steps}.")
        if self.step_size < 1:
            raise ValueError(f"step_size must be positive, but got {self.step_size}.")
        if not self.schedulers:
            raise ValueError("at least one scheduler is needed.")
        for component, options in self.precisions.items():
            if not options:
                raise ValueError(f"component {component!r} has no usable precision.")

    def suggest(self, trial: optuna.Trial) -> PipelinePlan:
        """Draw a plan for ``trial``."""
        precisions: dict[str, str] = {}
        protect: dict[str, tuple[str, ...]] = {}
        for component, options in self.precisions.items():
            precisions[component] = trial.suggest_categorical(f"{component}.precision", options)
            keep = self.protect and trial.suggest_categorical(f"{component}.protect", [False, True])
            if keep and precisions[component] != "fp32":  # nothing to protect in fp32
                protect[component] = PROTECT_GROUPS
        low, high = self.steps
        steps = trial.suggest_int("steps", low, high, step=self.step_size)
        scheduler = trial.suggest_categorical("scheduler", self.schedulers)
        return PipelinePlan(
            precisions=precisions, protect=protect, steps=steps, scheduler=scheduler
        )

    def grid(self) -> dict[str, list[Any]]:
        """The same space as explicit lists, for Optuna's `GridSampler`."""
        grid: dict[str, list[Any]] = {}
        for component, options in self.precisions.items():
            grid[f"{component}.precision"] = list(options)
            if self.protect:
                grid[f"{component}.protect"] = [False, True]
        low, high = self.steps
        grid["steps"] = list(range(low, high + 1, self.step_size))
        grid["scheduler"] = list(self.schedulers)
        return grid

    def reference(self) -> PipelinePlan:
        """The highest-precision plan: fp32 everywhere, the most steps, the model's scheduler."""
        precisions = dict.fromkeys(self.precisions, "fp32")
        return PipelinePlan(precisions=precisions, steps=self.steps[1], scheduler="default")


def build_space(config: TuneConfig, loaded: LoadedModel, device: torch.device) -> SearchSpace:
    from autoq.backends import available_precisions
    from autoq.pipeline import compatible_schedulers, module_components

    usable = available_precisions(device)
    wanted = list(config.precisions) if config.precisions else usable
    unusable = [p for p in wanted if p not in usable]
    if unusable:
        raise ConfigError(
            f"Precision(s) {unusable} are not usable on {device}; "
            "`autoq backends` lists the usable ones and why the others are not."
        )
    options = tuple(p for p in usable if p in wanted)
    schedulers = compatible_schedulers(loaded.pipe)
    if config.schedulers:
        bad = [s for s in config.schedulers if s not in schedulers]
        if bad:
            raise ConfigError(f"Scheduler(s) {bad} do not fit this model; valid: {schedulers}.")
        schedulers = list(config.schedulers)
    return SearchSpace(
        precisions={name: options for name in module_components(loaded.pipe)},
        steps=config.steps or (10, 30),
        step_size=config.step_size,
        schedulers=tuple(schedulers),
        protect=config.protect,
    )
