"""Tier choice: Pareto front, spanning corners, ties, cheapest resource, names."""

from __future__ import annotations

import numpy as np
import pytest

from autoq.profile import Constraints, Metrics
from autoq.tune._tiers import pareto_front, select_tiers, tier_names, within_noise

MiB = 2**20


def m(clip: float, latency: float, mib: float, half_ci: float = 1.0) -> Metrics:
    return Metrics(
        clip_score=clip,
        clip_score_std=5.0,
        clip_ci=(clip - half_ci, clip + half_ci),
        n_images=16,
        latency_s=latency,
        latency_p90_s=latency,
        peak_memory_bytes=int(mib * MiB),
        weight_bytes=int(mib * MiB),
        memory_method="cpu_dispatch_tracker",
    )


def test_pareto_front_keeps_exactly_the_non_dominated_points() -> None:
    points = [
        m(70, 1.0, 40),  # 0: best quality
        m(60, 0.2, 40),  # 1: fastest
        m(60, 1.0, 10),  # 2: smallest
        m(65, 1.2, 45),  # 3: dominated by 0
        m(60, 0.2, 40),  # 4: equal to 1: neither dominates
        m(59, 0.3, 41),  # 5: dominated by 1
    ]
    assert pareto_front(points) == [0, 1, 2, 4]


def test_corners_are_always_chosen_whatever_the_input_order() -> None:
    best, fast, small = m(75, 1.5, 40), m(60, 0.2, 38), m(62, 1.2, 8)
    middle = [m(70, 0.8, 30), m(68, 0.6, 20), m(66, 0.5, 15)]
    for candidates in ([best, fast, small, *middle], [*middle, small, fast, best]):
        chosen = select_tiers([(i, x) for i, x in enumerate(candidates)], k=3)
        assert {id(c.metrics) for c in chosen} == {id(best), id(fast), id(small)}
        by_resource = {r: c.metrics for c in chosen for r in c.cheapest_in}
        assert by_resource == {"quality": best, "latency": fast, "memory": small}


def test_remaining_slots_spread_in_latency_and_memory() -> None:
    best, fast, small = m(75, 2.0, 40), m(60, 0.2, 38), m(61, 1.9, 4)
    near_best = m(74, 1.9, 39)  # close to the best tier in latency and memory
    far = m(70, 0.6, 12)  # in the middle of the span, in log scale
    chosen = select_tiers([(0, best), (1, fast), (2, small), (3, near_best), (4, far)], k=4)
    assert [c.item for c in chosen] == [0, 4, 2, 1]  # by CLIP estimate


def test_plans_within_noise_in_every_objective_fill_no_slot() -> None:
    best = m(75, 1.0, 40, half_ci=5)
    twin = m(73, 1.05, 41, half_ci=5)  # overlapping CLIP, 5% slower, 2.5% larger
    chosen = select_tiers([(0, best), (1, twin)], k=4)
    assert [c.item for c in chosen] == [0]
    assert chosen[0].cheapest_in == ["quality", "latency", "memory"]
    assert within_noise(best, twin)
    assert not within_noise(best, m(73, 0.5, 41, half_ci=5))  # twice as fast: different


def test_a_plan_clearly_better_in_one_objective_is_kept() -> None:
    best = m(75, 1.0, 40, half_ci=5)
    smaller = m(73, 1.0, 20, half_ci=5)
    chosen = select_tiers([(0, best), (1, smaller)], k=4)
    assert [c.item for c in chosen] == [0, 1]
    assert chosen[1].cheapest_in == ["memory"]


def test_a_plan_a_tier_covers_fills_no_slot() -> None:
    # From a make demo profile: an all-int4 plan 2% smaller than a balanced one (memory
    # noise), 2.8x slower, and a lower CLIP estimate: it was the `small` tier, useless.
    best = m(72.3, 0.39, 48.1, half_ci=6)
    fast = m(70.4, 0.27, 48.1, half_ci=8)
    balanced = m(69.8, 0.58, 11.55, half_ci=8)
    all_int4 = m(64.9, 1.63, 11.32, half_ci=6)
    chosen = select_tiers([(0, best), (1, fast), (2, balanced), (3, all_int4)], k=4)
    assert [c.item for c in chosen] == [0, 1, 2]
    assert chosen[2].cheapest_in == ["memory"]  # the smallest, up to noise
    # The same up to latency noise: 5% slower than the fastest, 8 points better.
    quick, quick_better = m(60, 0.20, 30), m(68, 0.21, 30)
    chosen = select_tiers([(0, best), (1, quick), (2, quick_better)], k=4)
    assert [c.item for c in chosen] == [0, 2]
    assert "latency" in chosen[1].cheapest_in


