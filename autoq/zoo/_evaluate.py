"""Measure a shapes pipeline on its held-out prompts with the independent scorer.

Colour and shape accuracy are zero-shot classifications by the scorer: for an image generated
from "a red circle on a blue background", the candidates for colour are the same caption with
each of the 8 colours, and for shape the same caption with each of the 5 shapes. The CLIP
score gap compares each image's score with its own prompt against the other held-out prompts.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.zoo import _shapes

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from autoq.quality import ClipScorer

__all__ = ["Report", "evaluate", "generate", "save_grid"]

log = get_logger(__name__)


@dataclass(frozen=True)
class Report:
    """Quality and speed of a pipeline on the held-out prompts."""

    version: int
    images: int
    steps: int
    guidance_scale: float
    colour_accuracy: float
    shape_accuracy: float
    background_accuracy: float
    clip_matched: float
    clip_mismatched: float
    clip_gap: float
    seconds_per_image_20_steps: float
    threads: int
    reference_colour_accuracy: float
    reference_shape_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return asdict(self)


def _parse(prompt: str) -> tuple[str, str, str]:
    """(shape, colour, background) of a canonical held-out prompt."""
    words = prompt.split()
    return words[2], words[1], words[-2]


def generate(
    pipeline: StableDiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    *,
    steps: int = 25,
    guidance_scale: float = 5.0,
) -> list[list[Image.Image]]:
    """One image per (prompt, seed): ``result[p][s]``, batched over seeds for speed."""
    import torch

    results = []
    for prompt in prompts:
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        output = pipeline(
            [prompt] * len(seeds),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
        )
        results.append(list(output.images))
    return results


def _accuracies(
    scorer: ClipScorer, images: list[Image.Image], triples: list[tuple[str, str, str]]
) -> tuple[float, float, float]:
    """Zero-shot colour, shape and background accuracy (each varied with the others fixed)."""
    axes = (list(_shapes.SHAPES), list(_shapes.COLOURS), list(_shapes.BACKGROUNDS))
    every = [(s, c, b) for s in axes[0] for c in axes[1] for b in axes[2]]
    text = scorer.text_features([_shapes.canonical_caption(*t) for t in every])
    row: dict[tuple[str, ...], int] = {t: i for i, t in enumerate(every)}
    similarity = scorer.image_features(images) @ text.T
    hits = [0, 0, 0]  # shape, colour, background
    for i, triple in enumerate(triples):
        for axis, names in enumerate(axes):
            candidates = [(*triple[:axis], name, *triple[axis + 1 :]) for name in names]
            scores = similarity[i, [row[c] for c in candidates]]
            hits[axis] += int(names[int(scores.argmax())] == triple[axis])
    n = len(images)
    return hits[1] / n, hits[0] / n, hits[2] / n


def _reference_images(triples: list[tuple[str, str, str]]) -> list[Image.Image]:
    """Real dataset renderings of the held-out triples (medium size, centred)."""
    scenes = []
    for shape, colour, background in triples:
        item = _shapes.Shape(shape, colour, "medium", "center", 32.0, 32.0, 13.0)
        caption = _shapes.canonical_caption(shape, colour, background)
        scenes.append(_shapes.render(_shapes.Scene(background, (item,), caption)))
    return scenes


def _seconds_per_image(pipeline: StableDiffusionPipeline, prompt: str) -> float:
    import torch

    timings = []
    for attempt in range(4):
        started = time.perf_counter()
        pipeline(
            prompt,
            num_inference_steps=20,
            guidance_scale=5.0,
            generator=torch.Generator().manual_seed(attempt),
        )
        timings.append(time.perf_counter() - started)
    return statistics.median(timings[1:])  # the first call warms caches


def evaluate(
    pipeline: StableDiffusionPipeline,
    scorer: ClipScorer,
    *,
    seeds: int = 4,
    steps: int = 25,
    guidance_scale: float = 5.0,
) -> tuple[Report, list[list[Image.Image]]]:
    """Generate every held-out prompt with ``seeds`` seeds and score the images.

    Args:
        pipeline: A shapes pipeline (fp32 for the reference numbers).
        scorer: The independent scorer.
        seeds: Images per prompt.
        steps: Denoising steps.
        guidance_scale: Classifier-free guidance scale.

    Returns:
        The report and the images, ``images[prompt][seed]``.
    """
    import torch

    pipeline.set_progress_bar_config(disable=True)
    prompts = _shapes.evaluation_prompts()
    triples = [_parse(p) for p in prompts]
    grid = generate(pipeline, prompts, list(range(seeds)), steps=steps,
                    guidance_scale=guidance_scale)  # fmt: skip
    images = [image for row in grid for image in row]
    image_triples = [t for t in triples for _ in range(seeds)]
    colour, shape, background = _accuracies(scorer, images, image_triples)
    similarity = scorer.similarity(images, prompts).clamp(min=0.0)
    owner = torch.arange(len(prompts)).repeat_interleave(seeds)
    matched_mask = torch.zeros_like(similarity, dtype=torch.bool)
    matched_mask[torch.arange(len(images)), owner] = True
    matched = similarity[matched_mask].mean().item()
    mismatched = similarity[~matched_mask].mean().item()
    ref_colour, ref_shape, _ = _accuracies(scorer, _reference_images(triples), triples)
    report = Report(
        version=1,
        images=len(images),
        steps=steps,
        guidance_scale=guidance_scale,
        colour_accuracy=round(colour, 4),
        shape_accuracy=round(shape, 4),
        background_accuracy=round(background, 4),
        clip_matched=round(matched, 2),
        clip_mismatched=round(mismatched, 2),
        clip_gap=round(matched - mismatched, 2),
        seconds_per_image_20_steps=round(_seconds_per_image(pipeline, prompts[0]), 3),
        threads=torch.get_num_threads(),
        reference_colour_accuracy=round(ref_colour, 4),
        reference_shape_accuracy=round(ref_shape, 4),
    )
    log.info("zoo_evaluated", **report.as_dict())
    return report, grid


def save_grid(grid: list[list[Image.Image]], prompts: list[str], path: str | Path) -> Path:
    """Save ``grid[prompt][seed]`` as one PNG: a row per prompt, upscaled 2x, prompt at left."""
    from PIL import Image, ImageDraw

    tile = 2 * _shapes.IMAGE_SIZE
    label_width = 300
    columns = max(len(row) for row in grid)
    canvas = Image.new("RGB", (label_width + columns * tile, len(grid) * tile), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, prompt) in enumerate(zip(grid, prompts, strict=True)):
        draw.text((6, r * tile + tile // 2 - 6), prompt, fill="black")
        for c, image in enumerate(row):
            upscaled = image.resize((tile, tile), Image.Resampling.NEAREST)
            canvas.paste(upscaled, (label_width + c * tile, r * tile))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
