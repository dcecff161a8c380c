"""Load a tuned profile and generate in a loop while another thread squeezes memory.

    autoq tune --profiles-dir profiles      # once, on this device
    python examples/adaptive_app.py         # prints the tier that served each request

The squeezer holds a growing block of real memory, then lets it go; the runtime steps
down to cheaper tiers while memory is short and comes back after its dwell window.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil

from autoq import AdaptivePipeline
from autoq.runtime import DefaultPolicy, SystemMonitor

MiB = 2**20


def main() -> None:
    profile_dir = "profiles"
    # Share the machine politely: this app may use 1.5 GiB more than it holds at start.
    budget = psutil.Process().memory_info().rss + 1536 * MiB
    monitor = SystemMonitor("cpu", interval_s=0.2, memory_limit_bytes=budget)
    pipe = AdaptivePipeline.from_profile(
        profile_dir, monitor=monitor, policy=DefaultPolicy(dwell_s=3), device="cpu"
    )
    print("tiers:", ", ".join(f"{t.name} ({t.plan.describe()})" for t in pipe.tiers))

    hog: list[np.ndarray] = []
    done = threading.Event()

    def squeeze() -> None:
        for _ in range(6):  # grow to 1.2 GiB of real, touched memory
            hog.append(np.ones(200 * MiB, dtype=np.uint8))
            time.sleep(1)
        time.sleep(3)
        hog.clear()  # release; the runtime climbs back after the dwell window
        done.set()

    threading.Thread(target=squeeze, daemon=True).start()
    request = 0
    while not done.is_set() or request < 30:
        out = pipe("a red circle on a blue background")
        held = sum(a.nbytes for a in hog) // MiB
        print(f"request {request:3d}  tier={out.tier:10s}  steps={out.steps:3d}  "
              f"held={held:5d} MiB  {out.timings['generation_s']:.2f}s")  # fmt: skip
        request += 1
    print("metrics:", pipe.metrics.snapshot()["requests"], "switches:", pipe.metrics.switches)


if __name__ == "__main__":
    main()
