"""How well and how fast `autoq tune` searches, on the embedded shapes model.

    python benchmarks/tune.py wall       # (a) wall time of the default `autoq tune`
    python benchmarks/tune.py samplers   # (b) hypervolume: GP / TPE / NSGA-II / random vs grid
    python benchmarks/tune.py overhead   # (c) share of trial time outside timed generations

(b) measures every plan of a reduced space once (the exhaustive grid, kept in
benchmarks/results/tune-grid.json), then replays the samplers against those measurements
through `autoq tune`'s own control flow (corner plans first, repeats as free twins, the
reference plan measured up front), so every sampler sees identical numbers and the
comparison is not blurred by timing noise. Each sampler gets 20% of the grid's plans as
distinct measurements; hypervolume is computed on objectives normalised over the grid,
reference point 1.1.
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
from pathlib import Path

import numpy as np
import optuna

from autoq._logging import configure
from autoq.pipeline import PipelinePlan
from autoq.tune import SearchSpace, TuneConfig, tune
from autoq.tune._optuna import DIRECTIONS
from autoq.tune._search import Search

RESULTS = Path("benchmarks/results")
# The sampler grid: 4 precisions ** 3 components x 2 step counts = 128 plans, four
# images each (it is measured once, then replayed; its latencies carry the machine's noise).
REDUCED = {
    "precisions": ("fp32", "bnb_int8", "bnb_nf4", "quanto_int4"),
    "steps": (4, 8),
    "step_size": 4,
    "schedulers": ("default",),
    "protect": False,
    "n_prompts": 4,
    "eval_images": 4,  # no racing beyond the screen: every plan is measured alike
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


GRID = RESULTS / "tune-grid.json"


def _grid_table(tmp: Path) -> list[dict]:
    """Every plan of the reduced space, measured once; kept in GRID for later replays."""
    if GRID.is_file():
        return json.loads(GRID.read_text())["rows"]
    config = TuneConfig.create(profiles_dir=tmp, sampler="grid", trials=10_000, **REDUCED)
    result = tune(config)
    storage = f"sqlite:///{tmp / (result.path.stem + '.optuna.db')}"
    study = optuna.load_study(study_name=result.profile.study.study_name, storage=storage)
    rows, seen = [], set()
    for t in study.trials:  # one row per plan (the reference's trial is a twin of it)
        key = json.dumps(t.user_attrs.get("plan"), sort_keys=True)
        if t.state == optuna.trial.TrialState.COMPLETE and key not in seen:
            seen.add(key)
            rows.append(
                {"params": t.params, "plan": t.user_attrs["plan"], "values": list(t.values)}
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    GRID.write_text(json.dumps({"space": REDUCED, "rows": rows}, indent=1))
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
    """`autoq tune`'s control flow (corners, twins, budget) over the grid's measurements."""

    def __init__(self, space: SearchSpace, lookup: dict[str, list[float]]) -> None:
        self.space = space
        self.reference_plan = space.reference()
        self.lookup = lookup

    def _values(self, plan: PipelinePlan) -> tuple[float, ...]:
        return tuple(self.lookup[json.dumps(plan.model_dump(mode="json"), sort_keys=True)])

    def measure_trial(self, trial: optuna.Trial, plan: PipelinePlan) -> tuple[float, ...]:
        return self._values(plan)

    def reference_twin(self, trial: optuna.Trial) -> tuple[float, ...]:
        return self._values(self.reference_plan)  # `autoq tune` measures it before trial 0


def samplers(seeds: int) -> dict:
    from autoq.tune._optuna import sampler
    from autoq.tune._search import counted, run_search

    with tempfile.TemporaryDirectory() as tmp:
        table = _grid_table(Path(tmp))
    lookup = {json.dumps(r["plan"], sort_keys=True): r["values"] for r in table}
    values = np.array([r["values"] for r in table])
    lo, hi = values.min(axis=0), values.max(axis=0)
    grid_hv = _hypervolume(_normalised(values, lo, hi))
    components = list(table[0]["plan"]["precisions"])
    space = SearchSpace(
        precisions=dict.fromkeys(components, REDUCED["precisions"]),
        steps=REDUCED["steps"],
        step_size=REDUCED["step_size"],
        schedulers=REDUCED["schedulers"],
        protect=REDUCED["protect"],
    )
    assert space.size() == len(table), (space.size(), len(table))
    budget = max(1, round(0.2 * len(table)))

    def tpe_plain(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)

    def gp_optuna_startup(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=seed)  # 10 random start-up trials

    makers = {
        "gp (2 start-up trials)": lambda s: sampler("gp", s, budget, space),
        "gp (Optuna's 10 start-up trials)": gp_optuna_startup,
        "tpe (grouped multivariate; default)": lambda s: sampler("tpe", s, budget, space),
        "tpe (multivariate)": tpe_plain,
        "nsga2": lambda s: sampler("nsga2", s, budget, space),
        "random": lambda s: sampler("random", s, budget, space),
    }
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    configure(level="WARNING")  # one line per trial would drown the table
    out = {"grid_trials": len(table), "budget": budget, "grid_hv": grid_hv, "samplers": {}}
    for corners in (True, False):
        for name, make in makers.items():
            ratios, asked = [], []
            for seed in range(seeds):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    study = optuna.create_study(directions=DIRECTIONS, sampler=make(seed))
                    run_search(study, Replay(space, lookup), wanted=budget, corners=corners,
                               gc_after_trial=False)  # fmt: skip
                assert counted(study.trials) <= budget
                found = np.array([t.values for t in study.trials if t.values is not None])
                ratios.append(_hypervolume(_normalised(found, lo, hi)) / grid_hv)
                asked.append(len(study.trials))
            label = name if corners else f"{name}, no corners"
            out["samplers"][label] = {
                "mean_hv_ratio": statistics.mean(ratios),
                "seeds_at_95": sum(r >= 0.95 for r in ratios) / len(ratios),
                "mean_trials_asked": statistics.mean(asked),
                "ratios": ratios,
            }
            print(f"{label}: {statistics.mean(ratios):.3f}", file=sys.stderr)
    return out


def overhead() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = TuneConfig.create(
            profiles_dir=tmp,
            trials=20,
            **{**REDUCED, "steps": (8, 16), "step_size": 8},
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
    parser.add_argument("what", choices=["wall", "samplers", "overhead"])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--profiles-dir", help="wall: keep the profile here (a fresh folder)")
    args = parser.parse_args()
    if args.what == "wall":
        result = wall(args.profiles_dir)
    elif args.what == "overhead":
        result = overhead()
    else:
        result = samplers(args.seeds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"tune-{args.what}.json").write_text(json.dumps(result, indent=1))
    if args.what == "samplers":
        print(f"{result['budget']} distinct measured plans of {result['grid_trials']}, "
              f"{args.seeds} seeds\n")  # fmt: skip
        print("| sampler | mean hypervolume vs grid | seeds >= 0.95 | trials asked |")
        print("|---|---:|---:|---:|")
        for name, row in result["samplers"].items():
            print(f"| {name} | {row['mean_hv_ratio']:.3f} | {row['seeds_at_95']:.0%} | "
                  f"{row['mean_trials_asked']:.1f} |")  # fmt: skip
    else:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
