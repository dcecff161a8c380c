"""The procedural dataset: seeded, captioned in the tokenizer's words, held-out triples unseen."""

from __future__ import annotations

import numpy as np

from autoq.zoo import _shapes


def test_same_seed_gives_same_images_and_captions() -> None:
    a_images, a_captions = _shapes.sample_batch(7, 100, 16)
    b_images, b_captions = _shapes.sample_batch(7, 100, 16)
    assert np.array_equal(a_images, b_images)
    assert a_captions == b_captions


def test_different_streams_differ() -> None:
    a_images, a_captions = _shapes.sample_batch(0, 0, 16)
    b_images, b_captions = _shapes.sample_batch(1, 0, 16)
    assert not np.array_equal(a_images, b_images)
    assert a_captions != b_captions


def test_images_are_64px_rgb() -> None:
    images, _ = _shapes.sample_batch(0, 0, 4)
    assert images.shape == (4, 64, 64, 3)
    assert images.dtype == np.uint8


def test_held_out_triples_never_appear_in_training_streams() -> None:
    held_out = set(_shapes.HELD_OUT)
    seen = set()
    for seed in (0, 1):  # the generator's and the scorer's streams
        for index in range(1500):
            _, scene = _shapes.sample(seed, index)
            for item in scene.shapes:
                triple = (item.shape, item.colour, scene.background)
                assert triple not in held_out, (seed, index, scene.caption)
                seen.add(triple)
    every = {
        (s, c, b) for s in _shapes.SHAPES for c in _shapes.COLOURS for b in _shapes.BACKGROUNDS
    }
    assert seen == every - held_out


def test_held_out_set_covers_every_attribute() -> None:
    shapes, colours, backgrounds = zip(*_shapes.HELD_OUT, strict=True)
    assert set(shapes) == set(_shapes.SHAPES)
    assert set(colours) == set(_shapes.COLOURS)
    assert set(backgrounds) == set(_shapes.BACKGROUNDS)
    assert len(set(_shapes.HELD_OUT)) == len(_shapes.HELD_OUT) == 16


def test_dataset_has_required_variety() -> None:
    assert len(_shapes.SHAPES) >= 5
    assert len(_shapes.COLOURS) >= 8
    assert len(_shapes.BACKGROUNDS) >= 4
    captions = {_shapes.sample(0, i)[1].caption.split(" on ")[0] for i in range(300)}
    assert any(" and " in c for c in captions)  # two-shape scenes
    assert any(c.startswith("a small ") for c in captions)
    assert any(" in the top left" in c for c in captions)


def test_captions_use_only_vocabulary_words() -> None:
    vocabulary = set(_shapes.caption_vocabulary())
    for index in range(300):
        caption = _shapes.sample(0, index)[1].caption
        assert set(caption.split()) <= vocabulary, caption


def test_caption_names_the_drawn_colour() -> None:
    _, scene = _shapes.sample(3, 5, pair_probability=0.0)
    image = _shapes.render(scene)
    item = scene.shapes[0]
    centre = np.asarray(image)[int(item.cy), int(item.cx)].astype(int)
    assert np.abs(centre - np.asarray(_shapes.COLOURS[item.colour])).max() < 20
    assert item.colour in scene.caption


def test_evaluation_prompts_are_the_held_out_triples() -> None:
    prompts = _shapes.evaluation_prompts()
    assert len(prompts) == len(_shapes.HELD_OUT)
    assert prompts[1] == "an orange square on a white background"
