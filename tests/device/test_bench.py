"""Benchmarks record ``None`` for a dtype the device cannot run instead of failing."""

from __future__ import annotations

import pytest
import torch

from autoq.device import _bench


def test_unsupported_int8_matmul_is_recorded_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("_int_mm not implemented for 'CPU'")

    monkeypatch.setattr(torch, "_int_mm", unsupported)
    rate = _bench._optional_matmul_rate(torch.device("cpu"), torch.int8, (64,), 0.0, lambda: None)
    assert rate is None


def test_supported_matmul_gives_a_positive_rate() -> None:
    rate = _bench._optional_matmul_rate(
        torch.device("cpu"), torch.float32, (64,), 0.0, lambda: None
    )
    assert rate is not None
    assert rate > 0
