"""Quantized weights on disk: built once, reloaded by later tunes and by the runtime.

A folder per (model content, component, precision, skip patterns, library versions) holds
the backend's own safetensors or GGUF files and a manifest. Nothing is pickled.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from autoq._version import __version__
from autoq.backends._apply import apply_precision
from autoq.backends._base import BACKENDS, get_precision, library_version
from autoq.backends._quiet import quiet
from autoq.backends._select import SkipPattern
from autoq.backends._targets import targets_for

if TYPE_CHECKING:
    from torch import nn

__all__ = ["load_or_quantize", "weights_key"]

_FORMAT = 2  # 2: modules a model keeps in fp32 (T5 `wo`) are no longer quantized


def weights_key(
    model_hash: str,
    component: str,
    precision: str,
    skip: Iterable[str] = (),
) -> str:
    """Cache key: the model's content, the component, the precision, what was kept at full
    precision, and the versions of every library that shapes the stored format."""
    spec = get_precision(precision)
    parts = {
        "format": _FORMAT,
        "autoq": __version__,
        "model": model_hash,
        "component": component,
        "precision": precision,
        "skip": sorted(skip),
        "torch": library_version("torch"),
        "library": library_version(BACKENDS[spec.backend].distribution),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _manifest(folder: Path) -> dict[str, object] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("format") == _FORMAT else None


def load_or_quantize(
    base: nn.Module,
    precision: str,
    folder: Path,
    *,
    skip: Iterable[SkipPattern] = (),
) -> tuple[nn.Module, bool]:
    """A quantized copy of ``base``: loaded from ``folder`` if a previous run stored it
    there, else quantized now and stored for next time.

    Returns:
        The module and whether it came from disk.
    """
    spec = get_precision(precision)
    backend = BACKENDS[spec.backend]
    names = [name for name, _ in targets_for(base, spec, skip)]
    manifest = _manifest(folder)
    if manifest is not None and manifest.get("targets") == names:
        module = copy.deepcopy(base)
        with quiet():
            backend.load_state(module, spec, names, folder)
        return module, True
    module = apply_precision(copy.deepcopy(base), spec, skip=skip)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        with quiet():
            backend.save_state(module, spec, names, staging)
        body = {"format": _FORMAT, "precision": precision, "targets": names}
        (staging / "manifest.json").write_text(json.dumps(body))
        if folder.exists():  # a damaged or stale entry
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # a full disk costs a re-quantize, no more
    return module, False
