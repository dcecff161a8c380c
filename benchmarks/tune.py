"""How well and how fast `autoq tune` searches, on the embedded shapes model.

    python benchmarks/tune.py wall                       # (a) wall time of the default `autoq tune`
    python benchmarks/tune.py samplers [--grid default]  # (b) hypervolume of each sampler vs a grid
    python benchmarks/tune.py overhead                   # (c) trial time outside timed generations
    python benchmarks/tune.py grid [--grid default]      # measure a grid only (resumable)

(b) measures every plan of a reduced space once (the exhaustive grid, kept in
benchmarks/results/tune-grid*.json), then replays the samplers against those measurements
through `autoq tune`'s own control flow (corner plans first, repeats as free twins, the
reference plan measured up front, each plan's constraints as measured), so every sampler
sees identical numbers and the comparison is not blurred by timing noise. Each sampler
gets 20% of the grid's plans as distinct measurements; hypervolume counts the plans within
the default tier floor (10% below the reference's CLIP: tiers come from those), on
objectives normalised over the grid's, reference point 1.1.
Results go to benchmarks/results/tune-*.json and print as Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna

from autoq._logging import configure
from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints
from autoq.tune import SearchSpace, TuneConfig, tune
from autoq.tune._choice import tier_constraints
from autoq.tune._optuna import DIRECTIONS
from autoq.tune._search import Search

RESULTS = Path("benchmarks/results")
# The sampler grids, each measured once (four images per plan) and then replayed; their
# latencies carry the machine's noise. `small`: 4 precisions ** 3 components x 2 step
# counts = 128 plans. `default`: shaped like the default space (its step range, the
# model's distinct schedulers but ddim, and so its non-monotone CLIP-vs-steps and its
# quality floor): 4 ** 3 x 4 step counts x 2 schedulers = 512 plans.
_COMMON = {
    "precisions": ("fp32", "bnb_int8", "bnb_nf4", "quanto_int4"),
    "protect": False,
    "n_prompts": 4,
    "eval_images": 4,  # no racing beyond the screen: every plan is measured alike
}
GRIDS = {
    "small": {**_COMMON, "steps": (4, 8), "step_size": 4, "schedulers": ("default",)},
    "default": {**_COMMON, "steps": (5, 29), "step_size": 8, "schedulers": ("default", "euler")},
}


def wall(profiles_dir: str | None) -> dict:
    """Time the default `autoq tune` (into a fresh temporary folder unless one is given)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = profiles_dir or tmp
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "autoq.cli", "tune", "--profiles-dir", target], check=True
        )
        seconds = time.perf_counter() - start
    return {"command": "autoq tune", "wall_s": seconds}


def grid_path(name: str) -> Path:
    return RESULTS / ("tune-grid.json" if name == "small" else f"tune-grid-{name}.json")


def _grid_table(name: str) -> list[dict]:
    """Every plan of grid ``name``, measured once; kept in `grid_path` for later replays.

    The measuring study lives in ~/.cache/autoq/bench, so a cut-off run resumes."""
    path = grid_path(name)
    if path.is_file():
        return json.loads(path.read_text())["rows"]
    work = Path.home() / ".cache" / "autoq" / "bench" / f"tune-grid-{name}"
    space = GRIDS[name]
    config = TuneConfig.create(profiles_dir=work, sampler="grid", trials=10_000, **space)
    result = tune(config)
    storage = f"sqlite:///{work / (result.path.stem + '.optuna.db')}"
    study = optuna.load_study(study_name=result.profile.study.study_name, storage=storage)
    rows, seen = [], set()
    for t in study.trials:  # one row per plan (the reference's trial is a twin of it)
        key = json.dumps(t.user_attrs.get("plan"), sort_keys=True)
        if t.state == optuna.trial.TrialState.COMPLETE and key not in seen:
            seen.add(key)
            rows.append({
                "params": t.params,
                "plan": t.user_attrs["plan"],
                "values": list(t.values),
                "constraints": t.constraints,
            })  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"space": space, "rows": rows}, indent=1))
    return rows


def _normalised(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    signs = np.array([-1.0, 1.0, 1.0])  # maximise CLIP: flip it to minimise everything
    v = values * signs
    lo_s, hi_s = np.minimum(lo * signs, hi * signs), np.maximum(lo * signs, hi * signs)
    return (v - lo_s) / np.where(hi_s > lo_s, hi_s - lo_s, 1.0)


def _hypervolume(points: np.ndarray) -> float:
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(points, np.full(points.shape[1], 1.1)))


