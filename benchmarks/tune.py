"""How well and how fast `autoq tune` searches, on the embedded shapes model.

    python benchmarks/tune.py wall       # (a) wall time of the default `autoq tune`
    python benchmarks/tune.py samplers   # (b) Pareto hypervolume: NSGA-II / TPE / random vs grid
    python benchmarks/tune.py overhead   # (c) share of trial time outside timed generations

(b) measures every plan of a reduced space once (the exhaustive grid), then replays the
samplers against those measurements, so every sampler sees identical numbers and the
comparison is not blurred by timing noise. Each sampler gets 20% of the grid's trials;
hypervolume is computed on objectives normalised over the grid, reference point 1.1.
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
from pathlib import Path

import numpy as np
import optuna

from autoq.tune import TuneConfig, tune

RESULTS = Path("benchmarks/results")
REDUCED = {
    "precisions": ("fp32", "bnb_int8", "bnb_nf4", "quanto_int4"),
    "steps": (8, 16),
    "step_size": 8,
    "schedulers": ("default",),
    "protect": False,
    "n_prompts": 4,
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
    rows = []
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE and "twin_of" not in t.user_attrs:
            rows.append({"params": t.params, "plan": t.user_attrs["plan"], "values": list(t.values)})
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


def samplers(seeds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        table = _grid_table(Path(tmp))
    lookup = {json.dumps(r["params"], sort_keys=True): r["values"] for r in table}
    values = np.array([r["values"] for r in table])
    lo, hi = values.min(axis=0), values.max(axis=0)
    grid_hv = _hypervolume(_normalised(values, lo, hi))
    space = {k: sorted({json.dumps(r["params"][k]) for r in table}) for k in table[0]["params"]}
    budget = max(1, round(0.2 * len(table)))

    def objective(trial: optuna.Trial) -> list[float]:
        params = {k: trial.suggest_categorical(k, [json.loads(v) for v in opts])
                  for k, opts in space.items()}  # fmt: skip
        return lookup[json.dumps(params, sort_keys=True)]

    makers = {
        # The population rule `autoq tune` uses for this budget.
        "nsga2": lambda s: optuna.samplers.NSGAIISampler(
            seed=s, population_size=max(8, min(50, budget // 4))
        ),
        "tpe": lambda s: optuna.samplers.TPESampler(seed=s, multivariate=True),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
    }
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out = {"grid_trials": len(table), "budget": budget, "grid_hv": grid_hv, "samplers": {}}
    for name, make in makers.items():
        ratios = []
        for seed in range(seeds):
            study = optuna.create_study(
                directions=["maximize", "minimize", "minimize"], sampler=make(seed)
            )
            study.optimize(objective, n_trials=budget)
            found = np.array([t.values for t in study.trials])
            ratios.append(_hypervolume(_normalised(found, lo, hi)) / grid_hv)
        out["samplers"][name] = {"mean_hv_ratio": statistics.mean(ratios), "ratios": ratios}
    return out


def overhead() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = TuneConfig.create(profiles_dir=tmp, trials=20, **REDUCED)
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
    parser.add_argument("--seeds", type=int, default=5)
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
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
