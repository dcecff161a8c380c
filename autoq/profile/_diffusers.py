"""A tier as plain diffusers would load it: per-component quantization configs whose
``modules_to_not_convert`` make the library quantize exactly the layers autoq measured, the
``torch_dtype`` it needs, and the Python source of the load call.

Each precision's config comes from its backend (`autoq.backends.Backend.loader`); this
module only decides, per component, which layers the library must leave alone and whether
the library's own matching rules can say so exactly. What cannot be said exactly is
refused with the reason, never exported approximately.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoq.errors import BackendError

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline
    from torch import nn

    from autoq.backends import Loader
    from autoq.backends._loader import Library, SkipMatch
    from autoq.pipeline import PipelinePlan

__all__ = [
    "ComponentConfig",
    "NotExportableError",
    "TierLoad",
    "plan_load",
    "to_pipeline_quantization_config",
]

_RULES = {
    "child": "by a module's own attribute name",
    "qualified": "by substring of the qualified name",
    "transformers": "by qualified-name prefix or suffix",
}


class NotExportableError(BackendError):
    """Plain diffusers cannot load this tier as autoq measured it; the message says why."""


@dataclass(frozen=True)
class ComponentConfig:
    """One component's quantization config, as an object and as the source that builds it."""

    component: str
    library: Library
    config: Any
    code: str
    imports: tuple[str, ...]
    modules_to_not_convert: tuple[str, ...]


@dataclass(frozen=True)
class TierLoad:
    """How plain diffusers loads one tier: configs per quantized component and the dtype."""

    configs: dict[str, ComponentConfig]
    torch_dtype: str
    """The dtype every component loads in: ``float32``, as autoq measured the tier (tiers
    with half-precision components are refused, see `plan_load`)."""
    setup: tuple[str, ...] = ()
    """Statements run on the loaded ``pipe``: the tier's execution (``torch.compile``) and
    memory tools (``pipe.vae.enable_tiling()``)."""

    def quantization_config(self) -> Any:
        """``diffusers.PipelineQuantizationConfig`` (``None`` if nothing is quantized)."""
        if not self.configs:
            return None
        from diffusers import PipelineQuantizationConfig

        mapping = {name: c.config for name, c in self.configs.items()}
        return PipelineQuantizationConfig(quant_mapping=mapping)

    def load_code(self, folder: str, steps: int, guidance_scale: float | None = None) -> str:
        """The Python that loads ``folder`` in plain diffusers and generates like the tier."""
        imports = {"import torch", "from diffusers import DiffusionPipeline"}
        lines = []
        if self.configs:
            imports.add("from diffusers import DiffusionPipeline, PipelineQuantizationConfig")
            imports.discard("from diffusers import DiffusionPipeline")
            for c in self.configs.values():  # module-qualified: both libraries share names
                imports.add(f"import {c.library}")
                imports.update(c.imports)
        lines.append("pipe = DiffusionPipeline.from_pretrained(")
        lines.append(f"    {folder!r},")
        lines.append(f"    torch_dtype=torch.{self.torch_dtype},")
        if self.configs:
            lines.append("    quantization_config=PipelineQuantizationConfig(quant_mapping={")
            for name, c in self.configs.items():
                lines.append(f"        {name!r}: {c.code},")
            lines.append("    }),")
        lines.append(")")
        lines.extend(self.setup)
        call = f"num_inference_steps={steps}"
        if guidance_scale is not None:
            call += f", guidance_scale={guidance_scale}"
        lines.append(f'image = pipe("a prompt", {call}).images[0]')
        ordered = sorted(imports, key=lambda line: (line.startswith("from"), line))
        return "\n".join([*ordered, "", *lines]) + "\n"


def _is_transformers(module: nn.Module) -> bool:
    return any(cls.__module__.startswith("transformers") for cls in type(module).__mro__)


