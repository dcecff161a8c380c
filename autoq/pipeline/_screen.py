"""The compatibility screen: every (component, precision, protect) the search may use is run
once on real inputs before any trial, and left out if it fails or strays from fp32.

One fp32 generation records the first call each component receives (``forward``,
``encode`` or ``decode``, whatever the pipeline calls). Each candidate module then replays
that call; its outputs must match fp32's in structure, shape and dtype (what the next
component receives) and stay within the precision's documented error bound
(`autoq.backends.Precision.max_rel_error`). Results are cached per model content, device
and library versions, so a rerun screens nothing twice.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
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
_CACHE_VERSION = 1

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


def _check(
    module: nn.Module, reference: nn.Module, call: Call, bound: float
) -> tuple[float | None, str | None]:
    ref_dtype = getattr(reference, "dtype", None)
    got_dtype = getattr(module, "dtype", None)
    if ref_dtype is not None and got_dtype != ref_dtype:
        return None, f"reports dtype {got_dtype}; the pipeline would build {got_dtype} inputs"
    try:
        output = _replay(module, call)
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


def _screen_one(
    build: BuildModule,
    component: str,
    precision: str,
    protect: tuple[str, ...],
    modules: Mapping[str, nn.Module],
    calls: Mapping[str, list[Call]],
    bound: float,
) -> list[Any]:
    """``[rel_error, reason]`` of one pairing (reason ``None``: it passed); the error is
    the largest over the component's recorded calls."""
    if not calls.get(component):  # the pipeline never called it: nothing it could break
        return [0.0, None]
    try:
        module = build(component, precision, protect)
    except Exception as exc:
        cause = exc.__cause__ or exc
        return [None, f"cannot be applied: {type(cause).__name__}: {cause}"[:300]]
    worst = 0.0
    for call in calls[component]:
        error, reason = _check(module, modules[component], call, bound)
        if reason is not None:
            return [error, reason]
        worst = max(worst, error or 0.0)
    return [worst, None]


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
) -> ScreenResult:
    """Run every candidate (component, precision, protect) once on real inputs.

    A precision is kept for a component only if it passes with every protect option
    (the search pairs them freely); fp32 is the reference and always kept.

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

    Returns:
        What was kept, what was left out and why, and the measured relative errors.
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
    results: dict[str, list[Any]] = {}
    calls: dict[str, list[Call]] | None = None
    result = ScreenResult(kept={})
    for component, options in precisions.items():
        kept: list[str] = []
        for precision in options:
            if precision == "fp32":
                kept.append(precision)
                continue
            bound = get_precision(precision).max_rel_error
            failed = False
            # Protect options that change no target build the same module: run it once.
            by_targets: dict[tuple[str, ...], list[Any]] = {}
            for protect in protect_options:
                key = _key(component, precision, tuple(protect))
                if key not in cached:
                    skip = [p for group in protect for p in PROTECT_PRESETS[group]]
                    names = tuple(n for n, _ in targets_for(modules[component], precision, skip))
                    if names in by_targets:
                        cached[key] = by_targets[names]
                    elif not names:
                        cached[key] = [0.0, None]  # nothing to convert: it is fp32
                    else:
                        if calls is None:
                            calls = capture_calls(
                                pipe, prompt=prompt, guidance_scale=guidance_scale,
                                steps=steps, size=size,
                            )  # fmt: skip
                        cached[key] = _screen_one(
                            build, component, precision, tuple(protect), modules, calls, bound
                        )
                    by_targets[names] = cached[key]
                error, reason = cached[key]
                results[key] = cached[key]
                if error is not None:
                    result.rel_errors[(component, precision, tuple(protect))] = error
                if reason is not None and not failed:
                    failed = True
                    result.dropped.append(
                        ScreenedOut(component, precision, tuple(protect), reason, error)
                    )
            if not failed:
                kept.append(precision)
        result.kept[component] = tuple(kept)
    if calls is not None and device is not None:
        release_memory(device)  # once: a collection per candidate costs more than the run
    if path is not None and calls is not None:
        with contextlib.suppress(OSError):  # a read-only cache only costs a re-screen
            body = {"version": _CACHE_VERSION, "results": {**_load(path), **results}}
            atomic_write_text(path, json.dumps(body, indent=1))
    return result
