"""Small, fast tune settings on the embedded shapes model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autoq.tune import TuneConfig

FAST: dict[str, Any] = {
    "n_prompts": 2,
    "eval_images": 4,
    "steps": (4, 8),
    "step_size": 2,
    "seed": 0,
    "device": "cpu",
    # TPE draws its first 10 trials at random from the seed, so these small tunes measure
    # the same plans on every machine; a GP's draws follow the measured latencies, which
    # differ between machines and runs. The default (gp-tpe) is tested in test_study.py
    # and by the families' short tunes.
    "sampler": "tpe",
    # Batch curves cost a few generations per tier: `test_measure.py` measures them.
    "max_batch": 1,
    # Torch only: converting to OpenVINO costs seconds per plan; `test_space.py` and
    # `test_a_tune_searches_openvino_and_records_its_build_cost` cover execution.
    "executions": ("eager",),
}


def fast_config(profiles_dir: Path, **overrides: Any) -> TuneConfig:
    return TuneConfig.create(**{**FAST, "profiles_dir": profiles_dir, **overrides})


@pytest.fixture(scope="session")
def zoo_weight_bytes() -> int:
    from autoq.backends import weight_bytes
    from autoq.pipeline import module_components
    from autoq.zoo import load_pipeline

    pipe = load_pipeline("shapes")
    return sum(weight_bytes(m) for m in module_components(pipe).values())
