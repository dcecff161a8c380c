"""What a precision is, what a backend must provide, and the one registry that holds them."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from autoq.errors import UnknownPrecisionError

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from autoq.backends._loader import Loader

__all__ = [
    "BACKENDS",
    "Backend",
    "Precision",
    "get_precision",
    "library_version",
    "list_precisions",
    "missing_library",
    "register_backend",
]

LayerKind = Literal["linear", "conv"]


@dataclass(frozen=True)
class Precision:
    """One way of storing a module's weights, as offered by one backend.

    Args:
        name: Registry key, e.g. ``"bnb_nf4"``.
        backend: Name of the backend that implements it.
        weight_bits: Bits per stored weight element (before scales).
        group_size: Elements sharing one scale (``0``: one scale per output channel).
        scale_bytes: Bytes of scale/zero-point metadata per group.
        layers: Layer kinds this precision quantizes; others keep their original storage.
        max_rel_error: Documented bound on the relative output error against fp32 for the
            contract modules (small UNet, text encoder, VAE); the tests enforce it.
        description: One line for `autoq backends`.
        in_multiple: Input features must be a multiple of this for a layer to be quantized.
        storage_bits: Bits the library really stores per element, when its layout wastes
            some (torchao's portable int4 keeps one int8 per value); defaults to
            ``weight_bits``.
        options: Backend-specific settings (frozen mapping).
    """

    name: str
    backend: str
    weight_bits: int
    description: str
    max_rel_error: float
    group_size: int = 0
    scale_bytes: float = 0.0
    layers: tuple[LayerKind, ...] = ("linear",)
    in_multiple: int = 1
    storage_bits: int | None = None
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weight_bits <= 0:
            raise ValueError(f"weight_bits must be positive, but got {self.weight_bits}.")
        if self.max_rel_error <= 0:
            raise ValueError(f"max_rel_error must be positive, but got {self.max_rel_error}.")

    @property
    def is_float_cast(self) -> bool:
        """Whether this precision is a plain dtype cast (fp32/fp16/bf16)."""
        return self.backend == "torch"

    def theoretical_bytes(self, shape: tuple[int, ...]) -> float:
        """Ideal storage for one weight of ``shape``: packed bits plus per-group scales."""
        return self._bytes(shape, self.weight_bits)

    def expected_bytes(self, shape: tuple[int, ...]) -> float:
        """Storage the backend's layout is known to use for one weight of ``shape``."""
        return self._bytes(shape, self.storage_bits or self.weight_bits)

    def _bytes(self, shape: tuple[int, ...], bits: int) -> float:
        numel = 1
        for dim in shape:
            numel *= dim
        if self.group_size:
            groups = -(-numel // self.group_size)
        else:
            groups = shape[0] if self.scale_bytes else 0
        return numel * bits / 8 + groups * self.scale_bytes


@runtime_checkable
class Backend(Protocol):
    """A quantization library behind autoq's registry.

    A backend never imports its library at module import time; `check_environment` and
    `apply` do that on demand.
    """

    name: str
    distribution: str | None
    precisions: tuple[Precision, ...]

    def check_environment(self, precision: Precision, device: torch.device) -> str | None:
        """Return why ``precision`` cannot run on ``device`` (missing library, no kernel),
        or ``None`` when it may be probed."""
        ...

    def apply(
        self,
        module: nn.Module,
        precision: Precision,
        targets: list[tuple[str, nn.Module]],
    ) -> None:
        """Quantize ``targets`` (qualified name, layer) of ``module`` in place."""
        ...

    def tensor_bytes(self, tensor: torch.Tensor) -> int | None:
        """Storage bytes of ``tensor`` if it is one of this backend's types, else ``None``."""
        ...

    def save_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        """Write the quantized ``targets`` of ``module`` to ``folder`` (safetensors or
        GGUF, never pickle)."""
        ...

    def load_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        """Turn the full-precision ``targets`` of ``module`` into the quantized layers saved
        in ``folder``, without quantizing again."""
        ...

    def loader(self, precision: Precision, device: torch.device) -> Loader | str:
        """How plain diffusers/transformers would load ``precision`` on ``device``, or the
        one-line reason they cannot."""
        ...


BACKENDS: dict[str, Backend] = {}
_PRECISIONS: dict[str, Precision] = {}


def register_backend(backend: Backend) -> Backend:
    """Add ``backend`` and its precisions to the registry.

    Raises:
        ValueError: A precision name is already registered by another backend.
    """
    for precision in backend.precisions:
        owner = _PRECISIONS.get(precision.name)
        if owner is not None and owner.backend != backend.name:
            raise ValueError(
                f"Precision {precision.name!r} is already registered by backend {owner.backend!r}."
            )
        if precision.backend != backend.name:
            raise ValueError(
                f"Precision {precision.name!r} names backend {precision.backend!r}, "
                f"but is registered by {backend.name!r}."
            )
    BACKENDS[backend.name] = backend
    for precision in backend.precisions:
        _PRECISIONS[precision.name] = precision
    return backend


def list_precisions() -> list[Precision]:
    """Every registered precision, usable here or not, in registry order."""
    return list(_PRECISIONS.values())


def get_precision(name: str | Precision) -> Precision:
    """Look a precision up by name.

    Raises:
        UnknownPrecisionError: ``name`` is not registered; the message lists valid names.
    """
    if isinstance(name, Precision):
        return name
    try:
        return _PRECISIONS[name]
    except KeyError:
        valid = ", ".join(_PRECISIONS)
        raise UnknownPrecisionError(
            f"Unknown precision {name!r}. Valid precisions: {valid}."
        ) from None


def library_version(distribution: str | None) -> str | None:
    """Installed version of ``distribution`` without importing it (``None``: absent)."""
    if distribution is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_library(distribution: str) -> str | None:
    """The reason a backend cannot run when its distribution is not installed."""
    if library_version(distribution) is None:
        return f"{distribution} is not installed; `pip install {distribution}` to enable it"
    return None
