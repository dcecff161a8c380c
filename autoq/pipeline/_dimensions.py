"""The dimensions a plan varies along, each declared once.

A dimension holds the values a search may give it and says:

- how a trial draws it: its Optuna `distributions`, `write` (trial parameters into a
  `Draft` of the plan) and `read` (a plan back into parameters, ``None`` when the values
  it may take do not hold the plan's);
- its part of the component cache key (`key`, for the dimensions that change how one
  component is built);
- whether the runtime may change it per request without rebuilding (`runtime_toggle`);
- how it is applied (`apply`) and the plain diffusers code that reproduces it (`export`),
  or why none can.

Precision with its protection and execution are per component; memory tools, steps and
the scheduler are per pipeline. `autoq.tune.SearchSpace` searches these dimensions,
`PipelinePlan.component_key` keys the component cache by them, `assemble` and the runtime
apply them, and `autoq export` writes them. A new dimension is a class here and its field
on `PipelinePlan`. Precisions, executors and memory tools themselves are registries
(`autoq.backends`, `autoq.execution`, `MEMORY_TOOLS`): a new one of those is one entry.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from autoq.errors import ConfigError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from optuna.distributions import BaseDistribution
    from torch import nn

    from autoq.pipeline._plan import Draft, PipelinePlan

__all__ = [
    "MEMORY_TOOLS",
    "PROTECT_GROUPS",
    "SCHEDULERS",
    "Dimension",
    "ExecutionDimension",
    "MemoryDimension",
    "MemoryTool",
    "PrecisionDimension",
    "SchedulerDimension",
    "StepsDimension",
    "build_scheduler",
    "compatible_schedulers",
]

PROTECT_GROUPS = ("norms", "io", "embeddings")
"""What a component's "protect" toggle keeps at full precision."""

SCHEDULERS: dict[str, str | None] = {
    "default": None,  # the model's own scheduler, as saved with it
    "dpmpp": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
}
"""Scheduler names a plan may use, mapped to their diffusers class names."""


@dataclass(frozen=True)
class MemoryTool:
    """A diffusers memory tool a plan may switch on.

    Attributes:
        name: The name plans and the CLI use.
        component: The component it acts on.
        attribute: The flag it sets on that component.
        enable: The component method plain diffusers code calls for it.
    """

    name: str
    component: str
    attribute: str
    enable: str

    def apply(self, module: nn.Module) -> nn.Module:
        """``module`` with the tool on: a shallow copy (same weights, its own flags), so
        the stored component is never changed."""
        module = copy.copy(module)
        module.__dict__ = dict(module.__dict__)
        setattr(module, self.attribute, True)
        return module

    def export(self) -> str:
        """The line plain diffusers users run on ``pipe``."""
        return f"pipe.{self.component}.{self.enable}()"


MEMORY_TOOLS: dict[str, MemoryTool] = {
    tool.name: tool
    for tool in (
        # Decoding in tiles or one image at a time bounds the VAE's activation peak.
        MemoryTool("vae_tiling", "vae", "use_tiling", "enable_tiling"),
        MemoryTool("vae_slicing", "vae", "use_slicing", "enable_slicing"),
    )
}
"""Memory tools by name."""


def compatible_schedulers(pipe: DiffusionPipeline) -> list[str]:
    """Plan scheduler names that can replace this pipeline's own scheduler."""
    own = type(pipe.scheduler)
    allowed = {cls.__name__ for cls in getattr(pipe.scheduler, "compatibles", [])} | {own.__name__}
    return [name for name, cls in SCHEDULERS.items() if cls is None or cls in allowed]


def build_scheduler(pipe: DiffusionPipeline, name: str) -> Any:
    """A new scheduler ``name`` for ``pipe``, from its own scheduler's config (``default``:
    a copy of its own). The one place schedulers are built.

    Raises:
        ConfigError: ``name`` cannot replace this pipeline's scheduler.
    """
    import diffusers

    class_name = SCHEDULERS[name]
    if class_name is None:
        return copy.deepcopy(pipe.scheduler)
    if name not in compatible_schedulers(pipe):
        raise ConfigError(
            f"Scheduler {name!r} is not compatible with {type(pipe.scheduler).__name__}; "
            f"valid here: {compatible_schedulers(pipe)}."
        )
    return getattr(diffusers, class_name).from_config(pipe.scheduler.config)


