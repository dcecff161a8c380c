"""Pipelines built from plans: per-component precision, steps and scheduler, diffusers-native."""

from autoq.pipeline._build import (
    ComponentCache,
    assemble,
    compatible_schedulers,
    module_components,
)
from autoq.pipeline._model import (
    LoadedModel,
    ModelIdentity,
    check_identity,
    find_sources,
    folder_hash,
    identity_of,
    load_model,
    load_pipeline,
    pipeline_folder,
)
from autoq.pipeline._plan import (
    MEMORY_TOOLS,
    PLAN_VERSION,
    SCHEDULERS,
    ComponentKey,
    PipelinePlan,
)
from autoq.pipeline._screen import ScreenedOut, ScreenResult, capture_calls, screen

__all__ = [
    "MEMORY_TOOLS",
    "PLAN_VERSION",
    "SCHEDULERS",
    "ComponentCache",
    "ComponentKey",
    "LoadedModel",
    "ModelIdentity",
    "PipelinePlan",
    "ScreenResult",
    "ScreenedOut",
    "assemble",
    "capture_calls",
    "check_identity",
    "compatible_schedulers",
    "find_sources",
    "folder_hash",
    "identity_of",
    "load_model",
    "load_pipeline",
    "module_components",
    "pipeline_folder",
    "screen",
]
