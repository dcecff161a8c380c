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
    body = json.loads(result.stdout)  # nothing but JSON on stdout
    rows = body["precisions"]
    assert {r["precision"] for r in rows} >= {"fp32", "bnb_nf4", "gguf_q4_0", "quanto_int4"}
    assert all(r["usable"] or r["reason"] for r in rows)
    executors = {r["executor"]: r for r in body["executors"]}
    assert {"eager", "compile", "openvino", "openvino_int8"} <= set(executors)
    assert all(r["usable"] or r["reason"] for r in executors.values())
    assert executors["openvino"]["usable"], executors["openvino"]["reason"]  # x86, installed
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


# --- Every command against every kind of bad input: one stderr line, exit 1. -------------
# In-process (the same `main()` the console script runs) to keep the matrix fast; the
# subprocess tests above cover real exit codes.


def _run_main(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from autoq import cli

    monkeypatch.setattr(sys, "argv", ["autoq", *args])
    monkeypatch.setitem(cli._state, "debug", False)
    with pytest.raises(SystemExit) as info:
        cli.main()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


@pytest.fixture
def bad_inputs(tmp_path):
    """Named bad inputs: files and folders a user or an attacker could hand autoq."""
    from autoq.profile import write_profile
    from tests.runtime.conftest import make_profile

    good = write_profile(make_profile(), tmp_path / "good" / "shapes.json")
    paths = {
        "missing file": tmp_path / "none.json",
        "not UTF-8": tmp_path / "latin1.json",
        "not JSON": tmp_path / "garbage.json",
        "future schema": tmp_path / "future.json",
        "a folder": tmp_path / "empty",
        "folder of bad files": tmp_path / "bad",
        "folder of two models": tmp_path / "two",
    }
    paths["not UTF-8"].write_bytes(b"\xff\xfe{\x00")
    paths["not JSON"].write_text("{{{")
    paths["future schema"].write_text('{"schema_version": 99}')
    paths["a folder"].mkdir()
    paths["folder of bad files"].mkdir()
    (paths["folder of bad files"] / "corrupt.json").write_text('{"x": ')
    (paths["folder of bad files"] / "future.json").write_text('{"schema_version": 99}')
    two = paths["folder of two models"]
    two.mkdir()
    write_profile(make_profile(), two / "shapes.json")
    from autoq.profile import ModelIdentity

    other = ModelIdentity(source="/models/sd3", content_hash="0" * 16, pipeline_class="X")
    write_profile(make_profile().model_copy(update={"model": other}), two / "sd3.json")
    return {"good": good, **{k: str(v) for k, v in paths.items()}}


FILE_INPUTS = ["missing file", "not UTF-8", "not JSON", "future schema", "a folder"]
DIR_INPUTS = ["folder of bad files", "folder of two models"]
UNREACHABLE = {
    "refused connection": "postgresql://nobody@127.0.0.1:1/none",
    "sqlite in a missing folder": "sqlite:////no/such/folder/study.db",
    "unknown scheme": "nosuchdb://host/x",
}


def _cases() -> list:
    cases = []
    for kind in FILE_INPUTS:
        cases.append(pytest.param(["profile", "show", f"<{kind}>"], id=f"profile show: {kind}"))
        cases.append(pytest.param(["report", f"<{kind}>"], id=f"report: {kind}"))
    for kind in FILE_INPUTS + DIR_INPUTS:
        cases.append(pytest.param(["serve", "--profile", f"<{kind}>"], id=f"serve: {kind}"))
    cases.append(
        pytest.param(["report", "<good>", "--out", "<good>/x.html"], id="report: unwritable out")
    )
    for kind, url in UNREACHABLE.items():
        args = ["profile", "export", "--storage", url, "--study", "s", "--profiles-dir", "<tmp>"]
        cases.append(pytest.param(args, id=f"profile export: {kind}"))
    cases.append(
        pytest.param(
            ["tune", "--prompts", "<not UTF-8>", "--profiles-dir", "<tmp>"],
            id="tune: prompts not UTF-8",
        )
    )
    cases.append(pytest.param(["backends", "--device", "cuda:x"], id="backends: bad device"))
    for flag, value in (("--executions", "warp"), ("--memory-tools", "vae_folding")):
        args = ["tune", flag, value, "--profiles-dir", "<tmp>"]
        cases.append(pytest.param(args, id=f"tune: unknown {flag[2:]}"))
    if _has_command("export"):  # `autoq export` arrives from another branch
        for kind in FILE_INPUTS + DIR_INPUTS:
            args = ["export", f"<{kind}>", "--tier", "quality", "--out", "<tmp>"]
            cases.append(pytest.param(args, id=f"export: {kind}"))
        args = ["export", "<good>", "--tier", "no-such-tier", "--out", "<tmp>"]
        cases.append(pytest.param(args, id="export: unknown tier"))
    return cases


def _has_command(name: str) -> bool:
    from autoq.cli import app

    return any((c.name or c.callback.__name__) == name for c in app.registered_commands)


@pytest.mark.parametrize("template", _cases())
def test_bad_input_is_one_line_and_exit_1(
    template: list[str], bad_inputs, tmp_path, monkeypatch, capsys
) -> None:
    args = []
    for arg in template:
        for kind, value in bad_inputs.items():
            arg = arg.replace(f"<{kind}>", str(value))
        args.append(arg.replace("<tmp>", str(tmp_path / "out")))
    code, _, err = _run_main(args, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert "Error:" not in lines[0][7:]  # no exception class names: a sentence instead


def test_reasons_reach_the_user(bad_inputs, monkeypatch, capsys) -> None:
    _, _, err = _run_main(
        ["serve", "--profile", bad_inputs["folder of bad files"]], monkeypatch, capsys
    )
    assert "corrupt.json: not a valid autoq profile" in err
    assert "future.json: not a valid autoq profile (schema_version" in err
    _, _, err = _run_main(
        ["serve", "--profile", bad_inputs["folder of two models"]], monkeypatch, capsys
    )
    assert "zoo:shapes" in err and "/models/sd3" in err
    _, _, err = _run_main(
        ["profile", "export", "--storage", UNREACHABLE["refused connection"], "--study", "s"],
        monkeypatch,
        capsys,
    )
    assert "Connection refused" in err and "sqlalche.me" not in err


def test_unexpected_errors_are_one_line_and_debug_keeps_the_traceback(monkeypatch, capsys) -> None:
    from autoq import cli

    def broken(*_args, **_kwargs):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr("autoq.device.fingerprint", broken)
    code, _, err = _run_main(["fingerprint", "--no-bench"], monkeypatch, capsys)
    assert code == 1
    assert err.strip() == (
        "error: unexpected RuntimeError: first line second line; this is a bug in autoq or "
        "a library it uses: re-run with --debug for the traceback and report it."
    )
    monkeypatch.setattr(sys, "argv", ["autoq", "--debug", "fingerprint", "--no-bench"])
    with pytest.raises(RuntimeError, match="first line"):
        cli.main()


def test_profile_text_cannot_drive_the_terminal(tmp_path, monkeypatch, capsys) -> None:
    from autoq.profile import ModelIdentity, write_profile
    from tests.runtime.conftest import make_profile

    evil = ModelIdentity(source="\x1b[2J[bold red]x[/]", content_hash="[/]", pipeline_class="X")
    profile = make_profile().model_copy(update={"model": evil})
    path = write_profile(profile, tmp_path / "p.json")
    code, out, err = _run_main(["profile", "show", str(path)], monkeypatch, capsys)
    assert code == 0, err
    assert "\x1b" not in out and "\\x1b[2J[bold red]x[/]" in out


def test_piped_tables_keep_their_rows_whole(tmp_path) -> None:
    """Piped (CI logs, a file, ``| less``), `autoq profile show` prints each tier on one
    line instead of squeezing the table to 80 columns; ``COLUMNS`` still rules."""
    import os
    import subprocess

    from autoq.profile import write_profile
    from tests.runtime.conftest import make_profile

    path = write_profile(make_profile(), tmp_path / "p.json")
    command = [sys.executable, "-m", "autoq.cli", "profile", "show", str(path)]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    piped = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    rows = [line for line in piped.stdout.splitlines() if "minimal" in line]
    assert rows and "bnb_nf4" in rows[0] and "bnb_int8" in rows[0]  # the plan, unwrapped
    assert max(len(line) for line in piped.stdout.splitlines()) > 80
    narrow = subprocess.run(
        command, capture_output=True, text=True, env={**env, "COLUMNS": "80"}, check=True
    )
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80


def test_tune_options_are_the_tune_config_fields(tmp_path, monkeypatch, capsys) -> None:
    """Each `autoq tune` option is the `TuneConfig` field of its name, so a new field is
    a new option; the ones given as text arrive parsed."""
    import inspect

    from autoq import cli
    from autoq.tune import DEFAULT_TIMEOUT_S, TuneConfig

    options = set(inspect.signature(cli.tune).parameters) - {"html"}  # --report: the CLI's
    assert options == set(TuneConfig.model_fields) - {"cache_bytes"}  # cache_bytes: tests'
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    seen: list[TuneConfig] = []

    def stop(config: TuneConfig, **_kwargs: object) -> None:
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr("autoq.tune.tune", stop)
    args = ["tune", "--max-memory", "2GiB", "--steps", "4:8", "--precisions", "fp32, bf16"]
    args += ["--prompts", str(prompts), "--study", "s", "--max-clip-drop", "5"]
    code, _, _ = _run_main([*args, "--profiles-dir", str(tmp_path)], monkeypatch, capsys)
    assert code == 130  # stopped before a profile: as a SIGINT would
    (config,) = seen
    assert (config.max_memory_bytes, config.steps, config.precisions) == (
        2 * 2**30,
        (4, 8),
        ("fp32", "bf16"),
    )
    assert (config.prompts, config.study_name) == (("a red circle", "a blue square"), "s")
    assert (config.max_clip_drop_pct, config.timeout_s, config.memory_tools) == (
        5.0,
        DEFAULT_TIMEOUT_S,
        (),
    )
    _run_main(["tune", "--timeout", "0", "--profiles-dir", str(tmp_path)], monkeypatch, capsys)
    assert seen[-1].timeout_s is None and seen[-1].trials == TuneConfig().trials
