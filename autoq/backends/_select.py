"""Which sub-modules a precision touches: layer kinds, shape limits and `skip` patterns."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from autoq.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from autoq.backends._base import Precision

__all__ = [
    "PROTECT_PRESETS",
    "SkipPattern",
    "compile_skip",
    "is_skipped",
    "select_targets",
    "set_submodule",
]

SkipPattern = str | re.Pattern[str]

PROTECT_PRESETS: dict[str, tuple[str, ...]] = {
    "norms": ("*norm*",),
    "io": ("conv_in", "conv_out", "*.conv_in", "*.conv_out", "*proj_in", "*proj_out"),
    "embeddings": ("*time_emb*", "*time_embedding*", "*embeddings*", "*add_embedding*"),
    "attention": ("*attn*", "*attention*", "*self_attn*"),
}
"""Named groups of sub-modules that mixed-precision users commonly keep at high precision."""


def compile_skip(patterns: Iterable[SkipPattern] | SkipPattern | None) -> list[re.Pattern[str]]:
    """Turn skip patterns into regexes.

    A ``str`` is a glob (``*`` crosses dots) unless it starts with ``re:``; a compiled
    ``re.Pattern`` is used as is. Regexes are matched with ``fullmatch``.

    Raises:
        ConfigError: A ``re:`` pattern is not a valid regular expression.
    """
    if patterns is None:
        return []
    if isinstance(patterns, str | re.Pattern):
        patterns = [patterns]
    compiled = []
    for pattern in patterns:
        if isinstance(pattern, re.Pattern):
            compiled.append(pattern)
        elif pattern.startswith("re:"):
            try:
                compiled.append(re.compile(pattern[3:]))
            except re.error as exc:
                raise ConfigError(f"Invalid skip regex {pattern!r}: {exc}.") from None
        else:
            compiled.append(re.compile(fnmatch.translate(pattern)))
    return compiled


def is_skipped(name: str, skip: Sequence[re.Pattern[str]]) -> bool:
    """Whether ``name`` or any of its ancestors matches a skip pattern."""
    parts = name.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return any(p.fullmatch(prefix) for p in skip for prefix in prefixes)


def select_targets(
    module: nn.Module, precision: Precision, skip: Sequence[re.Pattern[str]]
) -> list[tuple[str, nn.Module]]:
    """Layers of ``module`` that ``precision`` will quantize, by qualified name."""
    from torch import nn

    kinds: list[type[nn.Module]] = []
    if "linear" in precision.layers:
        kinds.append(nn.Linear)
    if "conv" in precision.layers:
        kinds.append(nn.Conv2d)
    targets = []
    for name, layer in module.named_modules():
        if type(layer) not in kinds or is_skipped(name, skip):
            continue
        weight = getattr(layer, "weight", None)
        if weight is None or weight.dim() < 2 or weight.shape[1] % precision.in_multiple:
            continue
        targets.append((name, layer))
    return targets


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the sub-module at dotted ``name`` with ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