def _skipped(name: str, keys: list[str], how: SkipMatch) -> bool:
    """Whether a loader keeps the layer ``name`` unquantized, by that library's rule."""
    if how == "child":
        return name.rpartition(".")[2] in keys
    if how == "qualified":
        param = f"{name}.weight"
        return any(f"{key}." in param or key in (param, name) for key in keys)
    boundary = r"(?:(?<=\.)|(?=\.|$))"  # transformers' should_convert_module
    return any(re.match(rf"(?:{key}){boundary}", name) or name.endswith(key) for key in keys)


def _compact(names: list[str], targets: set[str], candidates: list[str]) -> list[str]:
    """Fewest module prefixes covering ``names`` without covering any target: a protected
    sub-tree is listed once, not layer by layer."""
    chosen: list[str] = []
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            inside = [c for c in candidates if c == prefix or c.startswith(prefix + ".")]
            if not any(c in targets for c in inside):
                if prefix not in chosen:
                    chosen.append(prefix)
                break
    return chosen


def _not_convert(
    component: str, module: nn.Module, precision: str, skip: list[str], loader: Loader, lib: Library
) -> tuple[str, ...]:
    """The ``modules_to_not_convert`` that makes ``lib`` quantize exactly autoq's targets.

    Raises:
        NotExportableError: autoq quantizes layers the library cannot, or the library's
            matching rule cannot single out autoq's layers.
    """
    from torch import nn

    from autoq.backends import targets_for

    targets = dict(targets_for(module, precision, skip))
    kinds = {"linear": nn.Linear, "conv": nn.Conv2d}
    unsupported = [
        (n, type(m).__name__)
        for n, m in targets.items()
        if not any(isinstance(m, kinds[k]) for k in loader.layers)
    ]
    if unsupported:
        kind = unsupported[0][1]
        raise NotExportableError(
            f"{precision} on {kind}: autoq quantizes {len(unsupported)} {kind} layer(s) of "
            f"{component} (e.g. {unsupported[0][0]}), but {lib} {loader.config_class} "
            "converts nn.Linear only"
        )
    convertible = tuple(kinds[k] for k in loader.layers)
    candidates = [n for n, m in module.named_modules() if n and isinstance(m, convertible)]
    keep = [n for n in candidates if n not in targets]
    how = loader.skip_match[lib]
    if how == "child":
        keys = sorted({n.rpartition(".")[2] for n in keep})
    elif how == "transformers":
        keys = [re.escape(k) for k in _compact(keep, set(targets), candidates)]
    else:
        keys = _compact(keep, set(targets), candidates)
    fp32 = list(getattr(module, "_keep_in_fp32_modules", None) or [])
    loaded = {n for n in candidates if not _skipped(n, keys + fp32, how)}
    if loaded != set(targets):
        extra = sorted(loaded - set(targets))
        missing = sorted(set(targets) - loaded)
        detail = (
            f"it would also quantize {len(extra)} layer(s) autoq keeps (e.g. {extra[0]})"
            if extra
            else f"it would keep {len(missing)} layer(s) autoq quantizes (e.g. {missing[0]})"
        )
        by_rule = {n for n in candidates if not _skipped(n, keys, how)} == set(targets)
        why = (
            f"{lib} keeps {fp32} of {type(module).__name__} in float32 (_keep_in_fp32_modules)"
            if by_rule
            else f"{lib} {loader.config_class} matches {loader.skip_arg[lib]} {_RULES[how]}"
        )
        raise NotExportableError(f"{precision} on {component}: {why}, so {detail}")
    return tuple(keys)


