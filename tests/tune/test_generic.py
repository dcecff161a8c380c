"""Another pipeline family (SDXL-style: two text encoders) is tuned without code changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoq.tune import tune
from tests.tune.conftest import fast_config


def _tiny_sdxl(folder: Path) -> Path:
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from autoq.zoo import model_path

    tokenizer = CLIPTokenizer.from_pretrained(model_path("shapes") / "pipeline" / "tokenizer")
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=64,
        max_position_embeddings=tokenizer.model_max_length,
    )
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=128,
        attention_head_dim=32,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=64 + 6 * 8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(64, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=16,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text),
        text_encoder_2=CLIPTextModelWithProjection(text),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(),
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_sdxl_family_is_searched_generically(tmp_path: Path) -> None:
    from autoq.zoo import model_path

    model = _tiny_sdxl(tmp_path / "tiny-sdxl")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    result = tune(
        fast_config(
            tmp_path / "profiles",
            model=str(model),
            scorer=str(model_path("shapes") / "scorer"),
            prompts=("a red circle", "a blue square"),
            trials=2,
            precisions=("fp32", "bnb_int8"),
        )
    )
    profile = result.profile
    assert profile.model.pipeline_class == "StableDiffusionXLPipeline"
    assert result.path.name.startswith("tiny-sdxl-")
    components = set(profile.reference.plan.precisions)
    assert components == {"unet", "vae", "text_encoder", "text_encoder_2"}
    assert all(set(t.plan.precisions) == components for t in profile.tiers)


def test_model_without_scorer_asks_for_one(tmp_path: Path) -> None:
    from autoq.errors import ConfigError

    model = _tiny_sdxl(tmp_path / "tiny-sdxl")
    with pytest.raises(ConfigError, match="--scorer"):
        tune(fast_config(tmp_path, model=str(model), trials=1))
