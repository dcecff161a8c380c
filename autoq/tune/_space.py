"""The search space: the values each plan dimension (`autoq.pipeline._dimensions`) may take
on this device and model, and how a trial draws a plan from them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.errors import ConfigError
from autoq.pipeline import (
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

if TYPE_CHECKING:
    import optuna
    import torch
    from diffusers import DiffusionPipeline

    from autoq.pipeline import LoadedModel, ScreenResult
    from autoq.pipeline._screen import BuildModule
    from autoq.tune._config import TuneConfig

__all__ = ["SearchSpace", "build_space", "distinct_schedulers"]

log = get_logger("autoq.tune")

DEFAULT_STEPS = (5, 30)
"""Step range searched when none is given: from a fast draft to the usual 30."""


def coarse_step(low: int, high: int, intervals: int = 4) -> int:
    """The default step-count granularity: the coarsest step that divides ``low..high``
    into at least ``intervals`` equal parts (5..30 -> 5: 5, 10, 15, 20, 25, 30).

    Every distinct step count costs an fp32 run on the screening images (the paired
    baseline), so a fine grid spends the tune's time on near-duplicate plans.
    """
    span = high - low
    divisors = [d for d in range(1, span + 1) if span % d == 0 and span // d >= intervals]
    return max(divisors, default=1)


@dataclass(frozen=True)
class SearchSpace:
    """Everything a trial may choose: the values of each plan dimension
    (`autoq.pipeline.Dimension`) here.

    Attributes:
        precisions: Candidate precisions per component (usable on this device).
        steps: Inclusive ``(low, high)`` denoising-step range.
        step_size: Step-count granularity.
        schedulers: Candidate scheduler names (`autoq.pipeline.SCHEDULERS` keys).
        protect: Offer a per-component toggle that keeps `PROTECT_GROUPS` unquantized.
        executions: Candidate executors per component (`autoq.execution`), ``eager``
            first; a component missing here, or with one option, runs eagerly. An executor
            that does not run on the drawn precision falls back to ``eager``.
        memory: `autoq.pipeline.MEMORY_TOOLS` offered as on/off toggles.
    """

    precisions: Mapping[str, tuple[str, ...]]
    steps: tuple[int, int]
    schedulers: tuple[str, ...]
    step_size: int = 1
    protect: bool = True
    executions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    memory: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for component, options in self.precisions.items():
            if not options:
                raise ValueError(f"component {component!r} has no usable precision.")
        for component in self.executions:
            if component not in self.precisions:
                raise ValueError(f"executors name {component!r}, which has no precisions.")
        self.dimensions()  # each dimension checks its own values

    def dimensions(self) -> list[Dimension]:
        """The space's dimensions, in the order a trial draws them."""
        components = list(self.precisions)
        return [
            *(PrecisionDimension(c, tuple(self.precisions[c]), self.protect) for c in components),
            *(ExecutionDimension(c, tuple(self.executions.get(c, ("eager",)))) for c in components),
            MemoryDimension(tuple(self.memory)),
            StepsDimension(*self.steps, self.step_size),
            SchedulerDimension(tuple(self.schedulers)),
        ]

    @staticmethod
    def _fits(precision: str, executor: str) -> bool:
        from autoq.execution import get_executor

        return get_executor(executor).runs_on(precision)

    def suggest(self, trial: optuna.Trial) -> PipelinePlan:
        """Draw a plan for ``trial``."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        params: dict[str, Any] = {}
        for name, distribution in self.distributions().items():
            if isinstance(distribution, CategoricalDistribution):
                params[name] = trial.suggest_categorical(name, distribution.choices)
            elif isinstance(distribution, IntDistribution):
                low, high, step = distribution.low, distribution.high, distribution.step
                params[name] = trial.suggest_int(name, low, high, step=step)
            else:
                raise TypeError(f"no way to draw {type(distribution).__name__} ({name}).")
        return self.plan(params)

    def plan(self, params: Mapping[str, Any]) -> PipelinePlan:
        """The plan trial parameters ``params`` draw."""
        draft = Draft()
        for dimension in self.dimensions():
            dimension.write(params, draft)
        return draft.plan()

    def grid(self) -> dict[str, list[Any]]:
        """The same space as explicit lists, for Optuna's `GridSampler`."""
        from optuna.distributions import CategoricalDistribution

        return {
            name: list(d.choices) if isinstance(d, CategoricalDistribution) else self.step_values()
            for name, d in self.distributions().items()
        }

    def params(self, plan: PipelinePlan) -> dict[str, Any] | None:
        """The trial parameters that draw ``plan`` (`suggest`'s inverse), or ``None`` when
        the space does not hold it."""
        if set(plan.precisions) != set(self.precisions):
            return None
        out: dict[str, Any] = {}
        for dimension in self.dimensions():
            drawn = dimension.read(plan)
            if drawn is None:
                return None
            out.update(drawn)
        return out

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The distributions `suggest` draws from, by parameter name (to add a trial
        measured outside the sampler's loop)."""
        return {name: d for dim in self.dimensions() for name, d in dim.distributions().items()}

    def reference(self) -> PipelinePlan:
        """The highest-precision plan: fp32 everywhere, the most steps, the model's scheduler."""
        precisions = dict.fromkeys(self.precisions, "fp32")
        return PipelinePlan(precisions=precisions, steps=self.steps[1], scheduler="default")

    def step_values(self) -> list[int]:
        """The step counts a trial may draw (what `suggest_int` with ``step`` yields)."""
        return StepsDimension(*self.steps, self.step_size).values()

    def size(self, aliases: Mapping[int, Mapping[str, str]] | None = None) -> int:
        """How many distinct plans the space holds (protecting an fp32 component is a no-op;
        with ``aliases``, a scheduler that stands for another at a step count makes the
        same plans as it there: `canonical`)."""
        executors = self.executions

        def ways(component: str, precision: str) -> int:
            protected = 2 if self.protect and precision != "fp32" else 1
            runs = executors.get(component, ("eager",))
            return protected * sum(self._fits(precision, e) for e in runs)

        per_component = [
            sum(ways(component, p) for p in options)
            for component, options in self.precisions.items()
        ]
        per_component.append(2 ** len(self.memory))
        aliases = aliases or {}
        schedules = sum(
            len({aliases.get(n, {}).get(s, s) for s in self.schedulers}) for n in self.step_values()
        )
        return math.prod(per_component) * schedules

    @staticmethod
    def canonical(plan: PipelinePlan, aliases: Mapping[int, Mapping[str, str]]) -> PipelinePlan:
        """``plan`` under the scheduler that stands for its own at its steps (``aliases``,
        `autoq.tune._evaluate.Evaluator.scheduler_aliases`): the same images, one plan."""
        name = aliases.get(plan.steps, {}).get(plan.scheduler, plan.scheduler)
        return plan if name == plan.scheduler else plan.model_copy(update={"scheduler": name})

    def corners(self, size_of: Callable[[str, str], float]) -> list[dict[str, Any]]:
        """Trial parameters of the plans at the space's corners, to measure first.

        fp32 at the fewest and at the most steps, every component at its smallest
        precision (by ``size_of(component, precision)``, estimated bytes), every
        component at an 8-bit precision, and fp32 under each searched executor on every
        component it runs (the fastest execution of the reference's weights); all but the
        first at the most steps, unprotected. Samplers find the interior; corners are where
        they are weakest.
        """
        from autoq.backends import get_precision

        steps = self.step_values()
        scheduler = "default" if "default" in self.schedulers else self.schedulers[0]

        def params(
            choice: Mapping[str, str], n_steps: int, executors: Mapping[str, str] | None = None
        ) -> dict[str, Any]:
            draft = Draft(dict(choice), {}, dict(executors or {}), [], n_steps, scheduler)
            plan = draft.plan()
            drawn = self.params(plan)
            assert drawn is not None  # every choice comes from the space's own options
            return drawn

        plans = []
        if all("fp32" in o for o in self.precisions.values()):
            fp32 = dict.fromkeys(self.precisions, "fp32")
            plans += [params(fp32, steps[0]), params(fp32, steps[-1])]
        smallest = {
            c: sorted(o, key=lambda p: size_of(c, p))[0] for c, o in self.precisions.items()
        }
        plans.append(params(smallest, steps[-1]))
        eight = {
            c: next((p for p in o if get_precision(p).weight_bits == 8), None)
            for c, o in self.precisions.items()
        }
        if all(eight.values()):
            plans.append(params({c: str(p) for c, p in eight.items()}, steps[-1]))
        if all("fp32" in o for o in self.precisions.values()):
            searched = {c: e for c, e in self.executions.items() if len(e) > 1}
            for executor in dict.fromkeys(e for runs in searched.values() for e in runs[1:]):
                on = {c: executor for c, runs in searched.items() if executor in runs}
                plans.append(params(dict.fromkeys(self.precisions, "fp32"), steps[-1], on))
        unique: list[dict[str, Any]] = []
        for plan in plans:
            if plan not in unique:
                unique.append(plan)
        return unique


def distinct_schedulers(pipe: DiffusionPipeline, names: Sequence[str]) -> list[str]:
    """``names`` without those that build the same scheduler (same class and config) as an
    earlier one: for many models ``default`` already is ``dpmpp``, and measuring both
    spends trials on identical images."""
    seen: list[tuple[str, dict[str, Any]]] = []
    kept = []
    for name in names:
        scheduler = build_scheduler(pipe, name)
        key = (type(scheduler).__name__, _public_config(scheduler.config))
        if key not in seen:
            seen.append(key)
            kept.append(name)
    return kept


def _public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def build_space(
    config: TuneConfig,
    loaded: LoadedModel,
    device: torch.device,
    *,
    screen_budget_s: float | None = None,
    on_screen: Callable[[int, int], None] | None = None,
    build: BuildModule | None = None,
) -> tuple[SearchSpace, ScreenResult]:
    """The search space of ``config`` on ``device``: the precisions the compatibility
    screen kept (within ``screen_budget_s`` seconds, progress to ``on_screen``, modules
    from ``build``), steps, schedulers, executors and memory tools; and the screen's
    result."""
    from autoq.backends import available_precisions
    from autoq.pipeline import compatible_schedulers, module_components, screen

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
    schedulers = distinct_schedulers(loaded.pipe, schedulers)
    # The compatibility screen: every pairing the search may draw runs once on real inputs
    # first; what fails, or strays past its precision's bound, never reaches a trial.
    prompts = config.prompts or loaded.default_prompts or ["a photo"]
    size = (config.height, config.width) if config.height and config.width else None
    screened = screen(
        loaded.pipe,
        dict.fromkeys(module_components(loaded.pipe), options),
        [(), PROTECT_GROUPS] if config.protect else [()],
        prompt=prompts[0],
        guidance_scale=(
            config.guidance_scale if config.guidance_scale is not None else loaded.default_guidance
        ),
        size=size,
        model_hash=loaded.identity.content_hash,
        budget_s=screen_budget_s,
        progress=on_screen,
        build=build,
    )
    for out in screened.dropped:
        log.warning(
            "screened_out",
            component=out.component,
            precision=out.precision,
            protect=list(out.protect),
            reason=out.reason,
        )
    steps = config.steps or DEFAULT_STEPS
    space = SearchSpace(
        precisions=dict(screened.kept),
        steps=steps,
        step_size=config.step_size or coarse_step(*steps),
        schedulers=tuple(schedulers),
        protect=config.protect,
        executions=component_executors(loaded.pipe, config.executions, device),
        memory=tuple(config.memory_tools),
    )
    return space, screened


# Component classes the default OpenVINO search converts (checked against torch in tests);
# others are converted only when asked for by name.
_OPENVINO_CLASSES = {
    "UNet2DConditionModel",
    "AutoencoderKL",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
}


def default_executors(device: torch.device) -> tuple[str, ...]:
    """What a tune searches without ``--executions``: OpenVINO (fp32 and int8 weights) on
    CPUs where it runs, ``torch.compile`` on CUDA (the diffusers recipe there)."""
    if device.type == "cuda":
        return ("eager", "compile")
    return ("eager", "openvino", "openvino_int8")


def component_executors(
    pipe: DiffusionPipeline, wanted: Sequence[str] | None, device: torch.device
) -> dict[str, tuple[str, ...]]:
    """Per component, the executors to search: ``wanted`` (default: `default_executors`)
    that run on ``device`` and apply to the component; ``eager`` always first.

    Raises:
        ConfigError: An executor asked for by name cannot run on ``device``.
    """
    from autoq.execution import EAGER, get_executor, probe_executors
    from autoq.pipeline import module_components

    names = list(dict.fromkeys([EAGER, *(wanted or default_executors(device))]))
    probes = {p.executor: p for p in probe_executors(device, only=names)}
    unusable = {n: p.reason for n, p in probes.items() if not p.usable}
    if wanted is not None and any(n in unusable for n in wanted):
        name = next(n for n in wanted if n in unusable)
        raise ConfigError(
            f"Executor {name!r} cannot run on {device}: {unusable[name]}; "
            "`autoq backends` lists the executors and why."
        )
    if unusable:
        log.info("executors_left_out", reasons=unusable)
    out: dict[str, tuple[str, ...]] = {}
    for component, module in module_components(pipe).items():
        runs = [
            n
            for n in names
            if n == EAGER or (n not in unusable and get_executor(n).applies_to(component, module))
        ]
        if wanted is None:  # by default OpenVINO only converts the classes it is tested on
            runs = [
                n
                for n in runs
                if not n.startswith("openvino") or type(module).__name__ in _OPENVINO_CLASSES
            ]
        out[component] = tuple(runs)
    return out
