"""Images per second of `AdaptivePipeline` under closed-loop load, with and without
batching, on the shapes model.

    OMP_NUM_THREADS=2 python benchmarks/batching.py [--seconds 20] [--clients 8]

Each client thread calls the pipeline again as soon as it is answered (its own prompt
and seed each time), for ``--seconds``; one client alone, then ``--clients`` of them
without batching (``max_batch=1``) and with it (``max_batch=--clients``), on the same
tier (fp32, 10 steps). Uses a profile built from the model's own plans, so it needs no
prior tune. Results: benchmarks/results/batching.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from autoq.runtime import AdaptivePipeline, DefaultPolicy, ScriptedMonitor, Signals
from tests.runtime.conftest import MiB, make_profile

PROMPTS = ["a red circle", "a blue square", "a green star", "a pink triangle"]
RESULTS = Path("benchmarks/results")


def closed_loop(pipe: AdaptivePipeline, clients: int, seconds: float) -> dict:
    done: list[float] = []
    sizes: list[int] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(number: int) -> None:
        n = 0
        while time.monotonic() < stop:
            began = time.monotonic()
            out = pipe(
                PROMPTS[(number + n) % len(PROMPTS)],
                tier="quality",
                num_inference_steps=10,
                generator=torch.Generator().manual_seed(1000 * number + n),
            )
            with lock:
                done.append(time.monotonic() - began)
                sizes.append(getattr(out, "batch_size", 1))
            n += 1

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    done.sort()
    return {
        "clients": clients,
        "images": len(done),
        "images_per_s": round(len(done) / wall, 2),
        "latency_p50_s": round(done[len(done) // 2], 3),
        "mean_batch": round(sum(sizes) / len(sizes), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    monitor = ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)])

    def pipe(max_batch: int) -> AdaptivePipeline:
        made = AdaptivePipeline.from_profile(
            make_profile(), monitor=monitor, policy=DefaultPolicy(), device="cpu",
            max_batch=max_batch, batch_wait_s=0.05,
        )  # fmt: skip
        made.warm(["quality"])
        return made

    rows = {
        "one client": closed_loop(pipe(1), 1, args.seconds),
        f"{args.clients} clients, no batching": closed_loop(pipe(1), args.clients, args.seconds),
        f"{args.clients} clients, max_batch {args.clients}": closed_loop(
            pipe(args.clients), args.clients, args.seconds
        ),
    }
    base = rows["one client"]["images_per_s"]
    lines = [
        f"`OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/batching.py "
        f"--seconds {args.seconds:g} --clients {args.clients}` (shapes model, fp32, 10 steps)",
        "",
        "| load | images/s | vs one client | p50 latency s | mean batch |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {r['images_per_s']:.2f} | {r['images_per_s'] / base:.2f}x | "
            f"{r['latency_p50_s']:.3f} | {r['mean_batch']:.2f} |"
            for name, r in rows.items()
        ),
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batching.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    (RESULTS / "batching.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
