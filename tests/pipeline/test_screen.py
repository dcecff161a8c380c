"""How the screen compares a candidate's output with fp32's: what the next component gets."""

from __future__ import annotations

import math

import torch

from autoq.pipeline._screen import ScreenedOut, compare


def test_relative_error_over_every_floating_tensor() -> None:
    ref = {"sample": torch.ones(2, 2), "ids": torch.arange(3), "pooled": torch.ones(4)}
    out = {"sample": torch.ones(2, 2) * 1.5, "ids": torch.arange(3), "pooled": torch.ones(4)}
    error, problem = compare(out, ref)
    assert problem is None
    assert math.isclose(error or 0.0, math.sqrt(4 * 0.25 / 8))


def test_another_dtype_is_a_reason_not_an_error() -> None:
    ref = (torch.ones(3), (torch.ones(2),))
    out = (torch.ones(3), (torch.ones(2, dtype=torch.bfloat16),))
    error, problem = compare(out, ref)
    assert error is None
    assert problem == (
        "hands torch.bfloat16 to the pipeline where fp32 hands torch.float32 (out[1][0])"
    )


def test_structure_and_shape_changes_are_reasons() -> None:
    assert compare((torch.ones(2),), (torch.ones(2), torch.ones(2)))[1] == (
        "returns a different output structure than fp32"
    )
    assert compare([torch.ones(3)], [torch.ones(2)])[1] == "out[0] has another shape than fp32"


def test_nan_output_is_an_infinite_error() -> None:
    error, problem = compare(torch.full((2,), float("nan")), torch.ones(2))
    assert problem is None and error is not None and not error < 1.0


def test_dropped_pairing_reads_as_one_line() -> None:
    out = ScreenedOut("text_encoder_2", "bnb_nf4", ("norms", "io"), "output error 1.4 exceeds")
    assert out.describe() == (
        "text_encoder_2: bnb_nf4 + protect norms/io left out: output error 1.4 exceeds"
    )
