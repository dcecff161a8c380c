"""Full-size Stable Diffusion 1.5 and SDXL architectures with random weights, offline.

The published component configs (``runwayml/stable-diffusion-v1-5`` and
``stabilityai/stable-diffusion-xl-base-1.0``) with random weights and the zoo's tokenizer
(max length 77): the architecture decides latency, bytes and a tune's cost, the values do
not. Quality still comes from the zoo, whose weights are trained.

    python benchmarks/models.py sd15 /tmp/sd15     # a diffusers folder, about 4.3 GB
    python benchmarks/models.py sdxl /tmp/sdxl     # about 14 GB

The folder loads like any hub model: ``autoq tune --model /tmp/sd15``,
``DiffusionPipeline.from_pretrained("/tmp/sd15")``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from autoq.zoo import model_path

SD15_UNET: dict[str, Any] = {  # runwayml/stable-diffusion-v1-5 unet/config.json
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
SDXL_UNET: dict[str, Any] = {  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
VAE: dict[str, Any] = {  # both families' vae/config.json (SDXL: scaling factor 0.13025)
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
CLIP_L: dict[str, Any] = {  # openai/clip-vit-large-patch14 text config
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "vocab_size": 49408,
    "projection_dim": 768,
}
CLIP_BIGG: dict[str, Any] = {  # laion/CLIP-ViT-bigG-14 text config (SDXL's second encoder)
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "vocab_size": 49408,
    "projection_dim": 1280,
}
SCHEDULER: dict[str, Any] = {  # the families' PNDM schedule, as DDIM (same betas)
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}


def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(model_path("shapes") / "pipeline" / "tokenizer")
    tokenizer.model_max_length = 77
    return tokenizer


def build(family: str) -> Any:
    """A ``family`` ("sd15" or "sdxl") pipeline in fp32 with random weights (seed 0)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    scheduler = DDIMScheduler(**SCHEDULER)
    if family == "sd15":
        return StableDiffusionPipeline(
            unet=UNet2DConditionModel(**SD15_UNET).eval(),
            vae=AutoencoderKL(**VAE).eval(),
            text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)).eval(),
            tokenizer=_tokenizer(),
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if family == "sdxl":
        return StableDiffusionXLPipeline(
            unet=UNet2DConditionModel(**SDXL_UNET).eval(),
            vae=AutoencoderKL(**VAE, scaling_factor=0.13025).eval(),
            text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)).eval(),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)).eval(),
            tokenizer=_tokenizer(),
            tokenizer_2=_tokenizer(),
            scheduler=scheduler,
        )
    raise ValueError(f"family must be sd15 or sdxl, got {family!r}")


def build_folder(family: str, folder: str | Path) -> Path:
    """``build(family)`` saved as a diffusers folder (safetensors); kept when present."""
    folder = Path(folder)
    if not (folder / "model_index.json").exists():
        build(family).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("family", choices=["sd15", "sdxl"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    print(build_folder(args.family, args.folder))


if __name__ == "__main__":
    main()
