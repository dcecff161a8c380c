"""The shipped pipeline is a standard StableDiffusionPipeline that loads offline and follows
its prompt."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch

import autoq.zoo


def _generate(pipeline: Any, prompts: list[str], seed: int = 0, steps: int = 10) -> list[Any]:
    return pipeline(
        prompts,
        num_inference_steps=steps,
        guidance_scale=5.0,
        generator=[torch.Generator().manual_seed(seed + i) for i in range(len(prompts))],
    ).images


def test_loads_offline_with_standard_components(shapes_pipeline: Any) -> None:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert isinstance(shapes_pipeline, StableDiffusionPipeline)
    assert isinstance(shapes_pipeline.unet, UNet2DConditionModel)
    assert isinstance(shapes_pipeline.vae, AutoencoderKL)
    assert isinstance(shapes_pipeline.text_encoder, CLIPTextModel)
    assert isinstance(shapes_pipeline.tokenizer, CLIPTokenizer)
    assert shapes_pipeline.safety_checker is None
    assert shapes_pipeline.unet.dtype == torch.float32
    assert shapes_pipeline.vae_scale_factor == 8
    assert shapes_pipeline.unet.config.in_channels == 4


def test_every_width_is_a_multiple_of_64(shapes_pipeline: Any) -> None:
    for module in (shapes_pipeline.unet, shapes_pipeline.vae, shapes_pipeline.text_encoder):
        for name, layer in module.named_modules():
            if isinstance(layer, torch.nn.Linear):
                dims = (layer.in_features, layer.out_features)
            elif isinstance(layer, torch.nn.Conv2d):
                dims = (layer.in_channels, layer.out_channels)
            else:
                continue
            inner = [d for d in dims if d not in (3, 4, 8)]  # image and latent channels
            assert all(d % 64 == 0 for d in inner), (name, dims)


def test_from_pretrained_kwargs_pass_through() -> None:
    pipeline = autoq.zoo.load_pipeline("shapes", torch_dtype=torch.bfloat16)
    assert pipeline.unet.dtype == torch.bfloat16


@pytest.mark.slow
def test_same_seed_same_image(shapes_pipeline: Any) -> None:
    first = np.asarray(_generate(shapes_pipeline, ["a red circle on a white background"])[0])
    second = np.asarray(_generate(shapes_pipeline, ["a red circle on a white background"])[0])
    other = np.asarray(_generate(shapes_pipeline, ["a red circle on a white background"], 5)[0])
    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.slow
def test_held_out_images_score_higher_with_their_own_prompt(
    shapes_pipeline: Any, shapes_scorer: Any
) -> None:
    prompts = autoq.zoo.prompts("shapes")[:6]
    images = _generate(shapes_pipeline, prompts, steps=15)
    similarity = shapes_scorer.similarity(images, prompts).clamp(min=0.0)
    own = similarity.diagonal()
    others = (similarity.sum(dim=1) - own) / (len(prompts) - 1)
    assert own.mean() > others.mean() + 5.0, similarity
    assert (own > others).float().mean() >= 2 / 3, similarity
