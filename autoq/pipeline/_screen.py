"""The compatibility screen: every (component, precision, protect) the search may use is run
once on real inputs before any trial, and left out if it fails or strays from fp32.

One fp32 generation records the first call each component receives (``forward``,
``encode`` or ``decode``, whatever the pipeline calls). Each candidate module then replays
that call; its outputs must match fp32's in structure, shape and dtype (what the next
component receives) and stay within the precision's documented error bound
(`autoq.backends.Precision.max_rel_error`). Every replay is timed and bounded by fp32's
time on the same calls, so a precision without fast kernels on the device is left out in
seconds, not run for minutes. Results are cached per model content, device and library
versions, so a rerun screens nothing twice.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autoq._files import atomic_write_text

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from diffusers import DiffusionPipeline
    from torch import nn

__all__ = ["Call", "ScreenResult", "ScreenedOut", "capture_calls", "screen"]

_METHODS = ("forward", "encode", "decode")
_CACHE_VERSION = 3  # 3: replay seconds are the quickest of short passes

SLOW_FACTOR = 10.0
"""A pairing whose replay takes this many times fp32's on the same calls is too slow."""
DOMINATED_FACTOR = 3.0
"""A pairing this many times slower than a kept precision of as few bits is dominated."""
FIRST_PASS_FACTOR = 2.0
"""Dtype casts first run under this many times fp32's time; those over it run last."""
MIN_BOUND_S = 2.0
"""No time bound below this: on tiny models the timings are scheduler noise."""
REPEAT_S = 0.5
"""Replays that take less than this are timed again, and the quickest pass counts."""

BuildModule = Callable[[str, str, tuple[str, ...]], "nn.Module"]


@dataclass(frozen=True)
class ScreenedOut:
    """A pairing the screen left out of the search, and why."""

    component: str
    precision: str
    protect: tuple[str, ...]
    reason: str
    rel_error: float | None = None

    def describe(self) -> str:
        """One line for `autoq tune`'s output."""
        protect = f" + protect {'/'.join(self.protect)}" if self.protect else ""
        return f"{self.component}: {self.precision}{protect} left out: {self.reason}"


@dataclass
class ScreenResult:
    """What the screen kept per component, what it left out, and every measured error."""

    kept: dict[str, tuple[str, ...]]
    dropped: list[ScreenedOut] = field(default_factory=list)
    rel_errors: dict[tuple[str, str, tuple[str, ...]], float] = field(default_factory=dict)
    seconds: dict[tuple[str, str, tuple[str, ...]], float] = field(default_factory=dict)
    """Replay seconds of each timed pairing over its component's recorded calls."""
    fp32_seconds: dict[str, float] = field(default_factory=dict)
    """fp32's replay seconds per component: the yardstick of the time bounds."""
    unscreened: list[tuple[str, str]] = field(default_factory=list)
    """(component, precision) pairings the time budget left no time for."""


