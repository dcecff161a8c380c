"""A small hand-made profile of the shapes model: real plans, chosen metrics."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from autoq.device import fingerprint
from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints, Metrics, ModelIdentity, Profile, StudyInfo, Tier

MiB = 2**20


def metrics(peak_mib: float, weight_mib: float, latency_s: float, clip: float) -> Metrics:
    return Metrics(
        clip_score=clip,
        clip_score_std=0.0,
        latency_s=latency_s,
        latency_p90_s=latency_s,
        peak_memory_bytes=int(peak_mib * MiB),
        weight_bytes=int(weight_mib * MiB),
        memory_method="cpu_dispatch_tracker",
    )


def make_profile(
    peaks: tuple[float, float, float] = (300, 120, 60),
    latencies: tuple[float, float, float] = (0.3, 0.15, 0.05),
) -> Profile:
    from autoq.pipeline import folder_hash, pipeline_folder

    plans = [
        PipelinePlan(precisions={"unet": "fp32", "text_encoder": "fp32", "vae": "fp32"}, steps=2),
        PipelinePlan(
            precisions={"unet": "bnb_nf4", "text_encoder": "fp32", "vae": "fp32"}, steps=2
        ),
        PipelinePlan(
            precisions={"unet": "bnb_nf4", "text_encoder": "bnb_int8", "vae": "fp32"}, steps=2
        ),
    ]
    names = ["quality", "balanced", "minimal"]
    tiers = [
        Tier(name=n, plan=p, metrics=metrics(peak, peak / 3, latency, 30 - i))
        for i, (n, p, peak, latency) in enumerate(zip(names, plans, peaks, latencies, strict=True))
    ]
    return Profile(
        autoq_version="0.1.0",
        created=datetime.now(timezone.utc),
        fingerprint=fingerprint(bench=False),
        model=ModelIdentity(
            source="zoo:shapes",
            content_hash=folder_hash(pipeline_folder("zoo:shapes")),
            pipeline_class="StableDiffusionPipeline",
        ),
        constraints=Constraints(),
        prompts=["a red circle"],
        seeds=[0],
        guidance_scale=5.0,
        reference=tiers[0].model_copy(update={"name": "reference"}),
        tiers=tiers,
        study=StudyInfo(
            storage="sqlite://",
            study_name="hand-made",
            sampler="nsga2",
            seed=0,
            trials_completed=3,
            trials_failed=0,
            trials_pruned=0,
        ),
    )


@pytest.fixture
def profile() -> Profile:
    return make_profile()
