"""The contract suite's parametrized component fixture."""

from __future__ import annotations

import pytest

from tests.backends.components import COMPONENTS, Component


@pytest.fixture(params=list(COMPONENTS), scope="module")
def component(request: pytest.FixtureRequest) -> Component:
    return COMPONENTS[request.param]
