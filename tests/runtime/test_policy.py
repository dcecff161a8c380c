"""The default policy on scripted signals: chosen by measured cost, fast down, slow up,
steps before components, no flapping."""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import replace

import pytest

from autoq.errors import ConfigError
from autoq.runtime import DefaultPolicy, RequestShape, Signals, TierView, predict_latency

MiB = 2**20
TIERS = [
    TierView("quality", 300 * MiB, 100 * MiB, 0.20, clip_score=30),
    TierView("balanced", 120 * MiB, 40 * MiB, 0.10, clip_score=29),
    TierView("minimal", 60 * MiB, 20 * MiB, 0.05, clip_score=28),
]


def mem(mib: float, **load: float) -> Signals:
    return Signals(available_memory_bytes=int(mib * MiB), **load)  # type: ignore[arg-type]


def run(
    policy: DefaultPolicy,
    samples: list[tuple[float, Signals]],
    start: int = 0,
    tiers: list[TierView] = TIERS,
) -> list[str]:
    current, served = start, []
    for now, signals in samples:
        current = policy.decide(tiers, current, signals, now).tier
        served.append(tiers[current].name)
    return served


def test_downgrades_at_once_and_upgrades_after_dwell() -> None:
    policy = DefaultPolicy(dwell_s=10)
    plenty, tight = mem(1000), mem(150)
    # Serving "quality" (weights 100 MiB resident): 150 MiB free can't hold its activations
    # (200 MiB + reserve), while "balanced" (120 MiB + reserve) fits once quality's
    # weights are released.
    served = run(policy, [(0, plenty), (1, tight), (2, plenty), (8, plenty), (12.5, plenty)])
    assert served == ["quality", "balanced", "balanced", "balanced", "quality"]


def test_oscillating_signal_does_not_flap() -> None:
    policy = DefaultPolicy(dwell_s=10)
    samples = [(t * 0.5, mem(1000) if t % 2 else mem(150)) for t in range(120)]  # 60 s
    served = run(policy, samples)
    switches = sum(a != b for a, b in itertools.pairwise(served))
    assert switches <= 60 / 10  # at most one switch per dwell window
    assert served[-1] == "balanced"


def test_latency_slo_with_queue_follows_littles_law() -> None:
    policy = DefaultPolicy(slo_s=0.5, dwell_s=0)
    assert run(policy, [(0, mem(1000, queue_depth=1))]) == ["quality"]  # 0.2 x 2 = 0.4 s
    assert run(policy, [(1, mem(1000, queue_depth=3))]) == ["balanced"]  # 0.2 x 4 > 0.5
    # Observed twice as slow as profiled: even "balanced" misses the SLO with 2 waiting.
    assert run(policy, [(2, mem(1000, queue_depth=2, latency_ratio=2.0))]) == ["minimal"]
    # Two generation slots drain the queue twice as fast.
    assert run(policy, [(3, mem(1000, queue_depth=3, slots=2))]) == ["quality"]  # 0.2 x 2


def test_predicted_completion_is_cost_times_requests_ahead_per_slot() -> None:
    assert predict_latency(0.5, ahead=0) == 0.5
    assert predict_latency(0.5, ahead=3) == 2.0
    assert predict_latency(0.5, ahead=3, slots=2) == 1.0
    assert predict_latency(0.8, ahead=7, batch=4) == 1.6  # two calls of four


# One call of 1, 2 and 4 requests: 0.2, 0.3 and 0.5 s (measured together).
BATCHING = TierView(
    "quality", 300 * MiB, 100 * MiB, 0.20, clip_score=30, steps=20,
    batch_curve=((1, 0.2, 300 * MiB), (2, 0.3, 400 * MiB), (4, 0.5, 600 * MiB)), max_batch=4,
)  # fmt: skip


def test_a_batch_costs_what_its_curve_measured_and_n_requests_without_one() -> None:
    assert BATCHING.batch_factor(1) == 1.0
    assert BATCHING.batch_factor(2) == pytest.approx(1.5)
    assert BATCHING.batch_factor(3) == pytest.approx(2.0)  # between 2 and 4
    assert BATCHING.batch_factor(8) == pytest.approx(5.0)  # past 4: 0.125 s per image
    assert BATCHING.cost(10, batch=4) == pytest.approx(0.25)  # half the steps
    plain = TIERS[0]
    assert plain.batch_factor(4) == 4.0  # no gain assumed that was not measured
    assert BATCHING.batch_limit(8) == 4 and plain.batch_limit(8) == 8
    # Seven ahead, batches of 4: two calls of 0.5 s; alone, eight calls of 0.2 s.
    assert BATCHING.completion(None, None, ahead=7, max_batch=4) == pytest.approx(1.0)
    assert BATCHING.completion(None, None, ahead=7) == pytest.approx(1.6)
    assert BATCHING.completion(None, None, ahead=0, max_batch=4) == pytest.approx(0.2)


