"""`autoq serve` as a real process on a loopback port, spoken to over HTTP."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from autoq.profile import write_profile
from tests.runtime.conftest import make_profile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_real_server_generates_cuts_slow_headers_and_drains_on_sigterm(tmp_path: Path) -> None:
    profile = write_profile(make_profile(), tmp_path / "profile.json")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "autoq.cli", "serve", "--profile", str(profile),
         "--port", str(port), "--device", "cpu", "--header-timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:  # poll readiness, bounded; the server loads the model first
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.5)
        response = httpx.post(
            f"{base}/generate", json={"prompt": "a blue star", "steps": 2, "seed": 1}, timeout=120
        )
        assert response.status_code == 200, response.text
        assert response.json()["tier"] in {"quality", "balanced", "minimal"}
        assert "autoq_requests_total" in httpx.get(f"{base}/metrics").text

        # A client that never finishes its headers is cut off.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            assert slow.recv(1024) == b""  # closed by the server, no response

        # SIGTERM while a request is in flight: it completes, then the process exits 0.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(
                httpx.post, f"{base}/generate",
                json={"prompt": "a red circle", "steps": 8, "seed": 2}, timeout=120,
            )  # fmt: skip
            while "autoq_queue_depth 1.0" not in httpx.get(f"{base}/metrics").text:
                assert not in_flight.done(), in_flight.result().text
            server.send_signal(signal.SIGTERM)
            assert in_flight.result().status_code == 200
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)


def test_non_loopback_bind_without_key_is_refused(tmp_path: Path) -> None:
    profile = write_profile(make_profile(), tmp_path / "profile.json")
    result = subprocess.run(
        [sys.executable, "-m", "autoq.cli", "serve", "--profile", str(profile),
         "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "without an API key" in result.stderr