@dataclass
class Call:
    """One recorded call of a component: which method, with which arguments."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any


def _detach(value: Any) -> Any:
    import torch
    from torch.utils import _pytree

    def copy_leaf(x: Any) -> Any:
        return x.detach().clone() if isinstance(x, torch.Tensor) else x

    return _pytree.tree_map(copy_leaf, value)


def _signature(method: str, args: Any, kwargs: Any) -> tuple[Any, ...]:
    """What makes two calls of a component different enough to screen both: the method,
    and the shape and emptiness of each tensor (a prompt and its empty negative prompt)."""
    import torch
    from torch.utils import _pytree

    tensors = [x for x in _pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
    return (method, *((tuple(x.shape), bool(x.any())) for x in tensors))


@contextlib.contextmanager
def _recording(
    modules: Mapping[str, nn.Module], calls: dict[str, list[Call]], per_component: int = 3
) -> Iterator[None]:
    """Record the first outermost calls of each module that differ in `_signature`."""
    patched: list[tuple[nn.Module, str]] = []
    depth = {"value": 0}
    seen: set[tuple[Any, ...]] = set()

    def wrap(name: str, method_name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def recorder(*args: Any, **kwargs: Any) -> Any:
            if depth["value"] or len(calls.setdefault(name, [])) >= per_component:
                return method(*args, **kwargs)
            signature = (name, *_signature(method_name, args, kwargs))
            if signature in seen:
                return method(*args, **kwargs)
            seen.add(signature)
            inputs = (_detach(args), _detach(kwargs))
            depth["value"] += 1
            try:
                output = method(*args, **kwargs)
            finally:
                depth["value"] -= 1
            calls[name].append(Call(method_name, inputs[0], inputs[1], _detach(output)))
            return output

        return recorder

    try:
        for name, module in modules.items():
            for method_name in _METHODS:
                method = getattr(module, method_name, None)
                if method is not None and method_name not in module.__dict__:
                    module.__dict__[method_name] = wrap(name, method_name, method)
                    patched.append((module, method_name))
        yield
    finally:
        for module, method_name in patched:
            del module.__dict__[method_name]


def capture_calls(
    pipe: DiffusionPipeline,
    *,
    prompt: str,
    guidance_scale: float,
    steps: int = 2,
    size: tuple[int, int] | None = None,
) -> dict[str, list[Call]]:
    """Run ``pipe`` once and record, per torch component, its first calls that differ in
    method or input shapes (a text encoder's prompt and negative prompt, a VAE's decode)."""
    import torch

    from autoq.pipeline._build import module_components

    calls: dict[str, list[Call]] = {}
    kwargs: dict[str, Any] = {}
    if size is not None:
        kwargs["height"], kwargs["width"] = size
    with _recording(module_components(pipe), calls), torch.no_grad():
        pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator("cpu").manual_seed(0),
            **kwargs,
        )
    return calls


def _leaves(value: Any, path: str = "out") -> list[tuple[str, Any]]:
    """Tensors (and other leaves) of a model output, by path, in a stable order."""
    import dataclasses

    import torch

    if isinstance(value, torch.Tensor):
        return [(path, value)]
    if isinstance(value, Mapping):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}[{i}]")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            leaf
            for f in dataclasses.fields(value)
            for leaf in _leaves(getattr(value, f.name), f"{path}.{f.name}")
        ]
    return [(path, value)]


def compare(output: Any, reference: Any) -> tuple[float | None, str | None]:
    """Relative error of ``output`` against ``reference`` over all their floating tensors,
    or why the two cannot be compared (what the next component would receive differs)."""
    import torch

    got, want = _leaves(output), _leaves(reference)
    if [p for p, _ in got] != [p for p, _ in want]:
        return None, "returns a different output structure than fp32"
    diff = norm = 0.0
    for (path, out), (_, ref) in zip(got, want, strict=True):
        if not isinstance(ref, torch.Tensor) or not ref.is_floating_point():
            continue
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
            return None, f"{path} has another shape than fp32"
        if out.dtype != ref.dtype:
            return None, f"hands {out.dtype} to the pipeline where fp32 hands {ref.dtype} ({path})"
        diff += float((out.float() - ref.float()).pow(2).sum())
        norm += float(ref.float().pow(2).sum())
    if norm == 0.0:
        return (0.0 if diff == 0.0 else math.inf), None
    return math.sqrt(diff / norm), None


def _replay(module: nn.Module, call: Call) -> Any:
    import torch

    # ``module(...)``, not ``module.forward(...)``: forward hooks are part of the module.
    method = module if call.method == "forward" else getattr(module, call.method)
    with torch.no_grad():
        return method(*_detach(call.args), **_detach(call.kwargs))


def _synchronize(device: torch.device | None) -> None:
    import torch

    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class _OverTime(Exception):
    """Raised from a forward pre-hook once a bounded replay runs past its bound."""


@contextlib.contextmanager
def _bounded(seconds: float | None) -> Iterator[None]:
    """Stop the replay inside once it runs ``seconds``: every module call checks the
    clock first (a forward pre-hook on all modules), so a slow kernel path stops within
    one layer instead of running a whole UNet at 100 s a forward."""
    if seconds is None:
        yield
        return
    from torch.nn.modules.module import register_module_forward_pre_hook

    end = time.monotonic() + seconds
    owner = threading.get_ident()  # the hook sees every thread's modules: stop ours only

    def check(_module: nn.Module, _args: Any) -> None:
        if time.monotonic() > end and threading.get_ident() == owner:
            raise _OverTime

    handle = register_module_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class _Outcome:
    """One pairing's screening: its error, why it was left out (``None``: it passed),
    and its replay seconds over the component's recorded calls."""

    error: float | None
    reason: str | None
    seconds: float | None = None
    over: bool = False
    """It ran past its time bound (``seconds``); the caller decides what that means."""

    def cached(self) -> list[Any]:
        return [self.error, self.reason, self.seconds]


