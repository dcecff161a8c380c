"""Confidence intervals for mean scores: a bootstrap that resamples whole prompts.

Images of one prompt are not independent (a prompt the model draws badly scores low for
every seed and every plan), so the unit of resampling is the prompt: each bootstrap draw
picks prompts with replacement and keeps all their images. An estimate may be a sum of
means over different image sets that share prompts (a plan's paired difference to fp32
plus fp32's own mean on a larger set); every part is resampled with the same prompts, so
the pairing is kept. The seed is fixed: the same scores always give the same interval.

With few clusters a plain percentile bootstrap is too narrow (it behaves like a normal
interval with the divide-by-n variance); the interval is therefore expanded as in
Hesterberg's "expanded percentile interval" (The American Statistician 69(4), 2015): its
half-widths are scaled by ``sqrt(G / (G - 1)) * t(G - 1) / z`` for ``G`` clusters, which
is 1.12 for 16 clusters and 1.47 for 6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "Part", "clustered_mean", "clustered_sum", "expansion", "overlap"]

LEVEL = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval and the images behind it."""

    estimate: float
    low: float
    high: float
    n: int

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"low must not exceed high, but got [{self.low}, {self.high}].")

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high)


@dataclass(frozen=True)
class Part:
    """Per-image values and the prompt (cluster) of each; its mean enters a sum."""

    values: Sequence[float]
    clusters: Sequence[int]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.clusters):
            raise ValueError(
                f"Expected one cluster per value, but got {len(self.values)} values "
                f"and {len(self.clusters)} clusters."
            )
        if not self.values:
            raise ValueError("Expected at least one value, but got none.")


def clustered_sum(
    parts: Sequence[Part],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
    n: int | None = None,
) -> Interval:
    """``sum(mean(part))`` with a percentile bootstrap interval, resampling clusters.

    Every part is resampled with the same draw of clusters (a cluster absent from a part
    contributes nothing to it). With fewer than two clusters in all, single values are
    resampled instead (there is nothing else to resample).

    Args:
        parts: The terms of the sum; negate values to subtract a mean.
        level: Coverage of the interval.
        resamples: Bootstrap draws.
        seed: Seed of the draws (fixed, so intervals are reproducible).
        n: Images to report (default: the first part's count).

    Raises:
        ValueError: No part, or a level outside (0, 1).
    """
    import numpy as np

    if not parts:
        raise ValueError("Expected at least one part, but got none.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), but got {level}.")
    labels = sorted({c for part in parts for c in part.clusters})
    if len(labels) < 2:  # one prompt: the images are the only thing to resample
        parts = [Part(p.values, list(range(len(p.values)))) for p in parts]
        labels = sorted({c for part in parts for c in part.clusters})
    index = {c: i for i, c in enumerate(labels)}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(resamples, len(labels)))
    counts = np.zeros((resamples, len(labels)))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    estimate, boot = 0.0, np.zeros(resamples)
    for part in parts:
        values = np.asarray(part.values, dtype=np.float64)
        ids = np.asarray([index[c] for c in part.clusters])
        sums = np.bincount(ids, weights=values, minlength=len(labels))
        sizes = np.bincount(ids, minlength=len(labels)).astype(np.float64)
        estimate += float(values.mean())
        total = counts @ sizes
        # A draw that picked none of this part's clusters keeps the part's own mean.
        boot += np.where(total > 0, (counts @ sums) / np.maximum(total, 1), values.mean())
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    widen = expansion(len(labels), level)
    return Interval(
        estimate=estimate,
        low=min(estimate - (estimate - float(low)) * widen, estimate),
        high=max(estimate + (float(high) - estimate) * widen, estimate),
        n=len(parts[0].values) if n is None else n,
    )


def expansion(clusters: int, level: float = LEVEL) -> float:
    """Factor that widens a percentile bootstrap interval over ``clusters`` clusters to
    small-sample coverage: ``sqrt(G / (G - 1)) * t_{G-1} / z`` (1 for a single cluster)."""
    from scipy.stats import norm, t

    if clusters < 2:
        return 1.0
    q = 1 - (1 - level) / 2
    return math.sqrt(clusters / (clusters - 1)) * float(t.ppf(q, clusters - 1) / norm.ppf(q))


def clustered_mean(
    values: Sequence[float],
    clusters: Sequence[int],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Mean of ``values`` with a bootstrap interval resampling whole ``clusters``."""
    return clustered_sum([Part(values, clusters)], level=level, resamples=resamples, seed=seed)


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals share a point: their estimates cannot be ranked."""
    return a[0] <= b[1] and b[0] <= a[1]
