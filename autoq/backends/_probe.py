"""Whether a precision really works here: quantize a small network, run it, compare with
fp32. Results are cached per device fingerprint, so each machine probes once."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict

from autoq._files import atomic_write_text
from autoq.backends._base import BACKENDS, get_precision, list_precisions
from autoq.backends._bytes import weight_bytes
from autoq.backends._quiet import quiet
from autoq.backends._targets import targets_for
from autoq.device import resolve_device

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ProbeResult",
    "available_precisions",
    "cache_dir",
    "probe_all",
    "probe_precision",
]

_CACHE_VERSION = 1


class ProbeResult(BaseModel):
    """Outcome of probing one precision on one device."""

    model_config = ConfigDict(frozen=True)

    precision: str
    backend: str
    device: str
    usable: bool
    reason: str | None = None
    rel_error: float | None = None
    bytes_ratio: float | None = None
    """Quantized weight bytes over fp32 weight bytes of the probe network."""
    seconds: float = 0.0


Probed = TypeVar("Probed", bound=BaseModel)


def cache_dir() -> Path:
    """Where autoq caches probes and quantized weights (``$AUTOQ_CACHE_DIR`` or
    ``~/.cache/autoq``)."""
    env = os.environ.get("AUTOQ_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "autoq"


@functools.cache
def _fingerprint_id() -> str:
    """This machine's fingerprint id; it cannot change while the process runs."""
    from autoq.device import fingerprint

    return fingerprint(bench=False).fingerprint_id


def _cache_file(device: torch.device) -> Path:
    fid = _fingerprint_id()
    return cache_dir() / "probes" / f"{fid}-{str(device).replace(':', '')}.json"


def _load_cache(path: Path, model: type[Probed]) -> dict[str, Probed]:
    """Cached probe results of ``model`` by name; empty when missing, damaged or of an
    older cache version."""
    try:
        raw = json.loads(path.read_text())
        if raw.get("version") != _CACHE_VERSION:
            return {}
        return {k: model.model_validate(v) for k, v in raw["results"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a missing or damaged cache only costs a re-probe


def _save_cache(path: Path, results: Mapping[str, BaseModel]) -> None:
    body = {"version": _CACHE_VERSION, "results": {k: v.model_dump() for k, v in results.items()}}
    with contextlib.suppress(OSError):  # a read-only home still gets answers
        atomic_write_text(path, json.dumps(body, indent=1))


def failure_reason(exc: BaseException) -> str:
    """One line saying why a probe failed: the underlying exception's type and message."""
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}".strip()[:300]


def _probe_net(device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(64, 64, 3, padding=1),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 256),
        nn.GELU(),
        nn.Linear(256, 128),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
    x = torch.randn(2, 64, 4, 4, generator=gen)
    return net.to(device).eval(), x.to(device)


def _run_probe(name: str, device: torch.device) -> ProbeResult:
    import torch

    spec = get_precision(name)
    base: dict[str, Any] = {"precision": name, "backend": spec.backend, "device": str(device)}
    reason = BACKENDS[spec.backend].check_environment(spec, device)
    if reason is not None:
        return ProbeResult(**base, usable=False, reason=reason)
    start = time.perf_counter()
    try:
        net, x = _probe_net(device)
        with torch.no_grad(), quiet():
            ref = net(x)
            quantized = copy.deepcopy(net)
            BACKENDS[spec.backend].apply(quantized, spec, targets_for(quantized, spec))
            out = quantized(x).float()
        error = float((out - ref).norm() / ref.norm())
        ratio = weight_bytes(quantized) / weight_bytes(net)
    except Exception as exc:
        return ProbeResult(
            **base,
            usable=False,
            reason=failure_reason(exc),
            seconds=time.perf_counter() - start,
        )
    seconds = time.perf_counter() - start
    if not error < spec.max_rel_error:  # also catches NaN
        return ProbeResult(
            **base,
            usable=False,
            rel_error=error,
            bytes_ratio=ratio,
            seconds=seconds,
            reason=f"output error {error:.3g} vs fp32 exceeds its bound {spec.max_rel_error}",
        )
    return ProbeResult(**base, usable=True, rel_error=error, bytes_ratio=ratio, seconds=seconds)


def probe_precision(
    name: str, device: torch.device | str | None = None, *, refresh: bool = False
) -> ProbeResult:
    """Probe one precision on ``device`` (default: CPU), from the cache when possible.

    Raises:
        UnknownPrecisionError: ``name`` is not registered.
    """
    return probe_all(device, refresh=refresh, only=[get_precision(name).name])[0]


def probe_all(
    device: torch.device | str | None = None,
    *,
    refresh: bool = False,
    only: list[str] | None = None,
) -> list[ProbeResult]:
    """Probe every registered precision (or ``only`` these) on ``device``, cached."""
    device = resolve_device(device)
    names = only if only is not None else [p.name for p in list_precisions()]
    path = _cache_file(device)
    cached = {} if refresh else _load_cache(path, ProbeResult)
    missing = [n for n in names if n not in cached]
    if missing:
        for name in missing:
            cached[name] = _run_probe(name, device)
        _save_cache(path, {**_load_cache(path, ProbeResult), **cached})
    return [cached[n] for n in names]


def available_precisions(device: torch.device | str | None = None) -> list[str]:
    """Names of the precisions that passed their probe on ``device``."""
    return [r.precision for r in probe_all(device) if r.usable]
