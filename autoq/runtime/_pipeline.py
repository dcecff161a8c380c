"""`AdaptivePipeline`: a diffusers-like pipeline that serves a profile's tiers, switching
as memory, load and latency change, turning the steps dial under load, and stepping down
instead of failing on OOM."""

from __future__ import annotations

import collections
import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.device import release_memory
from autoq.errors import ConfigError, OutOfMemoryError
from autoq.profile import Profile, Tier, load_profile
from autoq.runtime._batch import (
    BATCHED,
    Batcher,
    FairSlots,
    Request,
    batch_key,
    split_output,
)
from autoq.runtime._cost import decayed_ratio, request_completion, tier_views
from autoq.runtime._metrics import RuntimeMetrics
from autoq.runtime._policy import DefaultPolicy, Policy, RequestShape
from autoq.runtime._signals import ResourceMonitor, Signals, SystemMonitor

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

    from autoq.pipeline import PipelinePlan

__all__ = ["AdaptivePipeline", "is_out_of_memory"]

log = get_logger("autoq.runtime")

_EWMA = 0.2  # weight of the newest latency observation
_WARM_PROMPT = "warm-up"
_ARRIVAL_WINDOW = 64  # arrivals the rate estimate spans at most
_ARRIVAL_HORIZON_S = 30.0  # ... and for at most this long


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
    ``.tier`` and ``.steps`` (the tier and step count that served it) and ``.timings``.
    A request runs entirely on one tier; tier switches happen between requests, per
    component (a component whose precision two tiers share is reused), make-before-break
    when memory allows. An explicit ``num_inference_steps`` is always honoured; otherwise
    the policy may serve a tier at fewer steps (never below its ``min_steps``). Without
    ``height``/``width`` a request runs at the size the profile measured. With
    ``max_batch`` above 1, compatible requests from concurrent callers run as one
    pipeline call (`autoq.runtime._batch`), each with its own generator, and each output
    says its ``.batch_size``. Build it with `from_profile`.
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
        max_batch: int = 1,
        batch_wait_s: float = 0.05,
    ) -> None:
        from autoq.backends import weight_bytes
        from autoq.pipeline import ComponentCache, module_components

        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, but got {max_concurrency}.")
        if max_batch < 1 or batch_wait_s < 0:
            raise ConfigError(
                f"max_batch must be >= 1 and batch_wait_s >= 0, but got {max_batch} and "
                f"{batch_wait_s}."
            )
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
        self.default_size = _default_size(base, profile)
        self._pixels = self.default_size[0] * self.default_size[1]
        self._views = tier_views(profile.tiers, self._pixels)
        self._max_concurrency = max_concurrency
        self.max_batch = max_batch
        self._warmed: set[int] = set()
        self._ready = threading.Event()
        self._lock = threading.RLock()
        self._slots = FairSlots(max_concurrency)
        self._batcher = (
            Batcher(
                max_batch=max_batch,
                wait_s=batch_wait_s,
                acquire=self._take_slot,
                release=self._give_slot,
                start_by=self._batch_start_by,
            )
            if max_batch > 1
            else None
        )
        self._waiting = 0
        self._in_flight = 0
        self._latency_ratio = 1.0
        self._ratio_at = time.monotonic()
        self._pinned: int | None = None
        self._queue_source: Callable[[], int] | None = None
        self._arrivals: collections.deque[float] = collections.deque(maxlen=_ARRIVAL_WINDOW)
        self._front_end_arrivals = False
        self._cooling: dict[int, float] = {}
        self._index = 0
        self._pipe: DiffusionPipeline | None = None
        self._switch(self._initial_tier(), "start")

    @classmethod
    def from_profile(
        cls,
        profile: Profile | str | Path,
        *,
        model: str | None = None,
        monitor: ResourceMonitor | None = None,
        policy: Policy | None = None,
        device: torch.device | str | None = None,
        allow_mismatch: bool = False,
        tiers: Sequence[str] | None = None,
        **options: Any,
    ) -> AdaptivePipeline:
        """Load ``profile`` (object, file or directory) and its model, offline.

        Args:
            profile: A `Profile`, a profile file, or a directory to pick this device's from.
            model: With a directory holding several models' profiles, the model to serve
                (its source as tuned, e.g. ``zoo:shapes`` or ``shapes``, or content hash).
            monitor: Signal source (default: `SystemMonitor` on ``device``).
            policy: Tier policy (default: `DefaultPolicy`).
            device: Where to generate (default: CUDA if available, else CPU).
            allow_mismatch: Accept a profile tuned on another device (logged as a warning).
            tiers: Serve only these tiers: their components are built at once and the
                model's full-precision weights that none of them uses are released, so
                the process holds what these tiers need (an OOM on the last of them is an
                `OutOfMemoryError`). ``None``: every tier, built as needed.
            **options: ``cooldown_s`` after an OOM, ``max_concurrency`` generations.

        Raises:
            ProfileMismatchError: The profile was tuned on another device.
            ModelMismatchError: The profile's model folder now holds other weights
                (content hash or pipeline class differs; never allowed).
            ModelNotFoundError: The profile's model cannot be loaded here.
            ConfigError: No profile (of ``model``) found, or a name in ``tiers`` is not
                one of its tiers.
        """

        from autoq.backends._quiet import silence_libraries
        from autoq.device import resolve_device
        from autoq.pipeline import check_identity, load_pipeline

        if not isinstance(profile, Profile):
            profile = load_profile(profile, model=model, allow_mismatch=allow_mismatch)
        if tiers is not None:
            profile = _only_tiers(profile, tiers)
        resolved = resolve_device(device)
        silence_libraries()
        folder = check_identity(profile.model)
        base = load_pipeline(folder).to(resolved)
        base.set_progress_bar_config(disable=True)
        pipe = cls(
            profile,
            base,
            monitor=monitor or SystemMonitor(resolved),
            policy=policy or DefaultPolicy(),
            device=resolved,
            **options,
        )
        if tiers is not None:
            keys = set().union(*(t.plan.component_keys() for t in profile.tiers))
            released = pipe._cache.keep_only(keys)
            release_memory(resolved)
            log.info("master_released", tiers=list(tiers), released_bytes=released)
        return pipe

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

    @property
    def ready(self) -> bool:
        """Whether a generation has finished on the serving tier (extensions built,
        kernels warmed); stays true once reached."""
        return self._ready.is_set()

    def warm(self, tiers: Sequence[str] | None = None) -> None:
        """Generate once (two steps, not counted in metrics) on each of ``tiers``
        (default: the serving tier), so their first real request pays no start-up cost."""
        names = list(tiers) if tiers is not None else [self.tier.name]
        # The serving tier last: its generation is what makes the runtime ready.
        for name in sorted(names, key=lambda n: n == self.tier.name):
            index = self._tier_index(name)
            with self._slot():
                with self._lock:
                    pipe = self._build(index)
                call: dict[str, Any] = {"num_inference_steps": 2}
                if self.profile.height is not None and self.profile.width is not None:
                    call.update(height=self.profile.height, width=self.profile.width)
                self._generate(index, pipe, _WARM_PROMPT, call, RequestShape(2), record=False)

    def predict(
        self,
        *,
        steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        tier: str | None = None,
        ahead: int | None = None,
        images: int = 1,
    ) -> float:
        """Predicted seconds until a new request completes on its fastest option: the
        named ``tier`` (or every tier not cooling down after an OOM) at ``steps`` (default:
        each tier's fewest allowed), behind ``ahead`` requests (default: the runtime's own
        queue). Uses the same cost model as the policy, calibrated by observed latency."""
        shape = self._shape(steps, height, width)
        sample = self.signals()
        if ahead is None:
            ahead = sample.queue_depth + sample.in_flight
        with self._lock:
            now = time.monotonic()
            indices = (
                [self._tier_index(tier)]
                if tier is not None
                else [i for i in range(len(self._views)) if i not in self._excluded(now)]
                or list(range(len(self._views)))
            )
        seconds = request_completion(
            self._views, indices, shape, ahead, self._max_concurrency, self.max_batch,
            named=tier is not None, images=images,
        )  # fmt: skip
        return seconds * sample.latency_ratio

    # -- requests ----------------------------------------------------------------------

    def __call__(self, prompt: str | list[str], *, tier: str | None = None, **kwargs: Any) -> Any:
        """Generate like the underlying diffusers pipeline would.

        Args:
            prompt: The prompt(s).
            tier: Serve this request on a named tier instead of the policy's choice.
            **kwargs: Passed to the diffusers pipeline. ``num_inference_steps``, if given,
                is honoured exactly; otherwise the policy chooses (the tier's own steps, or
                fewer under load, never below its ``min_steps``). ``height``/``width``
                default to the size the profile measured.

        Raises:
            OutOfMemoryError: The chosen tier and every tier with a smaller measured peak
                ran out of memory.
        """
        wanted = self._tier_index(tier) if tier is not None else None
        if self.profile.height is not None and self.profile.width is not None:
            kwargs.setdefault("height", self.profile.height)
            kwargs.setdefault("width", self.profile.width)
        shape = self._shape(
            kwargs.get("num_inference_steps"), kwargs.get("height"), kwargs.get("width")
        )
        if not self._front_end_arrivals:
            self.note_arrival()
        key = batch_key(tier, kwargs) if self._batcher is not None else None
        if self._batcher is not None and key is not None and isinstance(prompt, str):
            request = Request(prompt, kwargs, key, tier=wanted)
            return self._batcher.submit(request, self._run_batch)
        with self._slot():
            with self._lock:
                index, pipe, steps = self._select(wanted, shape)
            if shape.steps is None and steps is not None:
                kwargs["num_inference_steps"] = steps
            return self._generate(index, pipe, prompt, kwargs, shape)

    def _run_batch(self, requests: Sequence[Request]) -> list[Any]:
        """Generate ``requests`` (compatible: `batch_key`) as one call; one output each."""
        import torch

        first = requests[0]
        kwargs = {k: v for k, v in first.kwargs.items() if k not in BATCHED}
        shape = self._shape(
            kwargs.get("num_inference_steps"), kwargs.get("height"), kwargs.get("width")
        )
        with self._lock:
            index, pipe, steps = self._select(first.tier, shape)
        if shape.steps is None and steps is not None:
            kwargs["num_inference_steps"] = steps
        limit = self._views[index].batch_limit(len(requests))
        if len(requests) > limit:  # more than the tier's memory (or its shapes) allows
            chunks = [requests[i : i + limit] for i in range(0, len(requests), limit)]
            return [out for chunk in chunks for out in self._run_batch(chunk)]
        count = len(requests)
        if count == 1:
            output = self._generate(index, pipe, first.prompt, dict(first.kwargs | kwargs), shape)
            output.batch_size = 1
            self.metrics.record_batch(1)
            return [output]
        if any(r.kwargs.get("negative_prompt") for r in requests):
            kwargs["negative_prompt"] = [r.kwargs.get("negative_prompt") or "" for r in requests]
        if any(r.kwargs.get("generator") is not None for r in requests):
            # A request without one draws its noise from a generator of its own, as alone
            # it would from torch's global one.
            kwargs["generator"] = [
                r.kwargs.get("generator") or torch.Generator("cpu").manual_seed(_fresh_seed())
                for r in requests
            ]
        # The cost model learns from a batch where the tier's batch curve says what a batch
        # costs; without one, its time is not one request's.
        output = self._generate(
            index, pipe, [r.prompt for r in requests], kwargs, shape,
            record=bool(self._views[index].batch_curve), batch=count,
        )  # fmt: skip
        self.metrics.record_batch(count)
        for _ in requests:  # each waited the batch's time
            self.metrics.record_request(output.tier, output.timings["generation_s"], output.steps)
        parts = []
        for i in range(count):
            part = split_output(output, count, i)
            part.tier, part.steps, part.batch_size = output.tier, output.steps, count
            part.timings = dict(output.timings)
            parts.append(part)
        return parts

    def _batch_start_by(self, leader: Request) -> float | None:
        """The latest time a batch led by ``leader`` may start and still finish within
        the policy's SLO, a full batch on the tier it asks for (else the serving one)
        costing what the cost model says; ``None`` without an SLO."""
        slo = getattr(self.policy, "slo_s", None)
        if slo is None:
            return None
        kwargs = leader.kwargs
        shape = self._shape(
            kwargs.get("num_inference_steps"), kwargs.get("height"), kwargs.get("width")
        )
        view = self._views[leader.tier if leader.tier is not None else self._index]
        batch = view.batch_limit(self.max_batch)
        cost = view.cost(shape.steps, shape.pixels, batch) * self._observed_ratio()
        return leader.arrived + slo - cost

    def _take_slot(self, timeout: float | None) -> bool:
        """A generation slot within ``timeout`` seconds (``None``: however long it takes),
        counted in flight; ``False`` if none came."""
        if not self._slots.acquire(timeout=timeout):
            return False
        with self._lock:
            self._in_flight += 1
        return True

    def _give_slot(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._slots.release()

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        """Wait (counted as queued) for a generation slot, hold it (counted in flight)."""
        with self._lock:
            self._waiting += 1
        try:
            self._take_slot(None)
        finally:
            with self._lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._give_slot()

    def signals(self) -> Signals:
        """The monitor's latest sample with the runtime's own load (plus any queue a
        front end keeps in front of it, see `set_queue_source`)."""
        sample = self.monitor.sample()
        with self._lock:
            queued = self._waiting + (self._queue_source() if self._queue_source else 0)
            queued += self._batcher.waiting if self._batcher is not None else 0
            return sample.with_load(
                self._in_flight,
                queued,
                self._observed_ratio(),
                self._max_concurrency,
                self._arrival_rate(),
                self.max_batch,
            )

    def set_queue_source(self, source: Callable[[], int] | None) -> None:
        """Count requests a server holds before they reach this pipeline as queued. A
        front end with a queue reports every request offered to it with `note_arrival`
        (calls then stop counting as arrivals themselves)."""
        self._queue_source = source
        self._front_end_arrivals = source is not None

    def note_arrival(self) -> None:
        """Count one request offered now (admitted or not) toward the arrival rate."""
        with self._lock:
            self._arrivals.append(time.monotonic())

    def _observed_ratio(self) -> float:
        """Observed / profiled latency (EWMA), drawn back toward 1 while nothing is
        observed (`decayed_ratio`)."""
        return decayed_ratio(self._latency_ratio, time.monotonic() - self._ratio_at)

    def _arrival_rate(self) -> float:
        """Requests per second over the recent arrivals (0 with fewer than 3)."""
        now = time.monotonic()
        with self._lock:
            while self._arrivals and now - self._arrivals[0] > _ARRIVAL_HORIZON_S:
                self._arrivals.popleft()
            if len(self._arrivals) < 3:
                return 0.0
            span = max(now - self._arrivals[0], 1e-3)
            return len(self._arrivals) / span

    # -- internals ---------------------------------------------------------------------

    def _tier_index(self, name: str) -> int:
        names = [t.name for t in self.profile.tiers]
        if name not in names:
            raise ConfigError(f"Unknown tier {name!r}; valid: {names}.")
        return names.index(name)

    def _shape(self, steps: int | None, height: int | None, width: int | None) -> RequestShape:
        h, w = self.default_size
        return RequestShape(steps, (height or h) * (width or w))

    def _initial_tier(self) -> int:
        # Asked as if serving the best-quality tier: the policy answers with the best
        # that fits, without the dwell an upgrade from elsewhere would wait for.
        sample = self.monitor.sample()
        best = max(range(len(self._views)), key=lambda i: self._views[i].clip_score)
        return self.policy.decide(self._views, best, sample, time.monotonic()).tier

    def _excluded(self, now: float) -> frozenset[int]:
        self._cooling = {i: until for i, until in self._cooling.items() if until > now}
        return frozenset(self._cooling)

    def _select(
        self, wanted: int | None, shape: RequestShape
    ) -> tuple[int, DiffusionPipeline, int | None]:
        """Under the lock: the tier, pipeline and steps (``None``: the tier's own) this
        request will use."""
        if wanted is not None:
            return wanted, self._build(wanted), None
        signals = self.signals()
        self.metrics.record_memory(signals.available_memory_bytes)
        now = time.monotonic()
        steps = None
        if self._pinned is not None:
            target, reason = self._pinned, "pinned"
        else:
            decision = self.policy.decide(
                self._views, self._index, signals, now, self._excluded(now), shape
            )
            target, reason, steps = decision.tier, decision.reason, decision.steps
        if target != self._index:
            self._switch(target, reason, signals)
        return self._index, self._serving(), steps

    def _serving(self) -> DiffusionPipeline:
        if self._pipe is None:  # only during a break-before-make switch, under the lock
            raise RuntimeError("no tier is loaded")
        return self._pipe

    def _build(self, index: int) -> DiffusionPipeline:
        return self._build_plan(self.profile.tiers[index].plan)

    def _build_plan(self, plan: PipelinePlan) -> DiffusionPipeline:
        from autoq.pipeline import assemble

        with self._lock:
            return assemble(self._cache, plan)

    def _switch(self, index: int, reason: str, signals: Signals | None = None) -> None:
        """Make ``index`` the serving tier: make-before-break when memory allows."""
        start = time.perf_counter()
        previous = self.profile.tiers[self._index].name if self._pipe is not None else None
        target = self.profile.tiers[index]
        room = signals.available_memory_bytes if signals is not None else None
        if room is not None and self._pipe is not None and room < target.metrics.weight_bytes:
            # Not enough room for both: break first, keeping only what the target shares.
            self._pipe = None
            self._cache.retain(target.plan.component_keys())
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
        self,
        index: int,
        pipe: DiffusionPipeline,
        prompt: str | list[str],
        kwargs: dict[str, Any],
        shape: RequestShape,
        *,
        record: bool = True,
        batch: int = 1,
    ) -> Any:
        tiled = False  # the one retry of a decode that ran out of memory, with VAE tiling
        while True:
            tier = self.profile.tiers[index]
            call = {"num_inference_steps": tier.plan.steps, **kwargs}
            steps = int(call["num_inference_steps"])
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
                if record:
                    self._observe(index, steps, shape.pixels, seconds, batch)
                with self._lock:
                    self._warmed.add(index)
                    if index == self._index:
                        self._ready.set()
                output.tier = tier.name
                output.steps = steps
                output.timings = {"generation_s": seconds}
                return output
            in_decode = _failed_in_decode(failure, runner.vae)
            # Outside the except block, so the failed frame's tensors can be freed.
            del runner
            tiling = self.profile.tiers[index].plan.memory
            if in_decode and not tiled and "vae_tiling" not in tiling:
                tiled = True
                failure.__traceback__ = None
                release_memory(self.device)
                self.metrics.record_oom()
                log.warning("oom_retry_tiled", tier=tier.name, error=str(failure)[:200])
                pipe = self._build_plan(
                    tier.plan.model_copy(update={"memory": (*tiling, "vae_tiling")})
                )
                continue
            index, pipe, dialed = self._after_oom(index, failure, shape)
            if shape.steps is None:
                kwargs = {
                    **kwargs,
                    "num_inference_steps": dialed or self.profile.tiers[index].plan.steps,
                }

    def _observe(
        self, index: int, steps: int, pixels: int | None, seconds: float, batch: int = 1
    ) -> None:
        if batch == 1:  # a batch's requests are counted by the caller
            self.metrics.record_request(self.profile.tiers[index].name, seconds, steps)
        ratio = seconds / max(self._views[index].cost(steps, pixels, batch), 1e-9)
        with self._lock:
            self._latency_ratio = (1 - _EWMA) * self._observed_ratio() + _EWMA * ratio
            self._ratio_at = time.monotonic()

    def _after_oom(
        self, index: int, failure: BaseException, shape: RequestShape
    ) -> tuple[int, DiffusionPipeline, int | None]:
        """Retry on the best tier (by the policy) whose measured peak is below the failed
        tier's; none left is an `OutOfMemoryError`."""
        release_memory(self.device)
        self.metrics.record_oom()
        with self._lock:
            now = time.monotonic()
            self._cooling[index] = now + self.cooldown_s
            failed = self._views[index].peak_at(shape.pixels)
            excluded = self._excluded(now) | {
                i for i, v in enumerate(self._views) if v.peak_at(shape.pixels) >= failed
            }
            decision = None
            if len(excluded) < len(self._views):
                decision = self.policy.decide(
                    self._views, index, self.signals(), now, frozenset(excluded), shape
                )
            log.warning(
                "oom_retry",
                tier=self.profile.tiers[index].name,
                next_tier=self.profile.tiers[decision.tier].name if decision else None,
                error=str(failure)[:200],
            )
            if decision is None or decision.tier in excluded:
                raise OutOfMemoryError(
                    f"Out of memory on tier {self.profile.tiers[index].name!r} and no tier "
                    "with a smaller measured peak is left; free memory on this device or "
                    "tune with a smaller --max-memory."
                ) from failure
            self._switch(decision.tier, "out of memory")
            return self._index, self._serving(), decision.steps


