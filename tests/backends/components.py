"""Small diffusers/transformers components built from configs (widths multiples of 64)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Component:
    """A module and a deterministic forward call that returns one output tensor."""

    name: str
    build: Callable[[], nn.Module]
    run: Callable[[nn.Module], torch.Tensor]


def _unet() -> nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=32,
        norm_num_groups=32,
    ).eval()


def _run_unet(unet: nn.Module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, 8, 8, generator=gen)
    context = torch.randn(1, 8, 64, generator=gen)
    return unet(sample, 10, encoder_hidden_states=context).sample


def _text_encoder() -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=64,
    )
    return CLIPTextModel(config).eval()


def _run_text_encoder(encoder: nn.Module) -> torch.Tensor:
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(1))
    return encoder(input_ids=ids).last_hidden_state


def _vae() -> nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(64, 128),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
    ).eval()


def _run_vae(vae: nn.Module) -> torch.Tensor:
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return vae(image, sample_posterior=False).sample


COMPONENTS = {
    "unet": Component("unet", _unet, _run_unet),
    "text_encoder": Component("text_encoder", _text_encoder, _run_text_encoder),
    "vae": Component("vae", _vae, _run_vae),
}
