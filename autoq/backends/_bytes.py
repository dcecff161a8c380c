"""True storage bytes of a module's weights, quantized tensor subclasses included."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoq.backends._base import BACKENDS

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["plain_bytes", "tensor_bytes", "weight_bytes"]


def plain_bytes(tensor: torch.Tensor) -> int:
    """Bytes of a tensor's own elements (``numel * element_size``)."""
    return tensor.numel() * tensor.element_size()


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Storage bytes of one tensor.

    A backend that owns the tensor's type answers first (bitsandbytes keeps its scales in
    a side object); wrapper subclasses (torchao, quanto) are walked through
    ``__tensor_flatten__`` down to the plain tensors that hold the data.
    """
    for backend in BACKENDS.values():
        owned = backend.tensor_bytes(tensor)
        if owned is not None:
            return owned
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None:
        inner_names, _ = tensor.__tensor_flatten__()  # type: ignore[attr-defined]
        return sum(tensor_bytes(getattr(tensor, name)) for name in inner_names)
    return plain_bytes(tensor)


def weight_bytes(module: nn.Module) -> int:
    """Bytes that ``module``'s parameters and buffers really occupy.

    Shared tensors are counted once. Quantized weights count their packed data and every
    scale, zero point and lookup table stored beside it. A module that runs outside torch
    (an OpenVINO component) answers for itself through ``autoq_weight_bytes()``.
    """
    own = getattr(module, "autoq_weight_bytes", None)
    if callable(own):
        return int(own())
    seen: set[int] = set()
    total = 0
    tensors = [*module.parameters(), *module.buffers()]
    for tensor in tensors:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor_bytes(tensor)
    return total
