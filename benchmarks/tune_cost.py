"""What a default `autoq tune` costs against model size: wall time per phase, peak memory,
the profile it ends with, and how well its latency predictor did.

    python benchmarks/tune_cost.py zoo                         # the embedded shapes model
    python benchmarks/tune_cost.py sd15 --model /tmp/sd15      # benchmarks/models.py sd15
    python benchmarks/tune_cost.py sdxl --model /tmp/sdxl      # benchmarks/models.py sdxl

Each runs ``autoq tune`` as a new user would, in a fresh process with its output piped
(so progress comes as log lines), with the default budget (``--timeout 600``) unless
``--timeout`` is given, at 256 px for the real-size architectures (random weights: the
latency, memory and cost are the architecture's; quality comes from the zoo), scored by
the zoo's CLIP scorer on 8 of its prompts, in a fresh cache. Phases are timed from the
``tune_phase`` log lines; peak RSS is the tune process's (``ru_maxrss``). Results go to
benchmarks/results/tune-cost-NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

RESULTS = Path("benchmarks/results")


def _phases(lines: list[dict], wall_s: float) -> list[dict]:
    """Seconds from each phase's first line to the next phase's (the last to the end)."""
    starts = [line for line in lines if line.get("event") == "tune_phase"]
    stamps = [datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")) for line in starts]
    out = []
    for i, line in enumerate(starts):
        began = (stamps[i] - stamps[0]).total_seconds()
        end = (stamps[i + 1] - stamps[0]).total_seconds() if i + 1 < len(starts) else wall_s
        out.append({"phase": line["phase"], "start_s": round(began, 1), "s": round(end - began, 1)})
    return out


def _predictions(db: Path) -> list[dict]:
    """Predicted and measured latency of every measured trial of the study."""
    import optuna

    from autoq.pipeline import PipelinePlan

    storage = f"sqlite:///{db}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        evidence = trial.user_attrs.get("evidence") or {}
        metrics = trial.user_attrs.get("metrics") or {}
        if "predicted_latency_s" in evidence and metrics.get("latency_s"):
            predicted, measured = evidence["predicted_latency_s"], metrics["latency_s"]
            rows.append(
                {
                    "plan": PipelinePlan.model_validate(trial.user_attrs["plan"]).describe(),
                    "predicted_s": round(predicted, 3),
                    "measured_s": round(measured, 3),
                    "error": round(abs(predicted - measured) / measured, 3),
                }
            )
    return rows


def run(name: str, model: str | None, timeout: int, threads: str | None) -> dict:
    from autoq.zoo import model_path, prompts

    work = Path(tempfile.mkdtemp(prefix=f"tune-cost-{name}-"))
    prompt_file = work / "prompts.txt"
    prompt_file.write_text("\n".join(prompts("shapes")[:8]) + "\n", encoding="utf-8")
    command = [str(Path(sys.executable).with_name("autoq")), "tune", "--timeout", str(timeout),
               "--profiles-dir", str(work / "profiles")]  # fmt: skip
    if model is not None:
        command += ["--model", model, "--scorer", str(model_path("shapes") / "scorer"),
                    "--prompts", str(prompt_file), "--height", "256", "--width", "256"]  # fmt: skip
    env = {**os.environ, "AUTOQ_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    began = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall_s = time.monotonic() - began
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    lines = []
    for raw in done.stderr.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    result: dict = {
        "model": name,
        "command": " ".join(command),
        "returncode": done.returncode,
        "budget_s": timeout,
        "wall_s": round(wall_s, 1),
        "peak_rss_bytes": rss,
        "phases": _phases(lines, wall_s),
        "first_line_s": None,
        "longest_quiet_s": None,
        "cuts": [line["left_out"] for line in lines if line.get("event") == "time_budget_cut"],
        "threads": threads or "default",
        "tail": done.stderr.splitlines()[-3:] if done.returncode else [],
    }
    stamps = [datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
              for line in lines if "timestamp" in line]  # fmt: skip
    if stamps:
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
        result["longest_quiet_s"] = round(max(gaps, default=0.0), 1)
    profiles = sorted((work / "profiles").glob("*.json"))
    if profiles:
        profile = json.loads(profiles[0].read_text(encoding="utf-8"))
        reference = profile["reference"]["metrics"]
        result["fp32_weight_bytes"] = reference["weight_bytes"]
        result["tiers"] = [
            {"name": t["name"], "plan": t.get("plan"), "latency_s": t["metrics"]["latency_s"],
             "peak_memory_bytes": t["metrics"]["peak_memory_bytes"]}
            for t in profile["tiers"]
        ]  # fmt: skip
        result["reference_latency_s"] = reference["latency_s"]
    dbs = sorted((work / "profiles").glob("*.optuna.db"))
    if dbs:
        rows = _predictions(dbs[0])
        result["predictions"] = rows
        if rows:
            result["prediction_median_error"] = statistics.median(r["error"] for r in rows)
    return result


def _markdown(result: dict) -> str:
    gib = 2**30
    lines = [
        f"`{result['command']}` (torch threads: {result['threads']})",
        "",
        f"- wall {result['wall_s']:.0f} s for a {result['budget_s']} s budget "
        f"(exit {result['returncode']}); peak RSS {result['peak_rss_bytes'] / gib:.2f} GiB"
        + (
            f", fp32 weights {result['fp32_weight_bytes'] / gib:.2f} GiB"
            if "fp32_weight_bytes" in result
            else ""
        ),
        f"- longest gap between log lines {result['longest_quiet_s']} s",
        f"- tiers: {len(result.get('tiers', []))}",
        "",
        "| phase | start s | seconds |",
        "|---|---:|---:|",
        *(f"| {p['phase']} | {p['start_s']:.0f} | {p['s']:.0f} |" for p in result["phases"]),
        "",
        "Left out by the budget:",
        *(f"- {cut}" for cut in result["cuts"]),
    ]
    if result.get("predictions"):
        lines += [
            "",
            f"Latency predicted before building vs measured, median error "
            f"{result['prediction_median_error']:.1%}:",
            "",
            "| plan | predicted s | measured s | error |",
            "|---|---:|---:|---:|",
            *(
                f"| {r['plan']} | {r['predicted_s']:.2f} | {r['measured_s']:.2f} | "
                f"{r['error']:.1%} |"
                for r in result["predictions"]
            ),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=["zoo", "sd15", "sdxl"])
    parser.add_argument("--model", help="the diffusers folder benchmarks/models.py wrote")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--threads", help="OMP_NUM_THREADS of the tune (default: unset)")
    args = parser.parse_args()
    if args.name != "zoo" and not args.model:
        parser.error(f"{args.name} needs --model DIR (python benchmarks/models.py {args.name} DIR)")
    result = run(args.name, args.model if args.name != "zoo" else None, args.timeout, args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"tune-cost-{args.name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(_markdown(result), encoding="utf-8")
    print(_markdown(result))


if __name__ == "__main__":
    main()
