"""Names of the zoo's models, where their folders are and how to load them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq.errors import ModelNotFoundError

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

    from autoq.quality import ClipScorer

__all__ = ["available", "load_pipeline", "model_path", "prompts", "scorer"]

_MODELS_DIR = Path(__file__).parent / "models"
_NAMES = ("shapes",)


def available() -> list[str]:
    """Names of the models the zoo ships."""
    return list(_NAMES)


def model_path(name: str) -> Path:
    """The folder that holds model ``name`` (``pipeline/`` and ``scorer/`` inside).

    Raises:
        ModelNotFoundError: ``name`` is not a zoo model, or its files are missing.
    """
    if name not in _NAMES:
        raise ModelNotFoundError(
            f"Unknown zoo model {name!r}; valid names are {', '.join(repr(n) for n in _NAMES)}."
        )
    folder = _MODELS_DIR / name
    if not (folder / "pipeline" / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"Zoo model {name!r} has no weights at {folder}; rebuild them with "
            f"`python -m autoq.zoo.train --out DIR` and copy DIR/pipeline and DIR/scorer there."
        )
    return folder


def load_pipeline(name: str, **from_pretrained_kwargs: Any) -> StableDiffusionPipeline:
    """Load zoo model ``name`` as a diffusers pipeline, offline.

    Args:
        name: Zoo model name, see `available`.
        **from_pretrained_kwargs: Passed to ``StableDiffusionPipeline.from_pretrained``.

    Returns:
        The pipeline, on CPU unless the keyword arguments say otherwise.
    """
    from diffusers import StableDiffusionPipeline

    folder = model_path(name) / "pipeline"
    return StableDiffusionPipeline.from_pretrained(folder, **from_pretrained_kwargs)


def scorer(name: str) -> ClipScorer:
    """The independent CLIP scorer trained alongside zoo model ``name``."""
    from autoq.quality import ClipScorer

    return ClipScorer.from_pretrained(model_path(name) / "scorer")


def prompts(name: str) -> list[str]:
    """Held-out evaluation prompts of zoo model ``name``: combinations never seen in training."""
    model_path(name)
    from autoq.zoo import _shapes

    return _shapes.evaluation_prompts()
