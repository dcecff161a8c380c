"""How plain diffusers (or transformers, for text encoders) would load one precision.

Each backend answers for its own precisions (`Backend.loader`): the quantization config
class and arguments, the layer kinds that loader converts, how its
``modules_to_not_convert`` list is matched, and the ``torch_dtype`` it needs, or the one-line
reason the precision has no plain-library equivalent on a device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Expr", "Library", "Loader", "SkipMatch"]

Library = Literal["diffusers", "transformers"]

SkipMatch = Literal["qualified", "child", "transformers"]
"""How a loader matches ``modules_to_not_convert``: ``qualified``: ``key == name`` or
``key + "."`` inside the parameter name (diffusers torchao / bitsandbytes); ``child``: a
module's own attribute name (diffusers quanto); ``transformers``: transformers'
``should_convert_module`` (prefix at a module boundary, or suffix)."""


@dataclass(frozen=True)
class Expr:
    """A value together with the Python source that rebuilds it, for printed load calls."""

    code: str
    value: Any

    @classmethod
    def of(cls, value: str | int | float | bool | None) -> Expr:
        """A literal, whose source is its ``repr``."""
        return cls(repr(value), value)


@dataclass(frozen=True)
class Loader:
    """A precision as a quantization config of diffusers and transformers.

    Args:
        config_class: Class name, the same in ``diffusers`` and ``transformers``
            (``TorchAoConfig``, ``QuantoConfig``, ``BitsAndBytesConfig``); empty for dtype
            casts, which load with ``torch_dtype`` alone.
        args: Keyword arguments of the config per library.
        skip_arg: Per library, the keyword that lists modules to keep unquantized.
        skip_match: Per library, how that list is matched (see `SkipMatch`).
        imports: Import lines the printed call needs besides the config class.
        layers: Layer kinds the library's loader converts.
        torch_dtype: The ``torch_dtype`` name the load call must pass (``float32``: the
            weights stay as autoq measured them; torchao's loader would otherwise pick bf16).
    """

    config_class: str
    args: Mapping[Library, Mapping[str, Expr]] = field(default_factory=dict)
    skip_arg: Mapping[Library, str] = field(default_factory=dict)
    skip_match: Mapping[Library, SkipMatch] = field(default_factory=dict)
    imports: tuple[str, ...] = ()
    layers: tuple[Literal["linear", "conv"], ...] = ("linear",)
    torch_dtype: str = "float32"
