"""torchao: int8 weight-only, int8 dynamic-activation + int8 weight, and int4 weight-only.

torchao quantizes `nn.Linear` only. Its tinygemm int4 layout needs CUDA (or an extra
kernel package) and its probe says so; `ao_intx4` is the int4 layout that runs everywhere,
but it keeps one int8 per element, which `weight_bytes` shows honestly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoq.backends._base import Precision, missing_library

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from autoq.backends._loader import Loader

__all__ = ["TorchaoBackend"]


def _config(precision: Precision) -> Any:
    import torch
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
    )
    from torchao.quantization.granularity import PerGroup

    kind = precision.options["config"]
    if kind == "int8_weight_only":
        return Int8WeightOnlyConfig()
    if kind == "int8_dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    if kind == "int4_weight_only":
        return Int4WeightOnlyConfig(group_size=precision.group_size)
    if kind == "intx4_weight_only":
        return IntxWeightOnlyConfig(
            weight_dtype=torch.int4,  # type: ignore[attr-defined]  # missing from torch's stubs
            granularity=PerGroup(precision.group_size),
        )
    raise ValueError(f"Unknown torchao config {kind!r}.")


class TorchaoBackend:
    """PyTorch-native quantized tensor subclasses from torchao."""

    name = "torchao"
    distribution: str | None = "torchao"
    precisions: tuple[Precision, ...] = (
        Precision(
            "ao_int8wo",
            "torchao",
            8,
            "torchao int8 weight-only, per channel",
            max_rel_error=0.03,
            scale_bytes=5,
            options={"config": "int8_weight_only"},
        ),
        Precision(
            "ao_int8dq",
            "torchao",
            8,
            "torchao int8 dynamic activations + int8 weights",
            max_rel_error=0.05,
            scale_bytes=5,
            options={"config": "int8_dynamic"},
        ),
        Precision(
            "ao_int4wo",
            "torchao",
            4,
            "torchao int4 weight-only, tinygemm packing",
            max_rel_error=0.35,
            group_size=64,
            scale_bytes=4,
            in_multiple=64,
            options={"config": "int4_weight_only"},
        ),
        Precision(
            "ao_intx4",
            "torchao",
            4,
            "torchao int4 weight-only, unpacked to int8",
            max_rel_error=0.35,
            group_size=32,
            scale_bytes=5,
            in_multiple=32,
            storage_bits=8,
            options={"config": "intx4_weight_only"},
        ),
    )

    def check_environment(self, precision: Precision, device: torch.device) -> str | None:
        return missing_library("torchao")

    def apply(
        self, module: nn.Module, precision: Precision, targets: list[tuple[str, nn.Module]]
    ) -> None:
        from torchao.quantization import quantize_

        chosen = {id(layer) for _, layer in targets}
        quantize_(module, _config(precision), filter_fn=lambda layer, _fqn: id(layer) in chosen)

    def tensor_bytes(self, tensor: torch.Tensor) -> int | None:
        return None  # torchao tensors flatten into plain tensors; the generic walk counts them

    def loader(self, precision: Precision, device: torch.device) -> Loader | str:
        from autoq.backends._loader import Expr, Loader

        kind = precision.options["config"]
        code = {
            "int8_weight_only": "Int8WeightOnlyConfig()",
            "int8_dynamic": "Int8DynamicActivationInt8WeightConfig()",
            "int4_weight_only": f"Int4WeightOnlyConfig(group_size={precision.group_size})",
            "intx4_weight_only": "IntxWeightOnlyConfig(weight_dtype=torch.int4, "
            f"granularity=PerGroup({precision.group_size}))",
        }[str(kind)]
        imports = [f"from torchao.quantization import {code.partition('(')[0]}"]
        if kind == "intx4_weight_only":
            imports.append("from torchao.quantization.granularity import PerGroup")
        quant_type = {"quant_type": Expr(code, _config(precision))}
        return Loader(
            config_class="TorchAoConfig",
            args={"diffusers": quant_type, "transformers": quant_type},
            skip_arg={
                "diffusers": "modules_to_not_convert",
                "transformers": "modules_to_not_convert",
            },
            skip_match={"diffusers": "qualified", "transformers": "transformers"},
            imports=tuple(imports),
        )

    def save_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        from safetensors.torch import save_file
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        state = {f"{n}.weight": module.get_submodule(n).weight for n in targets}
        tensors, metadata = flatten_tensor_state_dict(state)
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "weights.safetensors",
                  metadata=metadata)  # fmt: skip

    def load_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        import torch
        from safetensors import safe_open
        from safetensors.torch import load_file
        from torchao.prototype.safetensors.safetensors_support import (
            unflatten_tensor_state_dict,
        )

        path = folder / "weights.safetensors"
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        state, _ = unflatten_tensor_state_dict(load_file(path), metadata)
        for name in targets:
            layer = module.get_submodule(name)
            weight = state[f"{name}.weight"].to(layer.weight.device)
            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
