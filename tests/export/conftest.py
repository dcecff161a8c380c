"""Helpers for export round-trips: a one-tier profile of any model, the tier's images as
autoq generates them, and the exported folder's images as plain diffusers generates them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoq.pipeline import ComponentCache, PipelinePlan, assemble, identity_of, load_pipeline
from autoq.profile import ExportResult, Profile
from tests.families.conftest import (  # noqa: F401  # fixtures for the per-family round-trips
    family,
    family_builder,
    family_folder,
)
from tests.runtime.conftest import make_profile

MAX_PIXEL_DIFF = 2 / 255


def one_tier_profile(source: str, plan: PipelinePlan, name: str = "tier") -> Profile:
    """The shared hand-made profile, for model ``source``, holding one tier of ``plan``."""
    base = make_profile()
    tier = base.tiers[0].model_copy(update={"name": name, "plan": plan})
    return base.model_copy(update={"model": identity_of(source), "tiers": [tier]})


def _generate(pipe: Any, prompt: str, steps: int, **kwargs: Any) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe(
            prompt,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            **kwargs,
        ).images


def autoq_images(folder: Path, plan: PipelinePlan, prompt: str, **kwargs: Any) -> np.ndarray:
    """The tier's images as autoq's runtime builds it (`assemble` over a component cache)."""
    base = load_pipeline(folder)
    pipe = assemble(ComponentCache(base, max_bytes=2**40), plan)
    return _generate(pipe, prompt, plan.steps, **kwargs)


def load_exported(result: ExportResult) -> Any:
    """Run the printed load call (everything before its generation line) as a user would."""
    namespace: dict[str, Any] = {}
    exec(result.code.split("\nimage = ")[0], namespace)  # the exact text `autoq export` prints
    return namespace["pipe"]


def plain_images(result: ExportResult, prompt: str, **kwargs: Any) -> np.ndarray:
    """The export's images from plain diffusers, at the step count the export records."""
    import json

    from autoq.profile import TIER_FILE

    record = json.loads((result.folder / TIER_FILE).read_text())
    return _generate(load_exported(result), prompt, record["num_inference_steps"], **kwargs)


def quantized_layers(module: torch.nn.Module) -> set[str]:
    """Names of the layers a quantization library replaced or whose weight it wrapped."""
    found = set()
    for name, layer in module.named_modules():
        weight = getattr(layer, "weight", None)
        wrapped = weight is not None and type(weight) not in (torch.nn.Parameter, torch.Tensor)
        if wrapped or type(layer).__module__.startswith("optimum.quanto"):
            found.add(name)
    return found
