"""Profiles: versioned JSON of the Pareto-optimal tiers `autoq tune` found for a device."""

from autoq.profile._io import read_profile, write_profile
from autoq.profile._model import (
    SCHEMA_VERSION,
    Constraints,
    Metrics,
    ModelIdentity,
    Profile,
    StudyInfo,
    Tier,
    TrialPoint,
)
from autoq.profile._report import write_report

__all__ = [
    "SCHEMA_VERSION",
    "Constraints",
    "Metrics",
    "ModelIdentity",
    "Profile",
    "StudyInfo",
    "Tier",
    "TrialPoint",
    "read_profile",
    "write_profile",
    "write_report",
]
