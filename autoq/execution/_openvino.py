"""The OpenVINO executor: a component converted with ``openvino.convert_model`` from the
loaded torch module (no hub, no optimum-intel), optionally with NNCF weight compression,
compiled for the CPU and called by the pipeline like the torch component.

Conversion happens on the component's first call, from that call's real inputs, so the
model has static shapes at the size the pipeline runs; a call with other input shapes
converts once more for those (each shape once). Inputs and outputs are flattened with
torch's pytree, so the pipeline gets the same output classes (``UNet2DConditionOutput``,
a CLIP ``BaseModelOutputWithPooling`` with its hidden states, a tuple with
``return_dict=False``), dtypes and devices as from torch. A VAE is converted where the
pipeline calls it (``decode``); its encoder stays in torch.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autoq.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["OpenVINOCall", "check_openvino", "to_openvino"]

WEIGHT_MODES = (None, "int8", "int4")


def check_openvino(device: torch.device) -> str | None:
    """Why OpenVINO cannot run this component on ``device``, or ``None``."""
    import importlib.util
    import platform

    if device.type != "cpu":
        return "autoq runs OpenVINO on the CPU only; the device is " + device.type
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'autoq[openvino]')"
    if platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"):
        return f"OpenVINO has no CPU plugin for {platform.machine()}"
    return None


def openvino_config() -> dict[str, str]:
    """OpenVINO's CPU settings: as many inference threads as torch has in this process
    (OpenVINO would otherwise take every core, whatever ``OMP_NUM_THREADS`` says)."""
    import torch

    return {"INFERENCE_NUM_THREADS": str(torch.get_num_threads())}


class _Flat:
    """``fn`` as a function of its tensor inputs only: the other arguments are fixed."""

    def __init__(
        self, owner: nn.Module, fn: Callable[..., Any], leaves: list, spec: Any, slots: list[int]
    ) -> None:
        self.owner = owner
        self.fn = fn
        self.leaves = leaves
        self.spec = spec
        self.slots = slots
        self.out_spec: Any = None

    def module(self) -> nn.Module:
        from torch import nn
        from torch.utils import _pytree

        flat = self

        class Flat(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.owner = flat.owner  # its weights are the model's parameters, not constants

            def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
                leaves = list(flat.leaves)
                for slot, tensor in zip(flat.slots, tensors, strict=True):
                    leaves[slot] = tensor
                args, kwargs = _pytree.tree_unflatten(leaves, flat.spec)
                out, flat.out_spec = _pytree.tree_flatten(flat.fn(*args, **kwargs))
                return tuple(out)

        return Flat()


class OpenVINOCall:
    """One method of a torch module (``forward`` or ``decode``) run by OpenVINO.

    Args:
        owner: The torch module ``fn`` belongs to.
        fn: The torch method, used to trace the conversion.
        weights: ``None`` (weights as converted), ``"int8"`` or ``"int4"`` (NNCF weight
            compression).
    """

    def __init__(
        self, owner: nn.Module, fn: Callable[..., Any], weights: str | None = None
    ) -> None:
        if weights not in WEIGHT_MODES:
            raise ConfigError(f"OpenVINO weights must be one of {WEIGHT_MODES}, got {weights!r}.")
        self.owner = owner
        self.fn = fn
        self.weights = weights
        self.signature = inspect.signature(fn)
        self._models: dict[tuple[Any, ...], tuple[Any, Any, list[Any]]] = {}
        self._lock = threading.Lock()
        self.constant_bytes = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import numpy as np
        import torch
        from torch.utils import _pytree

        bound = self.signature.bind(*args, **kwargs)
        leaves, spec = _pytree.tree_flatten((bound.args, bound.kwargs))
        slots = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        key = (
            str(spec),
            tuple(
                (tuple(leaf.shape), leaf.dtype) if i in slots else _static(leaf)
                for i, leaf in enumerate(leaves)
            ),
        )
        with self._lock:
            if key not in self._models:
                self._models[key] = self._convert(leaves, spec, slots)
            compiled, out_spec, out_like = self._models[key]
        inputs = [leaves[i].detach().cpu().numpy() for i in slots]
        results = compiled(inputs)
        outs = [
            torch.from_numpy(np.asarray(results[port])).to(like.dtype).to(like.device)
            for port, like in zip(compiled.outputs, out_like, strict=True)
        ]
        return _pytree.tree_unflatten(outs, out_spec)

    def _convert(self, leaves: list[Any], spec: Any, slots: list[int]) -> tuple[Any, Any, list]:
        import openvino as ov
        import torch

        from autoq.backends._quiet import quiet

        flat = _Flat(self.owner, self.fn, leaves, spec, slots)
        example = tuple(leaves[i] for i in slots)
        with torch.no_grad():
            module = flat.module()
            out_like = [t.detach() for t in module(*example)]
            with quiet():
                model = ov.convert_model(module, example_input=example)
        if self.weights is not None:
            import nncf

            mode = {
                "int8": nncf.CompressWeightsMode.INT8_ASYM,
                "int4": nncf.CompressWeightsMode.INT4_ASYM,
            }[self.weights]
            with quiet():
                model = nncf.compress_weights(model, mode=mode)
        self.constant_bytes = max(self.constant_bytes, _constant_bytes(model))
        compiled = ov.Core().compile_model(model, "CPU", openvino_config())
        return compiled, flat.out_spec, out_like


def _static(leaf: Any) -> Any:
    """A stand-in for a non-tensor argument in the conversion key: plain values as they
    are; other objects (a ``torch.Generator`` handed to ``vae.decode``) by type, since a
    traced graph holds no object state."""
    if leaf is None or isinstance(leaf, bool | int | float | str):
        return leaf
    return type(leaf).__qualname__


def _constant_bytes(model: Any) -> int:
    """Bytes of an OpenVINO model's constants (its weights)."""
    total = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            total += int(op.get_byte_size())
    return total


def to_openvino(module: nn.Module, component: str, *, weights: str | None = None) -> nn.Module:
    """A shallow copy of ``module`` whose pipeline-facing call runs in OpenVINO.

    Args:
        module: The torch component (fp32 weights).
        component: Its pipeline name; a VAE (a module with ``decode``) converts ``decode``.
        weights: ``None``, ``"int8"`` or ``"int4"`` NNCF weight compression.
    """
    out = copy.copy(module)
    out.__dict__ = dict(module.__dict__)
    method = "decode" if hasattr(module, "decode") and "decoder" in module._modules else "forward"
    call = OpenVINOCall(module, getattr(module, method), weights)
    object.__setattr__(out, method, call)
    object.__setattr__(out, "autoq_openvino", call)
    kept = (
        []
        if method == "forward"
        else [
            m
            for n, m in module._modules.items()
            if n != "decoder" and n != "post_quant_conv" and m is not None
        ]
    )

    def resident_bytes() -> int:
        """OpenVINO's constants plus the torch parts the pipeline still calls (a VAE's
        encoder); before the first call, the torch weights it will convert."""
        from autoq.backends import weight_bytes

        torch_parts = sum(weight_bytes(m) for m in kept)
        if call.constant_bytes == 0:
            return weight_bytes(module)
        return call.constant_bytes + torch_parts

    object.__setattr__(out, "autoq_weight_bytes", resident_bytes)
    return out
