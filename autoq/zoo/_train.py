"""Train the "shapes" model family from scratch: VAE, scorer CLIP, then UNet + text encoder.

Every stage is seeded and resumable: it writes a safetensors checkpoint (weights, optimizer
moments, step) every few steps and continues from it when run again. A finished stage leaves
its ``save_pretrained`` folder behind and is skipped on the next run.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoq._logging import get_logger
from autoq.errors import AutoqError, ConfigError
from autoq.zoo import _models, _shapes, _tokenizer

if TYPE_CHECKING:
    import torch

__all__ = ["STAGES", "TrainConfig", "train"]

STAGES = ("tokenizer", "vae", "scorer", "latents", "unet")

_GENERATOR_SEED = 0
_SCORER_SEED = 1

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Step counts and batch sizes of each stage (the defaults made the shipped weights).

    On a 2-core CPU the defaults take about 90 minutes with the scorer in parallel.
    """

    version: int = 1
    vae_steps: int = 1400
    vae_batch: int = 16
    vae_lr: float = 1e-3
    scorer_steps: int = 1800
    scorer_batch: int = 128
    scorer_lr: float = 1e-3
    latent_count: int = 10_000
    unet_steps: int = 1750
    unet_batch: int = 64
    unet_lr: float = 5e-4
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        for name in ("vae_steps", "vae_batch", "scorer_steps", "scorer_batch", "latent_count",
                     "unet_steps", "unet_batch", "checkpoint_every"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ConfigError(f"`{name}` must be positive, but got {getattr(self, name)}.")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ConfigError(
                f"`caption_dropout` must be in [0, 1), but got {self.caption_dropout}."
            )


def _progress(total: int, initial: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=5.0)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _save_checkpoint(
    path: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write weights, Adam moments and step to one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"model.{name}.{key}"] = value.detach().clone().contiguous()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"optim.{i}.{key}"] = value.detach().clone().contiguous().reshape(value.shape)
    for key, value in (extra or {}).items():
        tensors[f"extra.{key}"] = value.detach().clone().contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"step": str(step)})
    os.replace(tmp, path)


def _load_checkpoint(
    path: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
) -> tuple[int, dict[str, torch.Tensor]]:
    """Restore what `_save_checkpoint` wrote; returns the step and the extra tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.exists():
        return 0, {}
    with safe_open(str(path), framework="pt") as handle:
        step = int(handle.metadata()["step"])
    tensors = load_file(str(path))
    for name, module in modules.items():
        prefix = f"model.{name}."
        module.load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        prefix = f"optim.{i}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            optimizer.state[param] = state
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    log.info("checkpoint_resumed", path=str(path), step=step)
    return step, extra


def _optimizer_step(loss: Any, params: Any, optimizer: Any, bar: Any) -> None:
    """Backward, clip gradients at 1, step, and report the loss on the progress bar."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    bar.update(1)
    bar.set_postfix(loss=f"{loss.item():.4f}")


def _stage_tokenizer(out: Path) -> None:
    _tokenizer.build_tokenizer(_shapes.caption_vocabulary(), out / "tokenizer")


def _copy_bpe_files(source: Path, target: Path) -> None:
    """Ship vocab.json + merges.txt next to tokenizer.json, as OpenAI CLIP folders do."""
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(source / name, target / name)


def _stage_vae(out: Path, config: TrainConfig) -> None:
    import torch

    torch.manual_seed(_GENERATOR_SEED)
    vae = _models.build_vae()
    with torch.no_grad():
        # Start near-deterministic (posterior std ~0.05): with the default std ~1 the decoder
        # learns to ignore noisy latents and stays blurry for hundreds of steps.
        vae.quant_conv.bias[vae.config.latent_channels :].fill_(-6.0)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    ckpt = out / "checkpoints" / "vae.safetensors"
    step, _ = _load_checkpoint(ckpt, {"vae": vae}, optimizer)
    vae.train()
    bar = _progress(config.vae_steps, step, "vae")
    while step < config.vae_steps:
        for group in optimizer.param_groups:
            group["lr"] = config.vae_lr * _lr_factor(step, config.vae_steps, 50)
        images, _ = _shapes.sample_batch(
            _GENERATOR_SEED, 1_000_000 + step * config.vae_batch, config.vae_batch
        )
        x = _to_tensor(images)
        torch.manual_seed(step)
        # bf16 autocast is ~2.5x faster for these convolutions on AVX512-BF16 CPUs.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            posterior = vae.encode(x).latent_dist
            reconstruction = vae.decode(posterior.sample()).sample
        error = reconstruction.float() - x
        loss = error.abs().mean() + 0.5 * error.square().mean() + 1e-6 * posterior.kl().mean()
        _optimizer_step(loss, vae.parameters(), optimizer, bar)
        step += 1
        if step % config.checkpoint_every == 0 or step == config.vae_steps:
            _save_checkpoint(ckpt, step, {"vae": vae}, optimizer)
    bar.close()
    vae.save_pretrained(out / "vae")


