"""Progress of a tune wherever its output goes.

A terminal shows a progress bar (the callbacks of `autoq.tune.tune`); logs, CI and files
get lines: ``tune_phase`` when a phase starts, and ``tune_progress`` at least once a
minute while it runs (what, how many of how many, elapsed, expected remaining), also
inside one long step such as a reference image at real size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from autoq._logging import get_logger

__all__ = ["HEARTBEAT_S", "Progress"]

log = get_logger("autoq.tune")

HEARTBEAT_S = 60.0
"""Longest quiet spell of a tune's log: a phase that runs longer says where it is."""


class Progress:
    """Told ``(phase, done, total)`` as the tune goes; logs phase starts and a line at
    least every ``every_s`` seconds (with the seconds ``budget_left`` says the time budget
    leaves), and forwards each report to ``forward`` (a bar).

    `start` runs a daemon thread that calls `tick` every second, so a line comes even
    while one item of a phase takes minutes; tests call `tick` with their own clock.
    """

    def __init__(
        self,
        forward: Callable[[str, int, int], None] | None = None,
        *,
        every_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
        budget_left: Callable[[], float | None] | None = None,
    ) -> None:
        self.forward = forward
        self.budget_left = budget_left
        self.every_s = every_s
        self.clock = clock
        self.began = clock()
        self.phase: str | None = None
        self.done = self.total = 0
        self._phase_began = self._last_line = self.began
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        with self._lock:
            now = self.clock()
            if phase != self.phase:
                self.phase, self._phase_began = phase, now
                self.done, self.total = done, total
                self._line("tune_phase", now)
            else:
                self.done, self.total = done, total
                if now - self._last_line >= self.every_s:
                    self._line("tune_progress", now)
        if self.forward is not None:
            self.forward(phase, done, total)

    def tick(self) -> None:
        """Log where the tune is if nothing was logged for ``every_s`` seconds."""
        with self._lock:
            now = self.clock()
            if self.phase is not None and now - self._last_line >= self.every_s:
                self._line("tune_progress", now)

    def _line(self, event: str, now: float) -> None:
        self._last_line = now
        in_phase = now - self._phase_began
        fields: dict[str, object] = {
            "phase": self.phase,
            "elapsed_s": round(now - self.began),
            "phase_elapsed_s": round(in_phase),
        }
        if self.total:
            fields.update(done=self.done, total=self.total)
            if self.done:
                remaining = in_phase / self.done * (self.total - self.done)
                fields["expected_remaining_s"] = round(remaining)
        left = self.budget_left() if self.budget_left is not None else None
        if left is not None:  # a phase the budget bounds ends by then, whatever it expects
            fields["budget_left_s"] = round(max(left, 0.0))
        log.info(event, **fields)

    def start(self) -> Progress:
        def beat() -> None:
            while not self._stop.wait(1.0):
                self.tick()

        self._thread = threading.Thread(target=beat, name="autoq-tune-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