def test_under_load_a_tier_that_batches_well_keeps_the_slo() -> None:
    """Six waiting: batched four at a time the quality tier finishes in 2 x 0.5 s; one
    at a time it would take 7 x 0.2 s, and the policy would have to step down."""
    minimal = TierView("minimal", 60 * MiB, 20 * MiB, 0.12, clip_score=28, steps=20)
    policy = DefaultPolicy(slo_s=1.2, dwell_s=0)
    loaded = mem(10_000, queue_depth=6)
    batched = policy.decide([BATCHING, minimal], 0, replace(loaded, max_batch=4), 0.0)
    alone = policy.decide([BATCHING, minimal], 0, loaded, 0.0)
    assert (batched.tier, alone.tier) == (0, 1)


# The committed shapes profile's shape: list order is not cost order. The best-quality
# tier is also the fastest; the last tier is the smallest but the slowest.
SHUFFLED = [
    TierView("quality", 40 * MiB, 15 * MiB, 0.46, clip_score=75),
    TierView("balanced", 200 * MiB, 60 * MiB, 0.20, clip_score=72),
    TierView("balanced-2", 120 * MiB, 40 * MiB, 1.57, clip_score=71),
    TierView("minimal", 30 * MiB, 10 * MiB, 0.77, clip_score=68),
]


@pytest.mark.parametrize("seed", range(4))
def test_choices_follow_measured_cost_whatever_the_list_order(seed: int) -> None:
    tiers = SHUFFLED[:]
    random.Random(seed).shuffle(tiers)
    name = [t.name for t in tiers].index

    def choose(signals: Signals, slo_s: float | None, current: str = "quality") -> str:
        decision = DefaultPolicy(slo_s=slo_s, dwell_s=0).decide(tiers, name(current), signals, 0.0)
        return tiers[decision.tier].name

    # Plenty of everything: the best measured quality, wherever it sits in the list.
    assert choose(mem(10_000), slo_s=None) == "quality"
    # Latency pressure: best that meets the SLO (balanced, 0.2 x 3 = 0.6 s) ...
    assert choose(mem(10_000, queue_depth=2), slo_s=0.9) == "balanced"
    # ... and when none meets it, the fastest, not the last in the list.
    assert choose(mem(10_000, queue_depth=9), slo_s=0.9) == "balanced"
    # Memory pressure: the best that fits (quality, 40 MiB), not the next in the list ...
    assert choose(mem(60), slo_s=None, current="balanced") == "quality"
    # ... and when none fits, the smallest.
    assert choose(mem(1), slo_s=None) == "minimal"


def test_excluded_tiers_are_skipped_by_cost_not_position() -> None:
    policy = DefaultPolicy(dwell_s=0)
    decision = policy.decide(SHUFFLED, 0, mem(10_000), 1, excluded=frozenset({0}))
    assert SHUFFLED[decision.tier].name == "balanced"  # next best quality
    decision = policy.decide(SHUFFLED, 0, mem(1), 1, excluded=frozenset({3}))
    assert SHUFFLED[decision.tier].name == "quality"  # smallest that is not cooling down


# Steps dial: "quality" at 20 steps costs 1.0 s, 0.4 s at 8 (its min_steps).
DIALED = [
    TierView("quality", 100 * MiB, 30 * MiB, 1.0, clip_score=70, steps=20, min_steps=8,
             curve=((8, 0.4), (12, 0.6))),
    TierView("balanced", 100 * MiB, 30 * MiB, 0.5, clip_score=69, steps=20),
    TierView("minimal", 100 * MiB, 30 * MiB, 0.2, clip_score=60, steps=10),
]  # fmt: skip


