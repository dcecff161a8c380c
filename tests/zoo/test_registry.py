"""Zoo names, folders and errors; importing the zoo stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import autoq.zoo
from autoq.errors import AutoqError, ModelNotFoundError


def test_available_lists_shapes() -> None:
    assert autoq.zoo.available() == ["shapes"]


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ModelNotFoundError, match="'shapes'") as info:
        autoq.zoo.model_path("sd15")
    assert isinstance(info.value, AutoqError)
    with pytest.raises(ModelNotFoundError):
        autoq.zoo.load_pipeline("nope")


def test_model_folder_holds_pipeline_and_scorer_under_40_mb() -> None:
    folder = autoq.zoo.model_path("shapes")
    assert (folder / "pipeline" / "model_index.json").is_file()
    assert (folder / "scorer" / "config.json").is_file()
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 40 * 2**20


def test_prompts_are_held_out_prompts() -> None:
    prompts = autoq.zoo.prompts("shapes")
    assert len(prompts) == 16
    assert all(isinstance(p, str) and p.endswith(" background") for p in prompts)


def test_import_zoo_is_cheap() -> None:
    code = "import autoq.zoo, sys; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert not loaded & {"torch", "diffusers", "transformers"}
