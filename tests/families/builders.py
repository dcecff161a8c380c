"""Tiny random-weight pipelines of the diffusers families autoq supports, built offline.

Configs follow the spirit of diffusers' own `get_dummy_components` (tests/pipelines/*),
with layer widths that are multiples of 32 so every quantizer finds layers to quantize.
Tokenizers are made here: the zoo's word-level CLIP BPE, and word-level T5 / Gemma
tokenizers from the `tokenizers` library. Each pipeline generates one 32x32-128x128
image in well under a second on a CPU.

Use `build_family(name, folder)` to write one with ``save_pretrained``; `FAMILIES` lists
the names, `FAMILY_PROMPTS` prompts whose words every tokenizer knows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

__all__ = ["FAMILIES", "FAMILY_PROMPTS", "build_family", "build_pipeline"]

FAMILIES = ("sdxl", "sd3", "flux", "pixart_sigma", "sana")

FAMILY_PROMPTS = (
    "a red circle on a blue background",
    "a green square next to a yellow triangle",
    "two small blue circles",
    "a large yellow square",
)

_WORDS = sorted({w for p in FAMILY_PROMPTS for w in p.split()} | {"a", "photo", "of", "the"})
_TEXT_LENGTH = 16  # tokens per prompt, for every tokenizer


def _clip_tokenizer(folder: Path) -> Any:
    from autoq.zoo._tokenizer import build_tokenizer

    return build_tokenizer(_WORDS, folder)


def _t5_tokenizer() -> Any:
    """A unigram T5 tokenizer with one piece per known word (others: ``<unk>``)."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{word}", -1.0) for word in _WORDS]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=_TEXT_LENGTH)


def _gemma_tokenizer() -> Any:
    """A character-level Gemma tokenizer (BPE without merges over letters and spaces)."""
    import string

    from transformers import GemmaTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    symbols = [*specials, "\u2581", *string.ascii_lowercase, *string.digits, *".,'-:"]
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    # Gemma starts every text with <bos>, so an empty prompt still has one unmasked token.
    return GemmaTokenizerFast(
        vocab=vocab, merges=[], add_bos_token=True, model_max_length=_TEXT_LENGTH
    )


def _clip_text(tokenizer: Any, with_projection: bool, hidden: int = 32) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=_TEXT_LENGTH,
        projection_dim=hidden,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def _t5(d_model: int) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(_WORDS) + 8,
        d_model=d_model,
        d_kv=16,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def _vae_kl(latent_channels: int, blocks: int, width: int = 32, **kwargs: Any) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=(width,) * blocks,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=min(width, 32),
        sample_size=32,
        **kwargs,
    ).eval()


def _sdxl(folder: Path) -> dict[str, Any]:
    import torch
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
        norm_num_groups=32,
    ).eval()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    clip = _clip_tokenizer(folder / "_tok_clip")
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": _vae_kl(4, 2),
        "text_encoder": _clip_text(clip, with_projection=False),
        "tokenizer": clip,
        "text_encoder_2": _clip_text(clip, with_projection=True),
        "tokenizer_2": clip,
        "image_encoder": None,
        "feature_extractor": None,
    }


def _sd3(folder: Path) -> dict[str, Any]:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        caption_projection_dim=32,
        joint_attention_dim=64,
        pooled_projection_dim=64,
        out_channels=4,
    ).eval()
    vae = _vae_kl(4, 2, use_quant_conv=False, use_post_quant_conv=False,
                  shift_factor=0.0609, scaling_factor=1.5035)  # fmt: skip
    clip = _clip_tokenizer(folder / "_tok_clip")
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": _clip_text(clip, with_projection=True),
        "tokenizer": clip,
        "text_encoder_2": _clip_text(clip, with_projection=True),
        "tokenizer_2": clip,
        "text_encoder_3": _t5(64),
        "tokenizer_3": _t5_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
    }


