"""A small hand-made profile of the shapes model: real plans, chosen metrics; and the
real runtime with generation replaced, for the layers above generation."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from PIL import Image

from autoq.device import fingerprint
from autoq.pipeline import PipelinePlan
from autoq.profile import (
    Constraints,
    Metrics,
    ModelIdentity,
    Profile,
    StepPoint,
    StudyInfo,
    Tier,
)
from autoq.runtime import AdaptivePipeline, ScriptedMonitor, Signals

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
    peaks: tuple[float, ...] = (300, 120, 60),
    latencies: tuple[float, ...] = (0.3, 0.15, 0.05),
    *,
    clips: tuple[float, ...] | None = None,
    steps: tuple[int, ...] | None = None,
    curves: tuple[list[tuple[int, float]], ...] | None = None,
    min_steps: tuple[int | None, ...] | None = None,
    size: tuple[int, int] | None = None,
    content_hash: str | None = None,
    order: tuple[int, ...] | None = None,
) -> Profile:
    """Three tiers of the shapes model with chosen metrics.

    Tier ``i`` is named ``quality``/``balanced``/``minimal`` with CLIP ``clips[i]``
    (default 30, 29, 28), ``steps[i]`` (default 2), an optional latency ``curves[i]`` of
    ``(steps, latency_s)`` points and ``min_steps[i]``; ``order`` lists them in another
    order than quality (e.g. ``(2, 0, 1)``), which the runtime must not read as cost.
    """
    from autoq.pipeline import folder_hash, pipeline_folder

    precisions = [
        {"unet": "fp32", "text_encoder": "fp32", "vae": "fp32"},
        {"unet": "bnb_nf4", "text_encoder": "fp32", "vae": "fp32"},
        {"unet": "bnb_nf4", "text_encoder": "bnb_int8", "vae": "fp32"},
    ]
    names = ["quality", "balanced", "minimal"]
    n = len(peaks)
    clips = clips or tuple(30.0 - i for i in range(n))
    steps = steps or (2,) * n
    tiers = []
    for i in range(n):
        curve = [
            StepPoint(steps=s, latency_s=t, clip_score=clips[i])
            for s, t in (curves or ((),) * n)[i]
        ]
        tiers.append(
            Tier(
                name=names[i],
                plan=PipelinePlan(precisions=precisions[i], steps=steps[i]),
                metrics=metrics(peaks[i], peaks[i] / 3, latencies[i], clips[i]),
                steps_curve=curve,
                min_steps=(min_steps or (None,) * n)[i],
            )
        )
    tiers = [tiers[i] for i in order] if order else tiers
    height, width = size if size else (None, None)
    return Profile(
        autoq_version="0.1.0",
        created=datetime.now(timezone.utc),
        fingerprint=fingerprint(bench=False),
        model=ModelIdentity(
            source="zoo:shapes",
            content_hash=content_hash or folder_hash(pipeline_folder("zoo:shapes")),
            pipeline_class="StableDiffusionPipeline",
        ),
        constraints=Constraints(),
        prompts=["a red circle"],
        seeds=[0],
        guidance_scale=5.0,
        height=height,
        width=width,
        reference=max(tiers, key=lambda t: t.metrics.clip_score).model_copy(
            update={"name": "reference"}
        ),
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


class _FakeOut:
    def __init__(self, tier: str, steps: int) -> None:
        self.images = [Image.new("RGB", (8, 8))]
        self.tier = tier
        self.steps = steps


class InstantPipeline(AdaptivePipeline):
    """The real runtime with generation replaced: for tests of what sits above it (the
    dispatcher, the HTTP layer). Records the prompts it started and finished (``calls``);
    waits on ``gate`` when one is set."""

    calls: list[str]
    gate = None

    def __call__(self, prompt, *, tier=None, **kwargs):
        self.started.append(prompt)
        if self.gate is not None:
            self.gate.wait(60)
        self.calls.append(prompt)
        return _FakeOut(tier or self.tier.name, kwargs.get("num_inference_steps", 2))

    def warm(self, tiers=None) -> None:
        self._ready.set()


def instant_pipeline(size: tuple[int, int] = (256, 256)) -> InstantPipeline:
    monitor = ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)])
    pipe = InstantPipeline.from_profile(make_profile(size=size), monitor=monitor, device="cpu")
    pipe.calls, pipe.started = [], []
    return pipe
