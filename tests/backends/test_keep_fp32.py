"""Modules a transformers model keeps in fp32 (`_keep_in_fp32_modules`) stay fp32 wherever
transformers' own loaders keep them: under every quantizer and in fp16."""

from __future__ import annotations

import copy

import pytest
import torch

from autoq.backends import apply_precision, get_precision, keep_in_fp32, targets_for
from tests.backends.required import usable_or_fail


def _t5() -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    return T5EncoderModel(config).eval()


def _run(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(1, 64, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state


@pytest.mark.parametrize("precision", ["gguf_q4_0", "gguf_q8_0", "bnb_nf4", "bnb_fp4", "fp16"])
def test_t5_wo_stays_fp32_and_output_stays_in_bound(precision: str) -> None:
    usable_or_fail(precision)
    model = _t5()
    reference = _run(model)
    assert not any(name.endswith(".wo") for name, _ in targets_for(model, precision))
    quantized = apply_precision(copy.deepcopy(model), precision)
    for name, module in quantized.named_modules():
        if name.endswith(".wo"):
            assert type(module) is torch.nn.Linear and module.weight.dtype == torch.float32
    out = _run(quantized)
    assert out.dtype == torch.float32
    error = float((out - reference).norm() / reference.norm())
    assert error < get_precision(precision).max_rel_error, error


def test_bf16_casts_wo_like_transformers_does() -> None:
    model = _t5()
    assert keep_in_fp32(model, "bf16") == []  # only `_keep_in_fp32_modules_strict` is kept
    assert [p.pattern for p in keep_in_fp32(model, "gguf_q4_0")] == [r"(?:.*\.)?wo"]
    apply_precision(model, "bf16")
    assert all(
        m.weight.dtype == torch.bfloat16 for n, m in model.named_modules() if n.endswith(".wo")
    )
