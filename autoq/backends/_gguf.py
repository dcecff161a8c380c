"""GGUF: Q8_0, Q5_0 and Q4_0 blocks, written to a real `.gguf` file with the `gguf`
package and loaded back through diffusers' `GGUFParameter` / `GGUFLinear`, which
dequantize on the fly (on CPU as on CUDA).

GGUF quantizes `nn.Linear` weights whose last dimension is a multiple of the 32-element
block; other layers keep their storage.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from autoq.backends._base import Precision, missing_library
from autoq.backends._select import set_submodule

if TYPE_CHECKING:
    import torch
    from torch import nn

    from autoq.backends._loader import Loader

__all__ = ["GGUFBackend", "write_gguf"]

_BLOCK = 32


def write_gguf(path: Path, weights: dict[str, torch.Tensor], quant_type: str) -> None:
    """Quantize ``weights`` to ``quant_type`` (e.g. ``"Q4_0"``) and write a GGUF file."""
    import gguf

    qtype = gguf.GGMLQuantizationType[quant_type]
    blocks = {
        name: gguf.quants.quantize(weight.detach().float().cpu().numpy(), qtype)
        for name, weight in weights.items()
    }
    _write_blocks(path, blocks, quant_type)


def _write_blocks(path: Path, blocks: dict[str, Any], quant_type: str) -> None:
    """Write already-quantized ``blocks`` (uint8 arrays) as a GGUF file."""
    import gguf

    qtype = gguf.GGMLQuantizationType[quant_type]
    writer = gguf.GGUFWriter(str(path), arch="autoq")
    for name, data in blocks.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _linear(layer: nn.Module) -> torch.nn.Linear:
    return cast("torch.nn.Linear", layer)


def _install_from_file(module: nn.Module, names: list[str], path: Path) -> None:
    """Swap each named `nn.Linear` for diffusers' `GGUFLinear` holding its blocks from
    ``path``, loaded by diffusers' own GGUF reader."""
    import torch
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from diffusers.quantizers.gguf.utils import GGUFLinear

    loaded = load_gguf_checkpoint(str(path))
    for name in names:
        linear = _linear(module.get_submodule(name))
        device, dtype = linear.weight.device, linear.weight.dtype
        with torch.device("meta"):
            new = GGUFLinear(
                linear.in_features, linear.out_features, linear.bias is not None,
                compute_dtype=dtype,
            )  # fmt: skip
        new.weight = loaded[f"{name}.weight"].to(device)
        if linear.bias is not None:
            new.bias = linear.bias
        new.requires_grad_(False)
        set_submodule(module, name, new)


class GGUFBackend:
    """llama.cpp's block formats, through the file format and diffusers' loader."""

    name = "gguf"
    distribution: str | None = "gguf"
    precisions: tuple[Precision, ...] = (
        Precision(
            "gguf_q8_0",
            "gguf",
            8,
            "GGUF Q8_0 (fp16 scale per 32)",
            max_rel_error=0.03,
            group_size=_BLOCK,
            scale_bytes=2,
            in_multiple=_BLOCK,
            options={"type": "Q8_0"},
        ),
        Precision(
            "gguf_q5_0",
            "gguf",
            5,
            "GGUF Q5_0 (fp16 scale per 32)",
            max_rel_error=0.15,
            group_size=_BLOCK,
            scale_bytes=2,
            in_multiple=_BLOCK,
            options={"type": "Q5_0"},
        ),
        Precision(
            "gguf_q4_0",
            "gguf",
            4,
            "GGUF Q4_0 (fp16 scale per 32)",
            max_rel_error=0.3,
            group_size=_BLOCK,
            scale_bytes=2,
            in_multiple=_BLOCK,
            options={"type": "Q4_0"},
        ),
    )

    def check_environment(self, precision: Precision, device: torch.device) -> str | None:
        return missing_library("gguf") or missing_library("diffusers")

    def apply(
        self, module: nn.Module, precision: Precision, targets: list[tuple[str, nn.Module]]
    ) -> None:
        if not targets:
            return
        weights = {f"{name}.weight": _linear(layer).weight for name, layer in targets}
        with tempfile.TemporaryDirectory(prefix="autoq-gguf-") as tmp:
            path = Path(tmp) / "weights.gguf"
            write_gguf(path, weights, str(precision.options["type"]))
            _install_from_file(module, [name for name, _ in targets], path)

    def tensor_bytes(self, tensor: torch.Tensor) -> int | None:
        return None  # GGUFParameter holds its packed blocks as a plain uint8 tensor

    def loader(self, precision: Precision, device: torch.device) -> Loader | str:
        return (
            "GGUF per component: diffusers loads GGUF only as one model's single-file "
            "checkpoint in its original key layout (`from_single_file` + "
            "GGUFQuantizationConfig), not as a pipeline component, and autoq's .gguf files "
            "(arch 'autoq', diffusers-internal names, quantized Linear weights only) do not "
            "load there; serve this tier with autoq's `AdaptivePipeline`"
        )

    def save_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        blocks = {}
        for name in targets:
            weight: Any = module.get_submodule(name).weight  # a GGUFParameter
            blocks[f"{name}.weight"] = weight.as_tensor().cpu().numpy()
        _write_blocks(folder / "weights.gguf", blocks, str(precision.options["type"]))

    def load_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        if targets:
            _install_from_file(module, targets, folder / "weights.gguf")
