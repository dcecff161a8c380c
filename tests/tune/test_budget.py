"""The budget sizes a tune's phases from what a generation costs here, and says what it
cut; progress reaches the log at least once a minute wherever the output goes."""

from __future__ import annotations

import json
import logging

import pytest

from autoq._logging import configure
from autoq.errors import ConfigError
from autoq.tune._budget import REFERENCE_SHARE, StepCost, size_tune
from autoq.tune._progress import Progress

STEPS = [5, 10, 15, 20, 25, 30]


def _size(left: float | None, cost: StepCost, **kw: object):
    values = {"steps": STEPS, "schedulers": ["default", "euler", "dpmpp"], "screen_images": 6,
              "full_images": 32, "probe_images": 2, **kw}  # fmt: skip
    return size_tune(left, cost, **values)  # type: ignore[arg-type]


def test_step_cost_from_a_one_and_a_two_step_generation() -> None:
    cost = StepCost.from_timings(one_step=1.5, two_steps=2.0)
    assert (cost.fixed, cost.per_step) == (1.0, 0.5)
    assert cost.image(30) == 16.0


def test_a_cheap_model_keeps_every_phase_whole() -> None:
    """The zoo: 32 reference images at 30 steps fit the reference's share of the budget."""
    sizing = _size(600.0, StepCost(0.01, 0.005))
    assert (sizing.screen_images, sizing.reference_images, sizing.max_steps) == (6, 32, 30)
    assert sizing.schedulers == ("default", "euler", "dpmpp") and sizing.cuts == ()
    assert _size(None, StepCost(10.0, 10.0)).reference_images == 32  # no budget: no sizing


def test_a_real_size_model_lowers_the_steps_then_the_images_and_keeps_one_scheduler() -> None:
    """SD1.5 at 256 px on 2 cores: about 1 s fixed and 2.7 s a step."""
    cost = StepCost(1.0, 2.7)
    sizing = _size(500.0, cost)
    share = REFERENCE_SHARE * 500.0
    assert sizing.reference_images * cost.image(sizing.max_steps) <= share
    assert sizing.max_steps == 5 and sizing.screen_images == sizing.reference_images == 6
    assert sizing.schedulers == ("default",)
    assert sizing.cuts[0].startswith("steps: at most 5 instead of 30 (the reference at 30")
    assert sizing.cuts[-1].startswith("schedulers: only 'default' searched (probing 3")

    tight = _size(200.0, cost)  # 6 images at 5 steps take 87 s of a 40 s share
    assert tight.screen_images == tight.reference_images == 2  # MIN_IMAGES
    assert "screening set: 2 images instead of 6" in tight.cuts


def test_a_budget_that_cannot_hold_the_reference_and_one_plan_says_what_it_needs() -> None:
    with pytest.raises(ConfigError) as error:
        _size(30.0, StepCost(1.0, 2.7), budget_s=600.0)  # 4 images at 5 steps: 58 s
    message = str(error.value)
    assert "need about 58 s here" in message
    assert "pass --timeout 628 s or more (--timeout 0: no budget)" in message


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_progress_logs_each_phase_and_a_line_a_minute_inside_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(json=True, level=logging.INFO)
    now = [0.0]
    forwarded: list[tuple[str, int, int]] = []
    progress = Progress(
        lambda *p: forwarded.append(p), clock=lambda: now[0], budget_left=lambda: 600 - now[0]
    )
    progress("screen", 0, 10)
    now[0] = 30.0
    progress("screen", 5, 10)  # half a minute: no line
    progress.tick()
    assert [line["event"] for line in _lines(capsys)] == ["tune_phase"]

    now[0] = 61.0  # a minute without a line, in the middle of one long item
    progress.tick()
    (line,) = _lines(capsys)
    assert line["event"] == "tune_progress" and line["phase"] == "screen"
    assert (line["done"], line["total"], line["elapsed_s"]) == (5, 10, 61)
    assert line["expected_remaining_s"] == 61  # 5 of 10 took 61 s
    assert line["budget_left_s"] == 539
    progress.tick()
    assert _lines(capsys) == []  # the next one waits another minute

    now[0] = 70.0
    progress("reference", 0, 6)  # a new phase: a line at once
    (line,) = _lines(capsys)
    assert (line["event"], line["phase"], line["phase_elapsed_s"]) == ("tune_phase", "reference", 0)
    assert "expected_remaining_s" not in line  # nothing done yet to expect from
    assert forwarded == [("screen", 0, 10), ("screen", 5, 10), ("reference", 0, 6)]


def test_the_heartbeat_thread_stops() -> None:
    progress = Progress(every_s=3600.0).start()
    progress("search", 1, 3)
    progress.stop()
    assert progress._thread is not None and not progress._thread.is_alive()
