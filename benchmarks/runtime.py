"""The adaptive runtime's own costs, on the shapes model.

    python benchmarks/runtime.py

Measures: policy decision time per request; warm tier switch (components cached); cold
switch from the on-disk quantized cache against a plain fp32 `from_pretrained` of the
same components; and switches per minute under an oscillating memory signal (scripted
clock). Uses a profile built from the model's own plans (fp32 / bnb_nf4 / bnb_int8 mixes)
so it needs no prior tune. Results: benchmarks/results/runtime.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoq.runtime import AdaptivePipeline, DefaultPolicy, ScriptedMonitor, Signals, tier_views
from tests.runtime.conftest import MiB, make_profile


def decision_time(policy: DefaultPolicy, profile) -> float:
    views = tier_views(profile.tiers)
    signals = Signals(available_memory_bytes=150 * MiB, queue_depth=2)
    start = time.perf_counter()
    n = 20_000
    for i in range(n):
        policy.decide(views, i % 3, signals, float(i))
    return (time.perf_counter() - start) / n


def main() -> None:
    import os

    from diffusers import StableDiffusionPipeline

    from autoq.pipeline import pipeline_folder

    profile = make_profile()
    results: dict[str, object] = {}
    results["decision_ms"] = decision_time(DefaultPolicy(), profile) * 1000

    with tempfile.TemporaryDirectory() as cache:
        os.environ["AUTOQ_CACHE_DIR"] = cache
        monitor = ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)])
        pipe = AdaptivePipeline.from_profile(profile, monitor=monitor, device="cpu")
        for name in ("minimal", "quality"):  # build (and store) every tier once
            pipe.pin(name)
        warm = []
        for _ in range(10):
            for name in ("minimal", "quality"):
                start = time.perf_counter()
                pipe.pin(name)
                warm.append(time.perf_counter() - start)
        results["warm_switch_ms"] = statistics.median(warm) * 1000

        # Cold: a new runtime (new process state) whose quantized components come from disk.
        cold = []
        for _ in range(3):
            fresh = AdaptivePipeline.from_profile(profile, monitor=monitor, device="cpu")
            start = time.perf_counter()
            fresh.pin("minimal")
            cold.append(time.perf_counter() - start)
        fp32 = []
        for _ in range(3):
            start = time.perf_counter()
            StableDiffusionPipeline.from_pretrained(pipeline_folder("zoo:shapes"))
            fp32.append(time.perf_counter() - start)
        results["cold_switch_from_disk_s"] = statistics.median(cold)
        results["fp32_from_pretrained_s"] = statistics.median(fp32)

    # Oscillating memory, one sample per second for 10 minutes of scripted clock.
    policy = DefaultPolicy(dwell_s=30)
    views = tier_views(profile.tiers)
    current, switches = 0, 0
    for second in range(600):
        available = 10_000 if (second // 7) % 2 else 150  # flips every 7 s
        decision = policy.decide(views, current, Signals(available * MiB), float(second))
        switches += decision.tier != current
        current = decision.tier
    results["switches_per_minute_oscillating"] = switches / 10
    results["dwell_s"] = 30

    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "runtime.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
