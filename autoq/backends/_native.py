"""Plain dtype casts: fp32 (the reference), fp16 and bf16.

A cast component stays a drop-in: floating inputs are cast to its dtype on entry and its
outputs back to the caller's dtype, so a pipeline can mix precisions per component. The
casts sit on the component's top-level sub-modules, not on its ``forward``, because
pipelines also call other methods (``vae.decode``). Skipped sub-modules keep fp32 weights
and get the same boundary casts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoq.backends._base import Precision

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from autoq.backends._loader import Loader

__all__ = ["NativeBackend"]


def _cast_tree(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating tensor cast to ``dtype``, and every floating
    ``torch.dtype`` argument (``hidden_dtype=`` in diffusers) replaced by ``dtype``."""
    import torch
    from torch.utils import _pytree

    def cast(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
            return x.to(dtype)
        if isinstance(x, torch.dtype) and x.is_floating_point:
            return dtype
        return x

    return _pytree.tree_map(cast, value)


def _cast_outputs(value: Any, dtype: torch.dtype) -> Any:
    import torch
    from torch.utils import _pytree

    def cast(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
            return x.to(dtype)
        return x

    return _pytree.tree_map(cast, value)


def _first_float_dtype(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.dtype | None:
    import torch
    from torch.utils import _pytree

    for leaf in _pytree.tree_leaves((args, kwargs)):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return leaf.dtype
    return None


def add_dtype_boundary(
    module: nn.Module,
    dtype: torch.dtype,
    *,
    output: torch.dtype | None = None,
    default_output: torch.dtype | None = None,
) -> None:
    """Run ``module`` in ``dtype`` while its caller keeps its own dtype.

    Floating inputs (and floating ``torch.dtype`` arguments) become ``dtype`` on entry.
    Floating outputs become ``output`` when given (a kept fp32 island inside a cast
    region hands the region its dtype), else the caller's dtype: that of the first
    floating input, or ``default_output`` when there is none (a text encoder called
    with token ids hands back fp32, as the pipeline expects).
    """
    import threading

    callers = threading.local()

    def pre_hook(mod: nn.Module, args: Any, kwargs: Any) -> tuple[Any, Any]:
        stack = callers.__dict__.setdefault("stack", [])
        stack.append(_first_float_dtype(args, kwargs) or default_output)
        return _cast_tree(args, dtype), _cast_tree(kwargs, dtype)

    def post_hook(mod: nn.Module, args: Any, kwargs: Any, result: Any) -> Any:
        back = callers.stack.pop()
        target = output or back
        return result if target is None else _cast_outputs(result, target)

    module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    module.register_forward_hook(post_hook, with_kwargs=True)


def _entry_points(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The sub-modules a component's methods call directly, by qualified name: its
    children, looking through containers that are never called themselves
    (``ModuleList``, ``ModuleDict``)."""
    from torch import nn

    children = list(module.named_children())
    if not children:
        return [(prefix, module)]
    entries: list[tuple[str, nn.Module]] = []
    for name, child in children:
        qualified = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.ModuleList | nn.ModuleDict):
            entries.extend(_entry_points(child, qualified))
        else:
            entries.append((qualified, child))
    return entries


def add_output_boundary(module: nn.Module) -> None:
    """Hand ``module``'s own callers fp32 (or their dtype) from a direct call: models that
    gather sub-module outputs at the top (transformers' ``output_hidden_states``) would
    otherwise return the cast region's dtype."""
    import torch

    def post_hook(mod: nn.Module, args: Any, kwargs: Any, result: Any) -> Any:
        return _cast_outputs(result, _first_float_dtype(args, kwargs) or torch.float32)

    module.register_forward_hook(post_hook, with_kwargs=True)


_REPORTING: dict[type, type] = {}


def report_float32(module: nn.Module) -> None:
    """Make ``module.dtype`` say float32 whatever its weights are stored in.

    Pipelines read ``component.dtype`` to decide what to build and hand on (FLUX and
    SD3 cast prompt embeddings to ``text_encoder.dtype``, PixArt and Sana latents to
    ``vae.dtype``/``transformer.dtype``). A cast component takes and returns fp32 at its
    boundary, so fp32 is what its callers must see. Done by a subclass that only
    overrides the ``dtype`` property, keeping the class name and every ``isinstance``.
    """
    import torch

    cls = type(module)
    if cls in _REPORTING.values() or not hasattr(cls, "dtype"):
        return
    if cls not in _REPORTING:
        _REPORTING[cls] = type(
            cls.__name__,
            (cls,),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "dtype": property(lambda self: torch.float32),
            },
        )
    module.__class__ = _REPORTING[cls]


class NativeBackend:
    """Casts weights with torch itself; fp32 is the reference every other precision is
    measured against."""

    name = "torch"
    distribution: str | None = "torch"
    precisions: tuple[Precision, ...] = (
        Precision("fp32", "torch", 32, "float32 reference", max_rel_error=1e-6),
        Precision("fp16", "torch", 16, "float16 weights and compute", max_rel_error=0.01),
        Precision("bf16", "torch", 16, "bfloat16 weights and compute", max_rel_error=0.05),
    )

    def check_environment(self, precision: Precision, device: torch.device) -> str | None:
        return None

    def apply(
        self, module: nn.Module, precision: Precision, targets: list[tuple[str, nn.Module]]
    ) -> None:
        import torch

        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
            precision.name
        ]
        target_ids = {id(layer) for _, layer in targets}
        for _, layer in module.named_modules():
            if id(layer) not in target_ids:
                continue
            for key, param in layer.named_parameters(recurse=False):
                if param.is_floating_point() and param.dtype != dtype:
                    layer._parameters[key] = torch.nn.Parameter(
                        param.data.to(dtype), requires_grad=param.requires_grad
                    )
            for key, buf in layer.named_buffers(recurse=False):
                if buf is not None and buf.is_floating_point():
                    layer._buffers[key] = buf.to(dtype)
        if dtype == torch.float32:
            return
        entries = _entry_points(module)
        kept = {n: layer for n, layer in module.named_modules() if id(layer) not in target_ids}
        regions = [name for name, entry in entries if id(entry) in target_ids]
        for name, layer in kept.items():
            # Descendants of a skipped module are skipped too: only the outermost needs casts.
            if not name or name.rpartition(".")[0] in kept:
                continue
            if any(name.startswith(f"{region}.") for region in regions):
                # An fp32 island inside a cast region: the region goes on in its dtype.
                add_dtype_boundary(layer, torch.float32, output=dtype)
            else:
                add_dtype_boundary(layer, torch.float32, default_output=torch.float32)
        for _, entry in entries:
            if id(entry) in target_ids:
                add_dtype_boundary(entry, dtype, default_output=torch.float32)
        if entries != [("", module)]:
            add_output_boundary(module)
        report_float32(module)

    def tensor_bytes(self, tensor: torch.Tensor) -> int | None:
        return None

    def loader(self, precision: Precision, device: torch.device) -> Loader | str:
        from autoq.backends._loader import Loader

        dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision.name]
        return Loader(config_class="", torch_dtype=dtype)

    def save_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        """Nothing to store: a cast is as fast as reading the cast weights back."""

    def load_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        named = dict(module.named_modules())
        self.apply(module, precision, [(name, named[name]) for name in targets])
