"""ClipScorer computes torchmetrics' CLIP score and classifies dataset images zero-shot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from autoq.errors import ConfigError
from autoq.zoo import _shapes


def _images(count: int, seed: int = 11) -> tuple[list[torch.Tensor], list[str], list[Any]]:
    images, scenes = [], []
    for index in range(count):
        image, scene = _shapes.sample(seed, index, pair_probability=0.0)
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        scenes.append(scene)
    return images, [s.caption for s in scenes], scenes


def test_score_matches_torchmetrics_per_pair(shapes_scorer: Any) -> None:
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    images, captions, _ = _images(6)
    captions = captions[:3] + captions[3:][::-1]  # some mismatched pairs too
    ours = shapes_scorer.score(images, captions)
    theirs, _ = _clip_score_update(images, captions, *shapes_scorer.as_torchmetrics())
    torch.testing.assert_close(ours, theirs.detach().clamp(min=0.0), atol=1e-4, rtol=1e-4)


def test_score_matches_torchmetrics_metric(shapes_scorer: Any) -> None:
    from torchmetrics.multimodal import CLIPScore

    images, captions, _ = _images(4)
    metric = CLIPScore(model_name_or_path=shapes_scorer.as_torchmetrics)
    metric.update(images, captions)
    # The metric clamps the mean over pairs; `score` clamps each pair.
    mean_cosine = shapes_scorer.similarity(images, captions).diagonal().mean()
    expected = metric.compute().detach()
    torch.testing.assert_close(mean_cosine.clamp(min=0.0), expected, atol=1e-4, rtol=1e-4)
    # Each image with its own caption scores above 0, so no pair is clamped and the mean of
    # per-pair scores is the metric's value too.
    per_pair = shapes_scorer.score(images, captions)
    assert (per_pair > 0).all(), per_pair
    torch.testing.assert_close(per_pair.mean(), expected, atol=1e-4, rtol=1e-4)


def test_accepts_pil_arrays_and_unit_floats(shapes_scorer: Any) -> None:
    image, scene = _shapes.sample(2, 0)
    as_uint8 = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    expected = shapes_scorer.score([as_uint8], [scene.caption])
    for variant in (image, np.asarray(image), as_uint8.float() / 255.0):
        torch.testing.assert_close(shapes_scorer.score([variant], [scene.caption]), expected)


def test_score_is_clamped_to_0_100(shapes_scorer: Any) -> None:
    images, captions, _ = _images(8)
    scores = shapes_scorer.score(images, captions[::-1])
    assert ((scores >= 0) & (scores <= 100)).all()


def test_length_mismatch_is_an_error(shapes_scorer: Any) -> None:
    images, captions, _ = _images(2)
    with pytest.raises(ConfigError, match="one prompt per image"):
        shapes_scorer.score(images, captions[:1])


def test_true_caption_ranks_first(shapes_scorer: Any) -> None:
    """Among the canonical captions of every triple in the sample, the true one wins."""
    images, _, scenes = _images(60)
    truth = [
        _shapes.canonical_caption(s.shapes[0].shape, s.shapes[0].colour, s.background)
        for s in scenes
    ]
    candidates = sorted(set(truth))
    predicted = shapes_scorer.classify(images, candidates)
    expected = torch.tensor([candidates.index(t) for t in truth])
    accuracy = (predicted == expected).float().mean().item()
    assert accuracy >= 0.9, accuracy


def test_classifies_colour_zero_shot(shapes_scorer: Any) -> None:
    images, _, scenes = _images(40, seed=12)
    colours = list(_shapes.COLOURS)
    labels = [
        _shapes.canonical_caption(s.shapes[0].shape, c, s.background)
        for s in scenes
        for c in colours
    ]
    similarity = shapes_scorer.image_features(images) @ shapes_scorer.text_features(labels).T
    per_image = similarity.reshape(len(images), len(images), len(colours))
    predicted = per_image[torch.arange(len(images)), torch.arange(len(images))].argmax(dim=-1)
    truth = torch.tensor([colours.index(s.shapes[0].colour) for s in scenes])
    assert (predicted == truth).float().mean().item() >= 0.9
