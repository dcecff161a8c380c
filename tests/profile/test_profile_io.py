"""Profiles: atomic writes, validation with clear errors, diffusers configs per tier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoq.errors import BackendError, ConfigError
from autoq.pipeline import PipelinePlan
from autoq.profile import SCHEMA_VERSION, Constraints, Profile, read_profile, write_profile
from tests.runtime.conftest import make_profile as three_tier_profile

METRICS = three_tier_profile().tiers[0].metrics


def make_profile(plan: PipelinePlan) -> Profile:
    """The shared hand-made profile with one tier of ``plan``."""
    base = three_tier_profile()
    return base.model_copy(update={"tiers": [base.tiers[0].model_copy(update={"plan": plan})]})


def test_profile_round_trips(tmp_path: Path) -> None:
    profile = make_profile(PipelinePlan(precisions={"unet": "bnb_nf4"}, steps=10))
    path = write_profile(profile, tmp_path / "p.json")
    assert read_profile(path) == profile
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION == 2
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temp files left


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not a valid autoq profile"),
        ('{"schema_version": 99}', "schema_version"),
        ("{}", "not a valid autoq profile"),
        ("[]", "not a valid autoq profile"),
    ],
)
def test_bad_profiles_name_the_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=expected) as info:
        read_profile(path)
    assert str(path) in str(info.value)


def test_unknown_precision_in_a_profile_names_the_file(tmp_path: Path) -> None:
    path = write_profile(make_profile(PipelinePlan(precisions={"unet": "bnb_nf4"}, steps=4)),
                         tmp_path / "p.json")  # fmt: skip
    path.write_text(path.read_text().replace("bnb_nf4", "fp9"))
    with pytest.raises(ConfigError, match=r"not a valid autoq profile .*'fp9'") as info:
        read_profile(path)
    assert str(path) in str(info.value)


def test_missing_profile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Cannot read profile"):
        read_profile(tmp_path / "none.json")


def test_non_utf8_profile_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"autoq_version": "caf\xe9"}')
    with pytest.raises(ConfigError, match=r"not UTF-8") as info:
        read_profile(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_oversized_profile_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    path = write_profile(make_profile(PipelinePlan(precisions={"unet": "fp32"}, steps=4)),
                         tmp_path / "big.json")  # fmt: skip
    monkeypatch.setattr("autoq.profile._io.MAX_PROFILE_BYTES", 1024)
    with pytest.raises(ConfigError, match=r"too large for a profile") as info:
        read_profile(path)
    assert str(path) in str(info.value)


def test_constraints_combine_absolute_and_relative_quality() -> None:
    assert Constraints(max_clip_drop_pct=10).effective_min_clip(30.0) == pytest.approx(27.0)
    both = Constraints(min_clip_score=28.0, max_clip_drop_pct=10)
    assert both.effective_min_clip(30.0) == 28.0
    assert Constraints().violations(METRICS, 30.0) == [0.0, 0.0, 0.0]
    over = Constraints(max_memory_bytes=50).violations(METRICS, 30.0)[0]
    assert over == METRICS.peak_memory_bytes - 50


def test_tier_to_diffusers_maps_loader_backends() -> None:
    plan = PipelinePlan(
        precisions={"unet": "bnb_nf4_dq", "text_encoder": "bnb_int8", "vae": "fp32"}, steps=10
    )
    config = make_profile(plan).tiers[0].to_diffusers()
    mapping = config.quant_mapping
    assert set(mapping) == {"unet", "text_encoder"}
    assert mapping["unet"].bnb_4bit_quant_type == "nf4"
    assert mapping["unet"].bnb_4bit_use_double_quant
    assert type(mapping["text_encoder"]).__module__.startswith("transformers")


def test_tier_to_diffusers_refuses_what_diffusers_cannot_load() -> None:
    plan = PipelinePlan(precisions={"unet": "gguf_q4_0"}, steps=10)
    with pytest.raises(BackendError, match="GGUF per component"):
        make_profile(plan).tiers[0].to_diffusers()