class Replay(Search):
    """`autoq tune`'s control flow (corners, twins, budget) over the grid's measurements:
    each plan's objectives and constraints, as its grid trial recorded them."""

    def __init__(self, space: SearchSpace, rows: dict[str, dict]) -> None:
        self.space = space
        self.reference_plan = space.reference()
        self.rows = rows
        # fp32 runs so far, by (steps, scheduler): as in the tune, a plan at a new pair
        # brings fp32 there along as a baseline trial (`add_baseline`).
        self.fp32 = {(self.reference_plan.steps, self.reference_plan.scheduler)}

    def _values(self, trial: optuna.Trial, plan: PipelinePlan) -> tuple[float, ...]:
        row = self.rows[json.dumps(plan.model_dump(mode="json"), sort_keys=True)]
        for key, value in row.get("constraints", {}).items():
            trial.set_constraint(key, value)
        return tuple(row["values"])

    def measure_trial(self, trial: optuna.Trial, plan: PipelinePlan) -> tuple[float, ...]:
        from autoq.tune._search import add_baseline

        pair = (plan.steps, plan.scheduler)
        if pair not in self.fp32 and not plan.is_fp32:
            fp32 = plan.fp32()
            row = self.rows[json.dumps(fp32.model_dump(mode="json"), sort_keys=True)]
            add_baseline(
                trial.study, self.space, fp32, row["values"], row.get("constraints", {}), None
            )
        self.fp32.add(pair)
        return self._values(trial, plan)

    def reference_twin(self, trial: optuna.Trial) -> tuple[float, ...]:
        # `autoq tune` measures the reference before trial 0
        return self._values(trial, self.reference_plan)


def _tier_worthy(values: list[float], constraints: dict[str, float], floor: float) -> bool:
    """Could this plan be a tier: within its constraints and the default tier floor?"""
    return values[0] >= floor and all(v <= 0 for v in constraints.values())


def _makers(
    budget: int, space: SearchSpace
) -> dict[str, tuple[str, Callable[[int], optuna.samplers.BaseSampler]]]:
    """key -> (table label, seed -> sampler): `autoq tune`'s samplers and a few variants."""
    from autoq.tune._optuna import sampler

    def ours(name: str) -> Callable[[int], optuna.samplers.BaseSampler]:
        return lambda seed: sampler(name, seed, budget, space)

    return {
        "gp": ("GP, 2 start-up trials (`--sampler gp`)", ours("gp")),
        "gp10": ("GP, Optuna's 10 start-up trials", lambda s: optuna.samplers.GPSampler(seed=s)),
        "gp-tpe": ("GP and TPE, alternating (`--sampler gp-tpe`)", ours("gp-tpe")),
        "tpe": ("TPE grouped multivariate (`--sampler tpe`)", ours("tpe")),
        "tpe-plain": (
            "TPE multivariate",
            lambda s: optuna.samplers.TPESampler(seed=s, multivariate=True),
        ),
        "nsga2": ("NSGA-II", ours("nsga2")),
        "random": ("random", ours("random")),
    }


def samplers(
    seeds: int, grid: str, only: list[str] | None, corners: str, budget: int | None = None
) -> dict:
    from autoq.tune._search import counted, outcome, run_search

    table = _grid_table(grid)
    rows = {json.dumps(r["plan"], sort_keys=True): r for r in table}
    space_args = GRIDS[grid]
    space = SearchSpace(
        precisions=dict.fromkeys(table[0]["plan"]["precisions"], space_args["precisions"]),
        steps=space_args["steps"],
        step_size=space_args["step_size"],
        schedulers=space_args["schedulers"],
        protect=space_args["protect"],
    )
    assert space.size() == len(table), (space.size(), len(table))
    budget = budget or max(1, round(0.2 * len(table)))
    # Tiers come from the plans within the default tier floor (10% below the reference's
    # CLIP; point estimates here): the hypervolume counts only those.
    reference = rows[json.dumps(space.reference().model_dump(mode="json"), sort_keys=True)]
    floor = tier_constraints(Constraints()).effective_min_clip(reference["values"][0])
    assert floor is not None  # the default tier floor is relative to the reference
    worthy = np.array([
        r["values"] for r in table if _tier_worthy(r["values"], r.get("constraints", {}), floor)
    ])  # fmt: skip
    lo, hi = worthy.min(axis=0), worthy.max(axis=0)
    grid_hv = _hypervolume(_normalised(worthy, lo, hi))
    makers = _makers(budget, space)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    configure(level="WARNING")  # one line per trial would drown the table
    out = {
        "grid": grid,
        "grid_trials": len(table),
        "floor": floor,
        "grid_within_floor": len(worthy),
        "budget": budget,
        "grid_hv": grid_hv,
        "samplers": {},
    }
    modes = {"with": (True,), "without": (False,), "both": (True, False)}[corners]
    for with_corners in modes:
        for key in only or makers:
            label, make = makers[key]
            ratios, asked, steps = [], [], Counter()
            for seed in range(seeds):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    study = optuna.create_study(directions=DIRECTIONS, sampler=make(seed))
                    run_search(study, Replay(space, rows), wanted=budget, corners=with_corners,
                               gc_after_trial=False)  # fmt: skip
                assert counted(study.trials) <= budget
                found = np.array([
                    t.values for t in study.trials
                    if t.values is not None and _tier_worthy(t.values, t.constraints, floor)
                ])  # fmt: skip
                hv = _hypervolume(_normalised(found, lo, hi)) if len(found) else 0.0
                ratios.append(hv / grid_hv)
                asked.append(len(study.trials))
                steps.update(t.params["steps"] for t in study.trials if outcome(t) == "measured")
            label = label if with_corners else f"{label}, no corners"
            out["samplers"][label] = {
                "mean_hv_ratio": statistics.mean(ratios),
                # one seed has no spread to report
                "ci95": 1.96 * statistics.stdev(ratios) / len(ratios) ** 0.5 if seeds > 1 else None,
                "seeds_at_95": sum(r >= 0.95 for r in ratios) / len(ratios),
                "mean_trials_asked": statistics.mean(asked),
                # where the measurements went: share of measured plans per step count
                "steps_share": {n: c / steps.total() for n, c in sorted(steps.items())},
                "ratios": ratios,
            }
            print(f"{label}: {statistics.mean(ratios):.3f}", file=sys.stderr)
    return out


