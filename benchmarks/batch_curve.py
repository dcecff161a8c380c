"""Batch curves at real size: one pipeline call of 1, 2, 4, ... prompts, timed the way a
tune times a tier (`autoq.tune._measure.time_batch`), on the SD1.5 or SDXL architecture
with random weights, built offline.

    OMP_NUM_THREADS=2 python benchmarks/batch_curve.py [--family sd15] [--size 256]
        [--steps 4] [--max-batch 4] [--plans fp32,bf16,openvino]

Each plan's sizes are timed in one run, after a one-step call of the same size (which
also measures the peak). Results: benchmarks/results/batch_curve_<family>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

RESULTS = Path("benchmarks/results")
PROMPTS = ["a red circle", "a blue square", "a green star", "a pink triangle"]


def _plan(name: str, components: list[str], steps: int) -> object:
    from autoq.pipeline import PipelinePlan

    if name == "openvino":  # UNet and VAE converted, the text encoder in torch
        return PipelinePlan(
            precisions=dict.fromkeys(components, "fp32"),
            execution={c: "openvino" for c in components if c in ("unet", "vae")},
            steps=steps,
        )
    return PipelinePlan(precisions=dict.fromkeys(components, name), steps=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--plans", default="fp32,bf16,openvino")
    args = parser.parse_args()

    from autoq.pipeline import ComponentCache, assemble, module_components
    from autoq.tune._measure import time_batch
    from benchmarks.models import build

    base = build(args.family)
    components = list(module_components(base))
    cache = ComponentCache(base, max_bytes=64 * 2**30)
    sizes = [1 << i for i in range(args.max_batch.bit_length()) if 1 << i <= args.max_batch]
    rows = []
    for name in args.plans.split(","):
        plan = _plan(name, components, args.steps)
        pipe = assemble(cache, plan)
        for batch in sizes:
            images = [(PROMPTS[i % len(PROMPTS)], i) for i in range(batch)]
            seconds, peak = time_batch(
                pipe, images, args.steps, 5.0, (args.size, args.size), torch.device("cpu")
            )
            rows.append({"plan": name, "batch": batch, "seconds": seconds, "peak_bytes": peak})
            print(json.dumps(rows[-1]), flush=True)
        cache.retain(set())  # one plan's components at a time
    meta = {
        "family": args.family,
        "size": args.size,
        "steps": args.steps,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "date": date.today().isoformat(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"batch_curve_{args.family}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"{args.family} architecture (random weights), {args.size} px, {args.steps} steps, "
        f"guidance 5, {meta['threads']} threads, {meta['date']}",
        "",
        "| plan | batch | seconds per call | images/s | vs batch 1 | peak GiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        alone = next(r for r in rows if r["plan"] == row["plan"] and r["batch"] == 1)
        per_second = row["batch"] / row["seconds"]
        gain = per_second / (1 / alone["seconds"])
        lines.append(
            f"| {row['plan']} | {row['batch']} | {row['seconds']:.2f} | {per_second:.2f} | "
            f"{gain:.2f}x | {row['peak_bytes'] / 2**30:.2f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
