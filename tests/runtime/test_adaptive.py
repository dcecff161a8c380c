"""`AdaptivePipeline` on the shapes model: scripted and real memory signals, OOM, threads."""

from __future__ import annotations

import threading

import numpy as np
import psutil
import pytest
import torch

from autoq.errors import OutOfMemoryError, ProfileMismatchError
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
    out = generate(pipe)
    assert out.tier == "quality" == pipe.tier.name
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


def test_out_of_memory_on_every_tier_is_a_clear_error(profile, monkeypatch) -> None:
    from diffusers import StableDiffusionPipeline

    def always_oom(self, *args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")

    pipe = adaptive(profile, ScriptedMonitor([plenty()]))
    monkeypatch.setattr(StableDiffusionPipeline, "__call__", always_oom)
    with pytest.raises(OutOfMemoryError, match="no lower tier"):
        generate(pipe)
    assert pipe.metrics.snapshot()["oom_retries"] == 3


def test_concurrent_callers_each_get_one_tier(profile) -> None:
    samples = [plenty() if i % 3 else tight() for i in range(50)]
    pipe = adaptive(profile, ScriptedMonitor(samples), dwell_s=0)
    results, errors = [], []

    def call() -> None:
        try:
            results.append(generate(pipe).tier)
        except Exception as exc:  # the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 6 and set(results) <= {"quality", "balanced", "minimal"}
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
