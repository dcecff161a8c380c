"""Session fixture: the shipped shapes scorer, loaded once, offline."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def shapes_scorer() -> Any:
    import autoq.zoo

    return autoq.zoo.scorer("shapes")