def _fresh_seed() -> int:
    import torch

    return int(torch.randint(0, 2**63 - 1, ()).item())


def _failed_in_decode(failure: BaseException, vae: Any) -> bool:
    """Whether ``failure`` was raised inside ``vae.decode`` (the VAE turning latents into
    pixels: the step whose memory grows with the image, and that tiling bounds)."""
    if vae is None or not hasattr(vae, "enable_tiling"):
        return False
    tb = failure.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name in ("decode", "_decode") and frame.f_locals.get("self") is vae:
            return True
        tb = tb.tb_next
    return False


def _default_size(base: DiffusionPipeline, profile: Profile) -> tuple[int, int]:
    """(height, width) a request gets without asking: the profile's measured size, else
    the pipeline's default (``sample_size`` x the VAE scale factor)."""
    if profile.height is not None and profile.width is not None:
        return profile.height, profile.width
    denoiser = getattr(base, "unet", None) or getattr(base, "transformer", None)
    sample = getattr(getattr(denoiser, "config", None), "sample_size", 64) or 64
    if isinstance(sample, list | tuple):
        sample = sample[0]
    side = int(sample) * int(getattr(base, "vae_scale_factor", 8))
    return side, side


def _only_tiers(profile: Profile, names: Sequence[str]) -> Profile:
    """``profile`` with only the tiers ``names`` (in the profile's order)."""
    known = [t.name for t in profile.tiers]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"Unknown tier(s) {unknown or list(names)}; valid: {known}.")
    return profile.model_copy(update={"tiers": [t for t in profile.tiers if t.name in names]})
