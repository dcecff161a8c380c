"""`AdaptivePipeline` on the shapes model: scripted and real memory signals, OOM, threads."""

from __future__ import annotations

import threading

import numpy as np
import psutil
import pytest
import torch

from autoq.errors import ConfigError, ModelMismatchError, OutOfMemoryError, ProfileMismatchError
from autoq.runtime import AdaptivePipeline, DefaultPolicy, ScriptedMonitor, Signals, SystemMonitor
from tests.runtime.conftest import MiB, make_profile


def plenty() -> Signals:
    return Signals(available_memory_bytes=10_000 * MiB)


def tight() -> Signals:
    return Signals(available_memory_bytes=150 * MiB)


def adaptive(profile, monitor, **policy) -> AdaptivePipeline:
    return AdaptivePipeline.from_profile(
        profile, monitor=monitor, policy=DefaultPolicy(**policy), device="cpu"
    )


def generate(pipe: AdaptivePipeline, **kwargs):
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **kwargs)


def test_serves_like_a_diffusers_pipeline(profile) -> None:
    pipe = adaptive(profile, ScriptedMonitor([plenty()]))
    assert not pipe.ready  # nothing generated yet
    out = generate(pipe)
    assert pipe.ready
    assert out.tier == "quality" == pipe.tier.name and out.steps == 2
    assert out.images[0].size[0] > 0
    assert out.timings["generation_s"] > 0
    assert [t.name for t in pipe.tiers] == ["quality", "balanced", "minimal"]
    assert generate(pipe, tier="minimal").tier == "minimal"  # a request may name its tier


def test_scripted_signals_move_tiers_down_fast_and_up_after_dwell(profile) -> None:
    monitor = ScriptedMonitor([plenty(), plenty(), tight(), plenty(), plenty()])
    pipe = adaptive(profile, monitor, dwell_s=3600)
    served = [generate(pipe).tier for _ in range(4)]
    assert served == ["quality", "balanced", "balanced", "balanced"]
    assert pipe.metrics.snapshot()["switches"] == 2  # start + one downgrade


def test_pin_overrides_the_policy(profile) -> None:
    pipe = adaptive(profile, ScriptedMonitor([plenty()]))
    pipe.pin("minimal")
    assert generate(pipe).tier == "minimal"
    pipe.unpin()
    pipe.policy = DefaultPolicy(dwell_s=0)
    assert generate(pipe).tier == "quality"


@pytest.mark.slow
def test_real_memory_squeeze_moves_down_and_back_up() -> None:
    profile = make_profile(peaks=(300, 60, 40))
    rss = psutil.Process().memory_info().rss
    # This process may use 500 MiB more than now: "quality" needs 300 MiB at peak.
    monitor = SystemMonitor("cpu", interval_s=0, memory_limit_bytes=rss + 500 * MiB)
    pipe = adaptive(profile, monitor, dwell_s=0)
    assert generate(pipe).tier == "quality"

    hog = np.ones(400 * MiB, dtype=np.uint8)  # real, touched memory
    assert generate(pipe).tier != "quality"
    del hog
    assert generate(pipe).tier == "quality"


def test_out_of_memory_steps_down_and_succeeds(profile, monkeypatch) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = adaptive(profile, ScriptedMonitor([plenty()]), dwell_s=3600)
    quality_unet = pipe._build(0).unet
    real_call = StableDiffusionPipeline.__call__

    def oom_on_quality(self, *args, **kwargs):
        if self.unet is quality_unet:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", oom_on_quality)
    out = generate(pipe)
    assert out.tier == "balanced"
    assert pipe.metrics.snapshot()["oom_retries"] == 1
    assert generate(pipe).tier == "balanced"  # quality is cooling down


