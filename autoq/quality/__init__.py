"""Image quality measurement: CLIP score, zero-shot classification with a local CLIP, and
confidence intervals for mean scores."""

from __future__ import annotations

from autoq.quality._clip import ClipScorer
from autoq.quality._interval import Interval, Part, clustered_mean, clustered_sum, overlap

__all__ = ["ClipScorer", "Interval", "Part", "clustered_mean", "clustered_sum", "overlap"]
