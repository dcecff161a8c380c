"""`autoq tune` and `autoq profile` as processes: bad input, distributed workers, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

FAST = [
    "--n-prompts",
    "2",
    "--eval-images",
    "2",
    "--steps",
    "4:8",
    "--step-size",
    "2",
    "--device",
    "cpu",
    "--max-batch",  # batch curves: tests/tune/test_measure.py
    "1",
]
POSTGRES = "postgresql://root@127.0.0.1:5432/test"


def autoq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoq.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-memory", "-1GB"], "must be positive"),
        (["--max-memory", "0"], "must be positive"),
        (["--max-memory", "lots"], "Expected a size"),
        (["--max-latency", "0"], "max_latency_s"),
        (["--trials", "0"], "trials"),
        (["--precisions", "fp32,int3"], "Unknown precision 'int3'"),
        (["--sampler", "annealing"], "sampler"),
        (["--model", "/no/such/pipeline"], "/no/such/pipeline"),
        (["--scorer", "/no/such/clip"], "/no/such/clip"),
        (["--model", "nobody/uncached-model"], "hf download nobody/uncached-model"),
        (["--prompts", "/no/such/prompts.txt"], "Cannot read prompts file"),
        (["--min-clip-score", "20", "--max-clip-drop", "5"], "not both"),
        (["--steps", "9:3"], "steps"),
        (["--timeout", "-5"], "--timeout takes seconds >= 0"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], expected: str, tmp_path: Path) -> None:
    result = autoq("tune", "--profiles-dir", str(tmp_path), *args)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = autoq("--debug", "tune", "--profiles-dir", str(tmp_path), "--max-memory", "0")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_profile_show_rejects_a_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text('{"schema_version": 99}')
    result = autoq("profile", "show", str(bad))
    assert result.returncode == 1
    assert str(bad) in result.stderr and "not a valid autoq profile" in result.stderr


@pytest.fixture
def postgres_study():
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(POSTGRES).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES}: {exc}")
    name = f"autoq-test-{uuid.uuid4().hex[:8]}"
    yield name
    import optuna

    optuna.delete_study(study_name=name, storage=POSTGRES)


@pytest.mark.slow
def test_two_workers_fill_one_postgres_study(postgres_study: str, tmp_path: Path) -> None:
    args = ["tune", "--storage", POSTGRES, "--study", postgres_study, "--trials", "6",
            "--precisions", "fp32,ao_int8wo,bnb_nf4", "--no-report", *FAST]  # fmt: skip
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "autoq.cli", *args, "--profiles-dir", str(tmp_path / f"w{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Two workers on a 2-core machine: one torch thread each, or they thrash.
            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        )
        for i in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    own = json.loads(next((tmp_path / "w0").glob("*.json")).read_text())
    assert own["study"]["timeout_s"] == 600  # the default budget: 10 minutes

    import optuna

    from autoq.tune._search import outcome

    study = optuna.load_study(study_name=postgres_study, storage=POSTGRES)
    measured = [t for t in study.trials if outcome(t) == "measured"]
    assert len(measured) >= 4
    plans = [json.dumps(t.user_attrs["plan"], sort_keys=True) for t in measured]
    assert len(set(plans)) == len(plans)  # no plan measured by both workers
    assert len({t.user_attrs["worker"] for t in measured}) == 2  # both workers measured
    assert not [t for t in study.trials if t.state.name == "RUNNING"]

    exported = autoq("profile", "export", "--storage", POSTGRES, "--study", postgres_study,
                     "--profiles-dir", str(tmp_path / "export"))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    path = Path(exported.stdout.strip().splitlines()[-1])
    profile = json.loads(path.read_text())
    assert profile["study"]["study_name"] == postgres_study
    assert profile["tiers"]