def test_out_of_memory_in_decode_retries_once_with_vae_tiling(profile, monkeypatch) -> None:
    from diffusers import AutoencoderKL

    pipe = adaptive(profile, ScriptedMonitor([plenty()]), dwell_s=3600)
    real_decode = AutoencoderKL.decode
    tiled_calls = []

    def decode(self, *args, **kwargs):  # named like the VAE's: the failure is in decode
        if not self.use_tiling:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        tiled_calls.append(self)
        return real_decode(self, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "decode", decode)
    out = generate(pipe)
    assert out.tier == "quality"  # the same tier, decoded in tiles: no step down
    assert len(tiled_calls) == 1 and tiled_calls[0] is not pipe._serving().vae
    assert not pipe._serving().vae.use_tiling  # only that request was tiled
    assert pipe.metrics.snapshot()["oom_retries"] == 1

    # Tiled and still out of memory: once per request, then smaller tiers as before.
    def decode(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    monkeypatch.setattr(AutoencoderKL, "decode", decode)
    with pytest.raises(OutOfMemoryError, match="no tier with a smaller measured peak"):
        generate(pipe)
    assert pipe.metrics.snapshot()["oom_retries"] == 1 + 1 + 3  # tiled once, then 3 tiers


def test_out_of_memory_on_every_tier_is_a_clear_error(profile, monkeypatch) -> None:
    from diffusers import StableDiffusionPipeline

    def always_oom(self, *args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")

    pipe = adaptive(profile, ScriptedMonitor([plenty()]))
    monkeypatch.setattr(StableDiffusionPipeline, "__call__", always_oom)
    with pytest.raises(OutOfMemoryError, match="no tier with a smaller measured peak"):
        generate(pipe)
    assert pipe.metrics.snapshot()["oom_retries"] == 3


def _signature(pipe) -> tuple:
    """Which component objects a pipeline holds, and the dtype/type of their first weight."""
    out = []
    for name in ("unet", "text_encoder", "vae"):
        module = getattr(pipe, name)
        weight = next(module.parameters())
        out.append((name, id(module), type(weight).__name__, str(weight.dtype)))
    return tuple(out)


def test_concurrent_callers_each_get_one_tier(profile, monkeypatch) -> None:
    from diffusers import StableDiffusionPipeline

    samples = [plenty() if i % 3 else tight() for i in range(50)]
    pipe = adaptive(profile, ScriptedMonitor(samples), dwell_s=0)
    real_call = StableDiffusionPipeline.__call__

    def recording_call(self, *args, **kwargs):
        before = _signature(self)
        out = real_call(self, *args, **kwargs)
        out.components_seen = (before, _signature(self))
        return out

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", recording_call)
    results, errors = [], []

    def call() -> None:
        try:
            out = generate(pipe)
            results.append(out.tier)
            before, after = out.components_seen
            # The components did not change under the request, and they are its tier's.
            assert before == after == _signature(pipe._build(pipe._tier_index(out.tier)))
        except Exception as exc:  # the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 6 and set(results) <= {"quality", "balanced", "minimal"}
    assert len(set(results)) > 1  # the signals did move tiers while requests ran
    assert sum(pipe.metrics.snapshot()["requests"].values()) == 6


def test_profile_from_another_device_is_refused(profile, tmp_path) -> None:
    from autoq.profile import write_profile

    identity = profile.fingerprint.identity.model_copy(update={"total_memory_bytes": 7 * 2**30})
    other = profile.model_copy(
        update={"fingerprint": profile.fingerprint.model_copy(update={"identity": identity})}
    )
    path = write_profile(other, tmp_path / "other.json")
    with pytest.raises(ProfileMismatchError, match="total_memory_bytes"):
        AdaptivePipeline.from_profile(path)
    pipe = AdaptivePipeline.from_profile(path, allow_mismatch=True, device="cpu")
    assert pipe.tier.name in {"quality", "balanced", "minimal"}


def test_out_of_memory_steps_down_by_measured_peak_not_list_position(monkeypatch) -> None:
    from diffusers import StableDiffusionPipeline

    # Listed balanced, quality, minimal: after quality, the list's next is minimal, but
    # the best tier with a smaller measured peak is balanced.
    profile = make_profile(order=(1, 0, 2))
    pipe = adaptive(profile, ScriptedMonitor([plenty()]), dwell_s=3600)
    assert pipe.tier.name == "quality"
    quality_unet = pipe._build(pipe._tier_index("quality")).unet
    real_call = StableDiffusionPipeline.__call__

    def oom_on_quality(self, *args, **kwargs):
        if self.unet is quality_unet:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", oom_on_quality)
    assert generate(pipe).tier == "balanced"


def test_steps_dial_under_load_and_explicit_steps_honoured() -> None:
    # quality: 4 steps in 1.0 s, 2 steps (its floor) in 0.5 s.
    profile = make_profile(
        latencies=(1.0, 0.15, 0.05), steps=(4, 2, 2), curves=([(2, 0.5)], [], []),
        min_steps=(2, None, None),
    )  # fmt: skip
    pipe = adaptive(profile, ScriptedMonitor([plenty()]), slo_s=1.5, dwell_s=3600)
    pipe.set_queue_source(lambda: 1)  # one request waits behind each new one
    out = generate(pipe)
    # 4 steps behind one request: 2.0 s > SLO; 3 steps: 2 x 0.75 s = 1.5 s.
    assert (out.tier, out.steps) == ("quality", 3)
    explicit = generate(pipe, num_inference_steps=4)
    # Asked for 4 steps: never fewer; quality can't make it at 4, balanced can.
    assert (explicit.tier, explicit.steps) == ("balanced", 4)
    served = pipe.metrics.snapshot()["served"]
    assert served == {"quality": {3: 1}, "balanced": {4: 1}}


def test_warm_makes_ready_without_counting_requests(profile) -> None:
    pipe = adaptive(profile, ScriptedMonitor([plenty()]))
    pipe.warm(["minimal", "quality"])
    assert pipe.ready
    assert pipe.metrics.snapshot()["requests"] == {}


def test_profile_for_other_weights_is_refused(tmp_path) -> None:
    from autoq.profile import write_profile

    path = write_profile(make_profile(content_hash="0" * 16), tmp_path / "stale.json")
    # Refused before any weight is loaded.
    with pytest.raises(ModelMismatchError, match="content hash"):
        AdaptivePipeline.from_profile(path, device="cpu")


def test_model_picks_its_profile_from_a_shared_folder(tmp_path) -> None:
    from autoq.pipeline import ModelIdentity
    from autoq.profile import write_profile

    other = make_profile().model_copy(
        update={"model": ModelIdentity(source="/models/other", content_hash="1" * 16,
                                       pipeline_class="StableDiffusionPipeline")}
    )  # fmt: skip
    write_profile(other, tmp_path / "a-other.json")  # alphabetically first
    write_profile(make_profile(), tmp_path / "b-shapes.json")
    pipe = AdaptivePipeline.from_profile(
        tmp_path, model="shapes", monitor=ScriptedMonitor([plenty()]), device="cpu"
    )
    assert pipe.profile.model.source == "zoo:shapes"


def test_latency_statistics_stay_bounded_after_many_requests() -> None:
    import tracemalloc

    from autoq.runtime import RuntimeMetrics

    metrics = RuntimeMetrics()
    tracemalloc.start()
    for i in range(5_000):
        metrics.record_request(("quality", "minimal")[i % 2], 0.1 + (i % 7) / 100, 2 + i % 3)
    after_5k = tracemalloc.get_traced_memory()[0]
    for i in range(50_000):
        metrics.record_request(("quality", "minimal")[i % 2], 0.1 + (i % 7) / 100, 2 + i % 3)
    after_55k = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # 10x the requests, no growth to speak of (an unbounded list grows ~1.6 MB here).
    assert after_55k - after_5k < 64 * 1024
    snap = metrics.snapshot()
    assert snap["requests"] == {"quality": 27_500, "minimal": 27_500}
    stats = snap["latency_s"]["quality"]
    assert stats["count"] == 27_500 and 0.1 <= stats["p50"] <= 0.16 and stats["max"] == 0.16


def test_a_runtime_serving_some_tiers_holds_only_what_they_need() -> None:
    from autoq.pipeline import module_components

    monitor = ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)])
    pipe = AdaptivePipeline.from_profile(
        make_profile(), monitor=monitor, device="cpu", tiers=["minimal"]
    )
    assert [t.name for t in pipe.tiers] == ["minimal"] and pipe.tier.name == "minimal"
    # minimal stores the UNet in bnb_nf4 and the text encoder in bnb_int8: their fp32
    # weights are gone; the fp32 VAE is used as loaded.
    base = module_components(pipe._cache.base)
    released = {c for c, m in base.items() if next(m.parameters()).device.type == "meta"}
    assert released == {"unet", "text_encoder"}
    out = pipe("a red circle", generator=torch.Generator().manual_seed(0))
    assert out.tier == "minimal" and out.images[0].size[0] > 0
    with pytest.raises(ConfigError, match=r"Unknown tier\(s\) \['turbo'\]"):
        AdaptivePipeline.from_profile(
            make_profile(), monitor=monitor, device="cpu", tiers=["turbo"]
        )


def test_a_slowdown_learned_under_load_is_forgotten_once_load_drops() -> None:
    """Ten times slower than profiled once: requests are predicted 2.8x dearer. With no
    generation since (every request refused as too costly, say), the ratio halves its
    distance to 1 every 30 s, so admission recovers without new observations."""
    monitor = ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)])
    pipe = AdaptivePipeline.from_profile(make_profile(), monitor=monitor, device="cpu")
    alone = pipe.predict(tier="quality", steps=2, ahead=0)  # 0.3 s, as profiled
    pipe._observe(0, 2, None, 10 * alone)
    assert pipe.signals().latency_ratio == pytest.approx(2.8, rel=1e-3)
    assert pipe.predict(tier="quality", steps=2, ahead=0) == pytest.approx(2.8 * alone, rel=1e-3)
    pipe._ratio_at -= 30  # half a minute without a generation
    assert pipe.signals().latency_ratio == pytest.approx(1.9, rel=1e-3)
    pipe._ratio_at -= 300
    assert pipe.predict(tier="quality", steps=2, ahead=0) == pytest.approx(alone, rel=1e-2)