def test_steps_turn_down_within_the_floor_before_components_switch() -> None:
    policy = DefaultPolicy(slo_s=1.0, dwell_s=0)

    def served(queue: int) -> tuple[str, int | None]:
        d = policy.decide(DIALED, 0, mem(10_000, queue_depth=queue), 0.0)
        return DIALED[d.tier].name, d.steps

    assert served(0) == ("quality", 20)
    # Two in line: needs <= 0.5 s each: 10 steps on the curve (0.4 + 2 x 0.05).
    assert served(1) == ("quality", 10)
    # Three in line: needs <= 0.33 s, below what 8 steps (the floor) costs: switch.
    assert served(2) == ("minimal", 10)
    for queue in range(8):
        tier, steps = served(queue)
        if tier == "quality":
            assert steps is not None and 8 <= steps <= 20


def test_explicit_steps_are_honoured_never_dialed() -> None:
    policy = DefaultPolicy(slo_s=1.0, dwell_s=0)
    d = policy.decide(DIALED, 0, mem(10_000, queue_depth=1), 0.0, request=RequestShape(steps=20))
    # quality at 20 steps behind one request: 2.0 s; balanced at 20 steps: 1.0 s.
    assert (DIALED[d.tier].name, d.steps) == ("balanced", 20)


def test_cost_interpolates_the_curve_and_scales_with_pixels() -> None:
    quality = DIALED[0]
    assert quality.cost(8) == pytest.approx(0.4)
    assert quality.cost(16) == pytest.approx(0.8)  # between 12 (0.6) and 20 (1.0)
    assert quality.cost(4) == pytest.approx(0.2)  # below the curve: proportional
    assert quality.cost(40) == pytest.approx(2.0)  # above it: proportional
    sized = TierView("s", 1, 0, 1.0, steps=20, pixels=256 * 256)
    assert sized.cost(10, pixels=512 * 512) == pytest.approx(2.0)  # half steps, 4x pixels
    # A tier without a curve has no dial below its own steps, whatever min_steps says.
    assert list(TierView("s", 1, 0, 1.0, steps=20, min_steps=4).dial) == [20]
    assert list(quality.dial) == list(range(20, 7, -1))


def test_a_large_request_moves_to_a_tier_whose_cost_fits_its_size() -> None:
    policy = DefaultPolicy(slo_s=2.0, dwell_s=0)
    tiers = [dataclasses.replace(t, pixels=64 * 64) for t in DIALED]
    d = policy.decide(tiers, 0, mem(10_000), 0.0, request=RequestShape(pixels=128 * 128))
    # 4x the pixels: quality costs 1.6 s at 8 steps, ... 2.0 s at 10 steps.
    assert (tiers[d.tier].name, d.steps) == ("quality", 10)


def test_policy_rejects_nonsense_settings() -> None:
    with pytest.raises(ConfigError, match="slo_s must be positive"):
        DefaultPolicy(slo_s=0)
    with pytest.raises(ConfigError, match="reserve"):
        DefaultPolicy(reserve_fraction=1.5)


def test_under_sustained_arrivals_the_tier_must_keep_up_not_only_meet_the_slo() -> None:
    policy = DefaultPolicy(slo_s=100.0, dwell_s=0)

    def served(arrival_rps: float) -> tuple[str, int | None]:
        d = policy.decide(DIALED, 0, mem(10_000, arrival_rps=arrival_rps), 0.0)
        return DIALED[d.tier].name, d.steps

    assert served(0.5) == ("quality", 20)  # 0.5/s x 1.0 s: half busy
    assert served(2.0) == ("quality", 9)  # 2/s x 0.45 s = 0.9 of the slot
    assert served(3.0) == ("minimal", 10)  # 3/s x 0.2 s; quality at 8 steps: 1.2


def test_a_tier_that_builds_per_shape_runs_alone_unless_its_batches_were_measured() -> None:
    from autoq.profile import BatchPoint
    from autoq.runtime import tier_views
    from tests.runtime.conftest import make_profile

    plain = make_profile().tiers[0]
    compiled = plain.model_copy(
        update={"plan": plain.plan.model_copy(update={"execution": {"unet": "compile"}})}
    )
    curve = [BatchPoint(batch_size=n, latency_s=0.1 * n, peak_memory_bytes=MiB) for n in (1, 2)]
    measured = compiled.model_copy(update={"batch_curve": curve, "max_batch": 2})
    views = tier_views([plain, compiled, measured])
    # A new batch size would compile again while requests wait: one at a time.
    assert [v.max_batch for v in views] == [None, 1, 2]
    assert views[2].batch_curve == ((1, 0.1, MiB), (2, 0.2, MiB))
