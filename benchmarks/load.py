"""The adaptive runtime under load and under a memory squeeze, on the profile `make demo`
writes for this machine (``profiles/``, where `load_profile` picks this device's; or
``--profile`` for another).

    OMP_NUM_THREADS=1 python benchmarks/load.py load [--seconds 60] [--slo SECONDS] [--max-batch N]
    OMP_NUM_THREADS=1 python benchmarks/load.py burst [--seconds 15] [--clients 16]
    OMP_NUM_THREADS=1 python benchmarks/load.py squeeze [--seconds 40]

``load`` starts `autoq serve` on a loopback port, measures what the best-quality tier
sustains alone, then offers ``--load-factor`` (default 4) times that rate for
``--seconds`` three times: adaptive (the policy picks tier and steps), pinned to the best
tier, and the oracle (the best static tier + steps for this load: the highest-quality
option whose solo latency sustains the offered rate, else the fastest). Reports SLO
attainment (share of offered requests answered 200 within the SLO), goodput,
completed/s, p50/p95, rejections, lost requests and adaptive goodput / oracle goodput.

``burst`` starts the server twice, generating in a worker process and in its own, and
runs one closed-loop client, then ``--clients`` (each re-posts as soon as it is answered),
for ``--seconds`` each: images served and 503s answered per second, served latency.

``squeeze`` runs the runtime in-process while another thread allocates real memory
(numpy, touched) in steps and frees it, and counts switches, OOM retries and requests lost.
Results: benchmarks/results/load.json, burst.json and squeeze.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path("benchmarks/results")
PROMPT = "a red circle on a blue background"
MiB = 2**20


# -- load ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    profile: str, port: int, slo: float, max_queue: int, *extra: str
) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autoq.cli",
            "serve",
            "--profile",
            profile,
            "--port",
            str(port),
            "--slo",
            str(slo),
            "--max-queue",
            str(max_queue),
            "--warm-all",
            "--device",
            "cpu",
            *extra,
        ],
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit("server did not become ready")


async def offer(url: str, rate: float, seconds: float, body: dict) -> list[dict]:
    results: list[dict] = []
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            begin = time.perf_counter()
            try:
                response = await client.post("/generate", json={**body, "seed": i})
                answer = response.json() if response.status_code == 200 else {}
                results.append(
                    {
                        "code": response.status_code,
                        "s": time.perf_counter() - begin,
                        "tier": answer.get("tier"),
                        "steps": answer.get("steps"),
                    }
                )
            except httpx.HTTPError:
                results.append({"code": -1, "s": time.perf_counter() - begin})

        tasks = []
        begin = time.perf_counter()
        i = 0
        while time.perf_counter() - begin < seconds:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
    return results


def summarise(results: list[dict], slo: float, seconds: float) -> dict:
    ok = sorted(r["s"] for r in results if r["code"] == 200)
    within = sum(1 for t in ok if t <= slo)
    rejected = sum(1 for r in results if r["code"] in (429, 503))
    served = Counter(f"{r['tier']}@{r['steps']}" for r in results if r["code"] == 200)
    return {
        "offered": len(results),
        "slo_attainment": within / max(len(results), 1),
        "goodput_rps": within / seconds,
        "completed_rps": len(ok) / seconds,
        "p50_s": statistics.median(ok) if ok else None,
        "p95_s": ok[int(0.95 * (len(ok) - 1))] if ok else None,
        "rejected": rejected,
        "lost": len(results) - len(ok) - rejected,
        "served": dict(served.most_common()),
    }


def solo(url: str, body: dict, n: int = 4) -> float | None:
    """Median seconds of ``body`` alone; ``None`` when the service refuses it (503: its
    own cost exceeds the SLO, so it is no option under this SLO)."""
    times = []
    for i in range(n):
        begin = time.perf_counter()
        response = httpx.post(
            f"{url}/generate", json={**body, "prompt": PROMPT, "seed": i}, timeout=120
        )
        if response.status_code == 503:
            return None
        response.raise_for_status()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def run_load(args: argparse.Namespace) -> dict:
    from autoq.profile import load_profile

    # What the server will serve: this device's (or its device class's).
    profile = load_profile(args.profile, allow_mismatch=args.allow_mismatch)
    if args.slo is None:  # twice what the best tier measured alone: one generation of wait
        best_tier = max(profile.tiers, key=lambda t: t.metrics.clip_score)
        args.slo = round(2 * best_tier.metrics.latency_s, 2)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = ["--max-batch", str(args.max_batch)]
    if args.allow_mismatch:
        extra.append("--allow-mismatch")
    server = start(args.profile, port, args.slo, args.max_queue, *extra)
    report: dict[str, object] = {
        "max_batch": args.max_batch,
        "profile": args.profile,
        "tuned_on": profile.fingerprint.fingerprint_id,
        "slo_s": args.slo,
        "seconds": args.seconds,
        "max_queue": args.max_queue,
        "load_factor": args.load_factor,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        tiers = httpx.get(f"{url}/tiers").json()["tiers"]
        best = max(tiers, key=lambda t: t["clip_score"])
        # Static options: every tier at its own steps, and at its fewest allowed steps.
        options = []
        for t in tiers:
            for steps in sorted({t["steps"], t["min_steps"] or t["steps"]}, reverse=True):
                options.append((t["clip_score"], steps, t["name"]))
        measured = {
            (name, steps): solo(url, {"tier": name, "steps": steps})
            for _clip, steps, name in options
        }
        refused = [f"{n}@{s}" for (n, s), v in measured.items() if v is None]
        solo_s = {k: v for k, v in measured.items() if v is not None}
        options = [o for o in options if (o[2], o[1]) in solo_s]
        report["refused_alone"] = refused  # over the SLO by their own cost
        rate = args.load_factor / solo_s[(best["name"], best["steps"])]
        sustainable = [
            o
            for o in sorted(options, reverse=True)
            if rate * solo_s[(o[2], o[1])] <= 1 and solo_s[(o[2], o[1])] <= args.slo
        ]
        _clip, oracle_steps, oracle_tier = (
            sustainable[0] if sustainable else min(options, key=lambda o: solo_s[(o[2], o[1])])
        )
        report.update(
            best_tier=best["name"],
            offered_rps=rate,
            solo_s={f"{n}@{s}": v for (n, s), v in solo_s.items()},
            oracle=f"{oracle_tier}@{oracle_steps}",
        )
        body = {"prompt": PROMPT}
        modes = {
            "adaptive": body,
            "pinned_best": {**body, "tier": best["name"], "steps": best["steps"]},
            "oracle_static": {**body, "tier": oracle_tier, "steps": oracle_steps},
        }
        for mode, mode_body in modes.items():
            results = asyncio.run(offer(url, rate, args.seconds, mode_body))
            report[mode] = summarise(results, args.slo, args.seconds)
            print(mode, json.dumps(report[mode]), flush=True)
        oracle_goodput = report["oracle_static"]["goodput_rps"]  # type: ignore[index]
        adaptive_goodput = report["adaptive"]["goodput_rps"]  # type: ignore[index]
        report["adaptive_over_oracle_goodput"] = adaptive_goodput / max(oracle_goodput, 1e-9)
    finally:
        server.terminate()
        report["server_exit_code"] = server.wait(timeout=60)
    return report


# -- burst: closed-loop clients -------------------------------------------------------


async def closed_loop(url: str, clients: int, seconds: float) -> list[dict]:
    """``clients`` each re-post as soon as they are answered, for ``seconds``."""
    results: list[dict] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(number: int) -> None:
            i = 0
            while time.perf_counter() < stop:
                begin = time.perf_counter()
                body = {"prompt": PROMPT, "seed": 1000 * number + i}
                try:
                    code = (await client.post("/generate", json=body)).status_code
                except httpx.HTTPError:
                    code = -1
                results.append({"code": code, "s": time.perf_counter() - begin})
                i += 1

        await asyncio.gather(*(one(n) for n in range(clients)))
    return results


def run_burst(args: argparse.Namespace) -> dict:
    """Closed-loop clients against the server, generation in a worker process and in
    the server's own: images served per second, answered 503 per second, and the served
    requests' latency; one client alone first, as the reference."""
    from autoq.profile import load_profile

    profile = load_profile(args.profile, allow_mismatch=args.allow_mismatch)
    best_tier = max(profile.tiers, key=lambda t: t.metrics.clip_score)
    slo = args.slo or round(4 * best_tier.metrics.latency_s, 2)
    extra = ["--allow-mismatch"] if args.allow_mismatch else []
    report: dict[str, object] = {
        "profile": args.profile, "slo_s": slo, "seconds": args.seconds,
        "clients": args.clients, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }  # fmt: skip
    for mode in ("--worker-process", "--in-process"):
        port = free_port()
        server = start(args.profile, port, slo, args.max_queue, mode, *extra)
        try:
            url = f"http://127.0.0.1:{port}"
            for clients in (1, args.clients):
                results = asyncio.run(closed_loop(url, clients, args.seconds))
                ok = sorted(r["s"] for r in results if r["code"] == 200)
                row = {
                    "served_per_s": len(ok) / args.seconds,
                    "rejected_per_s": sum(r["code"] == 503 for r in results) / args.seconds,
                    "p50_s": statistics.median(ok) if ok else None,
                    "max_s": ok[-1] if ok else None,
                }
                report[f"{mode.strip('-')}, {clients} clients"] = row
                print(mode, clients, json.dumps(row), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    return report


# -- memory squeeze ------------------------------------------------------------------


def run_squeeze(args: argparse.Namespace) -> dict:
    import numpy as np
    import psutil
    import torch

    from autoq.runtime import AdaptivePipeline, DefaultPolicy, SystemMonitor

    pipe_probe = AdaptivePipeline.from_profile(args.profile, device="cpu")
    peaks = {t.name: t.metrics.peak_memory_bytes for t in pipe_probe.tiers}
    pipe_probe.warm([t.name for t in pipe_probe.tiers])  # every tier built and cached
    rss = psutil.Process().memory_info().rss
    best, smallest = max(peaks.values()), min(peaks.values())
    budget = rss + int(1.3 * best)
    hog_bytes = int(1.3 * best) - smallest // 2  # leaves room for the smallest tier only
    monitor = SystemMonitor("cpu", interval_s=0.1, memory_limit_bytes=budget)
    pipe_probe.monitor = monitor
    pipe_probe.policy = DefaultPolicy(dwell_s=args.dwell)
    hog: list[np.ndarray] = []
    stop = threading.Event()
    timeline: list[tuple[float, int]] = []

    def squeeze() -> None:
        begin = time.monotonic()
        while not stop.is_set():
            for _ in range(4):  # grow in 4 steps over 4 s, hold 4 s, release, rest 8 s
                hog.append(np.ones(hog_bytes // 4, dtype=np.uint8))
                timeline.append((time.monotonic() - begin, sum(a.nbytes for a in hog)))
                if stop.wait(1):
                    return
            if stop.wait(4):
                return
            hog.clear()
            timeline.append((time.monotonic() - begin, 0))
            if stop.wait(8):
                return

    threading.Thread(target=squeeze, daemon=True).start()
    served, lost = Counter(), 0
    begin = time.monotonic()
    i = 0
    while time.monotonic() - begin < args.seconds:
        try:
            out = pipe_probe(PROMPT, generator=torch.Generator().manual_seed(i))
            served[out.tier] += 1
        except Exception as exc:  # counted: the point is that none happen
            lost += 1
            print("lost:", type(exc).__name__, str(exc)[:100])
        i += 1
    stop.set()
    snap = pipe_probe.metrics.snapshot()
    return {
        "profile": args.profile,
        "seconds": args.seconds,
        "dwell_s": args.dwell,
        "budget_above_rss_mib": (budget - rss) / MiB,
        "hog_mib": hog_bytes / MiB,
        "tier_peaks_mib": {k: v / MiB for k, v in peaks.items()},
        "requests": i,
        "served": dict(served),
        "lost": lost,
        "switches": snap["switches"] - 1,  # minus the start
        "oom_retries": snap["oom_retries"],
        "max_switches_by_dwell": 2 * (args.seconds // args.dwell + 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    load = sub.add_parser("load")
    load.add_argument("--profile", default="profiles", help="a profile or folder")
    load.add_argument("--seconds", type=float, default=60)
    load.add_argument("--slo", type=float, default=None, help="default: 2x the best tier")
    load.add_argument("--max-queue", type=int, default=8)
    load.add_argument(
        "--load-factor", type=float, default=4.0, help="offered rate / what the best tier sustains"
    )
    load.add_argument("--max-batch", type=int, default=1, help="autoq serve --max-batch")
    load.add_argument("--allow-mismatch", action="store_true", help="a profile tuned elsewhere")
    burst = sub.add_parser("burst")
    burst.add_argument("--profile", default="profiles", help="a profile or folder")
    burst.add_argument("--seconds", type=float, default=15)
    burst.add_argument("--clients", type=int, default=16)
    burst.add_argument("--slo", type=float, default=None, help="default: 4x the best tier")
    burst.add_argument("--max-queue", type=int, default=8)
    burst.add_argument("--allow-mismatch", action="store_true", help="a profile tuned elsewhere")
    squeeze = sub.add_parser("squeeze")
    squeeze.add_argument("--profile", default="profiles", help="a profile or folder")
    squeeze.add_argument("--seconds", type=float, default=40)
    squeeze.add_argument("--dwell", type=float, default=5)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = {"load": run_load, "burst": run_burst, "squeeze": run_squeeze}
    report = runs[args.what](args)
    name = args.what
    if args.what == "load" and args.load_factor != 4:
        name += f"-x{args.load_factor:g}"
    if args.what == "load" and args.max_batch != 1:
        name += f"-batch{args.max_batch}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