def _stage_scorer(out: Path, config: TrainConfig) -> None:
    import torch
    from transformers import CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": _shapes.IMAGE_SIZE},
            crop_size={"height": _shapes.IMAGE_SIZE, "width": _shapes.IMAGE_SIZE},
        ),
        tokenizer=tokenizer,
    )
    torch.manual_seed(_SCORER_SEED)
    model = _models.build_scorer(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.scorer_lr, weight_decay=0.05)
    ckpt = out / "checkpoints" / "scorer.safetensors"
    step, _ = _load_checkpoint(ckpt, {"scorer": model}, optimizer)
    model.train()
    bar = _progress(config.scorer_steps, step, "scorer")
    while step < config.scorer_steps:
        for group in optimizer.param_groups:
            group["lr"] = config.scorer_lr * _lr_factor(step, config.scorer_steps, 50)
        images, captions = _shapes.sample_batch(
            _SCORER_SEED, step * config.scorer_batch, config.scorer_batch
        )
        inputs = processor(
            text=captions,
            images=list(torch.from_numpy(images).permute(0, 3, 1, 2)),
            return_tensors="pt",
            padding="max_length",
        )
        loss = model(**inputs, return_loss=True).loss
        _optimizer_step(loss, model.parameters(), optimizer, bar)
        step += 1
        if step % config.checkpoint_every == 0 or step == config.scorer_steps:
            _save_checkpoint(ckpt, step, {"scorer": model}, optimizer)
    bar.close()
    model.save_pretrained(out / "scorer")
    processor.save_pretrained(out / "scorer")
    _copy_bpe_files(out / "tokenizer", out / "scorer")


def _stage_latents(out: Path, config: TrainConfig) -> None:
    """Encode the generator's training images once; the UNet trains on these latents."""
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    vae = AutoencoderKL.from_pretrained(out / "vae").eval()
    means, stds, captions = [], [], []
    chunk = 100
    bar = _progress(config.latent_count, 0, "latents")
    with torch.no_grad():
        for start in range(0, config.latent_count, chunk):
            count = min(chunk, config.latent_count - start)
            images, batch_captions = _shapes.sample_batch(_GENERATOR_SEED, start, count)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                posterior = vae.encode(_to_tensor(images)).latent_dist
            means.append(posterior.mean.float())
            stds.append(posterior.std.float())
            captions.extend(batch_captions)
            bar.update(count)
    bar.close()
    mean, std = torch.cat(means), torch.cat(stds)
    spread = torch.sqrt(mean.var() + std.square().mean())
    tmp = out / "latents.tmp"
    save_file(
        {"mean": mean.contiguous(), "std": std.contiguous()},
        str(tmp),
        metadata={"captions": json.dumps(captions), "scaling_factor": str(1.0 / spread.item())},
    )
    os.replace(tmp, out / "latents.safetensors")


def _ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    import torch

    with torch.no_grad():
        torch._foreach_lerp_(ema, params, 1.0 - decay)


