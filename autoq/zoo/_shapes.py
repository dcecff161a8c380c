"""Procedural "shapes" dataset: seeded 64x64 images of simple shapes with English captions.

Images are drawn on the fly with PIL (supersampled for smooth edges), so nothing is stored
and any index of any seed can be regenerated exactly. A fixed set of (shape, colour,
background) triples is held out of every training stream and used only for evaluation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "HELD_OUT",
    "IMAGE_SIZE",
    "POSITIONS",
    "SHAPES",
    "Scene",
    "Shape",
    "canonical_caption",
    "caption_vocabulary",
    "evaluation_prompts",
    "render",
    "sample",
    "sample_batch",
]

IMAGE_SIZE = 64
_SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 225, 30),
    "green": (30, 170, 50),
    "cyan": (0, 215, 225),
    "blue": (35, 65, 235),
    "purple": (135, 40, 195),
    "pink": (255, 125, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "brown": (110, 70, 35),
}
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
_SIZES = {"small": 8.0, "medium": 13.0, "large": 20.0}

# Every shape, colour and background occurs in the held-out set, and every held-out triple's
# parts occur in training in other combinations, so evaluation measures composition.
HELD_OUT: tuple[tuple[str, str, str], ...] = tuple(
    (SHAPES[i % 5], list(COLOURS)[i % 8], list(BACKGROUNDS)[i % 4]) for i in range(16)
)
_HELD_OUT_SET = frozenset(HELD_OUT)

_SINGLE_TEMPLATES = (
    "a {colour} {shape} on a {bg} background",
    "a {size} {colour} {shape} on a {bg} background",
    "a {colour} {shape} in the {pos} on a {bg} background",
    "a {size} {colour} {shape} in the {pos}",
    "a {bg} background with a {colour} {shape}",
    "a picture of a {colour} {shape} on {bg}",
    "a {colour} {shape}",
)
_PAIR_TEMPLATES = (
    "a {colour} {shape} and a {colour2} {shape2} on a {bg} background",
    "a {colour} {shape} and a {colour2} {shape2}",
)


@dataclass(frozen=True)
class Shape:
    """One drawn shape: what, which colour, how big and where."""

    shape: str
    colour: str
    size: str
    position: str
    cx: float
    cy: float
    radius: float


@dataclass(frozen=True)
class Scene:
    """A background with one or two shapes and the caption that describes it."""

    background: str
    shapes: tuple[Shape, ...]
    caption: str


def canonical_caption(shape: str, colour: str, background: str) -> str:
    """The plain caption used for evaluation prompts and zero-shot classification."""
    return _articles(f"a {colour} {shape} on a {background} background")


def _articles(text: str) -> str:
    """Plain English: "an" before a vowel ("an orange star")."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def evaluation_prompts() -> list[str]:
    """Held-out prompts: canonical captions of the triples that no training stream draws."""
    return [canonical_caption(s, c, b) for s, c, b in HELD_OUT]


def caption_vocabulary() -> list[str]:
    """Every word any caption can contain, sorted."""
    words: set[str] = set(SHAPES) | set(COLOURS) | set(BACKGROUNDS) | {"small", "big", "an"}
    for pos in POSITIONS:
        words.update(pos.split())
    for template in _SINGLE_TEMPLATES + _PAIR_TEMPLATES:
        words.update(w for w in template.split() if not w.startswith("{"))
    return sorted(words)


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        rr = r if k % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + rr * math.cos(angle), cy + rr * math.sin(angle)))
    return points


