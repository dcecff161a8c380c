"""The dispatcher an application puts in front of `AdaptivePipeline`: admission against
the SLO and the queue, a bounded pool, cancellation, the same image a direct call gives."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from autoq.errors import ConfigError, OverloadedError
from autoq.runtime import AdaptivePipeline, DefaultPolicy, Dispatcher, ScriptedMonitor, Signals
from tests.runtime.conftest import MiB, instant_pipeline, make_profile


def gated(**options) -> tuple[Dispatcher, threading.Event]:
    """A dispatcher over an instant pipeline whose generations wait for the event."""
    pipe = instant_pipeline()
    pipe.gate = threading.Event()
    return Dispatcher(pipe, **options), pipe.gate


def test_a_request_gives_the_image_a_direct_call_with_its_seed_gives() -> None:
    monitor = ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)])
    pipe = AdaptivePipeline.from_profile(
        make_profile(), monitor=monitor, policy=DefaultPolicy(dwell_s=3600), device="cpu"
    )
    dispatcher = Dispatcher(pipe)
    try:
        out = dispatcher.submit("a red circle", tier="quality", steps=2, seed=7).result(120)
        direct = pipe(
            "a red circle", tier="quality", num_inference_steps=2,
            generator=torch.Generator("cpu").manual_seed(7),
        )  # fmt: skip
    finally:
        dispatcher.shutdown()
    assert out.tier == "quality" and out.steps == 2
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(direct.images[0]))
    assert dispatcher.pending == 0


def test_a_full_queue_refuses_at_once_and_a_drained_one_admits_again() -> None:
    dispatcher, gate = gated(max_queue=1)
    try:
        first = dispatcher.submit("first")
        while dispatcher.pipe.started != ["first"]:
            gate.wait(0.01)
        second = dispatcher.submit("second")
        assert dispatcher.pending == 2 and dispatcher.queued() == 1
        with pytest.raises(OverloadedError, match=r"Queue full \(1 waiting\)") as refused:
            dispatcher.submit("third")
        assert refused.value.reason == "queue_full" and refused.value.retry_after_s > 0
        gate.set()
        first.result(10), second.result(10)
        assert dispatcher.pending == 0
        assert dispatcher.submit("fourth").result(10).tier
    finally:
        gate.set()
        dispatcher.shutdown()
    assert dispatcher.pipe.calls == ["first", "second", "fourth"]  # "third" never ran


def test_the_slo_refuses_what_no_tier_can_finish_alone_or_at_this_load() -> None:
    # Profiled: minimal 0.05 s at 2 steps at 256x256, so 40 steps take 1 s alone.
    dispatcher, gate = gated(slo_s=1.5)
    try:
        with pytest.raises(OverloadedError, match="alone it would take") as alone:
            dispatcher.submit("x", steps=150)
        assert alone.value.reason == "cost" and alone.value.retry_after_s > 1.5
        with pytest.raises(OverloadedError) as big:  # 4x the pixels: 4 s alone
            dispatcher.submit("x", steps=40, width=512, height=512)
        assert big.value.reason == "cost"
        first = dispatcher.submit("first", steps=40)  # 1 s: admitted
        with pytest.raises(OverloadedError, match="at this load") as loaded:
            dispatcher.submit("second", steps=40)  # 2 s behind the first
        assert loaded.value.reason == "slo" and loaded.value.retry_after_s > 0
        gate.set()
        first.result(10)
    finally:
        gate.set()
        dispatcher.shutdown()
    assert dispatcher.pipe.calls == ["first"]


def test_a_cancelled_queued_request_never_runs_and_frees_its_place() -> None:
    dispatcher, gate = gated(max_queue=1)
    try:
        first = dispatcher.submit("first")
        while dispatcher.pipe.started != ["first"]:
            gate.wait(0.01)
        abandoned = dispatcher.submit("abandoned")
        assert abandoned.cancel()
        assert dispatcher.pending == 1  # the place is free at once
        queued = dispatcher.submit("queued")
        gate.set()
        first.result(10), queued.result(10)
    finally:
        gate.set()
        dispatcher.shutdown()
    assert dispatcher.pipe.started == ["first", "queued"]


def test_shutdown_cancels_what_waits_and_a_later_request_starts_a_new_pool() -> None:
    dispatcher, gate = gated()
    first = dispatcher.submit("first")
    while dispatcher.pipe.started != ["first"]:
        gate.wait(0.01)
    waiting = dispatcher.submit("waiting")
    dispatcher.shutdown()
    gate.set()
    assert waiting.cancelled() and first.result(10)
    assert dispatcher.submit("after").result(10) and dispatcher.pending == 0
    dispatcher.shutdown()


@pytest.mark.parametrize(
    ("request_options", "fragment"),
    [({"tier": "turbo"}, "Unknown tier 'turbo'"), ({"width": 2048}, "at most 1024")],
)
def test_a_request_outside_what_the_profile_serves_is_a_config_error(
    request_options, fragment
) -> None:
    dispatcher = Dispatcher(instant_pipeline())
    with pytest.raises(ConfigError, match=fragment):
        dispatcher.submit("x", **request_options)
    assert dispatcher.pending == 0


def test_a_request_of_several_images_is_predicted_as_one_call_of_them() -> None:
    """Without a batch curve, three images cost three generations: 40 steps alone take
    1 s, so three of them miss a 2 s SLO that one of them meets."""
    dispatcher, gate = gated(slo_s=2.0)
    gate.set()
    try:
        assert dispatcher.submit("one", steps=40).result(10)
        with pytest.raises(OverloadedError, match=r"alone it would take 3\.00s"):
            dispatcher.submit("three", steps=40, num_images=3)
        with pytest.raises(ConfigError, match="num_images must be positive"):
            dispatcher.submit("none", num_images=0)
    finally:
        dispatcher.shutdown()


@pytest.mark.parametrize(
    "limits", [{"max_queue": 0}, {"workers": 0}, {"slo_s": 0.0}, {"slo_s": float("nan")}]
)
def test_limits_must_be_positive(limits) -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        Dispatcher(instant_pipeline(), **limits)
