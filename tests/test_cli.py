"""The `autoq` command line as a user runs it: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def autoq(*args: str, cache: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if cache:
        env["AUTOQ_CACHE_DIR"] = cache
    return subprocess.run(
        [sys.executable, "-m", "autoq.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_fingerprint_json_is_stable() -> None:
    first = json.loads(autoq("fingerprint", "--json", "--no-bench").stdout)
    second = json.loads(autoq("fingerprint", "--json", "--no-bench").stdout)
    assert first["fingerprint_id"] == second["fingerprint_id"]
    assert first["identity"]["cpu"]["logical_cores"] >= 1
    assert first["measurements"] is None


def test_fingerprint_table_shows_the_id() -> None:
    result = autoq("fingerprint", "--no-bench")
    data = json.loads(autoq("fingerprint", "--json", "--no-bench").stdout)
    assert result.returncode == 0
    assert data["fingerprint_id"] in result.stdout


@pytest.mark.slow
def test_backends_lists_every_precision_quietly(tmp_path) -> None:
    result = autoq("backends", "--json", cache=str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)  # nothing but JSON on stdout
    assert {r["precision"] for r in rows} >= {"fp32", "bnb_nf4", "gguf_q4_0", "quanto_int4"}
    assert all(r["usable"] or r["reason"] for r in rows)
    # Library import chatter (torchao, bitsandbytes) stays out of the user's terminal.
    assert "Failed to load" not in result.stderr + result.stdout


def test_autoq_error_is_one_line_and_exit_1(tmp_path) -> None:
    result = autoq("backends", "--device", "nonsense", cache=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert "'nonsense'" in result.stderr


def test_missing_gpu_is_a_clear_error(tmp_path) -> None:
    result = autoq("backends", "--device", "cuda:7", cache=str(tmp_path))
    assert result.returncode == 1
    assert "cuda:7" in result.stderr and "--device cpu" in result.stderr
