"""`weight_bytes` against counts written from each library's documented storage layout."""

from __future__ import annotations

import pytest
import torch

from autoq.backends import apply_precision, probe_precision, weight_bytes

OUT, IN = 512, 256
N = OUT * IN
BIAS = OUT * 4  # fp32 bias, kept by every quantizer

# Bytes of a Linear(256 -> 512) with bias after each precision, from the formats' specs:
# packed values + scales (+ zero points, lookup tables) + the untouched fp32 bias.
LAYOUT = {
    "fp32": N * 4 + BIAS,
    "fp16": (N + OUT) * 2,
    "bf16": (N + OUT) * 2,
    "ao_int8wo": N + OUT * (4 + 1) + BIAS,  # int8 values, fp32 scale + int8 zero point per row
    "ao_int8dq": N + OUT * (4 + 1) + BIAS,
    "ao_intx4": N + (N // 32) * (4 + 1) + BIAS,  # int4 values unpacked to one int8 each
    "bnb_nf4": N // 2 + (N // 64) * 4 + 16 * 4 + BIAS,  # + 16-entry fp32 code book
    "bnb_fp4": N // 2 + (N // 64) * 4 + 16 * 4 + BIAS,
    # uint8 block scales, fp32 scales of those per 256 blocks, 256-entry code, code book
    "bnb_nf4_dq": N // 2 + N // 64 + (N // 64 // 256) * 4 + 256 * 4 + 16 * 4 + BIAS,
    "bnb_int8": N + OUT * 4 + BIAS,  # int8 values, fp32 scale per row
    "quanto_int8": N + OUT * 4 + BIAS + 8,  # + fp32 input/output scale buffers
    "quanto_float8": N + OUT * 4 + BIAS + 8,
    "quanto_int4": N // 2 + (N // 128) * (4 + 4) + BIAS + 8,  # fp32 scale + shift per 128
    "gguf_q8_0": (N // 32) * 34 + BIAS,  # 32 int8 + fp16 scale per block
    "gguf_q5_0": (N // 32) * 22 + BIAS,  # 32x5 bits + fp16 scale per block
    "gguf_q4_0": (N // 32) * 18 + BIAS,  # 32x4 bits + fp16 scale per block
}


@pytest.mark.parametrize("precision", list(LAYOUT))
def test_weight_bytes_matches_storage_layout(precision: str) -> None:
    if not probe_precision(precision).usable:
        pytest.skip(f"{precision} is not usable here")
    torch.manual_seed(0)
    layer = apply_precision(torch.nn.Sequential(torch.nn.Linear(IN, OUT)), precision)
    # bitsandbytes also packs its quant state's settings as a JSON blob of under 200 bytes.
    assert weight_bytes(layer) == pytest.approx(LAYOUT[precision], abs=200)


def test_shared_tensors_are_counted_once() -> None:
    shared = torch.nn.Linear(64, 64)
    model = torch.nn.Sequential(shared, shared)
    assert weight_bytes(model) == (64 * 64 + 64) * 4
