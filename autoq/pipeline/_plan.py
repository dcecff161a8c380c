"""A pipeline plan: per component how its weights are stored (precision, protect) and how
it executes (executor, memory tools), plus steps and scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autoq.pipeline._dimensions import (
    MEMORY_TOOLS,
    SCHEDULERS,
    ExecutionDimension,
    MemoryDimension,
    PrecisionDimension,
)

__all__ = ["PLAN_VERSION", "ComponentKey", "Draft", "PipelinePlan"]

PLAN_VERSION = 1

ComponentKey = tuple[str, str, tuple[str, ...], str, tuple[str, ...]]
"""What builds one component: (component, precision, protect groups, executor, memory
tools), the component cache's key."""


class PipelinePlan(BaseModel):
    """An explicit ``component -> precision`` mapping plus generation settings: the values
    of the dimensions `autoq.pipeline._dimensions` declares.

    Attributes:
        precisions: Precision name per pipeline component (``unet``, ``text_encoder``, ...).
        protect: Per component, names of `autoq.backends.PROTECT_PRESETS` groups kept at
            the component's original precision.
        execution: Per component, an `autoq.execution` executor other than ``eager``.
        memory: `MEMORY_TOOLS` switched on.
        steps: Denoising steps.
        scheduler: A key of `SCHEDULERS`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = PLAN_VERSION
    precisions: dict[str, str]
    protect: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    execution: dict[str, str] = Field(default_factory=dict)
    memory: tuple[str, ...] = ()
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

    @field_validator("execution")
    @classmethod
    def _known_executors(cls, value: dict[str, str]) -> dict[str, str]:
        from autoq.execution import EAGER, get_executor

        for executor in value.values():
            get_executor(executor)  # raises with the list of valid names
        return {c: e for c, e in value.items() if e != EAGER}

    @field_validator("memory")
    @classmethod
    def _known_tools(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - set(MEMORY_TOOLS)
        if unknown:
            raise ValueError(
                f"unknown memory tool(s) {sorted(unknown)}; valid: {sorted(MEMORY_TOOLS)}."
            )
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _executors_fit(self) -> PipelinePlan:
        from autoq.execution import get_executor

        for component, name in self.execution.items():
            if component not in self.precisions:
                raise ValueError(f"execution names {component!r}, which has no precision.")
            executor = get_executor(name)
            if not executor.runs_on(self.precisions[component]):
                raise ValueError(
                    f"executor {name!r} runs on precisions {list(executor.precisions or ())}, but "
                    f"{component!r} is {self.precisions[component]!r}."
                )
        return self

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

    def executor(self, component: str) -> str:
        """The executor ``component`` runs on (``eager`` unless the plan says otherwise)."""
        from autoq.execution import EAGER

        return self.execution.get(component, EAGER)

    def tools(self, component: str) -> tuple[str, ...]:
        """The memory tools that act on ``component``."""
        return MemoryDimension.key(self, component)

    def component_key(self, component: str) -> ComponentKey:
        """What builds ``component`` under this plan: the component cache's key, each
        dimension's part of it."""
        precision, protect = PrecisionDimension.key(self, component)
        return (
            component,
            precision,
            protect,
            ExecutionDimension.key(self, component),
            MemoryDimension.key(self, component),
        )

    def component_keys(self) -> set[ComponentKey]:
        """`component_key` of every component the plan names."""
        return {self.component_key(c) for c in self.precisions}

    @property
    def is_fp32(self) -> bool:
        """Every component in fp32, eager, none protected, no memory tool: a paired
        baseline."""
        return (
            all(p == "fp32" for p in self.precisions.values())
            and not self.protect
            and not self.execution
            and not self.memory
        )

    def fp32(self) -> PipelinePlan:
        """This plan's paired baseline: every component in fp32 and eager, no memory tool,
        same steps and scheduler."""
        return self.model_copy(
            update={
                "precisions": dict.fromkeys(self.precisions, "fp32"),
                "protect": {},
                "execution": {},
                "memory": (),
            }
        )

    def describe(self) -> str:
        """A one-line summary, e.g. ``unet=fp32@compile vae=bnb_nf4+protect, 20 steps
        ddim`` (``@`` an executor, ``+`` protection and memory tools)."""
        parts = [
            f"{component}={precision}"
            + (f"@{self.execution[component]}" if component in self.execution else "")
            + ("+protect" if self.protect.get(component) else "")
            + "".join(f"+{t}" for t in self.tools(component))
            for component, precision in self.precisions.items()
        ]
        return f"{' '.join(parts)}, {self.steps} steps {self.scheduler}"


@dataclass
class Draft:
    """The fields of a plan being filled from trial parameters, one dimension at a time."""

    precisions: dict[str, str] = field(default_factory=dict)
    protect: dict[str, tuple[str, ...]] = field(default_factory=dict)
    execution: dict[str, str] = field(default_factory=dict)
    memory: list[str] = field(default_factory=list)
    steps: int = 1
    scheduler: str = "default"

    def plan(self) -> PipelinePlan:
        """The plan; an executor that does not run on its component's precision falls
        back to eager (OpenVINO converts fp32 weights, not bnb_int8 ones)."""
        from autoq.execution import EAGER, get_executor

        execution = {
            c: e
            for c, e in self.execution.items()
            if e != EAGER and get_executor(e).runs_on(self.precisions[c])
        }
        return PipelinePlan(
            precisions=self.precisions,
            protect=self.protect,
            execution=execution,
            memory=tuple(self.memory),
            steps=self.steps,
            scheduler=self.scheduler,
        )
