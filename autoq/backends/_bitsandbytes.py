"""bitsandbytes: NF4 and FP4 (optionally double-quantized scales) and LLM.int8.

diffusers' own bitsandbytes loader refuses machines without a GPU, so autoq swaps each
`nn.Linear` for the bitsandbytes module itself; bitsandbytes quantizes when the weight is
moved to its device, on CPU as on CUDA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from autoq.backends._base import Precision, missing_library
from autoq.backends._select import set_submodule

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from autoq.backends._loader import Loader

__all__ = ["BitsandbytesBackend"]

_BLOCK = 64  # bitsandbytes' default 4-bit block size


def _empty_layer(linear: torch.nn.Linear, precision: Precision) -> nn.Module:
    """The bitsandbytes layer replacing ``linear``: weight still on the meta device, bias
    carried over."""
    import bitsandbytes as bnb
    import torch

    new: nn.Module
    if precision.options["quant_type"] == "int8":
        new = bnb.nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            has_fp16_weights=False,
            threshold=6.0,
            device="meta",
        )
    else:
        new = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=linear.weight.dtype,
            quant_type=precision.options["quant_type"],
            compress_statistics=precision.options["double_quant"],
            quant_storage=torch.uint8,
            device="meta",
        )
    if linear.bias is not None:
        new.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
    return new


def _int8_scales(layer: nn.Module) -> torch.Tensor:
    """LLM.int8's per-row scales: on the weight until the first forward, then in the state."""
    scb = getattr(layer.weight, "SCB", None)
    state: Any = layer.state
    return scb if scb is not None else state.SCB


def _float32() -> torch.dtype:
    import torch

    return torch.float32


class BitsandbytesBackend:
    """Drop-in `Linear4bit` / `Linear8bitLt` layers from bitsandbytes."""

    name = "bitsandbytes"
    distribution: str | None = "bitsandbytes"
    precisions: tuple[Precision, ...] = (
        Precision(
            "bnb_nf4",
            "bitsandbytes",
            4,
            "bitsandbytes NF4, fp32 block scales",
            max_rel_error=0.35,
            group_size=_BLOCK,
            scale_bytes=4,
            options={"quant_type": "nf4", "double_quant": False},
        ),
        Precision(
            "bnb_nf4_dq",
            "bitsandbytes",
            4,
            "bitsandbytes NF4, double-quantized scales",
            max_rel_error=0.35,
            group_size=_BLOCK,
            scale_bytes=1,
            options={"quant_type": "nf4", "double_quant": True},
        ),
        Precision(
            "bnb_fp4",
            "bitsandbytes",
            4,
            "bitsandbytes FP4, fp32 block scales",
            max_rel_error=0.4,
            group_size=_BLOCK,
            scale_bytes=4,
            options={"quant_type": "fp4", "double_quant": False},
        ),
        Precision(
            "bnb_int8",
            "bitsandbytes",
            8,
            "bitsandbytes LLM.int8 (outlier threshold 6)",
            max_rel_error=0.05,
            scale_bytes=4,
            options={"quant_type": "int8"},
        ),
    )

    def check_environment(self, precision: Precision, device: torch.device) -> str | None:
        return missing_library("bitsandbytes")

    def apply(
        self, module: nn.Module, precision: Precision, targets: list[tuple[str, nn.Module]]
    ) -> None:
        import bitsandbytes as bnb

        for name, layer in targets:
            linear = cast("torch.nn.Linear", layer)
            weight = linear.weight.data
            new = _empty_layer(linear, precision)
            if precision.options["quant_type"] == "int8":
                new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            else:
                new.weight = bnb.nn.Params4bit(
                    weight,
                    requires_grad=False,
                    quant_type=precision.options["quant_type"],
                    compress_statistics=precision.options["double_quant"],
                    blocksize=_BLOCK,
                )
            # Moving to the device is what quantizes the weight.
            set_submodule(module, name, new.to(weight.device))

    def loader(self, precision: Precision, device: torch.device) -> Loader | str:
        from autoq.backends._loader import Expr, Loader

        if device.type != "cuda":
            return (
                f"bitsandbytes on {device.type}: diffusers' and transformers' bitsandbytes "
                "loaders need a GPU (autoq swaps in the bitsandbytes layers itself)"
            )
        if precision.options["quant_type"] == "int8":
            args = {"load_in_8bit": Expr.of(True)}
        else:
            args = {
                "load_in_4bit": Expr.of(True),
                "bnb_4bit_quant_type": Expr.of(str(precision.options["quant_type"])),
                "bnb_4bit_use_double_quant": Expr.of(bool(precision.options["double_quant"])),
                "bnb_4bit_compute_dtype": Expr("torch.float32", _float32()),
            }
        return Loader(
            config_class="BitsAndBytesConfig",
            args={"diffusers": args, "transformers": args},
            skip_arg={
                "diffusers": "llm_int8_skip_modules",
                "transformers": "llm_int8_skip_modules",
            },
            skip_match={"diffusers": "qualified", "transformers": "transformers"},
        )

    def save_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        from safetensors.torch import save_file

        state = {}
        for name in targets:
            layer = module.get_submodule(name)
            for key, tensor in layer.state_dict().items():
                state[f"{name}.{key}"] = tensor.contiguous()
            if precision.options["quant_type"] == "int8":
                state[f"{name}.SCB"] = _int8_scales(layer).contiguous()
        save_file(state, folder / "weights.safetensors")

    def load_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        import bitsandbytes as bnb
        from safetensors.torch import load_file

        state = load_file(folder / "weights.safetensors")
        for name in targets:
            linear = cast("torch.nn.Linear", module.get_submodule(name))
            device = linear.weight.device
            data = state[f"{name}.weight"].to(device)
            new = _empty_layer(linear, precision)
            if precision.options["quant_type"] == "int8":
                weight = bnb.nn.Int8Params(data, requires_grad=False, has_fp16_weights=False)
                weight.CB = weight.data  # as Int8Params._quantize leaves it
                weight.SCB = state[f"{name}.SCB"].to(device)
                new.weight = weight
            else:
                prefix = f"{name}.weight."
                stats = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                new.weight = bnb.nn.Params4bit.from_prequantized(
                    data=data, quantized_stats=stats, requires_grad=False, device=device, module=new
                )
            set_submodule(module, name, new)

    def tensor_bytes(self, tensor: torch.Tensor) -> int | None:
        import sys

        import torch

        from autoq.backends._bytes import plain_bytes

        bnb = sys.modules.get("bitsandbytes")  # not imported: no tensor can be one of ours
        if bnb is None:
            return None

        if isinstance(tensor, bnb.nn.Params4bit):
            total = plain_bytes(tensor.data)
            state = tensor.quant_state
            if state is not None:
                total += sum(
                    plain_bytes(t)
                    for t in state.as_dict(packed=True).values()
                    if isinstance(t, torch.Tensor)
                )
            return total
        if isinstance(tensor, bnb.nn.Int8Params):
            # One fp32 scale per row (SCB). bitsandbytes moves it from the weight to the
            # layer's state on the first forward, so count it from the layout.
            return plain_bytes(tensor.data) + tensor.shape[0] * 4
        return None
