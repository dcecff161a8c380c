"""The family fixtures are what they claim: loadable diffusers pipelines of each class."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.families.builders import FAMILY_PROMPTS

CLASSES = {
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "pixart_sigma": "PixArtSigmaPipeline",
    "sana": "SanaPipeline",
}


def test_family_folder_loads_and_generates(family: str, family_folder: Path) -> None:
    import numpy as np
    import torch

    from autoq.pipeline import load_pipeline

    pipe = load_pipeline(family_folder)
    assert type(pipe).__name__ == CLASSES[family]
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        image = pipe(
            FAMILY_PROMPTS[0], num_inference_steps=1, generator=torch.Generator().manual_seed(0)
        ).images[0]
    pixels = np.asarray(image)
    assert pixels.ndim == 3 and pixels.std() > 0


@pytest.mark.parametrize("name", ["nope"])
def test_unknown_family_is_refused(name: str, tmp_path: Path) -> None:
    from tests.families.builders import build_family

    with pytest.raises(ValueError, match="sdxl"):
        build_family(name, tmp_path)
