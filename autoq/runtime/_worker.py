"""`ProcessPipeline`: an `AdaptivePipeline` in a worker process of its own.

In one process, generation shares the interpreter lock with whatever else runs there: a
front end answering many requests (HTTP parsing, validation, rejections) takes it from
the generating thread often, and a model of many small kernels then slows down many
times over. Here the runtime lives in a child process (``spawn``) and the caller holds a
proxy with the same surface a front end uses: ``pipe(prompt, ...)``, `predict` (answered
locally, from the profile's cost model and the worker's last observed latency ratio, so
admission never waits on the worker), `warm`, ``tiers``, ``tier``, ``ready`` and
``metrics.snapshot()``. Requests travel as their arguments (a CPU generator as its
state) and come back as images, so each image is the one the runtime gives in-process.
"""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoq._logging import get_logger
from autoq.errors import AutoqError
from autoq.profile import Profile, Tier, load_profile
from autoq.runtime._cost import decayed_ratio, request_completion, tier_views
from autoq.runtime._policy import RequestShape

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["ProcessPipeline", "WorkerError"]

log = get_logger("autoq.runtime")

_START_TIMEOUT_S = 3600.0  # loading and hashing a large model takes minutes


class WorkerError(AutoqError):
    """The worker process failed to start or exited; the message says why."""


@dataclass
class WorkerOutput:
    """A generation's result from the worker: what ``AdaptivePipeline`` outputs carry."""

    images: list[Any]
    tier: str
    steps: int
    batch_size: int = 1
    timings: dict[str, float] = field(default_factory=dict)


class _Snapshot:
    """``metrics.snapshot()`` of the worker as of its last reply."""

    def __init__(self) -> None:
        self.value: dict[str, Any] = {
            "served": {}, "batches": {}, "switches": 0, "oom_retries": 0,
            "available_memory_bytes": None, "requests": {},
        }  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        return self.value


class ProcessPipeline:
    """An `AdaptivePipeline` built and run in a worker process; see the module docstring.

    Build it with `from_profile` (the same arguments as `AdaptivePipeline.from_profile`);
    `close` stops the worker.
    """

    def __init__(self, profile: Profile, options: dict[str, Any]) -> None:
        self.profile = profile
        self.max_batch = int(options.get("max_batch", 1))
        self._slots = int(options.get("max_concurrency", 1))
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, profile.model_dump_json(), options), daemon=True
        )
        self._process.start()
        child.close()
        self._ids = itertools.count()
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._ratio, self._ratio_at = 1.0, time.monotonic()
        self._tier = ""
        self._ready = False
        self.metrics = _Snapshot()
        self._queue_source: Callable[[], int] | None = None
        if not self._conn.poll(_START_TIMEOUT_S):
            self.close()
            raise WorkerError("The worker process did not start within the hour.")
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(10)
            raise WorkerError(
                f"The worker process exited while starting (code {self._process.exitcode}); "
                "its output above says why (often: not enough memory to load the model)."
            ) from None
        if kind == "error":
            self._process.join(10)
            raise payload
        height, width = payload["default_size"]
        self.default_size = (int(height), int(width))
        self._update(payload["state"])
        self._views = tier_views(profile.tiers, self.default_size[0] * self.default_size[1])
        self._reader = threading.Thread(target=self._read, name="autoq-worker", daemon=True)
        self._reader.start()

    @classmethod
    def from_profile(
        cls,
        profile: Profile | str | Path,
        *,
        model: str | None = None,
        allow_mismatch: bool = False,
        tiers: Sequence[str] | None = None,
        **options: Any,
    ) -> ProcessPipeline:
        """Start a worker serving ``profile``: `AdaptivePipeline.from_profile`'s
        arguments (``device``, ``max_concurrency``, ``max_batch``, ...), each picklable.

        Raises:
            WorkerError: The worker could not start.
            ProfileMismatchError, ModelMismatchError, ModelNotFoundError, ConfigError:
                As `AdaptivePipeline.from_profile` raises them, from the worker.
        """
        from autoq.runtime._pipeline import _only_tiers

        if not isinstance(profile, Profile):
            profile = load_profile(profile, model=model, allow_mismatch=allow_mismatch)
        if tiers is not None:
            profile = _only_tiers(profile, tiers)
            options["tiers"] = list(tiers)
        return cls(profile, options)

    # -- what a front end reads ----------------------------------------------------------

    @property
    def tiers(self) -> list[Tier]:
        return list(self.profile.tiers)

    @property
    def tier(self) -> Tier:
        return next((t for t in self.profile.tiers if t.name == self._tier), self.profile.tiers[0])

    @property
    def ready(self) -> bool:
        return self._ready

    def set_queue_source(self, source: Callable[[], int] | None) -> None:
        """Requests a front end holds, reported to the worker's policy with each call."""
        self._queue_source = source

    def note_arrival(self) -> None:
        """Offered requests are counted by the worker as they reach it."""

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
        """`AdaptivePipeline.predict`, answered here from the profile's cost model and
        the worker's last observed latency ratio (tiers cooling down after an OOM in the
        worker are not known here)."""
        h, w = self.default_size
        shape = RequestShape(steps, (height or h) * (width or w))
        names = [t.name for t in self.profile.tiers]
        indices = [names.index(tier)] if tier is not None else list(range(len(names)))
        queued = self._queue_source() if self._queue_source is not None else 0
        seconds = request_completion(
            self._views, indices, shape, queued if ahead is None else ahead,
            self._slots, self.max_batch, named=tier is not None, images=images,
        )  # fmt: skip
        return seconds * decayed_ratio(self._ratio, time.monotonic() - self._ratio_at)

    # -- calls ---------------------------------------------------------------------------

    def __call__(self, prompt: str | list[str], *, tier: str | None = None, **kwargs: Any) -> Any:
        """Generate in the worker, like `AdaptivePipeline.__call__`."""
        generator = kwargs.pop("generator", None)
        generators = generator if isinstance(generator, list) else [generator]
        if any(g is not None and g.device.type != "cpu" for g in generators):
            raise AutoqError("A ProcessPipeline takes CPU generators (their state travels).")
        states = [g.get_state() if g is not None else None for g in generators]
        state: Any = states if isinstance(generator, list) else states[0]
        queued = self._queue_source() if self._queue_source is not None else 0
        return self._ask("call", (prompt, tier, kwargs, state, queued))

    def warm(self, tiers: Sequence[str] | None = None) -> None:
        self._ask("warm", (list(tiers) if tiers is not None else None,))

    def close(self) -> None:
        """Stop the worker; calls still waiting fail with `WorkerError`."""
        if self._process.is_alive():
            try:
                with self._send_lock:
                    self._conn.send(("stop", None, None))
            except OSError:
                pass
            self._process.join(30)
            if self._process.is_alive():
                self._process.terminate()
        self._fail_pending("The worker process was stopped.")

    def _ask(self, kind: str, args: tuple[Any, ...]) -> Any:
        future: Future[Any] = Future()
        with self._lock:
            number = next(self._ids)
            self._pending[number] = future
        try:
            with self._send_lock:
                self._conn.send((kind, number, args))
        except OSError as exc:
            with self._lock:
                self._pending.pop(number, None)
            raise WorkerError(f"The worker process is gone: {exc}.") from None
        return future.result()

    def _read(self) -> None:
        while True:
            try:
                kind, number, payload, state = self._conn.recv()
            except (EOFError, OSError):
                code = self._process.exitcode
                self._fail_pending(f"The worker process exited (code {code}).")
                return
            self._update(state)
            with self._lock:
                future = self._pending.pop(number, None)
            if future is None:
                continue
            if kind == "ok":
                future.set_result(payload)
            else:
                future.set_exception(payload)

    def _update(self, state: dict[str, Any]) -> None:
        self._tier, self._ready, self._ratio = state["tier"], state["ready"], state["ratio"]
        self._ratio_at = time.monotonic() - state["quiet_s"]
        self.metrics.value = state["metrics"]

    def _fail_pending(self, message: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerError(message))


