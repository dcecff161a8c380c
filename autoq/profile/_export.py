"""`export_tier`: a tier as a folder plain diffusers loads, with the exact load call.

The folder holds the model's full-precision weights (safetensors only, never pickle) and the
tier's scheduler as the pipeline's own; quantization happens at load time through the
printed ``from_pretrained(..., quantization_config=...)`` call, which quantizes exactly the
layers autoq measured. diffusers has no field for the step count, so ``autoq_tier.json``
beside ``model_index.json`` records it with the plan, the settings it was measured at and
the load call.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoq._files import atomic_write_text
from autoq.errors import ConfigError
from autoq.profile._diffusers import NotExportableError, TierLoad, plan_load
from autoq.profile._io import read_profile
from autoq.profile._match import load_profile
from autoq.profile._model import Profile, Tier

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

__all__ = ["TIER_FILE", "ExportResult", "export_tier"]

TIER_FILE = "autoq_tier.json"
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


@dataclass(frozen=True)
class ExportResult:
    """What `export_tier` wrote and how to load it."""

    folder: Path
    tier: str
    steps: int
    load: TierLoad
    code: str
    """Python that loads the folder in plain diffusers and generates like the tier."""


def _find_tier(profile: Profile, name: str) -> Tier:
    if name == profile.reference.name:
        return profile.reference
    return profile.tier(name)


def _set_scheduler(pipe: DiffusionPipeline, name: str) -> None:
    from autoq.pipeline import SchedulerDimension

    try:
        pipe.scheduler = SchedulerDimension.apply(pipe, name)
    except ConfigError as exc:
        raise NotExportableError(str(exc)) from None


def export_tier(
    profile: Profile | str | Path,
    tier: str,
    out: str | Path,
    *,
    model: str | None = None,
    device: torch.device | str | None = None,
) -> ExportResult:
    """Write tier ``tier`` of ``profile`` as a folder plain diffusers loads.

    Args:
        profile: A `Profile`, a profile file, or a directory of profiles.
        tier: A tier name (or the reference's).
        out: The folder to create; it must not exist or be empty.
        model: Load the weights from here instead of the profile's source (a moved copy);
            with a directory of profiles, also picks that model's profile.
        device: Where the export will be loaded (default: CUDA if present, else CPU);
            decides what plain diffusers can represent (bitsandbytes needs a GPU).

    Returns:
        The folder, the tier's step count and the exact load call.

    Raises:
        NotExportableError: Plain diffusers cannot load this tier as autoq measured it on
            ``device``; the message gives each reason.
        ModelMismatchError: The weights found are not the model the profile was tuned for.
        ConfigError: Unknown tier, or ``out`` is a non-empty folder.
    """
    from autoq.backends._quiet import silence_libraries
    from autoq.device import resolve_device
    from autoq.pipeline import check_identity, load_pipeline

    if not isinstance(profile, Profile):
        path = Path(profile)
        profile = (
            load_profile(path, model, allow_mismatch=True) if path.is_dir() else read_profile(path)
        )
    chosen = _find_tier(profile, tier)
    target = Path(out).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not empty; choose a new --out folder.")
    where = resolve_device(device)
    silence_libraries()
    folder = check_identity(profile.model, model)
    pipe = load_pipeline(folder)
    load = plan_load(chosen.plan, pipe, where)
    _set_scheduler(pipe, chosen.plan.scheduler)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        pickled = [p for p in staging.rglob("*") if p.suffix in _PICKLE_SUFFIXES]
        if pickled:
            raise NotExportableError(
                f"diffusers wrote pickle files ({pickled[0].name}); refusing to export them"
            )
        code = load.load_code(str(target), chosen.plan.steps, profile.guidance_scale)
        record = {
            "autoq_tier": 1,
            "tier": chosen.name,
            "model": profile.model.model_dump(mode="json"),
            "plan": chosen.plan.model_dump(mode="json"),
            "num_inference_steps": chosen.plan.steps,
            "scheduler": type(pipe.scheduler).__name__,
            "guidance_scale": profile.guidance_scale,
            "height": profile.height,
            "width": profile.width,
            "torch_dtype": load.torch_dtype,
            "quantization": {name: c.code for name, c in load.configs.items()},
            "load_code": code,
            "metrics": chosen.metrics.model_dump(mode="json"),
        }
        atomic_write_text(staging / TIER_FILE, json.dumps(record, indent=2) + "\n")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(target, chosen.name, chosen.plan.steps, load, code)
