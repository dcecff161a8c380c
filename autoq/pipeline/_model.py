"""Loading a model and its CLIP scorer from the zoo, a folder or a hub id, and the
identity that keys studies, profiles and cached weights."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from autoq.errors import ConfigError, ModelMismatchError, ModelNotFoundError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from autoq.quality import ClipScorer

__all__ = [
    "LoadedModel",
    "ModelIdentity",
    "check_identity",
    "folder_hash",
    "identity_of",
    "load_model",
    "load_pipeline",
    "pipeline_folder",
]

ZOO_PREFIX = "zoo:"


class ModelIdentity(BaseModel):
    """Which model a profile was tuned for."""

    model_config = ConfigDict(frozen=True)

    source: str
    """Where the weights are, resolved: an absolute folder, a hub id (see ``revision``) or
    ``zoo:NAME``."""
    content_hash: str
    """sha256 over the model folder's files: a renamed copy is the same model."""
    pipeline_class: str
    revision: str | None = None
    """The hub snapshot (commit hash) a hub id resolved to; ``None`` for folders and the zoo."""

    def describe(self) -> str:
        """One line for messages: ``StableDiffusionPipeline /abs/folder (hash 0123abcd...)``."""
        at = f"@{self.revision[:12]}" if self.revision else ""
        return f"{self.pipeline_class} {self.source}{at} (content hash {self.content_hash})"


@dataclass
class LoadedModel:
    pipe: DiffusionPipeline
    scorer: ClipScorer
    identity: ModelIdentity
    slug: str
    default_prompts: list[str] | None
    default_guidance: float


def folder_hash(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (16 hex chars).

    Remembered under `autoq.backends.cache_dir` by the files' paths, sizes, inodes and
    change times (``st_ctime_ns``, which every write updates and ``utime`` cannot set back),
    so a multi-GB model is read once, not at every start.
    """
    from autoq._files import atomic_write_text
    from autoq.backends import cache_dir

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stats = []
    for path in files:
        st = path.stat()
        stats.append([str(path.relative_to(folder)), st.st_size, st.st_ino, st.st_ctime_ns])
    key = hashlib.sha256(json.dumps([str(folder.resolve()), stats]).encode()).hexdigest()[:32]
    memo = cache_dir() / "hashes" / f"{key}.txt"
    try:
        remembered = memo.read_text(encoding="utf-8").strip()
    except OSError:
        remembered = ""
    if re.fullmatch(r"[0-9a-f]{16}", remembered):
        return remembered
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    result = digest.hexdigest()[:16]
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-read next time
        atomic_write_text(memo, result)
    return result


def _local_folder(source: str, revision: str | None = None) -> Path:
    """A folder for ``source``: itself if it is one, else its hub snapshot in the local cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.suffix or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ModelNotFoundError(
            f"Model {source!r} is neither a folder nor a hub id (owner/name); "
            "give a diffusers pipeline folder or a hub id."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, revision=revision, local_files_only=True))
    except Exception as exc:
        at = f" at revision {revision}" if revision else ""
        raise ModelNotFoundError(
            f"Model {source!r}{at} is not a folder (from {Path.cwd()}) and not in the local hub "
            f"cache ({type(exc).__name__}); download it first (`hf download {source}`) or give "
            "its folder."
        ) from None


def _is_hub_id(source: str) -> bool:
    return not source.startswith(ZOO_PREFIX) and not Path(source).expanduser().is_dir()