class Dimension(ABC):
    """One dimension of a plan, with the values a search may give it."""

    runtime_toggle: ClassVar[bool] = False
    """The runtime may change it per request without rebuilding a component."""

    @abstractmethod
    def distributions(self) -> dict[str, BaseDistribution]:
        """Trial parameter name -> the Optuna distribution it is drawn from (none when
        there is nothing to choose)."""

    @abstractmethod
    def write(self, params: Mapping[str, Any], draft: Draft) -> None:
        """Set this dimension's plan fields in ``draft`` from trial parameters."""

    @abstractmethod
    def read(self, plan: PipelinePlan) -> dict[str, Any] | None:
        """The parameters that draw ``plan``'s value of this dimension (`write`'s
        inverse), or ``None`` when this dimension's values do not hold it."""


def _categorical(choices: Sequence[Any]) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution

    return CategoricalDistribution(choices)


@dataclass(frozen=True)
class PrecisionDimension(Dimension):
    """How ``component``'s weights are stored: one of ``options``, and, with ``protect``,
    whether `PROTECT_GROUPS` stay at full precision (a no-op in fp32)."""

    component: str
    options: tuple[str, ...]
    protect: bool = True

    def distributions(self) -> dict[str, BaseDistribution]:
        out = {f"{self.component}.precision": _categorical(self.options)}
        if self.protect:
            out[f"{self.component}.protect"] = _categorical([False, True])
        return out

    def write(self, params: Mapping[str, Any], draft: Draft) -> None:
        precision = params[f"{self.component}.precision"]
        draft.precisions[self.component] = precision
        if self.protect and params[f"{self.component}.protect"] and precision != "fp32":
            draft.protect[self.component] = PROTECT_GROUPS

    def read(self, plan: PipelinePlan) -> dict[str, Any] | None:
        precision = plan.precisions.get(self.component)
        groups = set(plan.protect.get(self.component, ()))
        protected = bool(groups)
        if precision not in self.options or groups not in (set(), set(PROTECT_GROUPS)):
            return None
        if protected and not self.protect:
            return None
        out: dict[str, Any] = {f"{self.component}.precision": precision}
        if self.protect:
            out[f"{self.component}.protect"] = protected
        return out

    @staticmethod
    def key(plan: PipelinePlan, component: str) -> tuple[str, tuple[str, ...]]:
        """Its part of the component cache key: the precision and the protect groups."""
        return plan.precisions[component], tuple(sorted(plan.protect.get(component, ())))


@dataclass(frozen=True)
class ExecutionDimension(Dimension):
    """Which `autoq.execution` executor runs ``component``: one of ``executors``, eager
    first (with eager alone, nothing is drawn)."""

    component: str
    executors: tuple[str, ...] = ("eager",)

    def __post_init__(self) -> None:
        if not self.executors or self.executors[0] != "eager":
            raise ValueError(
                f"executors of {self.component!r} must start with 'eager', got {self.executors}."
            )

    @property
    def _name(self) -> str:
        return f"{self.component}.execution"

    def distributions(self) -> dict[str, BaseDistribution]:
        return {self._name: _categorical(self.executors)} if len(self.executors) > 1 else {}

    def write(self, params: Mapping[str, Any], draft: Draft) -> None:
        draft.execution[self.component] = params.get(self._name, self.executors[0])

    def read(self, plan: PipelinePlan) -> dict[str, Any] | None:
        executor = plan.executor(self.component)
        if executor not in self.executors:
            return None
        return {self._name: executor} if len(self.executors) > 1 else {}

    @staticmethod
    def key(plan: PipelinePlan, component: str) -> str:
        """Its part of the component cache key: the executor's name."""
        return plan.executor(component)

    @staticmethod
    def export(plan: PipelinePlan, modules: Mapping[str, nn.Module]) -> tuple[list[str], list[str]]:
        """The setup lines plain diffusers runs for ``plan``'s executors, and the reasons
        an executor cannot be exported (only autoq runs it)."""
        from autoq.execution import get_executor

        lines, reasons = [], []
        for component, name in plan.execution.items():
            executor = get_executor(name)
            if executor.snippet is None:
                reasons.append(
                    f"{name} on {component}: plain diffusers cannot run it; serve this tier "
                    "with autoq's AdaptivePipeline, or export a tier that runs in torch"
                )
            elif line := executor.snippet(component, modules.get(component)):
                lines.append(line)
        return lines, reasons


