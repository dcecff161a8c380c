"""autoq: measured, device-aware quantization and step tuning for diffusers pipelines.

Importing autoq is cheap: it imports no quantization backend, touches no CUDA and probes
no hardware. Heavy names are resolved lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autoq._version import __version__
from autoq.errors import (
    AutoqError,
    BackendError,
    ConfigError,
    ModelNotFoundError,
    OutOfMemoryError,
    PrecisionUnavailableError,
    ProfileMismatchError,
    UnknownPrecisionError,
)

_LAZY = {
    "Fingerprint": "autoq.device",
    "fingerprint": "autoq.device",
    "apply_precision": "autoq.backends",
    "available_precisions": "autoq.backends",
    "weight_bytes": "autoq.backends",
    "load_profile": "autoq.profile",
    "AdaptivePipeline": "autoq.runtime",
}

if TYPE_CHECKING:
    from autoq.backends import apply_precision, available_precisions, weight_bytes
    from autoq.device import Fingerprint, fingerprint
    from autoq.profile import load_profile
    from autoq.runtime import AdaptivePipeline

__all__ = [
    "AdaptivePipeline",
    "AutoqError",
    "BackendError",
    "ConfigError",
    "Fingerprint",
    "ModelNotFoundError",
    "OutOfMemoryError",
    "PrecisionUnavailableError",
    "ProfileMismatchError",
    "UnknownPrecisionError",
    "__version__",
    "apply_precision",
    "available_precisions",
    "fingerprint",
    "load_profile",
    "weight_bytes",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autoq' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
