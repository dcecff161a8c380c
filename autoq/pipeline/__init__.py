"""Pipelines built from plans: per-component precision, steps and scheduler, diffusers-native."""

from autoq.pipeline._build import (
    ComponentCache,
    assemble,
    compatible_schedulers,
    module_components,
)
from autoq.pipeline._plan import PLAN_VERSION, SCHEDULERS, PipelinePlan

__all__ = [
    "PLAN_VERSION",
    "SCHEDULERS",
    "ComponentCache",
    "PipelinePlan",
    "assemble",
    "compatible_schedulers",
    "module_components",
]
