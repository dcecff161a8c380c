"""Turn a plan into a diffusers pipeline, reusing quantized components across plans."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from autoq.errors import ConfigError
from autoq.pipeline._dimensions import SchedulerDimension

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from torch import nn

    from autoq.pipeline._plan import ComponentKey, PipelinePlan

__all__ = ["ComponentCache", "assemble", "module_components"]


def module_components(pipe: DiffusionPipeline) -> dict[str, nn.Module]:
    """The pipeline's torch-module components (``unet`` or ``transformer``, every
    ``text_encoder*``, ``vae``, ...), discovered from the pipeline itself."""
    from torch import nn

    return {name: c for name, c in pipe.components.items() if isinstance(c, nn.Module)}


class ComponentCache:
    """Components, built once per `ComponentKey` (component, precision, protect, executor,
    memory tools) and reused.

    Least recently used entries are evicted once their weights exceed ``max_bytes``.
    With ``model_hash`` (the model's content hash), quantized weights are also stored on
    disk under `autoq.backends.cache_dir` and reloaded instead of re-quantized, by later
    runs as by this one after an eviction. Thread-safe; a cached module is shared by every
    pipeline that uses it, so it must only be used for inference.
    """

    def __init__(
        self, base: DiffusionPipeline, max_bytes: int, model_hash: str | None = None
    ) -> None:
        if max_bytes <= 0:
            raise ConfigError(f"max_bytes must be positive, but got {max_bytes}.")
        self.base = base
        self.max_bytes = max_bytes
        self.model_hash = model_hash
        self.loaded_from_disk = 0
        self._modules = module_components(base)
        self._entries: OrderedDict[ComponentKey, tuple[nn.Module, int]]
        self._entries = OrderedDict()
        self._lock = threading.Lock()
        self._kept: set[ComponentKey] = set()
        self._released: set[str] = set()
        self.hits = 0
        self.misses = 0

    def get(
        self,
        component: str,
        precision: str,
        protect: tuple[str, ...] = (),
        executor: str = "eager",
        tools: tuple[str, ...] = (),
    ) -> nn.Module:
        """The ``component`` of the base pipeline stored in ``precision`` (``protect``
        groups kept), run by ``executor`` with memory ``tools`` switched on."""
        if executor != "eager" or tools:
            return self._derived((component, precision, tuple(sorted(protect)), executor, tools))
        return self._stored(component, precision, protect)

    def _derived(self, key: ComponentKey) -> nn.Module:
        """A component built from its stored form: executed otherwise, or with tools on."""

        from autoq.backends import weight_bytes
        from autoq.execution import get_executor
        from autoq.pipeline._dimensions import MemoryDimension

        component, precision, protect, executor, tools = key
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key][0]
        stored = self._stored(component, precision, protect)
        module = get_executor(executor).apply(stored, component) if executor != "eager" else stored
        module = MemoryDimension.apply(module, tools)  # same weights, its own flags
        with self._lock:
            self.misses += 1
            self._entries[key] = (
                module,
                0 if get_executor(executor).shares_weights else weight_bytes(module),
            )
            self._evict()
        return module

    def _stored(self, component: str, precision: str, protect: tuple[str, ...]) -> nn.Module:
        from autoq.backends import (
            PROTECT_PRESETS,
            apply_precision,
            cache_dir,
            load_or_quantize,
            weight_bytes,
            weights_key,
        )

        if component not in self._modules:
            raise ConfigError(
                f"Unknown component {component!r}; this pipeline has {sorted(self._modules)}."
            )
        key = (component, precision, tuple(sorted(protect)), "eager", ())
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key][0]
            self.misses += 1
            if component in self._released:
                raise ConfigError(
                    f"{component} in {precision} was not built before its full-precision "
                    "weights were released (`keep_only`): this process serves only the "
                    "tiers it was started with."
                )
            base = self._modules[component]
            if precision == "fp32" and not protect and _is_fp32(base):
                module = base  # the reference: no copy needed
            else:
                skip = [p for group in protect for p in PROTECT_PRESETS[group]]
                if self.model_hash is None:
                    module = apply_precision(copy.deepcopy(base), precision, skip=skip)
                else:
                    stored = weights_key(self.model_hash, component, precision, skip)
                    folder = cache_dir() / "weights" / stored
                    module, from_disk = load_or_quantize(base, precision, folder, skip=skip)
                    self.loaded_from_disk += from_disk
            size = weight_bytes(module)
            self._entries[key] = (module, size)
            self._evict()
            return module

    def _evict(self) -> None:
        """Under the lock: drop least recently used entries while over ``max_bytes``.
        An executed or flagged component that shares its stored form's weights counts
        nothing of its own."""
        while sum(s for _, s in self._entries.values()) > self.max_bytes:
            key = next((k for k in self._entries if k not in self._kept), None)
            if key is None or len(self._entries) <= 1:
                return
            del self._entries[key]

    def retain(self, keys: set[ComponentKey]) -> None:
        """Drop every cached component except ``keys``, the stored forms they build on and
        what `keep_only` keeps."""
        keep = keys | _stored_forms(keys) | self._kept
        with self._lock:
            for key in [k for k in self._entries if k not in keep]:
                del self._entries[key]

    def keep_only(self, keys: set[ComponentKey]) -> int:
        """Build ``keys``, keep them (and their stored forms) for good, and release the
        base pipeline's weights of every component the keys store only in other
        precisions: a process serving only these components then holds no full-precision
        master. Building any other form of a released component is a `ConfigError`.

        Returns:
            The bytes of base weights released.
        """
        from autoq.backends import weight_bytes

        with self._lock:
            self._kept = keys | _stored_forms(keys)  # from the first built on: no eviction
        for key in keys:
            self.get(*key)
        named = {c for c, _, _, _, _ in keys}
        needed = {c for c, precision, _, _, _ in keys if precision == "fp32"}
        needed |= set(self._modules) - named  # used as the base pipeline has it
        released = 0
        with self._lock:
            for key in [k for k in self._entries if k not in self._kept]:
                del self._entries[key]
            for component, module in self._modules.items():
                if component in needed or component in self._released:
                    continue
                released += weight_bytes(module)
                module.to("meta")  # frees the storage; the structure stays for diffusers
                self._released.add(component)
        return released


def _stored_forms(keys: set[ComponentKey]) -> set[ComponentKey]:
    """The stored (eager, no tools) keys that ``keys`` are built from."""
    return {(c, p, protect, "eager", ()) for c, p, protect, _, _ in keys}


def _is_fp32(module: nn.Module) -> bool:
    import torch

    return all(p.dtype == torch.float32 for p in module.parameters() if p.is_floating_point())


def assemble(cache: ComponentCache, plan: PipelinePlan) -> DiffusionPipeline:
    """A pipeline of the base pipeline's class whose components follow ``plan``.

    Components the plan does not name stay as in the base pipeline.
    """
    base = cache.base
    components = dict(base.components)
    for name in plan.precisions:
        components[name] = cache.get(*plan.component_key(name))
    components["scheduler"] = SchedulerDimension.apply(base, plan.scheduler)
    pipe = type(base)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe
