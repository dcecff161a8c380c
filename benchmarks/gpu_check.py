"""The prepared GPU check (`make gpu-check`): everything CPU machines cannot prove, in one run.

    python benchmarks/gpu_check.py [--device cuda:0] [--out benchmarks/results/gpu_check.txt]

On a CUDA machine (docs/contributing.md: GPU install) it runs, each step with its own time limit
so the whole check stays under 8 minutes:

1. ``autoq backends --device cuda:0 --refresh``: every precision probed on the GPU;
2. the backend contract suite on the GPU (``AUTOQ_TEST_DEVICE=cuda:0 pytest tests/backends``);
3. a short ``autoq tune`` of the zoo model on the GPU (6 trials, 2 prompts, 4-8 steps);
4. a runtime memory squeeze: an `AdaptivePipeline` on the GPU serves requests from two
   client threads while another thread allocates real CUDA memory until only ~150 MiB are
   left, then frees it; the check passes when no request is lost and the pipeline stepped
   down to a tier that fits while the memory was taken.

Everything printed also goes to ``--out``. Exit code 0 when every step passed, 1 when one
failed, 2 at once (one line) when this machine has no usable CUDA device.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MiB = 2**20
BUDGET_S = {"backends": 150, "contract": 120, "tune": 150, "squeeze": 60}
"""Seconds per step: 480 s in all, the 8-minute ceiling. The probe gets the most: on a
fresh environment optimum-quanto builds its extension during the first probe."""


class Log:
    """Print and append to the output file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w", encoding="utf-8")

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from autoq.cli import main; main()", *args]


def run_step(log: Log, name: str, cmd: list[str], env: dict[str, str] | None = None) -> bool:
    """Run one command under its time limit; log its output and verdict."""
    log(f"## {name}: {' '.join(cmd[3:] if cmd[1] == '-c' else cmd[1:])}")
    start = time.monotonic()
    try:
        done = subprocess.run(
            cmd,
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
            capture_output=True,
            text=True,
            timeout=BUDGET_S[name],
        )
        output, ok = done.stdout + done.stderr, done.returncode == 0
        verdict = f"exit {done.returncode}"
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        ok, verdict = False, f"timed out after {BUDGET_S[name]} s"
    lines = output.strip().splitlines()
    for line in lines[-60:]:
        log(f"    {line}")
    log(f"-> {name}: {'PASS' if ok else 'FAIL'} ({verdict}, {time.monotonic() - start:.0f} s)")
    log()
    return ok


def squeeze(log: Log, device: str) -> bool:
    """Serve requests while another thread takes real CUDA memory; no request may be lost
    and the pipeline must step down to a tier that fits."""
    import torch

    from autoq.runtime import AdaptivePipeline, DefaultPolicy, SystemMonitor
    from tests.runtime.conftest import make_profile

    log(f"## squeeze: AdaptivePipeline on {device}, real allocations in another thread")
    start = time.monotonic()
    # Hand-made tiers (fp32 / bnb_nf4 / bnb_nf4 + bnb_int8) whose profiled peaks (300 / 120
    # / 60 MiB) make the policy's choice at ~150 MiB free unambiguous: not the first tier.
    profile = make_profile()
    monitor = SystemMonitor(device, interval_s=0.0)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["AUTOQ_CACHE_DIR"] = cache
        pipe = AdaptivePipeline.from_profile(
            profile, device=device, monitor=monitor, policy=DefaultPolicy(dwell_s=1.0)
        )
        done: list[str] = []
        failures: list[str] = []
        taken = threading.Event()
        release = threading.Event()
        squeezed_tiers: list[str] = []
        lock = threading.Lock()

        def hog() -> None:
            while len(done) < 4:
                time.sleep(0.01)
            free, _ = torch.cuda.mem_get_info(device)
            unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            size = max(free + unused - 150 * MiB, 0)
            try:
                block = torch.empty(size, dtype=torch.uint8, device=device)
            except Exception as exc:  # say so, instead of a misleading "never stepped down"
                log(f"    hog: could not allocate {size / 2**30:.1f} GiB: {exc}"[:300])
                release.set()
                return
            log(f"    hog: took {size / 2**30:.1f} GiB; available now "
                f"{monitor.sample().available_memory_bytes / MiB:.0f} MiB")  # fmt: skip
            taken.set()
            release.wait(timeout=60)
            del block
            torch.cuda.empty_cache()
            log("    hog: released")

        def request(i: int) -> str:
            output = pipe(
                "a red circle",
                num_inference_steps=2,
                generator=torch.Generator(device).manual_seed(i),
                output_type="np",
            )
            with lock:
                done.append(output.tier)
                if taken.is_set() and not release.is_set():
                    squeezed_tiers.append(output.tier)
                if len(squeezed_tiers) >= 6:
                    release.set()
            return str(output.tier)

        hog_thread = threading.Thread(target=hog, daemon=True)
        hog_thread.start()
        deadline = start + BUDGET_S["squeeze"]
        clients = ThreadPoolExecutor(max_workers=2)
        futures = [clients.submit(request, i) for i in range(20)]
        tiers = []
        for i, future in enumerate(futures):
            try:
                tiers.append(future.result(timeout=max(deadline - time.monotonic(), 1.0)))
            except Exception as exc:  # a lost request is what this step looks for
                failures.append(f"request {i}: {type(exc).__name__}: {exc}"[:300])
        clients.shutdown(wait=False, cancel_futures=True)
        release.set()
        hog_thread.join(timeout=10)
    snapshot = pipe.metrics.snapshot() if hasattr(pipe.metrics, "snapshot") else {}
    log(f"    tiers served, in order: {' '.join(tiers)}")
    log(f"    tiers while squeezed: {' '.join(squeezed_tiers) or '-'}")
    log(f"    metrics: {snapshot}")
    for failure in failures:
        log(f"    FAILED {failure}")
    first = profile.tiers[0].name
    stepped_down = any(t != first for t in squeezed_tiers)
    ok = not failures and stepped_down and len(tiers) == 20
    if not stepped_down:
        log("    the pipeline never left the first tier while memory was taken")
    log(f"-> squeeze: {'PASS' if ok else 'FAIL'} ({len(tiers)}/20 served, "
        f"{len(failures)} failed or lost, {time.monotonic() - start:.0f} s)")  # fmt: skip
    log()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.txt"))
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            f"gpu-check: no CUDA device here (torch {torch.__version__}, "
            "torch.cuda.is_available() is False); run it on a CUDA machine with a CUDA "
            "build of torch (docs/contributing.md: GPU install).",
            file=sys.stderr,
        )
        return 2
    index = torch.device(args.device).index or 0
    if index >= torch.cuda.device_count():
        print(f"gpu-check: {args.device} does not exist; this machine has "
              f"{torch.cuda.device_count()} CUDA device(s).", file=sys.stderr)  # fmt: skip
        return 2

    log = Log(Path(args.out))
    start = time.monotonic()
    log(f"# autoq gpu-check on {torch.cuda.get_device_name(index)} ({args.device}), "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}")  # fmt: skip
    log(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    log()
    results = {
        "backends": run_step(
            log, "backends", _cli("backends", "--device", args.device, "--refresh")
        ),
        "contract": run_step(
            log,
            "contract",
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-rfEs",
                "--no-header",
                "-p",
                "no:cacheprovider",
                "tests/backends",
            ],
            env={"AUTOQ_TEST_DEVICE": args.device},
        ),
    }
    with tempfile.TemporaryDirectory() as profiles:
        results["tune"] = run_step(
            log,
            "tune",
            _cli("tune", "--device", args.device, "--trials", "6", "--n-prompts", "2",
                 "--steps", "4:8", "--profiles-dir", profiles, "--no-report"),
        )  # fmt: skip
    try:
        results["squeeze"] = squeeze(log, args.device)
    except Exception as exc:
        log(f"-> squeeze: FAIL ({type(exc).__name__}: {exc})")
        results["squeeze"] = False
    log(f"# {sum(results.values())}/{len(results)} steps passed in "
        f"{time.monotonic() - start:.0f} s: "
        + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in results.items()))  # fmt: skip
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
