"""Measuring one pipeline plan: quality, fidelity to the reference, latency, peak memory.

Per plan: one warm-up generation under `autoq.device.PeakMemory` (peak memory = component
weight bytes + the activation peak of that generation), then one timed generation per
prompt with fixed seeds. Latency is the median of the timed generations; quality is the
CLIP score of those images with their prompts; fidelity is PSNR and SSIM against the
reference plan's images for the same prompts and seeds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autoq.profile import Metrics

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline
    from PIL.Image import Image

    from autoq.quality import ClipScorer

__all__ = ["TooSlowError", "fidelity", "generate", "measure_pipeline"]


class TooSlowError(Exception):
    """A plan's measured warm-up already rules it out; measuring on would waste time."""

    def __init__(self, seconds: float, limit: float) -> None:
        super().__init__(f"warm-up generation took {seconds:.2f}s, over {limit:.2f}s")
        self.seconds = seconds


def generate(
    pipe: DiffusionPipeline,
    prompt: str,
    seed: int,
    steps: int,
    guidance_scale: float,
    size: tuple[int, int] | None = None,
) -> Image:
    """One image, seeded on the CPU so every device draws the same noise."""
    import torch

    kwargs: dict[str, Any] = {}
    if size is not None:
        kwargs["height"], kwargs["width"] = size
    with torch.no_grad():  # not inference_mode: its tensors break later deepcopies of modules
        result = pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator("cpu").manual_seed(seed),
            **kwargs,
        )
    return result.images[0]


def _to_tensor(images: Sequence[Image]) -> torch.Tensor:
    import numpy as np
    import torch

    array = np.stack(
        [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images]
    )
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def fidelity(images: Sequence[Image], reference: Sequence[Image]) -> tuple[float, float]:
    """Mean PSNR (dB, capped at 100 for identical images) and SSIM against ``reference``."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    preds, target = _to_tensor(images), _to_tensor(reference)
    psnr = float(
        peak_signal_noise_ratio(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
        .clamp(max=100)
        .mean()
    )
    ssim_value: Any = structural_similarity_index_measure(preds, target, data_range=1.0)
    ssim = float(ssim_value)
    return psnr, ssim


def measure_pipeline(
    pipe: DiffusionPipeline,
    *,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    guidance_scale: float,
    scorer: ClipScorer,
    device: torch.device,
    reference: Sequence[Image] | None = None,
    size: tuple[int, int] | None = None,
    give_up_after_s: float | None = None,
) -> tuple[Metrics, list[Image], float]:
    """Generate ``prompts`` with ``seeds`` on ``pipe`` and measure the result.

    Returns:
        The metrics, the generated images (one per prompt) and the seconds spent in
        generations (warm-up included), to tell measurement from overhead.

    Raises:
        TooSlowError: The warm-up generation alone took longer than ``give_up_after_s``.
    """
    from autoq.backends import weight_bytes
    from autoq.device import PeakMemory
    from autoq.pipeline import module_components

    weights = sum(weight_bytes(m) for m in module_components(pipe).values())
    start = time.perf_counter()
    with PeakMemory(device) as peak:
        generate(pipe, prompts[0], seeds[0], steps, guidance_scale, size)
    warmup_s = time.perf_counter() - start
    if give_up_after_s is not None and warmup_s > give_up_after_s:
        raise TooSlowError(warmup_s, give_up_after_s)
    images, seconds = [], []
    for prompt, seed in zip(prompts, seeds, strict=True):
        start = time.perf_counter()
        images.append(generate(pipe, prompt, seed, steps, guidance_scale, size))
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    scores = scorer.score(images, list(prompts))
    psnr = ssim = None
    if reference is not None:
        psnr, ssim = fidelity(images, reference)
    ordered = sorted(seconds)
    metrics = Metrics(
        clip_score=float(scores.mean()),
        clip_score_std=float(scores.std()) if len(scores) > 1 else 0.0,
        psnr=psnr,
        ssim=ssim,
        latency_s=statistics.median(seconds),
        latency_p90_s=ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        peak_memory_bytes=weights + peak.peak_bytes,
        weight_bytes=weights,
        memory_method=peak.method,
    )
    return metrics, images, warmup_s + sum(seconds)
