"""Dynamic batching: compatible requests waiting together run as one pipeline call.

Requests are compatible when everything but their prompt, negative prompt and generator
is the same (tier asked for, steps, size, guidance, every other argument). Each keeps its
own generator, so its image is the one it would get alone, up to float rounding. The
request that gets a generation slot first leads: holding the slot, it waits until
``wait_s`` after its own arrival (sooner where its latency objective leaves less) for
more compatible requests (not at all when
``max_batch`` of them already wait, nor when it waited that long for the slot), takes up
to ``max_batch``, runs them and hands each its own image. The others never wait for a
slot once a leader took them. A leader only takes its own kind; requests of another shape
lead batches of their own when they get a slot.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BATCHED", "Batcher", "FairSlots", "Request", "batch_key", "split_output"]

BATCHED = ("prompt", "negative_prompt", "generator")
"""Arguments that may differ within a batch: each request keeps its own."""


def batch_key(tier: str | None, kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """What must match for two requests to share a call; ``None``: this one runs alone
    (several images per prompt, or arguments such as tensors that cannot be compared)."""
    if int(kwargs.get("num_images_per_prompt") or 1) != 1:
        return None
    rest = {k: v for k, v in kwargs.items() if k not in BATCHED}
    if not all(isinstance(v, str | int | float | bool | type(None)) for v in rest.values()):
        return None
    return (tier, *sorted(rest.items()))


@dataclass
class Request:
    """One caller's request, waiting for (or taken into) a batch."""

    prompt: str
    kwargs: dict[str, Any]
    key: tuple[Any, ...]
    tier: int | None = None
    """The tier asked for by index (``None``: the policy's choice)."""
    arrived: float = field(default_factory=time.monotonic)
    result: Future[Any] = field(default_factory=Future)
    taken: bool = False


def split_output(output: Any, count: int, index: int) -> Any:
    """Request ``index``'s part of a batch's pipeline output: its image, and its entry of
    every other per-image list (such as ``nsfw_content_detected``)."""
    part = copy.copy(output)
    for name, value in list(output.items()):
        if isinstance(value, list) and len(value) == count:
            part[name] = [value[index]]
    return part


class Batcher:
    """Groups compatible requests into batches of at most ``max_batch``, waiting at most
    ``wait_s`` for a batch to fill, and never past ``start_by(leader)`` (the latest
    start at which the leader still makes its latency objective; ``None``: no bound).
    ``acquire``/``release`` are the caller's generation slot; ``run(requests)``
    generates a batch and returns one output per request."""

    def __init__(
        self,
        *,
        max_batch: int,
        wait_s: float,
        acquire: Callable[[float], bool],
        release: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        start_by: Callable[[Request], float | None] | None = None,
    ) -> None:
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._acquire, self._release = acquire, release
        self._clock = clock
        self._start_by = start_by
        self._pending: list[Request] = []
        self._cond = threading.Condition()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._pending)

    def submit(self, request: Request, run: Callable[[Sequence[Request]], list[Any]]) -> Any:
        """``request``'s output, generated alone or in a batch with compatible others."""
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
        while not request.taken:
            if self._acquire(0.02):  # a slot: lead a batch, unless already taken
                try:
                    batch = self._gather(request)
                    if batch:
                        self._run(batch, run)
                finally:
                    self._release()
        return request.result.result()

    def _gather(self, leader: Request) -> list[Request]:
        """The batch ``leader`` runs: compatible waiting requests, oldest first, after
        waiting up to ``wait_s`` from the leader's arrival for it to fill."""
        with self._cond:
            if leader.taken:
                return []
            until = leader.arrived + self.wait_s
            latest = self._start_by(leader) if self._start_by is not None else None
            if latest is not None:
                until = min(until, latest)
            while True:
                batch = [r for r in self._pending if r.key == leader.key][: self.max_batch]
                left = until - self._clock()
                if len(batch) >= self.max_batch or left <= 0:
                    break
                self._cond.wait(left)
            if leader not in batch:  # older ones filled it: lead it anyway, join the next
                batch = [leader, *batch[: self.max_batch - 1]]
            for request in batch:
                request.taken = True
                self._pending.remove(request)
            return batch

    @staticmethod
    def _run(batch: list[Request], run: Callable[[Sequence[Request]], list[Any]]) -> None:
        try:
            outputs = run(batch)
        except BaseException as exc:
            for request in batch:
                request.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for request, output in zip(batch, outputs, strict=True):
            request.result.set_result(output)


class FairSlots:
    """At most ``count`` holders at once; waiters get a slot first come, first served.

    `threading.Semaphore` promises no order: under load, a caller that just released a
    slot and asks again usually gets it back while others wait (closed-loop clients then
    starve). Here a released slot goes straight to the oldest waiter. A waiter whose
    ``timeout`` passes leaves the queue.
    """

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: collections.deque[threading.Event] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            granted = threading.Event()
            self._waiters.append(granted)
        if granted.wait(timeout):
            return True
        with self._lock:
            if granted.is_set():  # handed over just as the wait ended
                return True
            self._waiters.remove(granted)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes on without being freed
            else:
                self._free += 1
