"""`apply_precision`: the one entry point that puts a precision on any torch module."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from autoq.backends._base import BACKENDS, Precision, get_precision
from autoq.backends._probe import probe_precision
from autoq.backends._quiet import quiet
from autoq.backends._select import SkipPattern
from autoq.backends._targets import module_device, targets_for
from autoq.errors import BackendError, PrecisionUnavailableError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["apply_precision"]

M = TypeVar("M", bound="nn.Module")


def apply_precision(
    module: M,
    precision: str | Precision,
    *,
    skip: Iterable[SkipPattern] | SkipPattern | None = None,
    check: bool = True,
) -> M:
    """Store ``module``'s weights in ``precision``, in place.

    Works on any torch module a diffusers pipeline holds (UNet, DiT transformer, text
    encoder, VAE). The module stays on its device and keeps its call signature.

    Args:
        module: The module to convert.
        precision: A registered precision name (see `autoq backends`).
        skip: Sub-modules to keep as they are: globs over qualified names (``"*norm*"``,
            ``"conv_in"``), ``"re:<regex>"`` strings, or compiled regexes. A match on a
            module also keeps everything below it.
        check: Probe the precision on this device first (cached) and refuse it if unusable.

    Returns:
        ``module``, converted.

    Raises:
        UnknownPrecisionError: ``precision`` is not registered.
        PrecisionUnavailableError: The precision cannot run on this device; says why.
        BackendError: The backend failed on this module.
    """
    spec = get_precision(precision)
    device = module_device(module)
    if check:
        result = probe_precision(spec.name, device)
        if not result.usable:
            raise PrecisionUnavailableError(
                f"Precision {spec.name!r} is not usable on {device}: {result.reason}. "
                "Run `autoq backends` to list the usable ones."
            )
    targets = targets_for(module, spec, skip)
    try:
        with quiet():
            BACKENDS[spec.backend].apply(module, spec, targets)
    except Exception as exc:
        raise BackendError(
            f"{spec.backend} failed to apply {spec.name!r} to {type(module).__name__}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return module
