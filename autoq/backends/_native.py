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


def add_dtype_boundary(module: nn.Module, dtype: torch.dtype) -> None:
    """Run ``module`` in ``dtype`` while its caller keeps its own dtype."""

    caller: dict[str, torch.dtype | None] = {"dtype": None}

    def pre_hook(mod: nn.Module, args: Any, kwargs: Any) -> tuple[Any, Any]:
        caller["dtype"] = _first_float_dtype(args, kwargs)
        return _cast_tree(args, dtype), _cast_tree(kwargs, dtype)

    def post_hook(mod: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        back = caller["dtype"]
        return output if back is None else _cast_tree(output, back)

    module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    module.register_forward_hook(post_hook, with_kwargs=True)


def _entry_points(module: nn.Module) -> list[nn.Module]:
    """The sub-modules a component's methods call directly: its children, looking through
    containers that are never called themselves (``ModuleList``, ``ModuleDict``)."""
    from torch import nn

    children = list(module.children())
    if not children:
        return [module]
    entries: list[nn.Module] = []
    for child in children:
        if isinstance(child, nn.ModuleList | nn.ModuleDict):
            entries.extend(_entry_points(child))
        else:
            entries.append(child)
    return entries


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
        kept = {n: layer for n, layer in module.named_modules() if id(layer) not in target_ids}
        for name, layer in kept.items():
            # Descendants of a skipped module are skipped too: only the outermost needs casts.
            if name and name.rpartition(".")[0] not in kept:
                add_dtype_boundary(layer, torch.float32)
        kept_ids = {id(layer) for layer in kept.values()}
        for entry in _entry_points(module):
            if id(entry) not in kept_ids:
                add_dtype_boundary(entry, dtype)

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
