"""Registry lookups, skip patterns, probe caching and the errors a user sees."""

from __future__ import annotations

import re

import pytest
import torch

from autoq import backends
from autoq.backends import (
    Precision,
    apply_precision,
    get_precision,
    list_precisions,
    probe_precision,
    targets_for,
)
from autoq.backends import _probe as probe_module
from autoq.errors import BackendError, ConfigError, UnknownPrecisionError

REQUIRED = {
    "fp32", "fp16", "bf16",
    "ao_int8wo", "ao_int8dq", "ao_int4wo",
    "bnb_nf4", "bnb_nf4_dq", "bnb_fp4", "bnb_int8",
    "quanto_int8", "quanto_int4", "quanto_float8",
    "gguf_q8_0", "gguf_q5_0", "gguf_q4_0",
}  # fmt: skip


def test_registry_offers_every_required_precision() -> None:
    names = {p.name for p in list_precisions()}
    assert names >= REQUIRED
    assert set(backends.BACKENDS) == {"torch", "torchao", "bitsandbytes", "quanto", "gguf"}


def test_unknown_precision_lists_valid_names() -> None:
    with pytest.raises(UnknownPrecisionError) as info:
        get_precision("int3")
    message = str(info.value)
    assert "'int3'" in message
    assert all(name in message for name in REQUIRED)


def test_precision_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="weight_bits must be positive"):
        Precision("x", "torch", 0, "bad", max_rel_error=0.1)


def test_glob_and_regex_skips_select_layers() -> None:
    model = torch.nn.Sequential()
    model.add_module("conv_in", torch.nn.Linear(64, 64))
    block = torch.nn.Module()
    block.attn = torch.nn.Linear(64, 64)
    block.ff = torch.nn.Linear(64, 64)
    model.add_module("block", block)
    model.add_module("proj", torch.nn.Linear(64, 64))

    def chosen(skip: object) -> list[str]:
        return [name for name, _ in targets_for(model, "gguf_q8_0", skip)]  # type: ignore[arg-type]

    assert chosen(None) == ["conv_in", "block.attn", "block.ff", "proj"]
    assert chosen(["conv_in", "*attn*"]) == ["block.ff", "proj"]
    assert chosen("block") == ["conv_in", "proj"]  # an ancestor's match keeps its children
    assert chosen("re:block\\.(attn|ff)") == ["conv_in", "proj"]
    assert chosen(re.compile("pro.")) == ["conv_in", "block.attn", "block.ff"]
    with pytest.raises(ConfigError, match="Invalid skip regex"):
        chosen("re:(")


def test_layers_whose_width_does_not_fit_the_block_stay_unquantized() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32 + 8, 64))
    assert [n for n, _ in targets_for(model, "gguf_q4_0")] == ["0"]


def test_float_cast_with_skip_keeps_fp32_islands_and_runs() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 64)
    )
    x = torch.randn(3, 64)
    ref = model(x)
    apply_precision(model, "bf16", skip=["1"])
    assert model[0].weight.dtype == torch.bfloat16
    assert model[1].weight.dtype == torch.float32
    out = model(x)  # fp32 in, fp32 out: the component is a drop-in
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=0.1)


def test_probe_is_cached_per_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    probe_precision("fp16")  # fill the cache
    calls: list[str] = []
    real = probe_module._run_probe
    monkeypatch.setattr(
        probe_module, "_run_probe", lambda name, device: calls.append(name) or real(name, device)
    )
    assert probe_precision("fp16").usable
    assert calls == []
    assert probe_precision("fp16", refresh=True).usable
    assert calls == ["fp16"]


def test_damaged_probe_cache_is_reprobed(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path))
    cache = probe_module._cache_file(torch.device("cpu"))
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert probe_precision("fp32").usable
    assert '"fp32"' in cache.read_text()


def test_backend_failure_is_reported_with_context(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(backends.BACKENDS["gguf"], "apply", boom)
    with pytest.raises(BackendError, match="gguf failed to apply 'gguf_q8_0' to Sequential"):
        apply_precision(torch.nn.Sequential(torch.nn.Linear(64, 64)), "gguf_q8_0", check=False)