def _check(
    module: nn.Module, reference: nn.Module, call: Call, bound: float
) -> tuple[float | None, str | None]:
    ref_dtype = getattr(reference, "dtype", None)
    got_dtype = getattr(module, "dtype", None)
    if ref_dtype is not None and got_dtype != ref_dtype:
        return None, f"reports dtype {got_dtype}; the pipeline would build {got_dtype} inputs"
    try:
        output = _replay(module, call)
    except _OverTime:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc
        return None, f"fails: {type(cause).__name__}: {str(cause).strip()[:200]}"
    error, problem = compare(output, call.output)
    if problem is not None:
        return None, problem
    if error is None:
        return None, "produced no comparable output"
    if not error < bound:  # also catches NaN
        return error, f"output error {error:.3g} vs fp32 exceeds its bound {bound}"
    return error, None


def _replay_seconds(
    module: nn.Module,
    calls: Sequence[Call],
    device: torch.device | None,
    first: float | None = None,
) -> float:
    """Seconds ``module`` takes to replay ``calls``: the quickest of up to 3 passes while
    they take under `REPEAT_S` in all (``first``: a pass already timed). A pass of a few
    milliseconds is mostly first-call effects and scheduler noise; one of seconds is not,
    and runs once."""
    times = [] if first is None else [first]
    while not times or (len(times) < 3 and sum(times) < REPEAT_S):
        start = time.perf_counter()
        for call in calls:
            _replay(module, call)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _screen_one(
    build: BuildModule,
    component: str,
    precision: str,
    protect: tuple[str, ...],
    modules: Mapping[str, nn.Module],
    calls: Mapping[str, list[Call]],
    bound: float,
    limit: float | None = None,
) -> _Outcome:
    """One pairing: the largest error over the component's recorded calls, or why it
    was left out; its replays stop once they take ``limit`` seconds in all."""
    if not calls.get(component):  # the pipeline never called it: nothing it could break
        return _Outcome(0.0, None)
    try:
        module = build(component, precision, protect)
    except Exception as exc:
        cause = exc.__cause__ or exc
        return _Outcome(None, f"cannot be applied: {type(cause).__name__}: {cause}"[:300])
    device = next((p.device for p in modules[component].parameters()), None)
    worst = 0.0
    start = time.perf_counter()
    try:
        with _bounded(limit):
            for call in calls[component]:
                error, reason = _check(module, modules[component], call, bound)
                if reason is not None:
                    return _Outcome(error, reason)
                worst = max(worst, error or 0.0)
            _synchronize(device)
    except _OverTime:
        return _Outcome(None, None, limit, over=True)
    seconds = _replay_seconds(module, calls[component], device, time.perf_counter() - start)
    return _Outcome(worst, None, seconds)


def _cache_path(model_hash: str, device: torch.device) -> Path:
    from autoq.backends import cache_dir
    from autoq.backends._base import BACKENDS, library_version

    versions = sorted(
        (name, library_version(b.distribution) or "-") for name, b in BACKENDS.items()
    )
    parts = json.dumps(
        {"v": _CACHE_VERSION, "model": model_hash, "device": str(device), "libs": versions},
        sort_keys=True,
    )
    key = hashlib.sha256(parts.encode()).hexdigest()[:20]
    return cache_dir() / "screens" / f"{key}.json"


def _load(path: Path | None) -> dict[str, list[Any]]:
    if path is None:
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return dict(raw["results"]) if raw.get("version") == _CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a missing or damaged cache only costs a re-screen


def _key(component: str, precision: str, protect: tuple[str, ...]) -> str:
    return "|".join((component, precision, ",".join(protect)))


