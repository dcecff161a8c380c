"""`Dispatcher`: admission, queueing and dispatch in front of an `AdaptivePipeline`.

A request is admitted only if some tier can finish it within the SLO at its own size and
steps behind the requests already admitted (the runtime's cost model,
`AdaptivePipeline.predict`); otherwise, or when the queue is full, `Dispatcher.submit`
raises `OverloadedError` at once, saying why and how long to wait. Admitted requests run
in a bounded thread pool, one thread per request that may generate at once (those a
batch gathers wait there together); a request still queued can be cancelled and never
starts. The HTTP service (`autoq.serve`) is this plus routes; an application can use it
on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from autoq.errors import ConfigError, OverloadedError

if TYPE_CHECKING:
    from autoq.runtime._pipeline import AdaptivePipeline
    from autoq.runtime._worker import ProcessPipeline

__all__ = ["Dispatcher"]

MAX_SIDE_FACTOR = 4
"""Requests are refused above this many times the profile's measured side."""


class Dispatcher:
    """Admission control, a bounded queue and a generation pool for one pipeline.

    ``submit(prompt, ...)`` returns a `concurrent.futures.Future` of the pipeline's
    output, or raises `OverloadedError` (the request would miss ``slo_s`` or the queue
    is full) or `ConfigError` (an unknown tier, a size beyond what the model serves).

    Args:
        pipe: The runtime that generates, in this process or in a worker.
        max_queue: Requests waiting beyond the ones generating; more are refused.
        slo_s: Latency objective per request, queueing included; ``None``: none.
        workers: Generations running at once (the pipeline's ``max_concurrency``).
        on_start: Told the seconds each admitted request waited before it started.

    Raises:
        ConfigError: A limit is not positive.
    """

    def __init__(
        self,
        pipe: AdaptivePipeline | ProcessPipeline,
        *,
        max_queue: int = 8,
        slo_s: float | None = None,
        workers: int = 1,
        on_start: Callable[[float], None] | None = None,
    ) -> None:
        self.check_limits(max_queue=max_queue, slo_s=slo_s, workers=workers)
        self.on_start = on_start
        self.pipe = pipe
        self.max_queue = max_queue
        self.slo_s = slo_s
        self.workers = workers
        self.max_side = MAX_SIDE_FACTOR * max(pipe.default_size)
        self._running = workers * pipe.max_batch  # a batch's requests run together
        self._tiers = [t.name for t in pipe.tiers]
        self._lock = threading.Lock()
        self._pending = 0
        self._pool: ThreadPoolExecutor | None = None
        pipe.set_queue_source(self.queued)

    @staticmethod
    def check_limits(*, max_queue: int, slo_s: float | None, workers: int) -> None:
        """Raise `ConfigError` unless the limits are positive (before a pipeline is built
        for them)."""
        for name, value in (("max_queue", max_queue), ("workers", workers)):
            if value <= 0:
                raise ConfigError(f"{name} must be positive, but got {value}.")
        if slo_s is not None and not slo_s > 0:
            raise ConfigError(f"slo_s must be positive, but got {slo_s}.")

    @property
    def pending(self) -> int:
        """Admitted requests not yet finished: queued and generating."""
        return self._pending

    def queued(self) -> int:
        """Admitted requests waiting for a generation slot."""
        return max(self._pending - self._running, 0)

    def warm(self, tiers: Sequence[str] | None = None) -> Future[None]:
        """`AdaptivePipeline.warm` on the generation pool (start-up work off the caller)."""
        return self._executor().submit(self.pipe.warm, tiers)

    def submit(
        self,
        prompt: str,
        *,
        tier: str | None = None,
        steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        seed: int | None = None,
        num_images: int = 1,
    ) -> Future[Any]:
        """Admit one request and queue it for generation.

        Keyword arguments left ``None`` take the pipeline's choice (the policy's tier and
        steps, the profile's size, the pipeline's guidance); ``seed`` fixes the image
        (with ``num_images``, image ``i`` gets ``seed + i``). A request of several images
        runs as one call of its own, predicted from the tier's batch curve.

        Raises:
            OverloadedError: Refused: the queue is full, or no tier can finish it within
                the SLO (``reason`` ``"cost"`` even alone, ``"slo"`` at this load).
            ConfigError: ``tier`` is unknown, or a side is over `max_side`.
        """
        self.pipe.note_arrival()  # offered load, admitted or not: what the tiers must serve
        if tier is not None and tier not in self._tiers:
            raise ConfigError(f"Unknown tier {tier!r}; valid: {self._tiers}.")
        if any(side is not None and side > self.max_side for side in (width, height)):
            raise ConfigError(f"width/height at most {self.max_side} for this model.")
        if num_images < 1:
            raise ConfigError(f"num_images must be positive, but got {num_images}.")
        with self._lock:
            self._admit(tier, steps, height, width, num_images)
            self._pending += 1
        kwargs: dict[str, Any] = {
            "num_inference_steps": steps, "height": height, "width": width,
            "guidance_scale": guidance_scale, "negative_prompt": negative_prompt,
            "num_images_per_prompt": num_images if num_images > 1 else None,
        }  # fmt: skip
        try:
            job = self._executor().submit(
                self._generate, prompt, tier, seed, kwargs, time.monotonic()
            )
        except BaseException:
            self._finished(None)
            raise
        job.add_done_callback(self._finished)  # run, failed or cancelled
        return job

    def shutdown(self) -> None:
        """Stop the pool: queued requests are cancelled, running ones finish. A later
        `submit` starts a new pool (a server may start the same app again)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _admit(
        self,
        tier: str | None,
        steps: int | None,
        height: int | None,
        width: int | None,
        images: int = 1,
    ) -> None:
        def predicted(ahead: int) -> float:
            return self.pipe.predict(
                steps=steps, height=height, width=width, tier=tier, ahead=ahead, images=images
            )

        if self.queued() >= self.max_queue:
            raise OverloadedError(
                f"Queue full ({self.max_queue} waiting); retry later.",
                reason="queue_full",
                retry_after_s=predicted(0) * (self.queued() / self.workers + 1),
            )
        if self.slo_s is None:
            return
        behind = predicted(self._pending)
        if behind <= self.slo_s:
            return
        alone = predicted(0)
        if alone > self.slo_s:
            raise OverloadedError(
                f"No tier can serve this request within the SLO: alone it would take "
                f"{alone:.2f}s > {self.slo_s:.2f}s; ask for fewer steps or a smaller size.",
                reason="cost",
                retry_after_s=alone,
            )
        raise OverloadedError(
            f"No tier can serve this request within the SLO at this load: "
            f"{behind:.2f}s > {self.slo_s:.2f}s; retry later.",
            reason="slo",
            retry_after_s=behind - self.slo_s,
        )

    def _generate(
        self,
        prompt: str,
        tier: str | None,
        seed: int | None,
        kwargs: dict[str, Any],
        admitted: float,
    ) -> Any:
        import torch

        if self.on_start is not None:
            self.on_start(time.monotonic() - admitted)
        call = {k: v for k, v in kwargs.items() if v is not None}
        if seed is not None:
            images = call.get("num_images_per_prompt", 1)
            generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(images)]
            call["generator"] = generators[0] if images == 1 else generators
        return self.pipe(prompt, tier=tier, **call)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._running, thread_name_prefix="autoq-gen"
                )
            return self._pool

    def _finished(self, _job: Future[Any] | None) -> None:
        with self._lock:
            self._pending -= 1
