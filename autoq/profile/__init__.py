"""Profiles: versioned JSON of the Pareto-optimal tiers `autoq tune` found for a device."""

from autoq.profile._io import read_profile, write_profile
from autoq.profile._match import fingerprint_differences, load_profile
from autoq.profile._model import (
    SCHEMA_VERSION,
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
from autoq.profile._report import write_report

__all__ = [
    "SCHEMA_VERSION",
    "Constraints",
    "Metrics",
    "ModelIdentity",
    "Profile",
    "Resource",
    "StepPoint",
    "StudyInfo",
    "Tier",
    "TrialPoint",
    "TrialState",
    "TuneConditions",
    "fingerprint_differences",
    "load_profile",
    "read_profile",
    "write_profile",
    "write_report",
]
