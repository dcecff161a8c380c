"""Running the app under uvicorn with a hardened connection layer.

uvicorn times out idle keep-alive connections but not a client that trickles its request
headers (slowloris) or never sends them; `_TimedH11Protocol` closes a connection that has
not started a request within ``header_timeout_s`` of connecting or of its last response.
Bodies are timed by the app itself (`create_app`'s ``body_timeout_s``). Connections beyond
``max_connections`` get 503 from uvicorn (``limit_concurrency``). SIGTERM and SIGINT drain
in-flight requests for up to ``drain_s``, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from autoq._logging import get_logger

__all__ = ["run_server"]

log = get_logger("autoq.serve")


class _TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for the next request's headers."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        waiting_after = self.cycle
        self.loop.call_later(self.header_timeout_s, self._header_deadline, waiting_after)

    def _header_deadline(self, waiting_after: Any) -> None:
        # Still no new request cycle since the deadline was armed: headers never came.
        idle = self.cycle is None or self.cycle.response_complete
        if self.cycle is waiting_after and idle and not self.transport.is_closing():
            self.transport.close()


def run_server(
    app: Any,
    *,
    host: str,
    port: int,
    header_timeout_s: float = 10.0,
    keep_alive_s: int = 5,
    max_connections: int = 64,
    drain_s: int = 30,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT; then drain (at most ``drain_s``) and exit 0."""
    import uvicorn

    protocol = type(
        "TimedH11Protocol", (_TimedH11Protocol,), {"header_timeout_s": header_timeout_s}
    )

    def stop(signum: int, _frame: Any) -> None:
        # uvicorn has already drained and re-raises the signal it caught: exit cleanly.
        log.info("serve_stopped", signal=signal.Signals(signum).name)
        sys.exit(0)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            http=protocol,
            log_level="warning",
            timeout_keep_alive=keep_alive_s,
            limit_concurrency=max_connections,
            timeout_graceful_shutdown=drain_s,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
