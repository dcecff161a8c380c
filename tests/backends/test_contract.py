"""The contract every precision keeps, run for each registered precision on a small UNet,
CLIP text encoder and VAE: it still runs, stays within its documented error bound, and
its weights shrink exactly as its storage format says."""

from __future__ import annotations

import copy

import pytest
import torch

from autoq.backends import (
    apply_precision,
    get_precision,
    list_precisions,
    probe_all,
    probe_precision,
    targets_for,
    weight_bytes,
)
from autoq.errors import PrecisionUnavailableError
from tests.backends.components import COMPONENTS, Component
from tests.backends.required import KNOWN_UNUSABLE, device_kind, required_here, usable_or_fail

PRECISIONS = [p.name for p in list_precisions()]


def test_required_precisions_are_usable_on_this_machine_kind() -> None:
    """The list in tests/backends/required.py is the contract: all of it probes usable."""
    results = {r.precision: r for r in probe_all(only=required_here())}
    broken = {n: r.reason for n, r in results.items() if not r.usable}
    assert broken == {}, f"must be usable on {device_kind()}: {broken}"


def test_known_unusable_precisions_say_the_known_reason() -> None:
    for name, reason in KNOWN_UNUSABLE[device_kind()].items():
        result = probe_precision(name)
        assert result.usable or reason in (result.reason or ""), (name, result.reason)


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_contract(precision: str, component: Component) -> None:
    usable_or_fail(precision)
    spec = get_precision(precision)
    reference = component.build()
    with torch.no_grad():
        ref = component.run(reference)
        targets = targets_for(reference, spec)
        touched_fp32 = sum(
            layer.weight.numel() * 4 for _, layer in targets if hasattr(layer, "weight")
        )
        expected_quantized = sum(
            spec.expected_bytes(tuple(layer.weight.shape))
            for _, layer in targets
            if hasattr(layer, "weight")
        )
        before = weight_bytes(reference)

        quantized = apply_precision(copy.deepcopy(reference), precision)
        out = component.run(quantized)

    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    assert _rel_error(out, ref) < spec.max_rel_error

    after = weight_bytes(quantized)
    if spec.is_float_cast:
        tensors = [*reference.parameters(), *reference.buffers()]
        floats = [t for t in tensors if t.is_floating_point()]
        float_bytes = sum(t.numel() * 4 for t in floats)
        assert after == before - float_bytes + float_bytes * spec.weight_bits // 32
        return
    assert targets, f"{precision} found nothing to quantize in {component.name}"
    # Untouched tensors keep their bytes; quantized weights take what their format says
    # (packed values + scales), plus per-layer bookkeeping (lookup tables, padding).
    expected = before - touched_fp32 + expected_quantized
    assert expected * 0.98 <= after <= expected * 1.02 + 1200 * len(targets)


def test_unusable_precisions_say_why() -> None:
    unusable = [r for r in probe_all() if not r.usable]
    if not unusable:
        pytest.skip("every precision is usable on this device")
    for result in unusable:
        linear = torch.nn.Sequential(torch.nn.Linear(64, 64))
        with pytest.raises(PrecisionUnavailableError, match=result.precision) as info:
            apply_precision(linear, result.precision)
        assert result.reason and result.reason in str(info.value)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_skip_keeps_named_modules(precision: str) -> None:
    usable_or_fail(precision)
    encoder = COMPONENTS["text_encoder"].build()
    before = {n: (type(m), m.weight.dtype) for n, m in encoder.named_modules() if _has_w(m)}
    apply_precision(encoder, precision, skip=["*self_attn*", "re:.*layer_norm\\d"])
    for name, module in encoder.named_modules():
        if not _has_w(module):
            continue
        if "self_attn" in name or name.rsplit(".", 1)[-1].startswith("layer_norm"):
            assert (type(module), module.weight.dtype) == before[name], name
    ids = torch.randint(0, 1000, (1, 6))
    with torch.no_grad():
        assert torch.isfinite(encoder(input_ids=ids).last_hidden_state).all()


def _has_w(module: torch.nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), torch.Tensor)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_runs_under_peak_memory_tracking(precision: str) -> None:
    """The tuner measures CPU peak memory with a dispatch mode; every backend must run
    inside it (subclasses with only __torch_function__, like GGUF's, included)."""
    from autoq.device import PeakMemory

    usable_or_fail(precision)
    model = apply_precision(torch.nn.Sequential(torch.nn.Linear(64, 256)), precision)
    with torch.no_grad(), PeakMemory("cpu") as peak:
        out = model(torch.randn(8, 64))
    assert out.shape == (8, 256)
    assert peak.peak_bytes >= 8 * 256 * 2  # at least the output activation


@pytest.mark.parametrize("precision", PRECISIONS)
def test_round_trip_through_disk(precision: str, tmp_path) -> None:
    """Stored once, reloaded without quantizing: same outputs, same bytes."""
    from autoq.backends import load_or_quantize

    usable_or_fail(precision)
    base = COMPONENTS["text_encoder"].build()
    run = COMPONENTS["text_encoder"].run
    folder = tmp_path / "weights"
    with torch.no_grad():
        built, from_disk = load_or_quantize(base, precision, folder, skip=["*layer_norm*"])
        assert not from_disk
        loaded, from_disk = load_or_quantize(base, precision, folder, skip=["*layer_norm*"])
        assert from_disk
        assert torch.equal(run(loaded), run(built))
    assert weight_bytes(loaded) == weight_bytes(built)
    assert [type(m) for m in loaded.modules()] == [type(m) for m in built.modules()]
    assert all(p.dtype == torch.float32 for p in base.parameters())  # the base is untouched
