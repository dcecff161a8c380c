"""autoq's logs fit the host: silent as a library, the app's `logging` config decides,
and only the CLI prints (JSON lines, or console lines above a live progress bar)."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from rich.console import Console
from rich.progress import Progress

from autoq._logging import EVENT_ATTR, configure, get_logger


def test_library_events_print_nothing_unless_the_app_configures_logging(capsys) -> None:
    log = get_logger("autoq.runtime")
    log.info("tier_switch", from_tier="quality", to_tier="minimal")
    log.warning("profile_mismatch", differences=["cpu"])
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_events_reach_the_apps_logging_handlers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autoq"):
        get_logger("autoq.runtime").info("tier_switch", from_tier="quality", to_tier="minimal")
    (record,) = caplog.records
    assert record.name == "autoq.runtime" and record.levelno == logging.INFO
    assert record.getMessage() == "tier_switch from_tier='quality' to_tier='minimal'"
    assert getattr(record, EVENT_ATTR)["to_tier"] == "minimal"


def test_the_apps_level_filters_events(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="autoq"):
        get_logger("autoq.tune").info("trial_done")
        get_logger("autoq.tune").warning("trial_failed", trial=3)
    assert [r.getMessage() for r in caplog.records] == ["trial_failed trial=3"]


def test_cli_json_lines_on_stderr(capsys) -> None:
    configure(json=True)
    get_logger("autoq.tune").info("tune_start", trials=4)
    line = json.loads(capsys.readouterr().err)
    assert line["event"] == "tune_start" and line["trials"] == 4
    assert line["level"] == "info" and line["logger"] == "autoq.tune" and "timestamp" in line


def test_cli_level_names_work_on_every_python() -> None:
    configure(json=True, level="warning")
    assert logging.getLogger("autoq").level == logging.WARNING
    with pytest.raises(ValueError, match="Unknown log level 'loud'"):
        configure(json=True, level="loud")


def test_console_lines_print_above_the_progress_bar() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=60, color_system=None)
    configure(json=False, console=console)
    with Progress(console=console, auto_refresh=False) as progress:
        task = progress.add_task("tune", total=4)
        progress.update(task, completed=1)
        progress.refresh()
        get_logger("autoq.tune").info("tune_start", trials=4)
        progress.update(task, completed=2)
        progress.refresh()
    # What a terminal shows: a carriage return goes back to column 0, ESC[2K erases.
    shown = [
        re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", row.split("\r")[-1])
        for row in buffer.getvalue().split("\n")
    ]
    (line,) = [row for row in shown if "tune_start" in row]
    assert line.startswith("20") and line.rstrip().endswith("trials=4")  # timestamp first
    assert "━" not in line  # the bar never shares the log line
