"""Profiles: versioned JSON of the Pareto-optimal tiers `autoq tune` found for a device."""

from autoq.profile._diffusers import (
    ComponentConfig,
    NotExportableError,
    TierLoad,
    plan_load,
    to_pipeline_quantization_config,
)
from autoq.profile._export import TIER_FILE, ExportResult, export_tier
from autoq.profile._io import read_profile, write_profile
from autoq.profile._match import fingerprint_differences, load_profile, matches_model
from autoq.profile._model import (
    SCHEMA_VERSION,
    BatchPoint,
    Constraints,
    Metrics,
    ModelIdentity,
    Profile,
    Resource,
    StepPoint,
    StudyInfo,
    Tier,
    TrialPoint,
    TrialState,
    TuneConditions,
)
from autoq.profile._report import (
    conditions_text,
    tier_details,
    ties_text,
    unmeasured_trials,
    write_report,
)

__all__ = [
    "SCHEMA_VERSION",
    "TIER_FILE",
    "BatchPoint",
    "ComponentConfig",
    "Constraints",
    "ExportResult",
    "Metrics",
    "ModelIdentity",
    "NotExportableError",
    "Profile",
    "Resource",
    "StepPoint",
    "StudyInfo",
    "Tier",
    "TierLoad",
    "TrialPoint",
    "TrialState",
    "TuneConditions",
    "conditions_text",
    "export_tier",
    "fingerprint_differences",
    "load_profile",
    "matches_model",
    "plan_load",
    "read_profile",
    "tier_details",
    "ties_text",
    "to_pipeline_quantization_config",
    "unmeasured_trials",
    "write_profile",
    "write_report",
]