def _component_config(
    component: str,
    module: nn.Module | None,
    precision: str,
    skip: list[str],
    device: torch.device,
) -> ComponentConfig | None:
    """The config of one quantized component, ``None`` for a dtype cast."""
    from autoq.backends import BACKENDS, get_precision

    spec = get_precision(precision)
    loader = BACKENDS[spec.backend].loader(spec, device)
    if isinstance(loader, str):
        raise NotExportableError(loader)
    if not loader.config_class:
        return None
    lib: Library = (
        "transformers" if module is not None and _is_transformers(module) else "diffusers"
    )
    if module is None:
        lib = "transformers" if component.startswith("text_encoder") else "diffusers"
        if skip or spec.in_multiple > 1:
            raise NotExportableError(
                f"{precision} on {component} keeps some layers unquantized (protect or layer "
                "shapes), which needs the pipeline to list them: use "
                "`autoq.profile.plan_load(plan, pipe)` or `autoq export`"
            )
        not_convert: tuple[str, ...] = ()
    else:
        not_convert = _not_convert(component, module, precision, skip, loader, lib)
    library = importlib.import_module(lib)
    args = dict(loader.args[lib])
    values = {k: e.value for k, e in args.items()}
    code_args = [f"{k}={e.code}" for k, e in args.items()]
    # transformers adds its own default skips (the last layer, tied output embeddings) when
    # given no list, so it always gets one, even empty.
    if not_convert or lib == "transformers":
        values[loader.skip_arg[lib]] = list(not_convert)
        code_args.append(f"{loader.skip_arg[lib]}={list(not_convert)!r}")
    config = getattr(library, loader.config_class)(**values)
    return ComponentConfig(
        component=component,
        library=lib,
        config=config,
        code=f"{lib}.{loader.config_class}({', '.join(code_args)})",
        imports=loader.imports,
        modules_to_not_convert=not_convert,
    )


def plan_load(
    plan: PipelinePlan,
    pipe: DiffusionPipeline | None = None,
    device: torch.device | str | None = None,
) -> TierLoad:
    """How plain diffusers loads ``plan``: per-component configs and ``torch_dtype``.

    Args:
        plan: The tier's plan.
        pipe: The full-precision pipeline the plan applies to; needed to list the modules to
            leave unquantized (protect groups, layers a precision cannot take).
        device: Where the export will be loaded (``None``: any; device-specific refusals
            such as bitsandbytes on CPU are then not checked).

    Raises:
        NotExportableError: A component cannot be represented; one line per reason,
            joined by ``; ``.
    """
    import torch

    from autoq.backends import get_precision
    from autoq.pipeline import ExecutionDimension, MemoryDimension, module_components

    where = torch.device(device) if device is not None else torch.device("cuda")
    modules = module_components(pipe) if pipe is not None else {}
    configs: dict[str, ComponentConfig] = {}
    reasons: list[str] = []
    for component, precision in plan.precisions.items():
        skip = plan.skip_patterns(component)
        try:
            config = _component_config(component, modules.get(component), precision, skip, where)
        except NotExportableError as exc:
            reasons.append(str(exc))
            continue
        if config is not None:
            configs[component] = config
            continue
        spec = get_precision(precision)
        if spec.name != "fp32":
            dtype = {"fp16": "float16", "bf16": "bfloat16"}[spec.name]
            protect = " (and protected sub-modules stay float32)" if skip else ""
            reasons.append(
                f"{precision} on {component}: autoq computes the component in {dtype}{protect} "
                "but keeps latents, the scheduler and what components pass each other in "
                f"float32; diffusers' torch_dtype={dtype} runs all of it in {dtype}, which "
                "changes the images"
            )
    setup, unexportable = ExecutionDimension.export(plan, modules)
    reasons += unexportable
    setup += MemoryDimension.export(plan)
    if reasons:
        raise NotExportableError("; ".join(dict.fromkeys(reasons)))
    return TierLoad(configs=configs, torch_dtype="float32", setup=tuple(setup))


def to_pipeline_quantization_config(
    plan: PipelinePlan, pipe: DiffusionPipeline | None = None
) -> Any:
    """``diffusers.PipelineQuantizationConfig(quant_mapping=...)`` for ``plan``.

    Text encoders get transformers' configs, the other components diffusers' configs;
    dtype casts are left out (load them with ``torch_dtype``). Without ``pipe``, plans that
    keep some layers unquantized (protect, layer shapes) are refused: see `plan_load`.

    Raises:
        NotExportableError: Plain diffusers cannot load this plan as autoq measured it.
    """
    from diffusers import PipelineQuantizationConfig

    load = plan_load(plan, pipe)
    return load.quantization_config() or PipelineQuantizationConfig(quant_mapping={})
