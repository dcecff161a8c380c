"""Bounded loopback load on `autoq serve`: adaptive tiers vs pinned to the top tier.

    python benchmarks/load.py [--profile profiles/] [--seconds 60] [--slo 2.0]

Starts the server on a free loopback port, measures the top tier's sustainable
throughput with one sequential client, then offers about 4x that rate for ``--seconds``
twice: adaptive (the policy picks tiers) and pinned (every request names the top tier).
Reports SLO attainment (share of all requests answered 200 within the SLO), completed
throughput, p50/p95 latency, rejections, and lost requests (anything that is neither 200
nor a deliberate 503/429). Results: benchmarks/results/load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(profile: str, port: int, slo: float) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "autoq.cli", "serve", "--profile", profile, "--port", str(port),
         "--slo", str(slo), "--max-queue", "4"],
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("server did not start")


async def offer(url: str, rate: float, seconds: float, body: dict) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            start = time.perf_counter()
            try:
                response = await client.post("/generate", json={**body, "seed": i})
                results.append((response.status_code, time.perf_counter() - start))
            except httpx.HTTPError:
                results.append((-1, time.perf_counter() - start))

        tasks = []
        begin = time.perf_counter()
        i = 0
        while time.perf_counter() - begin < seconds:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    return results


def summarise(results: list[tuple[int, float]], slo: float, seconds: float) -> dict:
    ok = sorted(t for code, t in results if code == 200)
    rejected = sum(1 for code, _ in results if code in (429, 503))
    lost = len(results) - len(ok) - rejected
    return {
        "requests": len(results),
        "slo_attainment": sum(1 for t in ok if t <= slo) / max(len(results), 1),
        "throughput_rps": len(ok) / seconds,
        "p50_s": statistics.median(ok) if ok else None,
        "p95_s": ok[int(0.95 * (len(ok) - 1))] if ok else None,
        "rejected": rejected,
        "lost": lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="profiles")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--slo", type=float, default=2.0)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    report: dict[str, object] = {"slo_s": args.slo, "seconds": args.seconds}
    server = start(args.profile, port, args.slo)
    try:
        top = httpx.get(f"{url}/tiers").json()["tiers"][0]["name"]
        times = []
        for i in range(5):  # the top tier's sustainable rate, one request at a time
            begin = time.perf_counter()
            httpx.post(f"{url}/generate", json={"prompt": "a red circle", "tier": top, "seed": i},
                       timeout=120)  # fmt: skip
            times.append(time.perf_counter() - begin)
        rate = 4 / statistics.median(times)
        report["top_tier"] = top
        report["offered_rps"] = rate
        body = {"prompt": "a red circle on a blue background"}
        adaptive = asyncio.run(offer(url, rate, args.seconds, body))
        report["adaptive"] = summarise(adaptive, args.slo, args.seconds)
        pinned = asyncio.run(offer(url, rate, args.seconds, {**body, "tier": top}))
        report["pinned_top"] = summarise(pinned, args.slo, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
