"""Architectures of the "shapes" model family: small, but the standard SD building blocks.

Every hidden size and channel count is a multiple of 64 so quantization group sizes fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

__all__ = [
    "TEXT_WIDTH",
    "build_scheduler",
    "build_scorer",
    "build_text_encoder",
    "build_unet",
    "build_vae",
]

TEXT_WIDTH = 128


def _text_config(tokenizer: CLIPTokenizer, layers: int) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 4 * TEXT_WIDTH,
        "num_hidden_layers": layers,
        "num_attention_heads": TEXT_WIDTH // 64,
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "projection_dim": TEXT_WIDTH,
    }


def build_vae() -> AutoencoderKL:
    """A 64x64 -> 8x8x4 KL autoencoder (three downsamples, as in SD)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(64, 64, 128, 128),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """The generator's own CLIP text encoder, trained jointly with the UNet."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**_text_config(tokenizer, layers=2)))


def build_unet() -> UNet2DConditionModel:
    """A two-level cross-attention UNet on 8x8x4 latents."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(128, 128),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=64,
        norm_num_groups=32,
    )


def build_scheduler() -> DPMSolverMultistepScheduler:
    """DPM-Solver++ on a cosine schedule, which reaches (almost) pure noise at 8x8.

    The cosine schedule's last ``alphas_cumprod`` is ~2e-9: starting the solver there
    (``linspace``/``trailing`` spacing) wrecks the first step, so sampling uses SD's
    ``leading`` spacing (first step t=961 at 25 steps) and the recommended
    ``lambda_min_clipped`` guards the other spacings.
    """
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
        lambda_min_clipped=-5.1,
        timestep_spacing="leading",
        steps_offset=1,
    )


def build_scorer(tokenizer: CLIPTokenizer) -> CLIPModel:
    """A small CLIP (ViT-8px patches on 64x64, 2-layer text tower) used only to judge."""
    from transformers import CLIPConfig, CLIPModel

    text = _text_config(tokenizer, layers=2)
    text.pop("projection_dim")
    vision = {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 8,
    }
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=128))
