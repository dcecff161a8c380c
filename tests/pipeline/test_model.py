"""Model identity: sources stored resolved, weights keyed by content, mismatches refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autoq.errors import ModelMismatchError, ModelNotFoundError
from autoq.pipeline import check_identity, identity_of, pipeline_folder


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A writable copy of the zoo model's pipeline folder."""
    folder = tmp_path / "models" / "shapes"
    shutil.copytree(pipeline_folder("zoo:shapes"), folder)
    return folder


def test_zoo_identity_names_the_zoo_model() -> None:
    identity = identity_of("zoo:shapes")
    assert identity.source == "zoo:shapes"
    assert identity.pipeline_class == "StableDiffusionPipeline"
    assert identity.revision is None
    assert identity_of(None) == identity


def test_relative_folder_is_stored_absolute(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(model_copy.parent)
    identity = identity_of("shapes")
    assert identity.source == str(model_copy.resolve())
    monkeypatch.chdir(model_copy.parent.parent.parent)  # elsewhere: still found
    assert check_identity(identity) == model_copy.resolve()


def test_renamed_copy_is_the_same_model(model_copy: Path) -> None:
    renamed = model_copy.rename(model_copy.parent / "renamed")
    assert identity_of(str(renamed)).content_hash == identity_of("zoo:shapes").content_hash
    assert check_identity(identity_of("zoo:shapes"), str(renamed)) == renamed.resolve()


def test_changed_weights_are_another_model(model_copy: Path) -> None:
    before = identity_of(str(model_copy))
    weights = next((model_copy / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    after = identity_of(str(model_copy))
    assert after.content_hash != before.content_hash
    with pytest.raises(ModelMismatchError, match="weights changed or it is another model") as info:
        check_identity(before)
    message = str(info.value)
    assert before.content_hash in message and after.content_hash in message
    assert "\n" not in message


def test_another_pipeline_class_is_refused(model_copy: Path) -> None:
    expected = identity_of(str(model_copy)).model_copy(update={"pipeline_class": "FluxPipeline"})
    with pytest.raises(ModelMismatchError, match="tuned for FluxPipeline"):
        check_identity(expected)


def test_missing_model_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="hf download"):
        identity_of("nobody/no-such-model")
    not_a_pipeline = tmp_path / "empty"
    not_a_pipeline.mkdir()
    with pytest.raises(ModelNotFoundError, match="not a diffusers pipeline folder"):
        identity_of(str(not_a_pipeline))