def _serve(conn: Connection, profile_json: str, options: dict[str, Any]) -> None:
    """The worker: build the runtime, then answer calls, each on a thread of its own
    (as many as may generate or wait for a batch at once)."""
    import signal

    import torch

    from autoq.runtime._pipeline import AdaptivePipeline

    # Ctrl-C reaches the whole process group: the front end decides when this stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        pipe = AdaptivePipeline.from_profile(Profile.model_validate_json(profile_json), **options)
    except BaseException as exc:
        conn.send(("error", _picklable(exc)))
        return
    queued = {"n": 0}
    pipe.set_queue_source(lambda: queued["n"])
    send_lock = threading.Lock()

    def state() -> dict[str, Any]:
        return {
            "tier": pipe.tier.name,
            "ready": pipe.ready,
            "ratio": pipe._latency_ratio,
            "quiet_s": time.monotonic() - pipe._ratio_at,
            "metrics": pipe.metrics.snapshot(),
        }

    conn.send(("started", {"default_size": list(pipe.default_size), "state": state()}))

    def handle(kind: str, number: int, args: tuple[Any, ...]) -> None:
        try:
            if kind == "warm":
                pipe.warm(*args)
                result: Any = None
            else:
                prompt, tier, kwargs, generator_state, waiting = args
                queued["n"] = waiting
                pipe.note_arrival()
                if generator_state is not None:

                    def restored(state: Any) -> torch.Generator:
                        generator = torch.Generator("cpu")
                        generator.set_state(state)
                        return generator

                    kwargs["generator"] = (
                        [restored(s) for s in generator_state]
                        if isinstance(generator_state, list)
                        else restored(generator_state)
                    )
                out = pipe(prompt, tier=tier, **kwargs)
                result = WorkerOutput(
                    images=list(out.images), tier=out.tier, steps=out.steps,
                    batch_size=getattr(out, "batch_size", 1), timings=dict(out.timings),
                )  # fmt: skip
            reply = ("ok", number, result, state())
        except BaseException as exc:
            reply = ("error", number, _picklable(exc), state())
        with send_lock:
            conn.send(reply)

    threads = max(1, int(options.get("max_concurrency", 1)) * int(options.get("max_batch", 1)))
    with ThreadPoolExecutor(max_workers=threads + 1, thread_name_prefix="autoq-gen") as pool:
        while True:
            try:
                kind, number, args = conn.recv()
            except (EOFError, OSError):
                return  # the front end is gone
            if kind == "stop":
                return
            pool.submit(handle, kind, number, args)


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (autoq's errors do), else a `WorkerError` with its
    message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return WorkerError(f"{type(exc).__name__}: {exc}")
