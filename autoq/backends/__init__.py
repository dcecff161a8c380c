"""Precision backends: one registry of every way autoq can store a component's weights.

Each backend module wraps one library (torch casts, torchao, bitsandbytes, optimum-quanto,
GGUF) and registers its precisions; nothing here imports those libraries until a
precision is probed or applied.
"""

from autoq.backends._apply import apply_precision
from autoq.backends._base import (
    BACKENDS,
    Backend,
    Precision,
    get_precision,
    library_version,
    list_precisions,
    register_backend,
)
from autoq.backends._bitsandbytes import BitsandbytesBackend
from autoq.backends._bytes import tensor_bytes, weight_bytes
from autoq.backends._gguf import GGUFBackend
from autoq.backends._loader import Expr, Loader
from autoq.backends._native import NativeBackend
from autoq.backends._persist import load_or_quantize, weights_key
from autoq.backends._probe import (
    ProbeResult,
    available_precisions,
    cache_dir,
    probe_all,
    probe_precision,
)
from autoq.backends._quanto import QuantoBackend
from autoq.backends._select import PROTECT_PRESETS, SkipPattern
from autoq.backends._targets import keep_in_fp32, module_device, targets_for
from autoq.backends._torchao import TorchaoBackend
from autoq.device import resolve_device

# Registry order is display order: the reference first, then by library.
_backend: Backend
for _backend in (
    NativeBackend(),
    TorchaoBackend(),
    BitsandbytesBackend(),
    QuantoBackend(),
    GGUFBackend(),
):
    register_backend(_backend)

__all__ = [
    "BACKENDS",
    "PROTECT_PRESETS",
    "Backend",
    "Expr",
    "Loader",
    "Precision",
    "ProbeResult",
    "SkipPattern",
    "apply_precision",
    "available_precisions",
    "cache_dir",
    "get_precision",
    "keep_in_fp32",
    "library_version",
    "list_precisions",
    "load_or_quantize",
    "module_device",
    "probe_all",
    "probe_precision",
    "register_backend",
    "resolve_device",
    "targets_for",
    "tensor_bytes",
    "weight_bytes",
    "weights_key",
]
