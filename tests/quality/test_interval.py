"""Confidence intervals of mean scores: coverage, pairing, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from autoq.quality import Part, clustered_mean, clustered_sum, overlap


def _clustered(rng: np.random.Generator, prompts: int, seeds: int, mean: float):
    effect = rng.normal(0, 10, prompts)  # prompts differ a lot, as shapes prompts do
    values = [mean + effect[p] + rng.normal(0, 5) for s in range(seeds) for p in range(prompts)]
    clusters = [p for _ in range(seeds) for p in range(prompts)]
    return values, clusters


@pytest.mark.parametrize(
    ("prompts", "seeds", "seed", "least"),
    [
        (16, 2, 1, 0.85),
        # Five prompts: a plain percentile bootstrap covers about 81% here; the expanded
        # interval (t quantile, n / (n - 1) variance) brings it back to about 95%.
        (5, 1, 3, 0.9),
    ],
)
def test_interval_covers_the_true_mean_about_95_percent_of_the_time(
    prompts: int, seeds: int, seed: int, least: float
) -> None:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(300):
        values, clusters = _clustered(rng, prompts=prompts, seeds=seeds, mean=70.0)
        interval = clustered_mean(values, clusters, resamples=500)
        hits += interval.low <= 70.0 <= interval.high
    assert least <= hits / 300 <= 0.99


def test_resampling_prompts_is_wider_than_pretending_images_are_independent() -> None:
    values, clusters = _clustered(np.random.default_rng(2), prompts=8, seeds=4, mean=60.0)
    by_prompt = clustered_mean(values, clusters)
    by_image = clustered_mean(values, list(range(len(values))))
    assert by_prompt.high - by_prompt.low > 1.3 * (by_image.high - by_image.low)


def test_a_paired_difference_is_far_narrower_than_the_plan_alone() -> None:
    rng = np.random.default_rng(3)
    base, clusters = _clustered(rng, prompts=16, seeds=1, mean=70.0)
    plan = [b - 2.0 + rng.normal(0, 1) for b in base]  # small damage, same images
    alone = clustered_mean(plan, clusters)
    diff = [p - b for p, b in zip(plan, base, strict=True)]
    combined = clustered_sum([Part(base, clusters), Part(diff, clusters)], n=len(plan))
    paired = clustered_mean(diff, clusters)
    assert combined.estimate == pytest.approx(alone.estimate)
    assert paired.high - paired.low < 0.3 * (alone.high - alone.low)
    assert paired.high < 0  # the damage is detected although the plans' intervals overlap
    assert overlap(alone.bounds, clustered_mean(base, clusters).bounds)


def test_a_larger_base_set_narrows_a_combined_estimate() -> None:
    rng = np.random.default_rng(4)
    base, clusters = _clustered(rng, prompts=16, seeds=2, mean=70.0)
    few = 6  # the plan was only screened on the first six images
    plan = [b - 1.0 + rng.normal(0, 1) for b in base[:few]]
    alone = clustered_mean(plan, clusters[:few])
    diff = [p - b for p, b in zip(plan, base[:few], strict=True)]
    combined = clustered_sum([Part(base, clusters), Part(diff, clusters[:few])], n=few)
    assert combined.n == few
    assert combined.high - combined.low < alone.high - alone.low


def test_same_scores_give_the_same_interval() -> None:
    values, clusters = _clustered(np.random.default_rng(5), prompts=6, seeds=1, mean=50.0)
    assert clustered_mean(values, clusters) == clustered_mean(values, clusters)


def test_a_single_prompt_still_gets_an_interval_from_its_images() -> None:
    interval = clustered_mean([60.0, 70.0, 65.0, 75.0], [0, 0, 0, 0])
    assert interval.low < interval.estimate < interval.high
    assert interval.n == 4


def test_constant_scores_have_a_zero_width_interval() -> None:
    interval = clustered_mean([42.0] * 6, list(range(6)))
    assert interval.bounds == (42.0, 42.0)


def test_overlap() -> None:
    assert overlap((1.0, 3.0), (2.0, 4.0))
    assert overlap((1.0, 2.0), (2.0, 4.0))
    assert not overlap((1.0, 1.9), (2.0, 4.0))


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        clustered_sum([])
    with pytest.raises(ValueError, match="one cluster per value"):
        Part([1.0], [0, 1])
