"""`autoq tune` as a process stopped the ways a machine stops it: SIGTERM, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autoq.cli import _signal_exit
from autoq.tune._search import outcome

SMALL = ["tune", "--n-prompts", "1", "--eval-images", "1", "--steps", "2:4", "--step-size", "2",
         "--schedulers", "default", "--precisions", "fp32,ao_int8wo", "--no-protect",
         "--device", "cpu", "--no-report", "--trials", "4",
         "--height", "32", "--width", "32"]  # fmt: skip


def start(profiles: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "autoq.cli", *SMALL, "--profiles-dir", str(profiles)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )


def stop_while_measuring(worker: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    """Send ``signum`` once the worker, having measured a trial, starts measuring another."""
    assert worker.stderr is not None
    seen, done = [], False
    for line in worker.stderr:
        seen.append(line)
        done = done or '"event": "trial_done"' in line
        if done and '"event": "trial_start"' in line:
            worker.send_signal(signum)
            break
    out, err = worker.communicate(timeout=600)
    return worker.returncode, "".join(seen) + err + out


def test_signals_map_to_the_shell_exit_codes() -> None:
    assert _signal_exit("SIGINT") == 130
    assert _signal_exit("SIGTERM") == 143


@pytest.mark.slow
def test_kill_then_sigterm_then_rerun_measure_no_plan_twice(tmp_path: Path) -> None:
    code, log = stop_while_measuring(start(tmp_path), signal.SIGKILL)
    assert code == -signal.SIGKILL, log

    code, log = stop_while_measuring(start(tmp_path), signal.SIGTERM)
    assert code == 143, log
    profile = json.loads(next(tmp_path.glob("shapes-*.json")).read_text())
    assert profile["tiers"]  # written from the trials done before SIGTERM
    assert (profile["height"], profile["width"]) == (32, 32)  # the size it was measured at

    storage = f"sqlite:///{next(tmp_path.glob('*.optuna.db'))}"
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    measured = [str(t.user_attrs["plan"]) for t in trials if outcome(t) == "measured"]
    assert len(measured) >= 2 and len(set(measured)) == len(measured)  # none measured twice
    stopped = [str(t.user_attrs.get("interrupted")) for t in trials if t.state.name == "FAIL"]
    assert "SIGTERM received" in stopped  # the trial SIGTERM cut short, failed with why
    assert any("died" in reason for reason in stopped)  # the kill -9 one, found by the rerun
    assert not [t for t in trials if t.state.name == "RUNNING"]
