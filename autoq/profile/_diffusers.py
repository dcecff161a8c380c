"""A tier as diffusers' own `PipelineQuantizationConfig`, where a backend maps onto one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoq.errors import BackendError

if TYPE_CHECKING:
    from autoq.pipeline import PipelinePlan

__all__ = ["to_pipeline_quantization_config"]


def _component_config(precision: str, diffusers_side: bool) -> Any:
    """The diffusers (or transformers, for text encoders) quantization config of one
    precision; ``None`` for plain dtypes."""
    if precision in ("fp32", "fp16", "bf16"):
        return None
    if diffusers_side:
        import diffusers as lib
    else:
        import transformers as lib
    if precision.startswith("bnb_"):
        if precision == "bnb_int8":
            return lib.BitsAndBytesConfig(load_in_8bit=True)
        return lib.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="fp4" if precision == "bnb_fp4" else "nf4",
            bnb_4bit_use_double_quant=precision == "bnb_nf4_dq",
        )
    if precision.startswith("quanto_"):
        weights = {"quanto_int8": "int8", "quanto_int4": "int4", "quanto_float8": "float8"}
        return (
            lib.QuantoConfig(weights_dtype=weights[precision])
            if diffusers_side
            else (lib.QuantoConfig(weights=weights[precision]))
        )
    if precision.startswith("ao_"):
        from torchao.quantization import (
            Int4WeightOnlyConfig,
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
        )

        configs = {
            "ao_int8wo": Int8WeightOnlyConfig,
            "ao_int8dq": Int8DynamicActivationInt8WeightConfig,
            "ao_int4wo": Int4WeightOnlyConfig,
        }
        if precision in configs:
            return lib.TorchAoConfig(configs[precision]())
    raise BackendError(
        f"Precision {precision!r} has no diffusers loader equivalent (GGUF needs a .gguf "
        "single file; torchao's portable int4 has no loader config); load this tier with "
        "autoq instead: `AdaptivePipeline` or `autoq.pipeline.assemble`."
    )


def to_pipeline_quantization_config(plan: PipelinePlan) -> Any:
    """``diffusers.PipelineQuantizationConfig(quant_mapping=...)`` for ``plan``.

    Text encoders get transformers' configs, the other components diffusers' configs;
    float components are left out (load them with ``torch_dtype``).
    """
    from diffusers import PipelineQuantizationConfig

    mapping = {}
    for component, precision in plan.precisions.items():
        config = _component_config(
            precision, diffusers_side=not component.startswith("text_encoder")
        )
        if config is not None:
            mapping[component] = config
    return PipelineQuantizationConfig(quant_mapping=mapping)
