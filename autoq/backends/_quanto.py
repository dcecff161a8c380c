"""optimum-quanto: qint8, qint4 and qfloat8 weights, on `nn.Linear` and `nn.Conv2d`.

Weights only: activation quantization without calibration wrecks diffusion outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoq.backends._base import Precision, missing_library

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from autoq.backends._loader import Loader

__all__ = ["QuantoBackend"]


class QuantoBackend:
    """Weight quantization with optimum-quanto's `quantize` + `freeze`."""

    name = "quanto"
    distribution: str | None = "optimum-quanto"
    precisions: tuple[Precision, ...] = (
        Precision(
            "quanto_int8",
            "quanto",
            8,
            "quanto qint8 weights (Linear + Conv2d)",
            max_rel_error=0.05,
            scale_bytes=4,
            layers=("linear", "conv"),
            options={"weights": "qint8"},
        ),
        Precision(
            "quanto_int4",
            "quanto",
            4,
            "quanto qint4 weights, group 128 (Linear + Conv2d)",
            max_rel_error=0.5,
            group_size=128,
            scale_bytes=8,
            layers=("linear", "conv"),
            options={"weights": "qint4"},
        ),
        Precision(
            "quanto_float8",
            "quanto",
            8,
            "quanto qfloat8 (e4m3) weights (Linear + Conv2d)",
            max_rel_error=0.25,
            scale_bytes=4,
            layers=("linear", "conv"),
            options={"weights": "qfloat8"},
        ),
    )

    def check_environment(self, precision: Precision, device: torch.device) -> str | None:
        return missing_library("optimum-quanto")

    def apply(
        self, module: nn.Module, precision: Precision, targets: list[tuple[str, nn.Module]]
    ) -> None:
        from optimum import quanto

        weights = getattr(quanto, str(precision.options["weights"]))
        if not targets:
            return
        # Module names hold no glob characters, so each name is an exact pattern.
        quanto.quantize(module, weights=weights, include=[name for name, _ in targets])
        quanto.freeze(module)

    def tensor_bytes(self, tensor: torch.Tensor) -> int | None:
        return None  # quanto tensors flatten into plain tensors; the generic walk counts them

    def loader(self, precision: Precision, device: torch.device) -> Loader | str:
        from autoq.backends._loader import Expr, Loader

        weights = Expr.of(str(precision.options["weights"]).removeprefix("q"))
        return Loader(  # both libraries' QuantoConfig convert nn.Linear only
            config_class="QuantoConfig",
            args={"diffusers": {"weights_dtype": weights}, "transformers": {"weights": weights}},
            skip_arg={
                "diffusers": "modules_to_not_convert",
                "transformers": "modules_to_not_convert",
            },
            skip_match={"diffusers": "child", "transformers": "transformers"},
            layers=("linear",),
        )

    def save_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        import json

        from optimum.quanto import quantization_map
        from safetensors.torch import save_file

        state = {}
        for name in targets:
            for key, tensor in module.get_submodule(name).state_dict().items():
                state[f"{name}.{key}"] = tensor.contiguous()
        save_file(state, folder / "weights.safetensors")
        qmap = {k: v for k, v in quantization_map(module).items() if k in set(targets)}
        (folder / "quanto_map.json").write_text(json.dumps(qmap))

    def load_state(
        self, module: nn.Module, precision: Precision, targets: list[str], folder: Path
    ) -> None:
        import json

        from optimum.quanto import freeze, requantize
        from safetensors.torch import load_file

        qmap = json.loads((folder / "quanto_map.json").read_text())
        state = load_file(folder / "weights.safetensors")
        requantize(module, state, qmap)
        freeze(module)
