"""Dynamic batching: compatible concurrent requests run as one call, each keeping the
image it would get alone; incompatible ones never share a call."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from autoq.errors import ConfigError
from autoq.profile import BatchPoint
from autoq.runtime import AdaptivePipeline, DefaultPolicy, ScriptedMonitor, Signals
from autoq.runtime._batch import Batcher, Request, batch_key
from tests.runtime.conftest import MiB, make_profile


def _pipe(**options: Any) -> AdaptivePipeline:
    return AdaptivePipeline.from_profile(
        make_profile(),
        monitor=ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)]),
        device="cpu",
        **{"policy": DefaultPolicy(), **options},
    )


def _psnr(a: Any, b: Any) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return 100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _together(pipe: AdaptivePipeline, requests: list[dict[str, Any]]) -> list[Any]:
    """Call ``pipe`` from one thread per request, all at once."""
    outputs: list[Any] = [None] * len(requests)
    errors: list[BaseException] = []
    start = threading.Barrier(len(requests))

    def call(i: int) -> None:
        try:
            start.wait()
            outputs[i] = pipe(**requests[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return outputs


def _request(prompt: str, seed: int, **kwargs: Any) -> dict[str, Any]:
    return {"prompt": prompt, "generator": torch.Generator().manual_seed(seed), **kwargs}


def test_a_batched_request_gets_the_image_it_gets_alone() -> None:
    """Four concurrent requests with their own prompts, negative prompts and seeds run as
    one call; each image matches the same request served alone (PSNR >= 40 dB)."""
    asks = [
        ("a red circle", 1, ""),
        ("a blue square", 2, "a circle"),
        ("a green star", 3, ""),
        ("a pink triangle", 4, "a star"),
    ]
    batched = _pipe(max_batch=4, batch_wait_s=5.0)
    outputs = _together(batched, [_request(p, s, negative_prompt=n) for p, s, n in asks])
    assert [o.batch_size for o in outputs] == [4, 4, 4, 4]
    assert batched.metrics.snapshot()["batches"] == {4: 1}
    assert sum(batched.metrics.snapshot()["requests"].values()) == 4

    alone = _pipe()
    for (prompt, seed, negative), output in zip(asks, outputs, strict=True):
        single = alone(**_request(prompt, seed, negative_prompt=negative))
        assert len(output.images) == 1 and output.tier == single.tier
        assert _psnr(output.images[0], single.images[0]) >= 40.0, prompt


def test_incompatible_requests_never_share_a_call() -> None:
    """Other steps or another tier: another call, even when they wait together."""
    pipe = _pipe(max_batch=4, batch_wait_s=1.0)
    outputs = _together(
        pipe,
        [
            _request("a red circle", 1),
            _request("a blue square", 2),
            _request("a green star", 3, num_inference_steps=1),
            _request("a pink triangle", 4, tier="minimal"),
        ],
    )
    sizes = [o.batch_size for o in outputs]
    assert sizes[2] == sizes[3] == 1 and outputs[2].steps == 1 and outputs[3].tier == "minimal"
    assert sizes[0] == sizes[1] == 2
    assert pipe.metrics.snapshot()["batches"] == {2: 1, 1: 2}


def test_what_cannot_be_batched_runs_alone() -> None:
    assert batch_key(None, {"num_images_per_prompt": 2}) is None
    assert batch_key(None, {"latents": torch.zeros(1)}) is None
    assert batch_key("fast", {"guidance_scale": 5.0}) != batch_key("fast", {"guidance_scale": 6.0})
    assert batch_key(None, {"negative_prompt": "x", "generator": 1}) == batch_key(None, {})
    with pytest.raises(ConfigError, match="max_batch must be >= 1"):
        _pipe(max_batch=0)


def test_the_wait_for_a_batch_is_bounded_from_the_oldest_arrival() -> None:
    """A lone request waits ``wait_s`` from its arrival, then runs alone; a full batch
    runs at once (fake clock, real threads)."""
    now = [100.0]
    slot = threading.Semaphore(1)
    batcher = Batcher(
        max_batch=3,
        wait_s=2.0,
        acquire=lambda timeout: slot.acquire(timeout=timeout),
        release=slot.release,
        clock=lambda: now[0],
    )
    ran: list[list[str]] = []

    def run(batch: Any) -> list[str]:
        ran.append([r.prompt for r in batch])
        return [r.prompt.upper() for r in batch]

    lone = Request("a", {}, ("k",), arrived=100.0)
    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(batcher.submit(lone, run)))
    worker.start()
    time.sleep(0.2)
    assert ran == []  # still within its wait
    now[0] = 102.5  # the oldest request's wait is over
    with batcher._cond:
        batcher._cond.notify_all()
    worker.join(timeout=5)
    assert done == ["A"] and ran == [["a"]]

    full = [Request(p, {}, ("k",), arrived=now[0]) for p in "xyz"]
    results: list[str] = []
    threads = [threading.Thread(target=lambda r=r: results.append(batcher.submit(r, run)))
               for r in full]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(results) == ["X", "Y", "Z"]  # the clock never moved: it ran full
    assert sorted(ran[-1]) == ["x", "y", "z"]


def test_a_released_slot_goes_to_the_oldest_waiter() -> None:
    """One slot, three waiters in line: the holder that releases and asks again gets it
    after them, not first (`threading.Semaphore` makes no such promise)."""
    from autoq.runtime._batch import FairSlots

    slots = FairSlots(1)
    assert slots.acquire()
    order: list[str] = []

    def wait(name: str) -> None:
        assert slots.acquire()
        order.append(name)
        slots.release()

    threads = []
    for name in "abc":
        threads.append(threading.Thread(target=wait, args=(name,)))
        threads[-1].start()
        time.sleep(0.05)  # each in line before the next
    slots.release()
    assert slots.acquire()  # the former holder asks again: last in line
    order.append("holder")
    slots.release()
    for thread in threads:
        thread.join(timeout=5)
    assert order == ["a", "b", "c", "holder"]
    assert not FairSlots(0).acquire(timeout=0.01)  # a timed-out waiter leaves the line


def test_a_batch_larger_than_the_tier_measured_runs_in_calls_it_fits() -> None:
    """The profile says the quality tier fits batches of 2: four requests gathered
    together run as two calls of two, each image still its own."""
    profile = make_profile()
    quality = profile.tiers[0].model_copy(
        update={
            "batch_curve": [
                BatchPoint(batch_size=1, latency_s=0.3, peak_memory_bytes=300 * MiB),
                BatchPoint(batch_size=2, latency_s=0.45, peak_memory_bytes=420 * MiB),
            ],
            "max_batch": 2,
        }
    )
    profile = profile.model_copy(update={"tiers": [quality, *profile.tiers[1:]]})
    pipe = AdaptivePipeline.from_profile(
        profile,
        monitor=ScriptedMonitor([Signals(available_memory_bytes=10_000 * MiB)]),
        policy=DefaultPolicy(dwell_s=3600),
        device="cpu",
        max_batch=4,
        batch_wait_s=5.0,
    )
    seeds = [1, 2, 3, 4]
    outputs = _together(pipe, [_request(f"shape {s}", s, tier="quality") for s in seeds])
    assert [o.batch_size for o in outputs] == [2, 2, 2, 2]
    assert pipe.metrics.snapshot()["batches"] == {2: 2}
    alone = _pipe()
    single = alone(**_request("shape 3", 3, tier="quality"))
    assert _psnr(outputs[2].images[0], single.images[0]) >= 40.0


def test_a_lone_request_waits_for_a_batch_no_longer_than_its_slo_allows() -> None:
    """``wait_s`` is 10 s, but the leader must start by 0.5 s after its arrival to make its
    SLO: it runs alone then (fake clock, real threads)."""
    now = [100.0]
    slot = threading.Semaphore(1)
    batcher = Batcher(
        max_batch=3, wait_s=10.0,
        acquire=lambda timeout: slot.acquire(timeout=timeout), release=slot.release,
        clock=lambda: now[0], start_by=lambda request: request.arrived + 0.5,
    )  # fmt: skip
    ran: list[list[str]] = []

    def run(batch: Any) -> list[str]:
        ran.append([r.prompt for r in batch])
        return [r.prompt for r in batch]

    lone = Request("a", {}, ("k",), arrived=100.0)
    worker = threading.Thread(target=lambda: batcher.submit(lone, run))
    worker.start()
    time.sleep(0.2)
    assert ran == []
    now[0] = 100.6  # past its latest start, long before wait_s
    with batcher._cond:
        batcher._cond.notify_all()
    worker.join(timeout=5)
    assert ran == [["a"]]


def test_the_latest_start_of_a_batch_is_the_slo_less_a_full_batchs_cost() -> None:
    pipe = _pipe(max_batch=4, policy=DefaultPolicy(slo_s=2.0, dwell_s=3600))
    leader = Request("x", {"num_inference_steps": 2}, ("k",), tier=0, arrived=50.0)
    # quality: 0.3 s at 2 steps; no batch curve, so four cost four requests: 1.2 s.
    assert pipe._batch_start_by(leader) == pytest.approx(50.0 + 2.0 - 1.2)
    assert _pipe(max_batch=4)._batch_start_by(leader) is None  # no SLO, no bound
