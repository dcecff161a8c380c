"""The study record: one module spells every study and trial attribute, and reads back
what it wrote, older studies included."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest

from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints
from autoq.tune._record import (
    CurvePoint,
    Evidence,
    RaceState,
    Reference,
    Samples,
    StudyContext,
    StudyRecord,
    TrialRecord,
    WorkFolder,
    plan_key,
)

PACKAGE = Path(__file__).resolve().parents[2] / "autoq"
RECORD = PACKAGE / "tune" / "_record.py"
RAW = {"user_attrs", "set_user_attr", "set_trial_user_attr", "system_attrs", "set_system_attr"}
"""Optuna's raw attribute access: whoever touches it spells keys."""

PLAN = PipelinePlan(precisions={"unet": "bnb_nf4", "vae": "fp32"}, steps=8)


def _raw_access(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in RAW
    ]


def test_no_study_attribute_key_is_spelled_outside_the_record_module() -> None:
    offenders = [
        hit for path in PACKAGE.rglob("*.py") if path != RECORD for hit in _raw_access(path)
    ]
    assert offenders == [], "read and write study attributes through autoq.tune._record"
    assert _raw_access(RECORD)  # the scan sees attribute access where there is some


def _context() -> StudyContext:
    return StudyContext(
        fingerprint={"fingerprint_id": "abc123"},
        model={"content_hash": "h"},
        constraints=Constraints(max_latency_s=2.0),
        prompts=["a cat", "a dog"],
        seeds=[0, 1],
        screen=2,
        full=4,
        eval_protocol=2,
        guidance_scale=5.0,
        height=64,
        width=64,
        tiers=3,
        sampler="tpe",
        seed=0,
        workdir="/tmp/w",
    )


def test_what_the_record_writes_it_reads_back_typed() -> None:
    study = optuna.create_study(directions=["maximize"])
    record = StudyRecord(study)
    assert not record.has_context() and not record.has_measured()
    record.set_context(_context())
    evidence = Evidence(scores=[70.0, 71.0], seconds=[0.5], peak_bytes=10, weight_bytes=8)
    record.set_reference(Reference(plan=PLAN, evidence=evidence))
    record.set_fp32(8, "default", Samples(scores=[70.0], seconds=[0.4], psnr=[100.0]))
    record.set_extension(3, Samples(scores=[69.0], psnr=[30.0], ssim=[0.9]))
    record.set_race(RaceState(through=3, picked=[3]))
    record.set_curve_point(PLAN, CurvePoint(steps=4, scores=[60.0], seconds=[0.2]))
    record.set_side_by_side({plan_key(PLAN): {"8": [0.5, 0.6]}})
    record.set_scheduler_aliases({8: {"default": "default", "ddim": "euler"}})

    view = record.snapshot()
    assert view.context() == _context() and view.fingerprint_id() == "abc123"
    assert view.has_reference() and view.reference().metrics is None  # not computed yet
    assert view.reference().evidence == evidence and view.reference().plan == PLAN
    assert view.fp32(8, "default") == Samples(scores=[70.0], seconds=[0.4])  # scores, times
    assert view.fp32(4, "default") == Samples()
    assert view.extension(3) == Samples(scores=[69.0], psnr=[30.0], ssim=[0.9])
    assert view.extension(4) is None and view.raced_any()
    assert view.race() == RaceState(through=3, picked=[3])
    assert view.curve(PLAN) == [CurvePoint(steps=4, scores=[60.0], seconds=[0.2])]
    assert view.curve_point(PLAN, 6) is None
    assert view.side_by_side() == {plan_key(PLAN): {"8": [0.5, 0.6]}}
    assert view.scheduler_aliases() == {8: {"default": "default", "ddim": "euler"}}
    joined = evidence.extended(view.extension(3))
    assert joined.scores == [70.0, 71.0, 69.0] and joined.peak_bytes == 10


def test_an_older_study_still_reads() -> None:
    """Studies written before the record: a reference stored before its metrics, PSNR
    left out, no screening size, no protocol."""
    study = optuna.create_study()
    old = _context().model_dump(mode="json")
    del old["screen"], old["eval_protocol"]
    for key, value in old.items():
        study.set_user_attr(key, value)
    study.set_user_attr(
        "reference",
        {"metrics": {}, "plan": PLAN.model_dump(mode="json"), "evidence": {"scores": [1.0],
         "seconds": [], "psnr": None, "ssim": None, "peak_bytes": 1, "weight_bytes": 1,
         "memory_method": "x"}},
    )  # fmt: skip
    record = StudyRecord(study)
    assert record.eval_protocol() == 1 and record.screen_images() is None
    reference = record.reference()
    assert reference.metrics is None and reference.evidence.psnr == []


def test_trial_records_say_what_happened_and_twins_keep_their_own() -> None:
    study = optuna.create_study()
    first = study.ask()
    TrialRecord(first).set_drawn(PLAN, "host:1")
    TrialRecord(first).set_outcome("measured")
    first.set_user_attr("evidence", {"scores": [1.0]})
    study.tell(first, 1.0)
    twin = study.ask()
    record = TrialRecord(twin)
    record.set_drawn(PLAN, "host:2")
    record.copy_result(study.trials[0])
    study.tell(twin, 1.0)
    frozen = TrialRecord(study.trials[1])
    assert frozen.worker() == "host:2" and frozen.twin_of() == 0 and frozen.outcome() == "twin"
    assert frozen.evidence() == Evidence(scores=[1.0]) and frozen.plan() == PLAN
    pruned = study.ask()
    TrialRecord(pruned).set_outcome("over_budget", "too big")
    TrialRecord(pruned).set_outcome("interrupted", "SIGTERM received")
    assert (TrialRecord(pruned).pruned(), TrialRecord(pruned).interrupted()) == (
        "too big",
        "SIGTERM received",
    )


def test_the_work_folder_has_one_layout(tmp_path: Path) -> None:
    folder = WorkFolder.of(tmp_path, "study", "sqlite:///x.db")
    assert folder.root.parent == tmp_path / "tune" and folder.root.name.startswith("study-")
    assert WorkFolder.of(tmp_path, "study", "sqlite:///y.db").root != folder.root
    assert folder.trial(7) == folder.root / "trials" / "0007"
    assert folder.fp32(8, "ddim") == folder.root / "fp32" / "8-ddim"


@pytest.mark.parametrize("changed", [{"steps": 9}, {"execution": {"unet": "compile"}}])
def test_plan_keys_tell_plans_apart(changed: dict) -> None:
    other = PLAN.model_copy(update=changed)
    assert plan_key(other) != plan_key(PLAN) and plan_key(PLAN) == plan_key(PLAN.model_copy())