def _order(candidates: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Dtype casts first (built in no time, and the fastest precisions on most devices),
    then the rest; precision by precision across components, so a screen its time share
    cuts short has tried each component with the same precisions."""
    from autoq.backends import get_precision

    precisions = list(dict.fromkeys(p for _, p in candidates))
    precisions.sort(key=lambda p: not get_precision(p).is_float_cast)  # stable
    return [(c, p) for p in precisions for c, q in candidates if q == p]


def screen(
    pipe: DiffusionPipeline,
    precisions: Mapping[str, Sequence[str]],
    protect_options: Sequence[tuple[str, ...]] = ((),),
    *,
    prompt: str,
    guidance_scale: float,
    steps: int = 2,
    size: tuple[int, int] | None = None,
    build: BuildModule | None = None,
    model_hash: str | None = None,
    budget_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScreenResult:
    """Run every candidate (component, precision, protect) once on real inputs.

    A precision is kept for a component only if it passes with every protect option
    (the search pairs them freely); fp32 is the reference and always kept.

    No pairing runs unbounded. fp32's replay of the same calls is the yardstick: a
    pairing that takes `SLOW_FACTOR` times as long (at least `MIN_BOUND_S`) is left out
    as too slow, and one that takes `DOMINATED_FACTOR` times as long as a precision
    already kept that stores the component in as few bits is left out as dominated by it
    (fp16 against bf16 on CPUs without fast fp16 kernels). Dtype casts run first under a
    short bound (`FIRST_PASS_FACTOR`), and those over it again last, so a slow cast is
    measured against the fast ones. Pairings that ``budget_s`` leaves no time for are
    left out too (`ScreenResult.unscreened`), and not cached: a rerun screens them.

    Args:
        pipe: The fp32 pipeline, on the device the search will use.
        precisions: Candidate precisions per component.
        protect_options: Protect groups the search may pair with each precision.
        prompt: The prompt of the capturing generation.
        guidance_scale: Guidance of the capturing generation (sets the batch shapes).
        steps: Steps of the capturing generation.
        size: ``(height, width)`` of the capturing generation (default: the pipeline's).
        build: ``build(component, precision, protect)`` returns the converted module
            (default: a deep copy through `autoq.backends.apply_precision`).
        model_hash: The model's content hash; with it, results are cached on disk.
        budget_s: Seconds the whole screen may take (``None``: no limit).
        progress: Told ``(pairings done, pairings in all)`` as the screen goes.

    Returns:
        What was kept, what was left out and why, the measured relative errors and the
        replay seconds.
    """
    from autoq.backends import (
        PROTECT_PRESETS,
        apply_precision,
        get_precision,
        module_device,
        targets_for,
    )
    from autoq.device import release_memory
    from autoq.pipeline._build import module_components

    modules = module_components(pipe)
    device = module_device(next(iter(modules.values()))) if modules else None

    def default_build(component: str, precision: str, protect: tuple[str, ...]) -> nn.Module:
        skip = [p for group in protect for p in PROTECT_PRESETS[group]]
        return apply_precision(copy.deepcopy(modules[component]), precision, skip=skip)

    build = build or default_build
    path = _cache_path(model_hash, device) if model_hash and device is not None else None
    cached = _load(path)
    fresh: dict[str, list[Any]] = {}
    end = None if budget_s is None else time.monotonic() + budget_s
    calls: dict[str, list[Call]] = {}
    captured = False
    result = ScreenResult(kept={})
    failed: dict[tuple[str, str], str] = {}  # (component, precision) -> why it was left out

    def recorded(component: str) -> list[Call]:
        nonlocal captured
        if not captured:
            calls.update(
                capture_calls(
                    pipe, prompt=prompt, guidance_scale=guidance_scale, steps=steps, size=size
                )
            )
            captured = True
        return calls.get(component, [])

    def fp32_seconds(component: str) -> float:
        key = _key(component, "fp32", ())
        if key not in cached:
            seconds = _replay_seconds(modules[component], recorded(component), device)
            cached[key] = fresh[key] = [0.0, None, seconds]
        return float(cached[key][2])

    def fastest_as_small(component: str, precision: str) -> tuple[str, float] | None:
        """The quickest precision kept so far for ``component`` that stores it in no
        more bits than ``precision``, with its replay seconds."""
        bits = get_precision(precision).weight_bits
        times = [
            (seconds, other)
            for (c, other, protect), seconds in result.seconds.items()
            if c == component and not protect and other != precision
            and (c, other) not in failed and get_precision(other).weight_bits <= bits
        ]  # fmt: skip
        return (min(times)[1], min(times)[0]) if times else None

    def unscreened(component: str, precision: str) -> bool:
        """Leave a pairing the budget had no time for out, uncached: a rerun screens it."""
        result.unscreened.append((component, precision))
        failed[(component, precision)] = "not screened"
        return True

    def run(component: str, precision: str, first_pass: bool) -> bool:
        """Screen one (component, precision) with every protect option; ``False``: a
        first pass ran past its short bound, so it waits for the second."""
        spec = get_precision(precision)
        by_targets: dict[tuple[str, ...], list[Any]] = {}
        for protect in map(tuple, protect_options):
            if (component, precision) in failed:
                return True  # one failing protect option leaves the precision out
            key = _key(component, precision, protect)
            if key not in cached:
                skip = [p for group in protect for p in PROTECT_PRESETS[group]]
                names = tuple(n for n, _ in targets_for(modules[component], precision, skip))
                if names in by_targets:
                    cached[key] = by_targets[names]
                elif not names:
                    cached[key] = [0.0, None, None]  # nothing to convert: it is fp32
                elif end is not None and time.monotonic() >= end:
                    return unscreened(component, precision)
                elif not recorded(component):  # never called: nothing it could break
                    cached[key] = [0.0, None, None]
                else:
                    fp32 = fp32_seconds(component)
                    bounds = {"slow": max(SLOW_FACTOR * fp32, MIN_BOUND_S)}
                    if first_pass:
                        bounds["first"] = max(FIRST_PASS_FACTOR * fp32, MIN_BOUND_S)
                    rival = fastest_as_small(component, precision)
                    if rival is not None:
                        bounds["rival"] = max(DOMINATED_FACTOR * rival[1], MIN_BOUND_S)
                    if end is not None:
                        bounds["budget"] = max(end - time.monotonic(), 0.0)
                    hit = min(bounds, key=bounds.__getitem__)
                    outcome = _screen_one(
                        build, component, precision, protect, modules, calls,
                        spec.max_rel_error, bounds[hit],
                    )  # fmt: skip
                    if outcome.over:
                        if hit == "first":
                            return False
                        if hit == "budget":
                            return unscreened(component, precision)
                        outcome.reason = (
                            f"dominated by {rival[0]}: as few bits or fewer, and over "
                            f"{bounds[hit]:.1f} s where {rival[0]} takes {rival[1]:.2f} s"
                            if hit == "rival" and rival is not None
                            else f"too slow: over {bounds[hit]:.1f} s where fp32 takes "
                            f"{fp32:.2f} s (bound: {SLOW_FACTOR:g}x fp32)"
                        )
                    cached[key] = fresh[key] = outcome.cached()
                by_targets[names] = cached[key]
            error, reason, seconds = cached[key]
            if error is not None:
                result.rel_errors[(component, precision, protect)] = error
            if seconds is not None:
                result.seconds[(component, precision, protect)] = seconds
            if reason is not None and (component, precision) not in failed:
                failed[(component, precision)] = reason
                result.dropped.append(ScreenedOut(component, precision, protect, reason, error))
        return True

    candidates = _order(
        [(c, p) for c, options in precisions.items() for p in options if p != "fp32"]
    )
    waiting = []
    for done, (component, precision) in enumerate(candidates):
        if progress is not None:
            progress(done, len(candidates))
        if not run(component, precision, first_pass=get_precision(precision).is_float_cast):
            waiting.append((component, precision))
    for component, precision in waiting:
        run(component, precision, first_pass=False)
    if progress is not None:
        progress(len(candidates), len(candidates))
    for component, precision in result.unscreened:
        reason = "not screened: the screen's share of the time budget ran out (a rerun screens it)"
        result.dropped.append(ScreenedOut(component, precision, (), reason))
    for component, options in precisions.items():
        result.kept[component] = tuple(
            p for p in options if p == "fp32" or (component, p) not in failed
        )
        if _key(component, "fp32", ()) in cached:
            result.fp32_seconds[component] = float(cached[_key(component, "fp32", ())][2])
    if captured and device is not None:
        release_memory(device)  # once: a collection per candidate costs more than the run
    if path is not None and fresh:
        with contextlib.suppress(OSError):  # a read-only cache only costs a re-screen
            body = {"version": _CACHE_VERSION, "results": {**_load(path), **fresh}}
            atomic_write_text(path, json.dumps(body, indent=1))
    return result
