"""The training script reproduces every artefact from scratch and resumes from checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoq.errors import ConfigError
from autoq.zoo import _train

_TINY = _train.TrainConfig(
    vae_steps=2,
    vae_batch=2,
    scorer_steps=2,
    scorer_batch=4,
    latent_count=8,
    unet_steps=2,
    unet_batch=4,
    checkpoint_every=1,
)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="unet_steps"):
        _train.TrainConfig(unet_steps=0)
    with pytest.raises(ConfigError, match="valid stages"):
        _train.train("unused", stages=("gan",))


@pytest.mark.slow
def test_tiny_run_writes_loadable_models_and_resumes(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from autoq.quality import ClipScorer

    _train.train(tmp_path, config=_TINY, parallel_scorer=True)
    pipeline = StableDiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipeline.vae.config.scaling_factor > 0
    ClipScorer.from_pretrained(tmp_path / "scorer")

    longer = _train.TrainConfig(**{**_TINY.__dict__, "unet_steps": 3})
    (tmp_path / "pipeline" / "model_index.json").unlink()
    _train.train(tmp_path, stages=("unet",), config=longer)
    with safe_open(str(tmp_path / "checkpoints" / "unet.safetensors"), framework="pt") as f:
        assert f.metadata()["step"] == "3"