def _cross(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    w = r * 0.38
    return [
        (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
        (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
        (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w),
    ]  # fmt: skip


def _draw(draw: ImageDraw.ImageDraw, item: Shape, fill: tuple[int, int, int]) -> None:
    s = _SUPERSAMPLE
    cx, cy, r = item.cx * s, item.cy * s, item.radius * s
    if item.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif item.shape == "square":
        h = r * 0.85
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif item.shape == "triangle":
        draw.polygon(
            [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)],
            fill=fill,
        )
    elif item.shape == "star":
        draw.polygon(_star(cx, cy, r * 1.1), fill=fill)
    else:
        draw.polygon(_cross(cx, cy, r), fill=fill)


def render(scene: Scene, rng: np.random.Generator | None = None) -> Image.Image:
    """Draw a scene as a 64x64 RGB image; ``rng`` adds a small colour jitter when given."""
    s = IMAGE_SIZE * _SUPERSAMPLE

    def jitter(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
        if rng is None:
            return rgb
        shift = rng.integers(-12, 13, size=3)
        return tuple(int(v) for v in np.clip(np.asarray(rgb) + shift, 0, 255))  # type: ignore[return-value]

    image = Image.new("RGB", (s, s), jitter(BACKGROUNDS[scene.background]))
    draw = ImageDraw.Draw(image)
    for item in scene.shapes:
        _draw(draw, item, jitter(COLOURS[item.colour]))
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def _place(rng: np.random.Generator, size: str, position: str) -> tuple[float, float, float]:
    radius = _SIZES[size] * float(rng.uniform(0.9, 1.1))
    if position == "center":
        cx, cy = (32.0 + float(v) for v in rng.uniform(-3, 3, size=2))
        return cx, cy, radius
    margin = radius + 2.0
    cx = margin + float(rng.uniform(0, 4))
    cy = margin + float(rng.uniform(0, 4))
    if "right" in position:
        cx = IMAGE_SIZE - cx
    if "bottom" in position:
        cy = IMAGE_SIZE - cy
    return cx, cy, radius


def _pick_shape(rng: np.random.Generator, background: str) -> tuple[str, str]:
    """A (shape, colour) pair whose triple with ``background`` is not held out."""
    while True:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        if (shape, colour, background) not in _HELD_OUT_SET:
            return shape, colour


def sample(seed: int, index: int, *, pair_probability: float = 0.2) -> tuple[Image.Image, Scene]:
    """Deterministically draw the ``index``-th training example of stream ``seed``.

    Args:
        seed: Stream seed; the generator and the scorer train on different streams.
        index: Position in the stream.
        pair_probability: Chance that the image holds two shapes instead of one.

    Returns:
        The image and its scene (with caption). Held-out triples never occur.
    """
    rng = np.random.default_rng([seed, index])
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    if rng.random() < pair_probability:
        corners = rng.permutation(4)[:2] + 1
        items = []
        for corner in corners:
            shape, colour = _pick_shape(rng, background)
            size = "small" if rng.random() < 0.5 else "medium"
            position = POSITIONS[int(corner)]
            cx, cy, r = _place(rng, size, position)
            items.append(Shape(shape, colour, size, position, cx, cy, r))
        template = _PAIR_TEMPLATES[int(rng.integers(len(_PAIR_TEMPLATES)))]
        caption = template.format(
            colour=items[0].colour,
            shape=items[0].shape,
            colour2=items[1].colour,
            shape2=items[1].shape,
            bg=background,
        )
    else:
        shape, colour = _pick_shape(rng, background)
        size = list(_SIZES)[int(rng.integers(len(_SIZES)))]
        position = "center" if size == "large" else POSITIONS[int(rng.integers(len(POSITIONS)))]
        cx, cy, r = _place(rng, size, position)
        items = [Shape(shape, colour, size, position, cx, cy, r)]
        template = _SINGLE_TEMPLATES[int(rng.integers(len(_SINGLE_TEMPLATES)))]
        caption = template.format(
            colour=colour,
            shape=shape,
            bg=background,
            size="big" if size == "large" else size,
            pos=position,
        )
        if size == "medium":
            caption = caption.replace("a medium ", "a ")
    scene = Scene(background, tuple(items), _articles(caption))
    return render(scene, rng), scene


def sample_batch(
    seed: int, start: int, count: int, *, pair_probability: float = 0.2
) -> tuple[np.ndarray, list[str]]:
    """Images ``start .. start+count`` of stream ``seed`` as uint8 NHWC plus their captions."""
    images, captions = [], []
    for index in range(start, start + count):
        image, scene = sample(seed, index, pair_probability=pair_probability)
        images.append(np.asarray(image))
        captions.append(scene.caption)
    return np.stack(images), captions
