"""Executors run a component like the torch original; plans name them per component."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from autoq.backends import weight_bytes
from autoq.execution import EXECUTORS, get_executor, usable_executors
from autoq.pipeline import ComponentCache, PipelinePlan, assemble

FP32 = {"unet": "fp32", "vae": "fp32", "text_encoder": "fp32"}


@pytest.fixture(scope="module")
def pipe():
    from autoq.zoo import load_pipeline

    return load_pipeline("shapes")


def _image(pipe, **call) -> np.ndarray:
    out = pipe(
        "a red circle",
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **call,
    )
    return out.images[0]


def test_plans_name_executors_and_memory_tools() -> None:
    plan = PipelinePlan(
        precisions=FP32, execution={"unet": "compile", "vae": "eager"}, memory=("vae_tiling",),
        steps=8,
    )  # fmt: skip
    assert plan.execution == {"unet": "compile"}  # eager is the default, not stored
    assert plan.describe() == (
        "unet=fp32@compile vae=fp32+vae_tiling text_encoder=fp32, 8 steps default"
    )
    assert plan.component_key("unet") == ("unet", "fp32", (), "compile", ())
    assert plan.component_key("vae") == ("vae", "fp32", (), "eager", ("vae_tiling",))
    assert not plan.is_fp32 and plan.fp32().is_fp32
    assert PipelinePlan.model_validate_json(plan.model_dump_json()) == plan
    old = PipelinePlan.model_validate({"precisions": FP32, "steps": 8})  # a v1 profile's plan
    assert old.execution == {} and old.memory == () and old.is_fp32


def test_plans_refuse_unknown_or_unfit_executors() -> None:
    with pytest.raises(ValueError, match=r"Unknown executor 'tensorrt'.*openvino"):
        PipelinePlan(precisions=FP32, execution={"unet": "tensorrt"}, steps=4)
    with pytest.raises(ValueError, match="runs on precisions"):
        PipelinePlan(
            precisions={**FP32, "unet": "bnb_nf4"}, execution={"unet": "openvino"}, steps=4
        )
    with pytest.raises(ValueError, match="unknown memory tool"):
        PipelinePlan(precisions=FP32, memory=("offload_to_moon",), steps=4)
    with pytest.raises(ValueError, match="has no precision"):
        PipelinePlan(precisions={"unet": "fp32"}, execution={"vae": "compile"}, steps=4)


def test_every_executor_says_whether_it_runs_here() -> None:
    found = usable_executors(torch.device("cpu"))
    assert list(found) == list(EXECUTORS) and found["eager"] is None
    assert "CPU only" in str(usable_executors(torch.device("cuda"))["openvino"])


def test_openvino_components_match_torch_inside_the_pipeline(pipe) -> None:
    pytest.importorskip("openvino")
    cache = ComponentCache(pipe, max_bytes=2**31)
    reference = _image(assemble(cache, PipelinePlan(precisions=FP32, steps=3)))
    plan = PipelinePlan(precisions=FP32, execution=dict.fromkeys(FP32, "openvino"), steps=3)
    converted = assemble(cache, plan)
    # OpenVINO infers in bf16 on CPUs with AVX512-BF16 or AMX (its default hint), in fp32
    # elsewhere: within a few 1/255 of torch's fp32 image, or within float rounding.
    import openvino as ov

    hint = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    in_bf16 = "bf16" in hint or "bfloat16" in hint
    bound, atol = (8 / 255, 0.05) if in_bf16 else (1e-3, 1e-4)
    assert np.abs(_image(converted) - reference).max() < bound
    # A text encoder, a UNet and a VAE decoder, each with the outputs diffusers reads.
    assert converted.unet is not pipe.unet and converted.unet.config == pipe.unet.config
    assert pipe.unet.forward.__self__ is pipe.unet  # the torch module is untouched
    ids = torch.zeros(1, 16, dtype=torch.long)
    out = converted.text_encoder(ids, output_hidden_states=True)
    want = pipe.text_encoder(ids, output_hidden_states=True)
    assert type(out) is type(want) and len(out.hidden_states) == len(want.hidden_states)
    assert torch.allclose(out.last_hidden_state, want.last_hidden_state, atol=atol)
    # Weights: OpenVINO's constants once converted; int8 compression shrinks them.
    assert weight_bytes(converted.unet) == pytest.approx(weight_bytes(pipe.unet), rel=0.05)
    small = assemble(cache, plan.model_copy(update={"execution": {"unet": "openvino_int8"}}))
    assert np.abs(_image(small) - reference).max() < 0.1
    assert weight_bytes(small.unet) < 0.35 * weight_bytes(pipe.unet)


def test_openvino_uses_the_threads_torch_has(pipe) -> None:
    """OpenVINO would take every core; a process pinned to N torch threads gets N."""
    pytest.importorskip("openvino")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoder = get_executor("openvino").apply(pipe.text_encoder, "text_encoder")
        encoder(torch.zeros(1, 16, dtype=torch.long))
        (compiled, _, _), *_ = encoder.autoq_openvino._models.values()
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    finally:
        torch.set_num_threads(before)


def test_memory_tools_flag_a_copy_that_shares_weights(pipe) -> None:
    cache = ComponentCache(pipe, max_bytes=2**31)
    tiled = assemble(cache, PipelinePlan(precisions=FP32, memory=("vae_tiling",), steps=3))
    assert tiled.vae.use_tiling and not pipe.vae.use_tiling
    assert tiled.vae.decoder is pipe.vae.decoder  # no weights copied
    cache.retain({("vae", "fp32", (), "eager", ("vae_tiling",))})
    assert cache.get("vae", "fp32", (), "eager", ("vae_tiling",)) is tiled.vae


def test_channels_last_copies_and_keeps_outputs(pipe) -> None:
    module = get_executor("channels_last").apply(pipe.vae, "vae")
    assert module is not pipe.vae
    conv = module.decoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous()  # the original keeps its layout
    assert get_executor("channels_last").applies_to("vae", pipe.vae, "fp32")
    assert not get_executor("channels_last").applies_to("text_encoder", pipe.text_encoder, "fp32")


@pytest.mark.slow
def test_compiled_kernels_are_reused_by_a_later_process(tmp_path) -> None:
    """The second process finds every graph the first one compiled in autoq's cache."""
    script = textwrap.dedent(
        """
        import torch
        from torch._dynamo.utils import counters
        from autoq.execution import get_executor

        class Net(torch.nn.Module):  # dynamo traces user modules, not a bare Sequential
            def __init__(self):
                super().__init__()
                self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

            def forward(self, x):
                return self.b(torch.nn.functional.gelu(self.a(x)))

        net = Net()
        compiled = get_executor("compile").apply(net, "unet")
        with torch.no_grad():
            out = compiled(torch.ones(2, 8))
            assert torch.allclose(out, net(torch.ones(2, 8)), atol=1e-5)
        print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
        """
    )
    env = {"AUTOQ_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs[0] == ["0", "1"]  # compiled and stored
    assert runs[1] == ["1", "0"]  # found on disk
    assert (tmp_path / "inductor").is_dir()


def test_the_component_cache_counts_what_openvino_holds(pipe) -> None:
    """An OpenVINO component holds its own constants: the cache's memory bound counts
    them (it counted nothing, so converted components piled up past the bound)."""
    if usable_executors(torch.device("cpu"))["openvino"] is not None:
        pytest.skip("OpenVINO does not run here")
    cache = ComponentCache(pipe, max_bytes=2**31)
    converted = cache.get("unet", "fp32", (), "openvino")
    converted_sizes = [s for key, (_, s) in cache._entries.items() if key[3] == "openvino"]
    assert converted_sizes == [weight_bytes(converted)] and converted_sizes[0] > 0


def test_an_openvino_component_is_timed_at_a_new_batch_size(pipe) -> None:
    """A batch-curve point of a plan whose VAE converts per input shape: the conversion
    runs before the memory tracker (OpenVINO's tracer cannot work under it), and the
    tracked call still measures the generation's peak above the weights."""
    pytest.importorskip("openvino")
    from autoq.tune._measure import time_batch

    cache = ComponentCache(pipe, max_bytes=2**31)
    plan = PipelinePlan(precisions=FP32, execution={"vae": "openvino"}, steps=2)
    converted = assemble(cache, plan)
    weights = sum(weight_bytes(m) for m in (converted.unet, converted.text_encoder))
    images = [("a red circle", 1), ("a blue square", 2)]
    seconds, peak = time_batch(converted, images, 2, 5.0, None, torch.device("cpu"))
    assert seconds > 0 and peak > weights
