"""`autoq report` treats the profile as untrusted: escaped text, contained PNG samples."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from autoq.errors import ConfigError
from autoq.pipeline import PipelinePlan
from autoq.profile import (
    Profile,
    StepPoint,
    TrialPoint,
    TuneConditions,
    read_profile,
    write_profile,
    write_report,
)
from tests.runtime.conftest import make_profile

MARK = "<i>x</i>"


def _with_marked_strings(profile: Profile) -> tuple[Profile, int]:
    """``profile`` with ``MARK`` appended to every string field that validation allows to
    hold it; returns how many fields took it."""
    data = json.loads(profile.model_dump_json())
    marked = 0

    def walk(node: Any) -> None:
        nonlocal marked
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            if isinstance(value, dict | list):
                walk(value)
            elif isinstance(value, str) and key not in ("fingerprint_id", "schema_version"):
                node[key] = value + MARK
                try:
                    Profile.model_validate(data)
                    marked += 1
                except Exception:  # validated field (precision, state, ...)
                    node[key] = value

    walk(data)
    return Profile.model_validate(data), marked


def _rich_profile() -> Profile:
    """The hand-made profile with every schema-2 field the report shows filled in."""
    base = make_profile()
    tiers = [
        t.model_copy(
            update={
                "cheapest_in": ["latency"],
                "min_steps": 2,
                "steps_curve": [
                    StepPoint(steps=2, latency_s=0.1, clip_score=29.0, clip_ci=(27.5, 30.5))
                ],
                "samples": [f"{base.model.source}/tiers/{t.name}/00.png"],
            }
        )
        for t in base.tiers
    ]
    trials = [
        TrialPoint(
            number=0,
            clip_score=30.0,
            latency_s=0.3,
            peak_memory_bytes=300 * 2**20,
            feasible=True,
            plan=base.tiers[0].plan,
            n_images=6,
        ),
        TrialPoint(number=1, state="failed", plan=base.tiers[1].plan, reason="dtype mismatch"),
        TrialPoint(number=2, state="pruned", reason="latency above twice the limit"),
    ]
    return base.model_copy(
        update={
            "tiers": tiers,
            "trials": trials,
            "conditions": TuneConditions(
                torch_threads=2, cpu_count=2, load_avg_1m=3.5, busy=True, latency_drift=(0.8, 1.1)
            ),
            "study": base.study.model_copy(update={"tiers_asked": 8}),
        }
    )


def test_every_profile_string_is_escaped(tmp_path: Path) -> None:
    profile, marked = _with_marked_strings(_rich_profile())
    assert marked >= 20  # names, sources, hashes, sampler, prompts, reasons, ...
    path = write_profile(profile, tmp_path / "p.json")
    page = write_report(read_profile(path), path).read_text()
    assert MARK not in page
    assert "&lt;i&gt;x&lt;/i&gt;" in page
    for field in (profile.study.sampler, profile.model.content_hash, profile.tiers[0].name):
        assert field.replace("<", "&lt;").replace(">", "&gt;") in page


def test_report_forbids_scripts_even_if_escaping_missed_one(tmp_path: Path) -> None:
    path = write_profile(make_profile(), tmp_path / "p.json")
    page = write_report(read_profile(path), path).read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_report_shows_intervals_failures_conditions_and_steps(tmp_path: Path) -> None:
    path = write_profile(_rich_profile(), tmp_path / "p.json")
    page = write_report(read_profile(path), path).read_text()
    assert "[27.50, 30.50]" in page  # the step point's interval
    assert "dtype mismatch" in page and "latency above twice the limit" in page
    assert "pruned" in page and "failed" in page
    assert "busy: latencies may be distorted" in page
    assert "timed side by side after racing: 0.80-1.10x" in page
    assert "<td>latency</td>" in page  # cheapest_in
    assert f"{len(read_profile(path).tiers)} tiers of the 8 asked" in page


def test_tiers_are_ringed_where_their_trials_are() -> None:
    import re

    from autoq.profile._report import _scatter

    profile = _rich_profile()  # trial 0: 0.3 s, CLIP 30
    timed = profile.tiers[0].metrics.model_copy(update={"latency_s": 9.0, "clip_score": 30.0})
    tier = profile.tiers[0].model_copy(update={"trial": 0, "metrics": timed})
    svg = _scatter(profile.model_copy(update={"tiers": [tier]}), "latency_s", "latency", 1.0)
    dot = re.search(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="3"', svg)
    ring = re.search(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="7"', svg)
    assert dot and ring and dot.groups() == ring.groups()  # not at its side-by-side 9 s
    assert ">9<" not in svg


def test_notes_say_when_the_machine_drifted_during_the_tune() -> None:
    profile = _rich_profile()

    def notes(drift: tuple[float, float] | None) -> list[str]:
        conditions = TuneConditions(torch_threads=1, cpu_count=2, latency_drift=drift)
        return profile.model_copy(update={"conditions": conditions}).notes()

    assert any(
        n.startswith("machine speed drifted") and "0.78-1.20x" in n for n in notes((0.78, 1.2))
    )
    assert not any(n.startswith("machine speed drifted") for n in notes((0.95, 1.05)))
    assert not any(n.startswith("machine speed drifted") for n in notes(None))


def _png(path: Path, colour: str = "red") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return path.read_bytes()


def _report_with_sample(tmp_path: Path, sample: str) -> str:
    profile = make_profile()
    tier = profile.tiers[0].model_copy(update={"samples": [sample]})
    profile = profile.model_copy(update={"tiers": [tier]})
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    path = write_profile(profile, folder / "p.json")
    return write_report(read_profile(path), path).read_text()


def test_a_png_inside_the_profile_folder_is_embedded(tmp_path: Path) -> None:
    data = _png(tmp_path / "profiles" / "p" / "00.png")
    assert base64.b64encode(data).decode() in _report_with_sample(tmp_path, "p/00.png")


@pytest.mark.parametrize(
    "sample",
    [
        "/etc/passwd",  # absolute, outside, not a PNG
        "../outside.png",  # a real PNG, but outside the profile's folder
        "link.png",  # a symlink inside the folder pointing outside
        "text.png",  # inside, PNG name, not PNG content
        "p/none.png",  # does not exist
        "p\x00.png",  # NUL byte
    ],
)
def test_samples_outside_the_folder_or_not_png_are_missing(tmp_path: Path, sample: str) -> None:
    outside = _png(tmp_path / "outside.png", "blue")
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    (folder / "text.png").write_text("secret")
    page = _report_with_sample(tmp_path, sample)
    assert "<td>missing</td>" in page
    assert "data:image/png" not in page
    assert base64.b64encode(outside).decode() not in page
    assert base64.b64encode(b"secret").decode() not in page


def test_report_folder_is_created_and_unwritable_target_is_one_line(tmp_path: Path) -> None:
    path = write_profile(make_profile(), tmp_path / "p.json")
    written = write_report(read_profile(path), path, tmp_path / "new" / "r.html")
    assert written.is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"Cannot write the report to .*--out") as info:
        write_report(read_profile(path), path, tmp_path / "file" / "r.html")
    assert "\n" not in str(info.value)


def test_plan_in_failed_trials_is_described() -> None:
    plan = PipelinePlan(precisions={"unet": "bnb_nf4"}, steps=4)
    profile = _rich_profile()
    trial = TrialPoint(number=5, state="failed", plan=plan, reason="boom")
    from autoq.profile import unmeasured_trials

    rows = unmeasured_trials(profile.model_copy(update={"trials": [trial]}))
    assert rows == [["5", "failed", plan.describe(), "boom"]]


def test_the_report_and_the_table_show_each_tiers_batch_curve(tmp_path: Path) -> None:
    from autoq.profile import BatchPoint, tier_details

    profile = make_profile()
    curve = [
        BatchPoint(batch_size=n, latency_s=t, peak_memory_bytes=2**20)
        for n, t in ((1, 0.2), (2, 0.3), (4, 0.5))
    ]
    batched = profile.tiers[0].model_copy(update={"batch_curve": curve, "max_batch": 4})
    profile = profile.model_copy(update={"tiers": [batched, *profile.tiers[1:]]})
    shown = "1: 0.2 s, 2: 0.3 s (1.33x), 4: 0.5 s (1.60x); fits 4"
    assert tier_details(batched)["batch curve"] == shown
    assert tier_details(profile.tiers[1])["batch curve"] == "-"
    path = write_profile(profile, tmp_path / "p.json")
    assert shown in write_report(read_profile(path), path).read_text()
