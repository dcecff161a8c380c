"""Whether an executor really works here: run it on a small network (a convolution and
two linear layers), compare with eager fp32. Cached per device fingerprint beside the
precision probes, so each machine probes once."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from autoq.execution._base import EXECUTORS, get_executor

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ExecutorProbe", "probe_executors"]

MAX_REL_ERROR = 0.02
"""Largest relative output error an executor may add to fp32 weights (OpenVINO infers in
bf16 on CPUs that have it: about 0.5% on the probe network)."""


class ExecutorProbe(BaseModel):
    """Outcome of probing one executor on one device."""

    model_config = ConfigDict(frozen=True)

    executor: str
    device: str
    usable: bool
    reason: str | None = None
    rel_error: float | None = None
    """Relative output error against eager fp32 on the probe network."""
    build_s: float | None = None
    """Seconds of the first call (compiling, converting)."""


def _probe_net(device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    """The precision probes' network in a module of its own: dynamo traces user modules,
    not a bare ``nn.Sequential`` (its frames count as torch's own)."""
    from torch import nn

    from autoq.backends._probe import _probe_net as layers

    class Probe(nn.Module):
        def __init__(self, body: nn.Module) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.body.children():
                x = layer(x)
            return x

    body, x = layers(device)
    return Probe(body).eval(), x


def _run_probe(name: str, device: torch.device) -> ExecutorProbe:
    import torch

    from autoq.backends._probe import failure_reason
    from autoq.backends._quiet import quiet

    executor = get_executor(name)
    base: dict[str, Any] = {"executor": name, "device": str(device)}
    reason = executor.check(device)
    if reason is not None:
        return ExecutorProbe(**base, usable=False, reason=reason)
    try:
        net, x = _probe_net(device)
        with torch.no_grad(), quiet():
            ref = net(x)
            began = time.perf_counter()
            out = executor.apply(net, "probe")(x).float()
            build_s = time.perf_counter() - began
        error = float((out - ref).norm() / ref.norm())
    except Exception as exc:
        return ExecutorProbe(**base, usable=False, reason=failure_reason(exc))
    if not error < MAX_REL_ERROR:  # also catches NaN
        return ExecutorProbe(
            **base,
            usable=False,
            rel_error=error,
            build_s=build_s,
            reason=f"output error {error:.3g} vs eager fp32 exceeds {MAX_REL_ERROR}",
        )
    return ExecutorProbe(**base, usable=True, rel_error=error, build_s=build_s)


def probe_executors(
    device: torch.device | str | None = None,
    *,
    refresh: bool = False,
    only: list[str] | None = None,
) -> list[ExecutorProbe]:
    """Probe every registered executor (or ``only`` these) on ``device``, cached.

    Raises:
        ConfigError: A name in ``only`` is not an executor.
    """
    from autoq.backends._probe import _cache_file, _load_cache, _save_cache
    from autoq.device import resolve_device

    device = resolve_device(device)
    names = [get_executor(n).name for n in only] if only is not None else list(EXECUTORS)
    path = _cache_file(device).with_suffix(".executors.json")
    cached = {} if refresh else _load_cache(path, ExecutorProbe)
    missing = [n for n in names if n not in cached]
    if missing:
        for name in missing:
            cached[name] = _run_probe(name, device)
        _save_cache(path, {**_load_cache(path, ExecutorProbe), **cached})
    return [cached[n] for n in names]
