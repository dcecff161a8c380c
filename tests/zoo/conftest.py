"""Session fixtures: the shipped shapes pipeline and scorer, loaded once, offline."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def shapes_pipeline() -> Any:
    import torch

    import autoq.zoo

    torch.set_num_threads(1)
    pipeline = autoq.zoo.load_pipeline("shapes")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def shapes_scorer() -> Any:
    import autoq.zoo

    return autoq.zoo.scorer("shapes")