def _stage_unet(out: Path, config: TrainConfig) -> None:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    latents = load_file(str(out / "latents.safetensors"))
    with safe_open(str(out / "latents.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
    captions: list[str] = json.loads(meta["captions"])
    scaling = float(meta["scaling_factor"])
    ids = tokenizer(
        [*captions, ""], padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids
    empty_ids = ids[-1]
    ids = ids[:-1]

    torch.manual_seed(_GENERATOR_SEED)
    unet = _models.build_unet()
    text_encoder = _models.build_text_encoder(tokenizer)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.unet_lr, weight_decay=0.01)
    ckpt = out / "checkpoints" / "unet.safetensors"
    step, extra = _load_checkpoint(ckpt, {"unet": unet, "text_encoder": text_encoder}, optimizer)
    ema = (
        [extra[f"ema.{i}"] for i in range(len(params))]
        if extra
        else [p.detach().clone() for p in params]
    )
    alphas = noise_scheduler.alphas_cumprod
    snr = alphas / (1.0 - alphas)
    unet.train()
    text_encoder.train()
    bar = _progress(config.unet_steps, step, "unet")
    while step < config.unet_steps:
        for group in optimizer.param_groups:
            group["lr"] = config.unet_lr * _lr_factor(step, config.unet_steps, 100)
        generator = torch.Generator().manual_seed(_GENERATOR_SEED * 1_000_003 + step)
        index = torch.randint(len(captions), (config.unet_batch,), generator=generator)
        mean, std = latents["mean"][index], latents["std"][index]
        z = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling
        tokens = ids[index].clone()
        drop = torch.rand(config.unet_batch, generator=generator) < config.caption_dropout
        tokens[drop] = empty_ids
        noise = torch.randn(z.shape, generator=generator)
        t = torch.randint(0, 1000, (config.unet_batch,), generator=generator)
        noisy = noise_scheduler.add_noise(z, noise, t)
        hidden = text_encoder(tokens).last_hidden_state
        prediction = unet(noisy, t, hidden).sample
        # Min-SNR-5 weighting: much faster convergence than plain epsilon MSE.
        weight = torch.clamp(snr[t], max=5.0) / snr[t]
        per_sample = (prediction - noise).square().mean(dim=(1, 2, 3))
        loss = (weight * per_sample).mean()
        _optimizer_step(loss, params, optimizer, bar)
        step += 1
        _ema_update(
            ema, [p.detach() for p in params], min(config.ema_decay, (1 + step) / (10 + step))
        )
        if step % config.checkpoint_every == 0 or step == config.unet_steps:
            _save_checkpoint(
                ckpt,
                step,
                {"unet": unet, "text_encoder": text_encoder},
                optimizer,
                extra={f"ema.{i}": e for i, e in enumerate(ema)},
            )
    bar.close()
    with torch.no_grad():
        for param, average in zip(params, ema, strict=True):
            param.copy_(average)
    vae = AutoencoderKL.from_pretrained(out / "vae")
    vae.register_to_config(scaling_factor=scaling)
    # fp16 storage keeps the package under 40 MB; diffusers loads it back as fp32.
    unet = unet.half()
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=_models.build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = out / "pipeline.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipeline.save_pretrained(tmp, safe_serialization=True)
    _copy_bpe_files(out / "tokenizer", tmp / "tokenizer")
    shutil.rmtree(out / "pipeline", ignore_errors=True)
    os.replace(tmp, out / "pipeline")


def _done(out: Path, stage: str) -> bool:
    marker = {
        "tokenizer": out / "tokenizer" / "vocab.json",
        "vae": out / "vae" / "config.json",
        "scorer": out / "scorer" / "config.json",
        "latents": out / "latents.safetensors",
        "unet": out / "pipeline" / "model_index.json",
    }[stage]
    return marker.exists()


def train(
    out: str | Path,
    *,
    stages: tuple[str, ...] = STAGES,
    config: TrainConfig | None = None,
    threads: int = 1,
    parallel_scorer: bool = False,
) -> Path:
    """Train (or resume training) the shapes model family into ``out``.

    Args:
        out: Working folder; holds checkpoints and, at the end, ``pipeline/`` and ``scorer/``.
        stages: Which stages to run, in `STAGES` order; finished stages are skipped.
        config: Step counts and batch sizes; the defaults reproduce the shipped weights.
        threads: Torch CPU threads.
        parallel_scorer: Train the scorer in a second process (one more core) while the
            generator trains; it does not depend on the generator.

    Returns:
        The output folder.

    Raises:
        ConfigError: An unknown stage name or a non-positive thread count.
        AutoqError: The parallel scorer process failed.
    """
    import torch

    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ConfigError(f"Unknown stage(s) {unknown}; valid stages are {list(STAGES)}.")
    if threads <= 0:
        raise ConfigError(f"`threads` must be positive, but got {threads}.")
    config = config or TrainConfig()
    torch.set_num_threads(threads)
    out = Path(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    runners = {
        "tokenizer": lambda: _stage_tokenizer(out),
        "vae": lambda: _stage_vae(out, config),
        "scorer": lambda: _stage_scorer(out, config),
        "latents": lambda: _stage_latents(out, config),
        "unet": lambda: _stage_unet(out, config),
    }
    scorer_process = None
    for stage in STAGES:
        if stage not in stages or _done(out, stage):
            continue
        if stage == "scorer" and parallel_scorer:
            context = multiprocessing.get_context("spawn")
            scorer_process = context.Process(
                target=train, args=(out,), kwargs={"stages": ("scorer",), "config": config}
            )
            scorer_process.start()
            log.info("stage_start", stage=stage, out=str(out), process=scorer_process.pid)
            continue
        started = time.perf_counter()
        log.info("stage_start", stage=stage, out=str(out))
        runners[stage]()
        log.info("stage_done", stage=stage, seconds=round(time.perf_counter() - started, 1))
    if scorer_process is not None:
        scorer_process.join()
        if scorer_process.exitcode != 0:
            raise AutoqError(
                f"The scorer process exited with code {scorer_process.exitcode}; re-run the "
                "same command to resume it from its last checkpoint."
            )
    return out