def test_a_plan_only_better_in_noise_fills_no_slot() -> None:
    # From a make demo profile timed side by side: fp32 at 10 steps within latency noise
    # of a bf16 plan 2.3x smaller, its CLIP estimate 0.8 higher in 8-point intervals. It
    # took the fastest corner (the best estimate near the fastest) and the bf16 plan a
    # spread slot: two tiers a runtime would tell apart by noise alone.
    best = m(72.3, 0.388, 48.1, half_ci=6)
    fp32_10 = m(70.4, 0.295, 48.1, half_ci=8)
    bf16_10 = m(69.6, 0.275, 20.8, half_ci=7)
    small = m(69.8, 0.532, 11.6, half_ci=8)
    chosen = select_tiers([(0, best), (1, fp32_10), (2, bf16_10), (3, small)], k=4)
    assert [c.item for c in chosen] == [0, 3, 2]
    assert chosen[2].cheapest_in == ["latency"]
    # A race is to narrow intervals, so there nothing is covered: both are raced.
    racing = select_tiers([(0, best), (1, fp32_10), (2, bf16_10), (3, small)], 4, cover=False)
    assert {c.item for c in racing} == {0, 1, 2, 3}
    # Quality better beyond noise is something to add: with intervals that part, both
    # stay (the better one as the fastest corner, the smaller one for its memory).
    better_10, bf16_sure = m(74.0, 0.295, 48.1, half_ci=1), m(69.6, 0.275, 20.8, half_ci=1)
    chosen = select_tiers([(0, m(80, 0.6, 60, half_ci=1)), (1, better_10), (2, bf16_sure)], k=4)
    assert [c.item for c in chosen] == [0, 1, 2]


def test_with_two_slots_the_corner_spanning_more_is_kept() -> None:
    best, fast, small = m(75, 1.0, 40), m(60, 0.7, 38), m(62, 1.1, 4)
    chosen = select_tiers([(0, best), (1, fast), (2, small)], k=2)
    assert [c.item for c in chosen] == [0, 2]


def test_no_candidate_gives_no_tier_and_k_must_be_positive() -> None:
    assert select_tiers([], k=3) == []
    with pytest.raises(ValueError, match="k must be positive"):
        select_tiers([(0, m(70, 1, 1))], k=0)


@pytest.mark.parametrize(
    ("cheapest", "names"),
    [
        ([["quality", "latency", "memory"]], ["quality"]),
        ([["quality"], ["latency"], ["memory"]], ["quality", "fast", "small"]),
        (
            [["quality"], [], ["latency", "memory"], []],
            ["quality", "balanced", "minimal", "balanced-2"],
        ),
    ],
)
def test_tier_names_say_what_a_tier_is_cheapest_in(cheapest, names) -> None:
    assert tier_names(cheapest) == names


def test_max_clip_drop_is_judged_on_the_paired_interval_conservatively() -> None:
    limits = Constraints(max_clip_drop_pct=5)  # reference 70: drop of 3.5 allowed
    inside = m(68, 1, 1).model_copy(update={"clip_vs_reference_ci": (-3.0, -1.0)})
    straddles = m(68, 1, 1).model_copy(update={"clip_vs_reference_ci": (-4.0, 0.0)})
    assert limits.violations(inside, 70.0)[2] <= 0
    assert limits.violations(straddles, 70.0)[2] > 0  # might be over the floor: refused


def test_min_clip_score_is_judged_on_the_lower_end_of_the_interval() -> None:
    limits = Constraints(min_clip_score=65)
    assert limits.violations(m(68, 1, 1, half_ci=2), 70.0)[2] <= 0
    assert limits.violations(m(68, 1, 1, half_ci=4), 70.0)[2] > 0


def test_profile_lists_ties_and_notes_them() -> None:
    from tests.runtime.conftest import make_profile

    base = make_profile()
    clips = {"quality": (70, 2), "balanced": (68, 3), "minimal": (60, 2)}  # two overlap
    tiers = [
        t.model_copy(update={"metrics": m(clips[t.name][0], 1, 1, half_ci=clips[t.name][1])})
        for t in base.tiers
    ]
    profile = base.model_copy(update={"tiers": tiers, "quality_floor": 55.0})
    assert profile.ties() == [("quality", "balanced")]
    assert profile.notes()[1] == (
        "ties (quality difference not significant, not ranked): quality ~ balanced"
    )
    assert tiers[0].summary()["CLIP [95% CI] n"] == "70.0 [68.0, 72.0] n=16"
    # Fewer tiers than asked: the notes say why, and only then.
    study = profile.study.model_copy(update={"tiers_asked": 4})
    assert (
        "3 tiers of the 4 asked: no other plan"
        in profile.model_copy(update={"study": study}).notes()[2]
    )
    study = profile.study.model_copy(update={"tiers_asked": 3})
    assert not any("asked" in n for n in profile.model_copy(update={"study": study}).notes())


def test_tiers_measured_on_the_same_images_are_ranked_by_their_paired_difference() -> None:
    from autoq.profile import TrialPoint
    from tests.runtime.conftest import make_profile

    base = make_profile()
    base = base.model_copy(update={"prompts": [f"prompt {i}" for i in range(8)]})
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 15, len(base.prompts))  # prompts differ a lot
    shared = [70 + prompt_effect[i % len(base.prompts)] + rng.normal(0, 1) for i in range(16)]
    own = {  # quality 2 points above balanced on every image; minimal is balanced + noise
        "quality": [s + 2 + rng.normal(0, 0.5) for s in shared],
        "balanced": list(shared),
        "minimal": [s + (0.5 if i % 2 else -0.5) for i, s in enumerate(shared)],  # same mean
    }
    tiers = [
        t.model_copy(update={"trial": i, "metrics": m(70 - i, 1, 1, half_ci=8)})
        for i, t in enumerate(base.tiers)
    ]
    trials = [TrialPoint(number=i, n_images=16, scores=own[t.name]) for i, t in enumerate(tiers)]
    profile = base.model_copy(update={"tiers": tiers, "trials": trials})
    # Every marginal interval overlaps (half-width 8), yet the paired difference ranks
    # quality above both others; balanced and minimal do tie.
    assert profile.ties() == [("balanced", "minimal")]
