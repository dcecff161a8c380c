"""Measuring pipeline plans: images, per-image CLIP and fidelity, latency, peak memory.

A plan is generated on an `EvalSet`: prompts crossed with rounds, enumerated round-major
(image ``i`` is ``prompts[i % P]`` in round ``i // P``), so the screening set (the first
``screen`` images) is a prefix of the full set and a plan is extended by generating the
next images. Every image draws its own noise (seed ``seeds[i // P] * P + i % P``): with
one seed shared by all prompts, every image of a set started from the same latent, so a
lucky or unlucky draw moved every score together and no interval could see it (the
previous protocol's tiers scored 1.4-7.2 points lower on other seeds). The prompt is the
cluster for confidence intervals.

Per run: the first image is generated untimed as the warm-up (under `PeakMemory` when
memory is wanted: peak = component weight bytes + that generation's activation peak), and
the remaining ones are timed (latency = median). A run of one image times it once more.

`summarize` turns the evidence into `Metrics`: the CLIP estimate is fp32's mean at the
plan's steps and scheduler (on every image fp32 has there) plus the plan's paired
difference to those fp32 images, with a prompt-clustered bootstrap interval.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autoq.profile import Metrics
from autoq.quality import Part, clustered_mean, clustered_sum

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline
    from PIL.Image import Image

    from autoq.quality import ClipScorer

__all__ = [
    "DEEP_FACTOR",
    "EVAL_PROTOCOL",
    "FULL_IMAGES",
    "EvalSet",
    "Run",
    "TooSlowError",
    "fidelity",
    "generate",
    "generate_batch",
    "p90",
    "run_images",
    "summarize",
    "synchronize",
    "time_batch",
    "time_side_by_side",
]

FULL_IMAGES = 32
"""Images of the full evaluation set (at least): what racing extends front plans to."""

DEEP_FACTOR = 2
"""The deep set is this many times the full set: where plans near a corner whose verdict
on the quality floor the full set leaves open are measured on."""

EVAL_PROTOCOL = 2
"""Version of how evaluation images are drawn; a study measured under another version
cannot be resumed (its stored fp32 scores are of other images)."""


class TooSlowError(Exception):
    """A plan's first timed generation already rules it out; measuring on would waste time."""

    def __init__(self, seconds: float, limit: float) -> None:
        super().__init__(
            f"after the untimed warm-up, a generation took {seconds:.2f}s, over {limit:.2f}s"
        )
        self.seconds = seconds


