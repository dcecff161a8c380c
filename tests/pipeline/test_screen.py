"""How the screen compares a candidate's output with fp32's (what the next component gets),
and how it bounds the time each candidate may take."""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import pytest
import torch

from autoq.pipeline import _screen
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


# -- time bounds: no pairing runs unbounded -------------------------------------------------


@pytest.fixture(scope="module")
def shapes_pipe() -> Any:
    from autoq.zoo import load_pipeline

    pipe = load_pipeline("shapes")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _builder(pipe: Any, slow: dict[str, float], calls: list[str], only: str | None = None) -> Any:
    """Builds a copy of the fp32 component for every precision, so each runs at this
    machine's fp32 speed whatever its kernels for the real dtype are (bf16 without
    AVX512-BF16 is many times slower); ``slow[precision]`` seconds are slept before every
    submodule call of that precision (a dtype without fast kernels) on component ``only``
    (default: all), and counted. Only the sleeps can hit a time bound."""

    def build(component: str, precision: str, protect: tuple[str, ...]) -> torch.nn.Module:
        module = copy.deepcopy(getattr(pipe, component))
        if precision in slow and only in (None, component):

            def crawl(_module: torch.nn.Module, _args: Any) -> None:
                calls.append(precision)
                time.sleep(slow[precision])

            for sub in module.modules():
                sub.register_forward_pre_hook(crawl)
        return module

    return build


def _submodule_calls(module: torch.nn.Module, call: Any) -> int:
    count: list[int] = []
    handles = [m.register_forward_pre_hook(lambda *_: count.append(1)) for m in module.modules()]
    try:
        _screen._replay(module, call)
    finally:
        for handle in handles:
            handle.remove()
    return len(count)


def test_a_pairing_over_its_time_bound_stops_and_is_left_out(
    shapes_pipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A precision whose replay crawls is stopped at its bound (10x fp32's replay, at
    least `MIN_BOUND_S`), left out as too slow, and the others are still screened."""
    monkeypatch.setattr(_screen, "MIN_BOUND_S", 0.3)
    crawled: list[str] = []
    result = _screen.screen(
        shapes_pipe,
        {"unet": ("fp32", "fp16"), "vae": ("fp32", "bf16")},
        prompt="a red circle",
        guidance_scale=5.0,
        build=_builder(shapes_pipe, {"fp16": 0.05}, crawled, only="unet"),
    )
    assert result.kept == {"unet": ("fp32",), "vae": ("fp32", "bf16")}
    (out,) = result.dropped
    assert (out.component, out.precision) == ("unet", "fp16")
    assert out.reason.startswith("too slow: over ") and "s where fp32 takes" in out.reason
    # It stopped within the bound: far fewer submodule calls than one full replay makes.
    calls = _screen.capture_calls(shapes_pipe, prompt="a red circle", guidance_scale=5.0)
    assert len(crawled) < _submodule_calls(shapes_pipe.unet, calls["unet"][0]) / 2
    assert result.seconds[("vae", "bf16", ())] > 0  # timed, and kept
    assert result.fp32_seconds["unet"] > 0


def test_a_cast_much_slower_than_one_of_as_few_bits_is_dominated(
    shapes_pipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp16 first (the registry's order) runs past its short first-pass bound and waits;
    once bf16 is kept, fp16 is measured against it and left out as dominated."""
    monkeypatch.setattr(_screen, "MIN_BOUND_S", 0.3)
    monkeypatch.setattr(_screen, "SLOW_FACTOR", 1e4)  # only the rival can bound it
    crawled: list[str] = []
    result = _screen.screen(
        shapes_pipe,
        {"unet": ("fp32", "fp16", "bf16")},
        prompt="a red circle",
        guidance_scale=5.0,
        build=_builder(shapes_pipe, {"fp16": 0.05}, crawled),
    )
    assert result.kept == {"unet": ("fp32", "bf16")}
    (out,) = result.dropped
    assert out.precision == "fp16"
    assert out.reason.startswith("dominated by bf16: as few bits or fewer, and over ")


def test_pairings_the_budget_leaves_no_time_for_are_screened_by_a_rerun(
    shapes_pipe: Any,
) -> None:
    """Out of time, the screen leaves the rest out as unscreened and caches nothing of
    them; a rerun with time screens them, and a third run reuses every result."""
    options = {"unet": ("fp32", "bf16"), "vae": ("fp32", "bf16")}
    built: list[str] = []
    crawl = _builder(shapes_pipe, {}, [])

    def build(component: str, precision: str, protect: tuple[str, ...]) -> torch.nn.Module:
        built.append(component)
        return crawl(component, precision, protect)

    kwargs: dict[str, Any] = {
        "prompt": "a red circle", "guidance_scale": 5.0, "build": build,
        "model_hash": "budget-test",
    }  # fmt: skip
    progress: list[tuple[int, int]] = []
    short = _screen.screen(
        shapes_pipe, options, budget_s=0.0, progress=lambda *p: progress.append(p), **kwargs
    )
    assert short.kept == {"unet": ("fp32",), "vae": ("fp32",)}
    assert short.unscreened == [("unet", "bf16"), ("vae", "bf16")]
    assert all("a rerun screens it" in out.reason for out in short.dropped)
    assert built == [] and progress[0] == (0, 2) and progress[-1] == (2, 2)

    whole = _screen.screen(shapes_pipe, options, **kwargs)
    assert whole.kept == options and whole.unscreened == []
    assert sorted(built) == ["unet", "vae"]
    again = _screen.screen(shapes_pipe, options, **kwargs)
    assert again.kept == options and sorted(built) == ["unet", "vae"]  # nothing rebuilt
    assert again.seconds == whole.seconds
