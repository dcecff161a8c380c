"""Tiny random-weight pipelines of every supported diffusers family, built once per session.

``family_folder`` is parametrized over `FAMILIES` (one test per family); ``family_folders``
maps every family to its folder; ``scorer_folder`` is a CLIP scorer that can judge any
image (the zoo's). Other test packages can build the same pipelines with
`tests.families.builders.build_family`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.families.builders import FAMILIES, build_family


@pytest.fixture(scope="session")
def family_builder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``build(name)``: the saved folder of family ``name``, built on first use."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            built[name] = build_family(name, root / name)
        return built[name]

    return build


@pytest.fixture(scope="session")
def family_folders(family_builder: Callable[[str], Path]) -> dict[str, Path]:
    return {name: family_builder(name) for name in FAMILIES}


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def family_folder(family: str, family_builder: Callable[[str], Path]) -> Path:
    return family_builder(family)


@pytest.fixture(scope="session")
def scorer_folder() -> Path:
    from autoq import zoo

    return zoo.model_path("shapes") / "scorer"
