"""`load_profile` on a shared profiles folder: several models, several devices, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoq.device import Fingerprint
from autoq.errors import ConfigError, ProfileMismatchError
from autoq.profile import ModelIdentity, Profile, load_profile, matches_model, write_profile
from tests.runtime.conftest import make_profile

SD3 = ModelIdentity(source="/models/sd3", content_hash="5d35d35d35d35d3a", pipeline_class="X")


def _other_model(profile: Profile) -> Profile:
    return profile.model_copy(update={"model": SD3})


def _other_device(profile: Profile) -> Profile:
    data = profile.fingerprint.model_dump(mode="json", exclude={"fingerprint_id"})
    data["identity"]["cpu"]["model"] = "Another CPU"
    fp = Fingerprint.model_validate(data)
    return profile.model_copy(update={"fingerprint": fp})


def _like_device(profile: Profile) -> Profile:
    """A machine of the same kind as this one: another kernel release, another
    transformers minor version, 332 KB less memory."""
    data = profile.fingerprint.model_dump(mode="json", exclude={"fingerprint_id"})
    identity = data["identity"]
    identity["release"] = identity["release"] + "-other"
    identity["software"]["transformers"] = "0.1.0"
    identity["total_memory_bytes"] -= 332 * 1024
    identity["memory_limit_bytes"] -= 332 * 1024
    fp = Fingerprint.model_validate(data)
    return profile.model_copy(update={"fingerprint": fp})


def test_folder_with_only_bad_files_says_why_each_was_skipped(tmp_path: Path) -> None:
    (tmp_path / "corrupt.json").write_text('{"autoq_version": ')
    (tmp_path / "future.json").write_text('{"schema_version": 99}')
    (tmp_path / "latin1.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError) as info:
        load_profile(tmp_path)
    message = str(info.value)
    assert "No autoq profile in" not in message
    assert f"No usable autoq profile in {tmp_path}" in message
    assert "corrupt.json: not a valid autoq profile" in message
    assert "future.json: not a valid autoq profile (schema_version" in message
    assert "latin1.json: not UTF-8" in message
    assert "\n" not in message


def test_empty_folder_says_to_tune(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"No autoq profile in .*run `autoq tune` first"):
        load_profile(tmp_path)


def test_several_models_and_no_choice_lists_them(tmp_path: Path) -> None:
    shapes = make_profile()
    write_profile(shapes, tmp_path / "a-shapes.json")
    write_profile(_other_model(shapes), tmp_path / "b-sd3.json")
    with pytest.raises(ConfigError, match=r"holds profiles of 2 models") as info:
        load_profile(tmp_path)
    message = str(info.value)
    assert "zoo:shapes" in message and "/models/sd3" in message
    assert "a-shapes.json" in message and "b-sd3.json" in message
    assert "model=" in message


@pytest.mark.parametrize("choice", ["/models/sd3", "sd3", "5d35d35d35d35d3a"])
def test_model_chooses_among_models(tmp_path: Path, choice: str) -> None:
    shapes = make_profile()
    write_profile(shapes, tmp_path / "a-shapes.json")
    write_profile(_other_model(shapes), tmp_path / "b-sd3.json")
    assert load_profile(tmp_path, model=choice).model == SD3
    assert load_profile(tmp_path, model="shapes").model == shapes.model
    assert load_profile(tmp_path, model="zoo:shapes").model == shapes.model


def test_unknown_model_lists_what_the_folder_holds(tmp_path: Path) -> None:
    write_profile(make_profile(), tmp_path / "a-shapes.json")
    with pytest.raises(ConfigError, match=r"for model 'flux'.*a-shapes.json: a profile of zoo:"):
        load_profile(tmp_path, model="flux")


def test_this_devices_profile_wins_over_another_devices(tmp_path: Path) -> None:
    here = make_profile()
    # The other device's file sorts first and is newer: neither may decide.
    write_profile(_other_device(here), tmp_path / "a-other.json")
    write_profile(here.model_copy(update={"created": here.created.replace(year=2000)}),
                  tmp_path / "b-here.json")  # fmt: skip
    assert load_profile(tmp_path).fingerprint == here.fingerprint


def test_only_another_devices_profile_is_refused_with_differences(tmp_path: Path) -> None:
    write_profile(_other_device(make_profile()), tmp_path / "other.json")
    with pytest.raises(ProfileMismatchError, match=r"cpu.model: 'Another CPU' != "):
        load_profile(tmp_path)
    assert load_profile(tmp_path, allow_mismatch=True).fingerprint.identity.cpu.model == (
        "Another CPU"
    )


def test_a_profile_from_a_machine_of_the_same_kind_is_served_here(tmp_path: Path, caplog) -> None:
    """A fleet of like machines shares one tune: the kernel release, other library
    versions and memory within 2% are noted, not refused."""
    like = _like_device(make_profile())
    assert like.fingerprint.fingerprint_id != make_profile().fingerprint.fingerprint_id
    write_profile(like, tmp_path / "like.json")
    with caplog.at_level("INFO", logger="autoq"):
        loaded = load_profile(tmp_path / "like.json")
    assert loaded.fingerprint == like.fingerprint
    (record,) = [r for r in caplog.records if "profile_from_like_device" in r.getMessage()]
    noted = " ".join(record.getMessage().split("noted", 1)[1:])
    assert "release" in noted and "software.transformers" in noted
    # More memory than the tolerance, or another torch minor version, is another class.
    data = like.fingerprint.model_dump(mode="json", exclude={"fingerprint_id"})
    data["identity"]["software"]["torch"] = "1.0.0"
    data["identity"]["total_memory_bytes"] //= 2
    write_profile(
        like.model_copy(update={"fingerprint": Fingerprint.model_validate(data)}),
        tmp_path / "like.json",
    )
    with pytest.raises(ProfileMismatchError, match=r"software\.torch: '1\.0' != .*total_memory"):
        load_profile(tmp_path / "like.json")


def test_file_of_another_model_is_refused(tmp_path: Path) -> None:
    path = write_profile(make_profile(), tmp_path / "shapes.json")
    with pytest.raises(ConfigError, match=r"is for zoo:shapes .*not 'sd3'"):
        load_profile(path, model="sd3")


def test_a_relative_path_matches_a_stored_absolute_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "models" / "sd3"
    folder.mkdir(parents=True)
    identity = SD3.model_copy(update={"source": str(folder)})
    profile = make_profile().model_copy(update={"model": identity})
    monkeypatch.chdir(tmp_path)
    assert matches_model(profile, os.path.join("models", "sd3"))
    assert matches_model(profile, "./models/sd3/")
    assert not matches_model(profile, "models/sd35")
