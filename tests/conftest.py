"""Shared test set-up: an isolated autoq cache and offline hub access."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several workers share the cores: one torch thread each (and in the processes the
    # tests start), before anything imports torch.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Probe results and quantized weights go to a per-session folder, not ~/.cache."""
    os.environ["AUTOQ_CACHE_DIR"] = str(tmp_path_factory.mktemp("autoq-cache"))


@pytest.fixture(autouse=True)
def _reset_logging() -> None:
    from autoq._logging import reset

    yield
    reset()