def _pipeline_class(folder: Path) -> str:
    """The pipeline class a folder's ``model_index.json`` names (no weights loaded)."""
    index = folder / "model_index.json"
    try:
        name = json.loads(index.read_text(encoding="utf-8"))["_class_name"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelNotFoundError(
            f"{folder} is not a diffusers pipeline folder: {index.name} is missing or has no "
            "_class_name; give the folder `save_pretrained` wrote (or a hub id)."
        ) from None
    return str(name)


def identity_of(source: str | None) -> ModelIdentity:
    """The identity of the weights ``source`` names, resolved, without loading them.

    Args:
        source: ``zoo:NAME`` (``None``: the zoo default), a pipeline folder (relative paths
            are made absolute) or a cached hub id.

    Raises:
        ModelNotFoundError: ``source`` is no pipeline folder and no cached hub id.
    """
    folder = pipeline_folder(source)
    if source is None or source.startswith(ZOO_PREFIX):
        resolved = f"{ZOO_PREFIX}{'shapes' if source is None else source.removeprefix(ZOO_PREFIX)}"
        revision = None
    elif _is_hub_id(source):
        resolved, revision = source, folder.name  # the snapshot folder is named by its commit
    else:
        resolved, revision = str(folder), None
    return ModelIdentity(
        source=resolved,
        content_hash=folder_hash(folder),
        pipeline_class=_pipeline_class(folder),
        revision=revision,
    )


def check_identity(expected: ModelIdentity, source: str | None = None) -> Path:
    """The folder to load for a profile tuned on ``expected``, once its weights are proven
    to be the same model (content hash and pipeline class).

    Args:
        expected: The profile's ``model``.
        source: Load these weights instead of ``expected.source`` (a moved or renamed copy,
            or a folder given relative to the current directory).

    Returns:
        The pipeline folder whose weights match.

    Raises:
        ModelNotFoundError: The weights cannot be found here.
        ModelMismatchError: They are another model, or changed since the tune.
    """
    where = source if source is not None else expected.source
    revision = expected.revision if source is None else None
    folder = _local_folder(where, revision) if revision is not None else pipeline_folder(where)
    actual = ModelIdentity(
        source=where, content_hash=folder_hash(folder), pipeline_class=_pipeline_class(folder)
    )
    if (actual.content_hash, actual.pipeline_class) != (
        expected.content_hash,
        expected.pipeline_class,
    ):
        raise ModelMismatchError(
            f"The profile was tuned for {expected.describe()}, but {folder} holds "
            f"{actual.pipeline_class} with content hash {actual.content_hash}: its weights "
            "changed or it is another model. Re-run `autoq tune` on these weights, or load "
            "the weights the profile was tuned on."
        )
    return folder


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


def find_sources(model: str | None, scorer: str | None) -> tuple[Path, Path | None]:
    """The folders of ``model`` and ``scorer``, found without importing diffusers.

    Raises:
        ModelNotFoundError: Either is neither a folder nor a cached hub id.
    """
    return pipeline_folder(model), None if scorer is None else _local_folder(scorer)


def load_model(model: str | None, scorer: str | None) -> LoadedModel:
    """Load the pipeline to tune (offline) and the CLIP scorer that judges it.

    Raises:
        ModelNotFoundError: The model or scorer cannot be found or loaded.
        ConfigError: A model outside the zoo was given without ``scorer``.
    """
    from autoq import zoo
    from autoq.quality import ClipScorer

    identity = identity_of(model)
    folder, scorer_folder = find_sources(model, scorer)
    if model is None or model.startswith(ZOO_PREFIX):
        name = "shapes" if model is None else model.removeprefix(ZOO_PREFIX)
        prompts, guidance = zoo.prompts(name), 5.0
        default_scorer: ClipScorer | None = zoo.scorer(name)
    else:
        prompts, guidance, default_scorer = None, 7.5, None
    if scorer_folder is not None:
        default_scorer = ClipScorer.from_pretrained(scorer_folder)
    if default_scorer is None:
        raise ConfigError(
            f"Model {model!r} has no default CLIP scorer; pass --scorer with a CLIPModel "
            "folder or cached hub id (e.g. openai/clip-vit-large-patch14)."
        )
    pipe = load_pipeline(folder)
    return LoadedModel(pipe, default_scorer, identity, _slug(model or "shapes"), prompts, guidance)