@dataclass(frozen=True)
class MemoryDimension(Dimension):
    """Which of ``tools`` (`MEMORY_TOOLS`) are on, each an on/off choice."""

    tools: tuple[str, ...] = ()

    def distributions(self) -> dict[str, BaseDistribution]:
        return {f"memory.{tool}": _categorical([False, True]) for tool in self.tools}

    def write(self, params: Mapping[str, Any], draft: Draft) -> None:
        draft.memory.extend(t for t in self.tools if params[f"memory.{t}"])

    def read(self, plan: PipelinePlan) -> dict[str, Any] | None:
        if set(plan.memory) - set(self.tools):
            return None
        return {f"memory.{tool}": tool in plan.memory for tool in self.tools}

    @staticmethod
    def key(plan: PipelinePlan, component: str) -> tuple[str, ...]:
        """Its part of the component cache key: the tools that act on ``component``."""
        return tuple(t for t in plan.memory if MEMORY_TOOLS[t].component == component)

    @staticmethod
    def apply(module: nn.Module, tools: Sequence[str]) -> nn.Module:
        """``module`` with ``tools`` on (a shallow copy when any is; `MemoryTool.apply`)."""
        for tool in tools:
            module = MEMORY_TOOLS[tool].apply(module)
        return module

    @staticmethod
    def export(plan: PipelinePlan) -> list[str]:
        """The setup lines plain diffusers runs for ``plan``'s memory tools."""
        return [MEMORY_TOOLS[tool].export() for tool in plan.memory]


@dataclass(frozen=True)
class StepsDimension(Dimension):
    """Denoising steps from ``low`` to ``high`` in steps of ``step``. The runtime's step
    dial serves a tier at fewer of them under load."""

    runtime_toggle: ClassVar[bool] = True

    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.low <= self.high:
            raise ValueError(
                f"steps must satisfy 1 <= low <= high, but got {(self.low, self.high)}."
            )
        if self.step < 1:
            raise ValueError(f"step_size must be positive, but got {self.step}.")

    def values(self) -> list[int]:
        """The step counts a trial may draw."""
        return list(range(self.low, self.high + 1, self.step))

    def distributions(self) -> dict[str, BaseDistribution]:
        from optuna.distributions import IntDistribution

        return {"steps": IntDistribution(self.low, self.high, step=self.step)}

    def write(self, params: Mapping[str, Any], draft: Draft) -> None:
        draft.steps = params["steps"]

    def read(self, plan: PipelinePlan) -> dict[str, Any] | None:
        return {"steps": plan.steps} if plan.steps in self.values() else None


@dataclass(frozen=True)
class SchedulerDimension(Dimension):
    """The scheduler, one of ``names`` (`SCHEDULERS` keys)."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("at least one scheduler is needed.")

    def distributions(self) -> dict[str, BaseDistribution]:
        return {"scheduler": _categorical(self.names)}

    def write(self, params: Mapping[str, Any], draft: Draft) -> None:
        draft.scheduler = params["scheduler"]

    def read(self, plan: PipelinePlan) -> dict[str, Any] | None:
        return {"scheduler": plan.scheduler} if plan.scheduler in self.names else None

    @staticmethod
    def apply(pipe: DiffusionPipeline, name: str) -> Any:
        """The scheduler ``name`` for ``pipe`` (`build_scheduler`)."""
        return build_scheduler(pipe, name)
