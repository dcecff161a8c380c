"""`AdaptivePipeline`: a diffusers-like pipeline that serves a profile's tiers, switching
as memory, load and latency change, and stepping down instead of failing on OOM."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.device import release_memory
from autoq.errors import ConfigError, OutOfMemoryError
from autoq.profile import Profile, Tier, load_profile
from autoq.runtime._metrics import RuntimeMetrics
from autoq.runtime._policy import DefaultPolicy, Policy, TierView
from autoq.runtime._signals import ResourceMonitor, Signals, SystemMonitor

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

__all__ = ["AdaptivePipeline", "is_out_of_memory"]

log = get_logger("autoq.runtime")

_EWMA = 0.2  # weight of the newest latency observation


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means an allocation failed (CUDA or CPU)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


class AdaptivePipeline:
    """Serve a tuned profile like a diffusers pipeline.

    ``pipe(prompt, **kwargs)`` returns the usual pipeline output (``.images``) plus
    ``.tier`` (the tier that served it) and ``.timings``. A request runs entirely on one
    tier; tier switches happen between requests, per component (a component whose
    precision two tiers share is reused), make-before-break when memory allows.
    Build it with `from_profile`.
    """

    def __init__(
        self,
        profile: Profile,
        base: DiffusionPipeline,
        *,
        monitor: ResourceMonitor,
        policy: Policy,
        device: torch.device,
        cooldown_s: float = 60.0,
        max_concurrency: int = 1,
    ) -> None:
        from autoq.backends import weight_bytes
        from autoq.pipeline import ComponentCache, module_components

        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, but got {max_concurrency}.")
        self.profile = profile
        self.monitor = monitor
        self.policy = policy
        self.device = device
        self.cooldown_s = cooldown_s
        self.metrics = RuntimeMetrics()
        base_bytes = sum(weight_bytes(m) for m in module_components(base).values())
        self._cache = ComponentCache(
            base, max_bytes=2 * base_bytes, model_hash=profile.model.content_hash
        )
        self._views = tier_views(profile.tiers)
        self._lock = threading.RLock()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._waiting = 0
        self._in_flight = 0
        self._latency_ratio = 1.0
        self._pinned: int | None = None
        self._queue_source: Callable[[], int] | None = None
        self._cooling: dict[int, float] = {}
        self._index = 0
        self._pipe: DiffusionPipeline | None = None
        self._switch(self._initial_tier(), "start")

    @classmethod
    def from_profile(
        cls,
        profile: Profile | str | Path,
        *,
        monitor: ResourceMonitor | None = None,
        policy: Policy | None = None,
        device: torch.device | str | None = None,
        allow_mismatch: bool = False,
        **options: Any,
    ) -> AdaptivePipeline:
        """Load ``profile`` (object, file or directory) and its model, offline.

        Args:
            profile: A `Profile`, a profile file, or a directory to pick this device's from.
            monitor: Signal source (default: `SystemMonitor` on ``device``).
            policy: Tier policy (default: `DefaultPolicy`).
            device: Where to generate (default: CUDA if available, else CPU).
            allow_mismatch: Accept a profile tuned on another device.
            **options: ``cooldown_s`` after an OOM, ``max_concurrency`` generations.

        Raises:
            ProfileMismatchError: The profile was tuned on another device.
            ModelNotFoundError: The profile's model cannot be loaded here.
        """

        from autoq.backends._quiet import silence_libraries
        from autoq.device import resolve_device
        from autoq.pipeline import load_pipeline, pipeline_folder

        if not isinstance(profile, Profile):
            profile = load_profile(profile, allow_mismatch=allow_mismatch)
        resolved = resolve_device(device)
        silence_libraries()
        base = load_pipeline(pipeline_folder(profile.model.source)).to(resolved)
        base.set_progress_bar_config(disable=True)
        return cls(
            profile,
            base,
            monitor=monitor or SystemMonitor(resolved),
            policy=policy or DefaultPolicy(),
            device=resolved,
            **options,
        )

    # -- public state ------------------------------------------------------------------

    @property
    def tiers(self) -> list[Tier]:
        """The profile's tiers, best quality first."""
        return list(self.profile.tiers)

    @property
    def tier(self) -> Tier:
        """The tier new requests are served by."""
        return self.profile.tiers[self._index]

    def pin(self, name: str) -> None:
        """Serve only tier ``name`` until `unpin` (OOM still steps down)."""
        index = self._tier_index(name)
        with self._lock:
            self._pinned = index
            if index != self._index:
                self._switch(index, "pinned")

    def unpin(self) -> None:
        """Let the policy choose tiers again."""
        with self._lock:
            self._pinned = None

    # -- requests ----------------------------------------------------------------------

    def __call__(self, prompt: str | list[str], *, tier: str | None = None, **kwargs: Any) -> Any:
        """Generate like the underlying diffusers pipeline would.

        Args:
            prompt: The prompt(s).
            tier: Serve this request on a named tier instead of the policy's choice.
            **kwargs: Passed to the diffusers pipeline; ``num_inference_steps`` defaults to
                the tier's step count.

        Raises:
            OutOfMemoryError: Every tier from the chosen one down ran out of memory.
        """
        wanted = self._tier_index(tier) if tier is not None else None
        with self._lock:
            self._waiting += 1
        self._slots.acquire()
        try:
            with self._lock:
                self._waiting -= 1
                self._in_flight += 1
                index, pipe = self._select(wanted)
            return self._generate(index, pipe, prompt, kwargs)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._slots.release()

    def signals(self) -> Signals:
        """The monitor's latest sample with the runtime's own load (plus any queue a
        front end keeps in front of it, see `set_queue_source`)."""
        sample = self.monitor.sample()
        with self._lock:
            queued = self._waiting + (self._queue_source() if self._queue_source else 0)
            return sample.with_load(self._in_flight, queued, self._latency_ratio)

    def set_queue_source(self, source: Callable[[], int] | None) -> None:
        """Count requests a server holds before they reach this pipeline as queued."""
        self._queue_source = source

    # -- internals ---------------------------------------------------------------------

    def _tier_index(self, name: str) -> int:
        names = [t.name for t in self.profile.tiers]
        if name not in names:
            raise ConfigError(f"Unknown tier {name!r}; valid: {names}.")
        return names.index(name)

    def _initial_tier(self) -> int:
        # Asked as if serving the best tier: the policy answers with the best that fits,
        # without the dwell an upgrade from below would wait for.
        sample = self.monitor.sample()
        return self.policy.decide(self._views, 0, sample, time.monotonic()).tier

    def _excluded(self, now: float) -> frozenset[int]:
        self._cooling = {i: until for i, until in self._cooling.items() if until > now}
        return frozenset(self._cooling)

    def _select(self, wanted: int | None) -> tuple[int, DiffusionPipeline]:
        """Under the lock: the tier and pipeline this request will use."""
        if wanted is not None:
            return wanted, self._build(wanted)
        signals = self.signals()
        self.metrics.record_memory(signals.available_memory_bytes)
        now = time.monotonic()
        if self._pinned is not None:
            target, reason = self._pinned, "pinned"
        else:
            decision = self.policy.decide(
                self._views, self._index, signals, now, self._excluded(now)
            )
            target, reason = decision.tier, decision.reason
        if target != self._index:
            self._switch(target, reason, signals)
        return self._index, self._serving()

    def _serving(self) -> DiffusionPipeline:
        if self._pipe is None:  # only during a break-before-make switch, under the lock
            raise RuntimeError("no tier is loaded")
        return self._pipe

    def _build(self, index: int) -> DiffusionPipeline:
        from autoq.pipeline import assemble

        return assemble(self._cache, self.profile.tiers[index].plan)

    def _switch(self, index: int, reason: str, signals: Signals | None = None) -> None:
        """Make ``index`` the serving tier: make-before-break when memory allows."""
        start = time.perf_counter()
        previous = self.profile.tiers[self._index].name if self._pipe is not None else None
        target = self.profile.tiers[index]
        room = signals.available_memory_bytes if signals is not None else None
        if room is not None and self._pipe is not None and room < target.metrics.weight_bytes:
            # Not enough room for both: break first, keeping only what the target shares.
            keep = {(c, p, tuple(sorted(target.plan.protect.get(c, ()))))
                    for c, p in target.plan.precisions.items()}  # fmt: skip
            self._pipe = None
            self._cache.retain(keep)
            release_memory(self.device)
        self._pipe = self._build(index)
        self._index = index
        self.metrics.record_switch(target.name)
        log.info(
            "tier_switch",
            from_tier=previous,
            to_tier=target.name,
            reason=reason,
            switch_ms=round((time.perf_counter() - start) * 1000, 2),
            available_memory_bytes=room,
        )

    def _generate(
        self, index: int, pipe: DiffusionPipeline, prompt: str | list[str], kwargs: dict[str, Any]
    ) -> Any:
        while True:
            tier = self.profile.tiers[index]
            call = {"num_inference_steps": tier.plan.steps, **kwargs}
            # Each request gets its own scheduler: diffusers schedulers keep per-run state.
            runner = type(pipe)(**{**pipe.components, "scheduler": copy.deepcopy(pipe.scheduler)})
            runner.set_progress_bar_config(disable=True)
            start = time.perf_counter()
            failure: BaseException | None = None
            try:
                output = runner(prompt, **call)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failure = exc
            if failure is None:
                seconds = time.perf_counter() - start
                self._observe(tier, seconds)
                output.tier = tier.name
                output.timings = {"generation_s": seconds}
                return output
            # Outside the except block, so the failed frame's tensors can be freed.
            del runner
            index, pipe = self._after_oom(index, failure)

    def _observe(self, tier: Tier, seconds: float) -> None:
        self.metrics.record_request(tier.name, seconds)
        ratio = seconds / max(tier.metrics.latency_s, 1e-9)
        with self._lock:
            self._latency_ratio = (1 - _EWMA) * self._latency_ratio + _EWMA * ratio

    def _after_oom(self, index: int, failure: BaseException) -> tuple[int, DiffusionPipeline]:
        release_memory(self.device)
        self.metrics.record_oom()
        with self._lock:
            now = time.monotonic()
            self._cooling[index] = now + self.cooldown_s
            lower = [i for i in range(index + 1, len(self._views)) if i not in self._excluded(now)]
            log.warning(
                "oom_retry",
                tier=self.profile.tiers[index].name,
                next_tier=self.profile.tiers[lower[0]].name if lower else None,
                error=str(failure)[:200],
            )
            if not lower:
                raise OutOfMemoryError(
                    f"Out of memory on tier {self.profile.tiers[index].name!r} and no lower "
                    "tier is left; free memory on this device or tune with a smaller "
                    "--max-memory."
                ) from failure
            self._switch(lower[0], "out of memory")
            return self._index, self._serving()


def tier_views(tiers: Sequence[Tier]) -> list[TierView]:
    """Policy views of profile tiers."""
    return [
        TierView(t.name, t.metrics.peak_memory_bytes, t.metrics.weight_bytes, t.metrics.latency_s)
        for t in tiers
    ]
