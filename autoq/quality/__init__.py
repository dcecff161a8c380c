"""Image quality measurement: CLIP score and zero-shot classification with a local CLIP."""

from __future__ import annotations

from autoq.quality._clip import ClipScorer

__all__ = ["ClipScorer"]