@dataclass(frozen=True)
class EvalSet:
    """Prompts x rounds, round-major; the first ``screen`` images are the screening set,
    the first ``full`` the full set that plans near the front are raced to, and all
    ``size`` of them the deep set for plans whose verdict the full set leaves open.

    ``seeds`` holds one seed per round; every image gets a noise seed of its own from it.
    """

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    screen: int
    full: int = 0
    """Images of the full set (``0``: all of them)."""

    def __post_init__(self) -> None:
        if not self.prompts or not self.seeds:
            raise ValueError("An evaluation set needs at least one prompt and one seed.")
        if not self.full:
            object.__setattr__(self, "full", self.size)
        if not 1 <= self.screen <= self.full <= self.size:
            raise ValueError(
                f"Expected 1 <= screen <= full <= {self.size}, but got screen {self.screen} "
                f"and full {self.full}."
            )

    @classmethod
    def build(
        cls, prompts: Sequence[str], screen: int, seed: int, full_images: int | None = None
    ) -> EvalSet:
        """Screen on the first ``screen`` prompts; the full set uses up to
        ``max(screen, full_images)`` prompts and enough rounds for ``full_images`` images
        (default `FULL_IMAGES`); the deep set has `DEEP_FACTOR` times its rounds."""
        full_images = full_images or FULL_IMAGES
        used = tuple(prompts[: max(screen, full_images)])
        rounds = max(1, math.ceil(full_images / len(used)))
        seeds = tuple(seed + i for i in range(rounds * DEEP_FACTOR))
        return cls(used, seeds, min(screen, len(used)), full=len(used) * rounds)

    @property
    def size(self) -> int:
        return len(self.prompts) * len(self.seeds)

    def image(self, index: int) -> tuple[str, int]:
        """``(prompt, noise seed)`` of image ``index``: no two images share a seed."""
        count = len(self.prompts)
        return self.prompts[index % count], self.seeds[index // count] * count + index % count

    def clusters(self, count: int, start: int = 0) -> list[int]:
        """The prompt index of images ``start`` .. ``start + count - 1``."""
        return [i % len(self.prompts) for i in range(start, start + count)]


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


def generate_batch(
    pipe: DiffusionPipeline,
    images: Sequence[tuple[str, int]],
    steps: int,
    guidance_scale: float,
    size: tuple[int, int] | None = None,
) -> list[Image]:
    """``(prompt, seed)`` images as one pipeline call, each with its own CPU generator
    (the images `generate` gives them one at a time, up to float rounding)."""
    import torch

    kwargs: dict[str, Any] = {}
    if size is not None:
        kwargs["height"], kwargs["width"] = size
    with torch.no_grad():
        result = pipe(
            [prompt for prompt, _ in images],
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=[torch.Generator("cpu").manual_seed(seed) for _, seed in images],
            **kwargs,
        )
    return list(result.images)


def time_batch(
    pipe: DiffusionPipeline,
    images: Sequence[tuple[str, int]],
    steps: int,
    guidance_scale: float,
    size: tuple[int, int] | None,
    device: torch.device,
) -> tuple[float, int]:
    """Seconds of one call of ``images`` at ``steps``, and its peak bytes (weights plus
    activations), from a one-step call of the same batch first: it has the same activation
    peak. A pipeline that builds per input shape (compiled kernels, OpenVINO models) gets
    one more one-step call before that, untracked, to build the new shape."""
    from autoq.backends import weight_bytes
    from autoq.device import PeakMemory
    from autoq.pipeline import module_components

    if builds_on_first_call(pipe):
        # Converting or compiling for the new shape happens outside the memory tracker:
        # OpenVINO's converter cannot trace under its dispatch mode, and the build's own
        # memory is not the generation's (as in `run_images`).
        generate_batch(pipe, images, 1, guidance_scale, size)
    with PeakMemory(device) as peak:
        generate_batch(pipe, images, 1, guidance_scale, size)
    weights = sum(weight_bytes(m) for m in module_components(pipe).values())
    began = time.perf_counter()
    generate_batch(pipe, images, steps, guidance_scale, size)
    synchronize(device)
    return time.perf_counter() - began, weights + peak.peak_bytes


def _to_tensor(images: Sequence[Image]) -> torch.Tensor:
    import numpy as np
    import torch

    array = np.stack(
        [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images]
    )
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def fidelity(
    images: Sequence[Image], reference: Sequence[Image]
) -> tuple[list[float], list[float]]:
    """Per-image PSNR (dB, capped at 100 for identical images) and SSIM against
    ``reference``."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    preds, target = _to_tensor(images), _to_tensor(reference)
    psnr = peak_signal_noise_ratio(
        preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3)
    ).clamp(max=100)
    ssim: Any = structural_similarity_index_measure(preds, target, data_range=1.0, reduction="none")
    return [float(v) for v in psnr], [float(v) for v in ssim.reshape(-1)]


@dataclass
class Run:
    """What one run of a plan over a range of evaluation images produced."""

    images: list[Image]
    scores: list[float]
    seconds: list[float]
    """Timed generations (the warm-up excluded)."""
    peak_bytes: int | None = None
    """Weights + activation peak of the warm-up, when memory was tracked."""
    weight_bytes: int = 0
    memory_method: str = ""
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    build_s: float | None = None
    """Seconds of the first call of a component built on it (compiled kernels, an
    OpenVINO conversion), paid once per process; ``None``: nothing was built."""

    @property
    def generation_s(self) -> float:
        return sum(self.seconds)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


SIDE_BY_SIDE_REPEATS = 3
"""Timed generations per pipeline and step count in each pass of `time_side_by_side`."""


def time_side_by_side(
    jobs: Sequence[tuple[Callable[[], Callable[[int], object]], Sequence[int]]],
    *,
    repeats: int = SIDE_BY_SIDE_REPEATS,
    clock: Callable[[], float] = time.perf_counter,
    on_turn: Callable[[int, int], None] | None = None,
) -> list[dict[int, list[float]]]:
    """Seconds per generation of several pipelines, timed together so that they compare.

    Each job is ``(start, steps)``: ``start()`` readies its pipeline and returns a function
    that generates one image at a given step count. The jobs take turns in a forward pass
    and then a backward one; in its turn a job generates once untimed (a warm-up), then
    ``repeats`` times at each of its step counts. A machine whose speed drifts during the
    tune (a shared VM: measured 30% within a 10-minute tune) would order plans timed minutes
    apart by when they ran; in the two mirrored passes a drift linear in time weighs on
    every job alike.

    ``on_turn(done, total)`` is told the turns done, before each and after the last.

    Returns:
        Per job, its step counts' timings (``2 * repeats`` each).
    """
    timings: list[dict[int, list[float]]] = [{s: [] for s in steps} for _, steps in jobs]
    order = list(range(len(jobs)))
    turns = [*order, *order[::-1]]
    for done, i in enumerate(turns):
        if on_turn is not None:
            on_turn(done, len(turns))
        start, steps = jobs[i]
        run = start()
        run(steps[0])  # warm-up: caches, allocator, lazy kernels
        for count in steps:
            for _ in range(repeats):
                began = clock()
                run(count)
                timings[i][count].append(clock() - began)
    if on_turn is not None:
        on_turn(len(turns), len(turns))
    return timings


def builds_on_first_call(pipe: DiffusionPipeline) -> bool:
    """Whether a component of ``pipe`` builds itself on its first call: compiled
    (``torch.compile``) or converted (OpenVINO) lazily."""
    from autoq.pipeline import module_components

    return any(
        hasattr(module, "autoq_openvino")
        or any(getattr(m, "_compiled_call_impl", None) is not None for m in module.modules())
        for module in module_components(pipe).values()
    )


def run_images(
    pipe: DiffusionPipeline,
    evalset: EvalSet,
    start: int,
    stop: int,
    *,
    steps: int,
    guidance_scale: float,
    scorer: ClipScorer,
    device: torch.device,
    size: tuple[int, int] | None = None,
    track_memory: bool = False,
    give_up_after_s: float | None = None,
    on_image: Callable[[int], None] | None = None,
) -> Run:
    """Generate and score evaluation images ``start`` .. ``stop - 1`` with ``pipe``.

    The first is the untimed warm-up (memory tracked on it when asked); the others are
    timed. ``on_image(done)`` is told after each image.

    Raises:
        TooSlowError: The first timed generation took longer than ``give_up_after_s``.
    """
    from autoq.backends import weight_bytes
    from autoq.device import PeakMemory
    from autoq.pipeline import module_components

    if not 0 <= start < stop <= evalset.size:
        raise ValueError(f"Expected 0 <= start < stop <= {evalset.size}, got {start}, {stop}.")
    run = Run(images=[], scores=[], seconds=[])
    if builds_on_first_call(pipe):
        # Compiling or converting is a cost of its own, paid once: kept out of the
        # memory-tracked warm-up and of the timings, and recorded apart.
        began = time.perf_counter()
        generate(pipe, *evalset.image(start), 1, guidance_scale, size)
        synchronize(device)
        run.build_s = time.perf_counter() - began
    if track_memory:
        with PeakMemory(device) as peak:
            run.images.append(generate(pipe, *evalset.image(start), steps, guidance_scale, size))
        # After the warm-up: a component converted on its first call (OpenVINO) counts
        # the weights it runs on, not the torch weights it was converted from.
        run.weight_bytes = sum(weight_bytes(m) for m in module_components(pipe).values())
        run.peak_bytes = run.weight_bytes + peak.peak_bytes
        run.memory_method = peak.method
    else:
        run.images.append(generate(pipe, *evalset.image(start), steps, guidance_scale, size))
    if on_image is not None:
        on_image(1)
    timed = list(range(start + 1, stop)) or [start]
    for index in timed:
        began = time.perf_counter()
        image = generate(pipe, *evalset.image(index), steps, guidance_scale, size)
        synchronize(device)
        run.seconds.append(time.perf_counter() - began)
        if index != start:
            run.images.append(image)
            if on_image is not None:
                on_image(len(run.images))
        if give_up_after_s is not None and run.seconds[0] > give_up_after_s:
            raise TooSlowError(run.seconds[0], give_up_after_s)
    prompts = [evalset.image(i)[0] for i in range(start, stop)]
    run.scores = [float(s) for s in scorer.score(run.images, prompts)]
    return run


def p90(seconds: Sequence[float]) -> float:
    """The 90th percentile of ``seconds`` (nearest rank)."""
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def _ci(interval: Any) -> tuple[float, float]:
    return (interval.low, interval.high)


def summarize(
    evalset: EvalSet,
    *,
    scores: Sequence[float],
    fp32: Sequence[float] | None,
    reference: Sequence[float] | None,
    seconds: Sequence[float],
    peak_bytes: int,
    weight_bytes: int,
    memory_method: str,
    psnr: Sequence[float] | None = None,
    ssim: Sequence[float] | None = None,
    build_s: float | None = None,
    predicted_latency_s: float | None = None,
) -> Metrics:
    """A plan's `Metrics` from its evidence.

    Args:
        evalset: The images the scores refer to (the first ``len(scores)`` of it).
        scores: The plan's per-image CLIP scores.
        fp32: fp32's per-image scores at the plan's steps and scheduler (at least as many
            as ``scores``); ``None`` when the plan is that fp32 plan.
        reference: The reference plan's per-image scores; ``None`` for the reference.
        seconds: Timed generations.
        peak_bytes, weight_bytes, memory_method: From the memory-tracked warm-up.
        psnr, ssim: Per-image fidelity to the fp32 images (``None`` for the reference).
        build_s: Seconds the first call spent compiling or converting (`Run.build_s`).
        predicted_latency_s: The latency predicted before the plan was built.

    Raises:
        ValueError: Fewer fp32 scores than plan scores, or no score.
    """
    n = len(scores)
    if n == 0:
        raise ValueError("Expected at least one score, but got none.")
    base = list(fp32) if fp32 is not None else list(scores)
    if len(base) < n:
        raise ValueError(f"Expected at least {n} fp32 scores, but got {len(base)}.")
    diff = [s - b for s, b in zip(scores, base[:n], strict=True)]
    parts = [Part(base, evalset.clusters(len(base))), Part(diff, evalset.clusters(n))]
    estimate = clustered_sum(parts, n=n)
    damage = clustered_mean(diff, evalset.clusters(n))
    if reference is None:
        vs_reference, vs_reference_ci = 0.0, (0.0, 0.0)
    else:
        negated = [-r for r in reference]
        change = clustered_sum([*parts, Part(negated, evalset.clusters(len(negated)))], n=n)
        vs_reference, vs_reference_ci = change.estimate, _ci(change)
    return Metrics(
        clip_score=estimate.estimate,
        clip_score_std=statistics.pstdev(scores) if n > 1 else 0.0,
        clip_ci=_ci(estimate),
        n_images=n,
        clip_vs_fp32=damage.estimate,
        clip_vs_fp32_ci=_ci(damage),
        clip_vs_reference=vs_reference,
        clip_vs_reference_ci=vs_reference_ci,
        psnr=statistics.fmean(psnr) if psnr else None,
        ssim=statistics.fmean(ssim) if ssim else None,
        latency_s=statistics.median(seconds),
        latency_p90_s=p90(seconds),
        peak_memory_bytes=peak_bytes,
        weight_bytes=weight_bytes,
        memory_method=memory_method,
        build_s=build_s,
        predicted_latency_s=predicted_latency_s,
    )
