"""Loading a model and its CLIP scorer from the zoo, a folder or a hub id, and the
identity that keys studies, profiles and cached weights."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from autoq.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from autoq.quality import ClipScorer

__all__ = [
    "LoadedModel",
    "ModelIdentity",
    "folder_hash",
    "load_model",
    "load_pipeline",
    "pipeline_folder",
]

ZOO_PREFIX = "zoo:"


class ModelIdentity(BaseModel):
    """Which model a profile was tuned for."""

    model_config = ConfigDict(frozen=True)

    source: str
    """Hub id or local folder as given to ``from_pretrained`` (``zoo:shapes`` for the zoo)."""
    content_hash: str
    """sha256 over the model folder's files: a renamed copy is the same model."""
    pipeline_class: str


@dataclass
class LoadedModel:
    pipe: DiffusionPipeline
    scorer: ClipScorer
    identity: ModelIdentity
    slug: str
    default_prompts: list[str] | None
    default_guidance: float


def folder_hash(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (16 hex chars)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _local_folder(source: str) -> Path:
    """A folder for ``source``: itself if it is one, else its hub snapshot in the local cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.suffix or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ModelNotFoundError(
            f"Model {source!r} is neither a folder nor a hub id (owner/name); "
            "give a diffusers pipeline folder or a hub id."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception as exc:
        raise ModelNotFoundError(
            f"Model {source!r} is not a folder and not in the local hub cache ({exc}); "
            "download it first (`hf download ...`) or give its folder."
        ) from None


def _slug(source: str) -> str:
    name = source.removeprefix(ZOO_PREFIX).rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "model"


def pipeline_folder(source: str | None) -> Path:
    """The folder of a model given as ``zoo:NAME`` (or ``None`` for the zoo default), a
    folder, or a cached hub id."""
    from autoq import zoo

    if source is None or source.startswith(ZOO_PREFIX):
        name = "shapes" if source is None else source.removeprefix(ZOO_PREFIX)
        return zoo.model_path(name) / "pipeline"
    return _local_folder(source)


def load_pipeline(folder: Path) -> DiffusionPipeline:
    """``DiffusionPipeline.from_pretrained(folder)``, with load errors made clear.

    Raises:
        ModelNotFoundError: The folder holds no loadable pipeline.
    """
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.from_pretrained(folder)
    except Exception as exc:
        raise ModelNotFoundError(
            f"Cannot load a diffusers pipeline from {folder}: {type(exc).__name__}: {exc}"
        ) from None


def load_model(model: str | None, scorer: str | None) -> LoadedModel:
    """Load the pipeline to tune (offline) and the CLIP scorer that judges it.

    Raises:
        ModelNotFoundError: The model or scorer cannot be found or loaded.
        ConfigError: A model outside the zoo was given without ``scorer``.
    """
    from autoq import zoo
    from autoq.quality import ClipScorer

    folder = pipeline_folder(model)
    if model is None or model.startswith(ZOO_PREFIX):
        name = "shapes" if model is None else model.removeprefix(ZOO_PREFIX)
        source, prompts, guidance = f"{ZOO_PREFIX}{name}", zoo.prompts(name), 5.0
        default_scorer: ClipScorer | None = zoo.scorer(name)
    else:
        source, prompts, guidance, default_scorer = model, None, 7.5, None
    if scorer is not None:
        default_scorer = ClipScorer.from_pretrained(_local_folder(scorer))
    if default_scorer is None:
        raise ConfigError(
            f"Model {model!r} has no default CLIP scorer; pass --scorer with a CLIPModel "
            "folder or cached hub id (e.g. openai/clip-vit-large-patch14)."
        )
    pipe = load_pipeline(folder)
    identity = ModelIdentity(
        source=source, content_hash=folder_hash(folder), pipeline_class=type(pipe).__name__
    )
    return LoadedModel(pipe, default_scorer, identity, _slug(source), prompts, guidance)
