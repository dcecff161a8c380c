"""Which sub-modules a precision changes in a module, and where the module lives."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from autoq.backends._base import Precision, get_precision
from autoq.backends._select import SkipPattern, compile_skip, is_skipped, select_targets

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["keep_in_fp32", "module_device", "targets_for"]


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (CPU for an empty module)."""
    import torch

    for tensor in [*module.parameters(), *module.buffers()]:
        return tensor.device
    return torch.device("cpu")


def keep_in_fp32(module: nn.Module, precision: str | Precision) -> list[re.Pattern[str]]:
    """Sub-modules the model itself asks to keep in fp32, as skip patterns.

    transformers models name them in ``_keep_in_fp32_modules`` (kept for fp16 and for
    every quantizer: T5's ``wo``, whose input T5 casts to ``wo.weight.dtype``, uint8 for
    GGUF and bitsandbytes 4-bit) and ``_keep_in_fp32_modules_strict`` (kept for fp16
    and bf16 too). autoq keeps them exactly where transformers' own loaders do.
    """
    spec = get_precision(precision)
    attributes: tuple[str, ...]
    if spec.name in ("fp32", "bf16"):
        attributes = ("_keep_in_fp32_modules_strict",) if spec.name == "bf16" else ()
    else:
        attributes = ("_keep_in_fp32_modules", "_keep_in_fp32_modules_strict")
    keys: set[str] = set()
    for sub in module.modules():
        for attribute in attributes:
            keys.update(getattr(sub, attribute, None) or ())
    return [re.compile(rf"(?:.*\.)?{re.escape(key)}") for key in sorted(keys)]


def targets_for(
    module: nn.Module,
    precision: str | Precision,
    skip: Iterable[SkipPattern] | SkipPattern | None = None,
) -> list[tuple[str, nn.Module]]:
    """The sub-modules ``precision`` would change, by qualified name.

    For a dtype cast that is every module outside ``skip``; for a quantizer, the layers of
    the kinds and shapes it supports outside ``skip``. Modules the model keeps in fp32
    (see `keep_in_fp32`) are never targets.
    """
    spec = get_precision(precision)
    compiled = compile_skip(skip) + keep_in_fp32(module, spec)
    if spec.is_float_cast:
        return [(n, m) for n, m in module.named_modules() if not is_skipped(n, compiled)]
    return select_targets(module, spec, compiled)
