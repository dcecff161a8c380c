"""Plans validate their input; assembled pipelines reuse cached components."""

from __future__ import annotations

import pytest
import torch

from autoq.errors import ConfigError, UnknownPrecisionError
from autoq.pipeline import ComponentCache, PipelinePlan, assemble, module_components


def test_plan_rejects_unknown_names() -> None:
    with pytest.raises(UnknownPrecisionError, match="int3"):
        PipelinePlan(precisions={"unet": "int3"}, steps=10)
    with pytest.raises(ValueError, match="unknown scheduler"):
        PipelinePlan(precisions={"unet": "fp32"}, steps=10, scheduler="magic")
    with pytest.raises(ValueError, match="unknown protect group"):
        PipelinePlan(precisions={"unet": "fp32"}, protect={"unet": ("wings",)}, steps=10)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        PipelinePlan(precisions={"unet": "fp32"}, steps=0)


def test_plan_round_trips_through_json() -> None:
    plan = PipelinePlan(
        precisions={"unet": "bnb_nf4", "vae": "fp32"}, protect={"unet": ("norms",)}, steps=12
    )
    assert PipelinePlan.model_validate_json(plan.model_dump_json()) == plan
    assert plan.skip_patterns("unet") == ["*norm*"]
    assert plan.describe() == "unet=bnb_nf4+protect vae=fp32, 12 steps default"


@pytest.fixture(scope="module")
def pipe():
    from autoq.zoo import load_pipeline

    return load_pipeline("shapes")


def test_components_are_discovered_from_the_pipeline(pipe) -> None:
    assert set(module_components(pipe)) == {"unet", "vae", "text_encoder"}


def test_assembled_pipelines_share_cached_components(pipe) -> None:
    cache = ComponentCache(pipe, max_bytes=2**30)
    plan = PipelinePlan(
        precisions={"unet": "bnb_int8", "vae": "fp32", "text_encoder": "fp32"},
        steps=4,
        scheduler="ddim",
    )
    first, second = assemble(cache, plan), assemble(cache, plan.model_copy(update={"steps": 6}))
    assert first.unet is second.unet  # built once, reused
    assert first.vae is pipe.vae  # fp32 is the base module itself
    assert type(first.scheduler).__name__ == "DDIMScheduler"
    assert type(pipe.scheduler).__name__ != "DDIMScheduler"  # the base is untouched
    assert cache.misses == 3 and cache.hits == 3
    image = first(
        "a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert image.size[0] > 0


def test_cache_evicts_least_recently_used(pipe) -> None:
    from autoq.backends import weight_bytes

    unet_int8 = weight_bytes(ComponentCache(pipe, 2**30).get("unet", "bnb_int8"))
    cache = ComponentCache(pipe, max_bytes=int(unet_int8 * 1.5))
    a = cache.get("unet", "bnb_int8")
    cache.get("unet", "ao_int8wo")  # over budget: the older entry goes
    assert cache.get("unet", "bnb_int8") is not a
    with pytest.raises(ConfigError, match="Unknown component 'transformer'"):
        cache.get("transformer", "fp32")


def test_quantized_components_are_reused_from_disk(pipe) -> None:
    first = ComponentCache(pipe, max_bytes=2**30, model_hash="test-model")
    built = first.get("unet", "bnb_nf4", ("norms",))
    assert first.loaded_from_disk == 0
    later = ComponentCache(pipe, max_bytes=2**30, model_hash="test-model")  # a new process
    reloaded = later.get("unet", "bnb_nf4", ("norms",))
    assert later.loaded_from_disk == 1
    sample = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 8, pipe.text_encoder.config.hidden_size)
    with torch.no_grad():
        a = built(sample, 5, encoder_hidden_states=context).sample
        b = reloaded(sample, 5, encoder_hidden_states=context).sample
    assert torch.equal(a, b)


def test_keeping_only_some_forms_releases_the_master_weights_they_do_not_use() -> None:
    """A process serving bf16 UNet and text encoder beside the fp32 VAE drops the fp32
    UNet and text encoder it loaded; what it kept still generates."""
    from autoq.backends import weight_bytes
    from autoq.zoo import load_pipeline

    base = load_pipeline("shapes")  # its own: the release changes it
    fp32_bytes = {c: weight_bytes(m) for c, m in module_components(base).items()}
    cache = ComponentCache(base, max_bytes=1)  # kept forms outlive any budget
    plan = PipelinePlan(precisions={"unet": "bf16", "text_encoder": "bf16", "vae": "fp32"}, steps=2)
    released = cache.keep_only(plan.component_keys())
    assert released == fp32_bytes["unet"] + fp32_bytes["text_encoder"]
    assert base.unet.device.type == "meta" and base.text_encoder.device.type == "meta"
    assert next(base.vae.parameters()).device.type == "cpu"  # used as it is
    kept = assemble(cache, plan)
    assert kept.unet is cache.get("unet", "bf16")  # not evicted, not rebuilt
    image = kept("a red circle", num_inference_steps=2, output_type="np").images[0]
    assert image.shape[-1] == 3 and float(abs(image).sum()) > 0
    with pytest.raises(ConfigError, match="released"):
        cache.get("unet", "ao_int8wo")