def _flux(folder: Path) -> dict[str, Any]:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8),
    ).eval()
    # FLUX renders at 128 x vae scale factor by default: a one-block VAE keeps that 128x128.
    vae = _vae_kl(4, 1, width=8, use_quant_conv=False, use_post_quant_conv=False,
                  mid_block_add_attention=False, shift_factor=0.0609,
                  scaling_factor=1.5035)  # fmt: skip
    clip = _clip_tokenizer(folder / "_tok_clip")
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": _clip_text(clip, with_projection=False),
        "tokenizer": clip,
        "text_encoder_2": _t5(32),
        "tokenizer_2": _t5_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
    }


def _pixart_sigma(folder: Path) -> dict[str, Any]:
    import torch
    from diffusers import DDIMScheduler, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=32,  # the smallest size PixArt-Sigma's resolution binning knows (256)
        num_layers=2,
        patch_size=2,
        attention_head_dim=16,
        num_attention_heads=2,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=32,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    ).eval()
    return {
        "transformer": transformer,
        # Binning renders at 256x256: a 4-block VAE keeps the latent at 32x32.
        "vae": _vae_kl(4, 4, width=8, mid_block_add_attention=False),
        "scheduler": DDIMScheduler(),
        "text_encoder": _t5(32),
        "tokenizer": _t5_tokenizer(),
    }


def _sana(folder: Path) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=16,
        num_cross_attention_heads=2,
        cross_attention_head_dim=16,
        cross_attention_dim=32,
        caption_channels=32,
        sample_size=16,  # the smallest size Sana's resolution binning knows (512)
    ).eval()
    torch.manual_seed(0)
    # Binning renders at 512x512: six blocks (scale factor 32) keep the latent at 16x16.
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=8,
        encoder_block_types=("ResBlock",) * 5 + ("EfficientViTBlock",),
        decoder_block_types=("ResBlock",) * 5 + ("EfficientViTBlock",),
        encoder_block_out_channels=(8, 8, 8, 8, 8, 32),
        decoder_block_out_channels=(8, 8, 8, 8, 8, 32),
        encoder_qkv_multiscales=((), (), (), (), (), (5,)),
        decoder_qkv_multiscales=((), (), (), (), (), (5,)),
        encoder_layers_per_block=(1,) * 6,
        decoder_layers_per_block=[1] * 6,
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    ).eval()
    torch.manual_seed(0)
    text_encoder = Gemma2Model(
        Gemma2Config(
            head_dim=16,
            hidden_size=32,
            initializer_range=0.02,
            intermediate_size=64,
            max_position_embeddings=64,
            num_attention_heads=2,
            num_hidden_layers=1,
            num_key_value_heads=2,
            vocab_size=64,
            attn_implementation="eager",
        )
    ).eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": text_encoder,
        "tokenizer": _gemma_tokenizer(),
    }


_BUILDERS = {
    "sdxl": ("StableDiffusionXLPipeline", _sdxl),
    "sd3": ("StableDiffusion3Pipeline", _sd3),
    "flux": ("FluxPipeline", _flux),
    "pixart_sigma": ("PixArtSigmaPipeline", _pixart_sigma),
    "sana": ("SanaPipeline", _sana),
}


def build_pipeline(name: str, scratch: str | Path) -> DiffusionPipeline:
    """A tiny random-weight pipeline of family ``name`` (one of `FAMILIES`), in memory.

    ``scratch`` is a folder for tokenizer files that must be written to be built.
    """
    import diffusers

    if name not in _BUILDERS:
        raise ValueError(f"Unknown family {name!r}; valid: {', '.join(FAMILIES)}.")
    class_name, build = _BUILDERS[name]
    components = build(Path(scratch))
    pipe = getattr(diffusers, class_name)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_family(name: str, folder: str | Path) -> Path:
    """Write a tiny random-weight pipeline of family ``name`` to ``folder`` with
    ``save_pretrained`` and return the folder (loadable by ``DiffusionPipeline.from_pretrained``
    and `autoq.pipeline.load_model`)."""
    import shutil
    import tempfile

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as scratch:
        pipe = build_pipeline(name, scratch)
        pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(folder / "_tok_clip", ignore_errors=True)
    return folder