def overhead() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = TuneConfig.create(
            profiles_dir=tmp,
            trials=20,
            **{**GRIDS["small"], "steps": (8, 16), "step_size": 8},
        )
        result = tune(config)
        storage = f"sqlite:///{Path(tmp) / (result.path.stem + '.optuna.db')}"
        study = optuna.load_study(study_name=result.profile.study.study_name, storage=storage)
        timed = [t.user_attrs["timing"] for t in study.trials if "timing" in t.user_attrs]
    warm = timed[len(timed) // 2 :]  # second half: components mostly cached
    total = sum(t["trial_s"] for t in warm)
    outside = total - sum(t["generation_s"] for t in warm)
    return {"trials": len(warm), "trial_s": total, "outside_share": outside / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["wall", "grid", "samplers", "overhead"])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default",
                        help="grid / samplers: which grid to measure or replay")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--only",
        help="samplers: comma-separated keys (gp, gp10, gp-tpe, "
        "tpe, tpe-plain, nsga2, random); rows merge into the results file",
    )
    parser.add_argument(
        "--corners",
        choices=["with", "without", "both"],
        default="both",
        help="samplers: with the corner plans enqueued first, without, or both",
    )
    parser.add_argument(
        "--budget",
        type=int,
        help="samplers: distinct measured plans a run (default: 20%% of the grid)",
    )
    parser.add_argument("--profiles-dir", help="wall: keep the profile here (a fresh folder)")
    args = parser.parse_args()
    if args.what == "grid":  # measure (or resume measuring) a grid, nothing replayed
        rows = _grid_table(args.grid)
        print(f"{len(rows)} plans in {grid_path(args.grid)}")
        return
    if args.what == "wall":
        result = wall(args.profiles_dir)
    elif args.what == "overhead":
        result = overhead()
    else:
        only = args.only.split(",") if args.only else None
        result = samplers(args.seeds, args.grid, only, args.corners, args.budget)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.grid}" if args.what == "samplers" and args.grid != "small" else ""
    suffix += f"-{args.budget}" if args.what == "samplers" and args.budget else ""
    path = RESULTS / f"tune-{args.what}{suffix}.json"
    if args.what == "samplers" and path.is_file():  # rows of other samplers stay
        earlier = json.loads(path.read_text())
        if (earlier.get("grid"), earlier.get("budget")) == (result["grid"], result["budget"]):
            result["samplers"] = {**earlier["samplers"], **result["samplers"]}
    path.write_text(json.dumps(result, indent=1))
    if args.what == "samplers":
        print(f"grid {args.grid}: {result['budget']} distinct measured plans of "
              f"{result['grid_trials']} ({result['grid_within_floor']} within the floor), "
              f"{args.seeds} seeds\n")  # fmt: skip
        print("| sampler | mean hypervolume vs grid | seeds >= 0.95 | trials asked |")
        print("|---|---:|---:|---:|")
        for name, row in result["samplers"].items():
            spread = "" if row["ci95"] is None else f" ± {row['ci95']:.3f}"
            print(f"| {name} | {row['mean_hv_ratio']:.3f}{spread} | "
                  f"{row['seeds_at_95']:.0%} | {row['mean_trials_asked']:.1f} |")  # fmt: skip
    else:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
