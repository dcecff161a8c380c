"""The profile: a device's Pareto-optimal tiers for one model, as versioned JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autoq.device import Fingerprint
from autoq.pipeline import ModelIdentity, PipelinePlan

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
]

SCHEMA_VERSION = 2


class Metrics(BaseModel):
    """What one plan measured on this device."""

    model_config = ConfigDict(frozen=True)

    clip_score: float
    """Mean CLIP score (torchmetrics definition: 100 x cosine) over the prompts."""
    clip_score_std: float
    clip_ci: tuple[float, float] | None = None
    """95% confidence interval of ``clip_score`` (bootstrap clustered by prompt)."""
    n_images: int = 0
    """How many images ``clip_score`` averages."""
    psnr: float | None = None
    """Mean PSNR (dB) against the reference images; ``None`` for the reference itself."""
    ssim: float | None = None
    latency_s: float
    """Median seconds of one end-to-end generation."""
    latency_p90_s: float
    peak_memory_bytes: int
    """Weights of every component plus the activation peak of one generation."""
    weight_bytes: int
    memory_method: str


class Constraints(BaseModel):
    """The limits every tier of the profile meets."""

    model_config = ConfigDict(frozen=True)

    max_memory_bytes: int | None = Field(default=None, gt=0)
    max_latency_s: float | None = Field(default=None, gt=0)
    min_clip_score: float | None = None
    max_clip_drop_pct: float | None = Field(default=None, ge=0, lt=100)

    def effective_min_clip(self, reference_clip: float) -> float | None:
        """The absolute CLIP floor: the stricter of the absolute and relative limits."""
        floors = [self.min_clip_score] if self.min_clip_score is not None else []
        if self.max_clip_drop_pct is not None:
            floors.append(reference_clip * (1 - self.max_clip_drop_pct / 100))
        return max(floors) if floors else None

    def violations(self, metrics: Metrics, reference_clip: float) -> list[float]:
        """Optuna constraint values (``<= 0`` is feasible): memory, latency, quality."""
        floor = self.effective_min_clip(reference_clip)
        return [
            metrics.peak_memory_bytes - self.max_memory_bytes if self.max_memory_bytes else 0.0,
            metrics.latency_s - self.max_latency_s if self.max_latency_s else 0.0,
            floor - metrics.clip_score if floor is not None else 0.0,
        ]


Resource = Literal["quality", "latency", "memory"]


class StepPoint(BaseModel):
    """A tier's plan measured at another step count (same components and scheduler)."""

    model_config = ConfigDict(frozen=True)

    steps: int = Field(ge=1)
    latency_s: float = Field(gt=0)
    clip_score: float
    clip_ci: tuple[float, float] | None = None


class Tier(BaseModel):
    """One operating point: a plan and what it measured."""

    model_config = ConfigDict(frozen=True)

    name: str
    plan: PipelinePlan
    metrics: Metrics
    trial: int | None = None
    samples: list[str] = Field(default_factory=list)
    """Sample image paths, relative to the profile file."""
    cheapest_in: list[Resource] = Field(default_factory=list)
    """The resources in which no other tier beats this one (best quality, fastest, smallest)."""
    steps_curve: list[StepPoint] = Field(default_factory=list)
    """How latency and quality move with steps, ascending by steps (the runtime's dial)."""
    min_steps: int | None = None
    """Fewest steps at which this tier still meets the profile's quality floor."""

    def summary(self) -> dict[str, str]:
        """Display strings of the plan and metrics, for tables and reports."""
        m = self.metrics
        return {
            "tier": self.name,
            "plan": self.plan.describe(),
            "CLIP": f"{m.clip_score:.2f} ± {m.clip_score_std:.2f}",
            "PSNR dB": "-" if m.psnr is None else f"{m.psnr:.1f}",
            "SSIM": "-" if m.ssim is None else f"{m.ssim:.3f}",
            "latency s": f"{m.latency_s:.3f} (p90 {m.latency_p90_s:.3f})",
            "peak MiB": f"{m.peak_memory_bytes / 2**20:,.1f}",
            "weights MiB": f"{m.weight_bytes / 2**20:,.1f}",
        }

    def to_diffusers(self) -> Any:
        """This tier's precisions as diffusers' own ``PipelineQuantizationConfig``.

        Raises:
            BackendError: A precision has no diffusers loader equivalent.
        """
        from autoq.profile._diffusers import to_pipeline_quantization_config

        return to_pipeline_quantization_config(self.plan)


TrialState = Literal["complete", "pruned", "failed", "running"]


class TrialPoint(BaseModel):
    """One trial of the study, kept in the profile so its report needs no database.

    Measured trials carry their metrics; pruned and failed ones carry the reason.
    """

    model_config = ConfigDict(frozen=True)

    number: int
    state: TrialState = "complete"
    plan: PipelinePlan | None = None
    clip_score: float | None = None
    clip_ci: tuple[float, float] | None = None
    n_images: int = 0
    scores: list[float] = Field(default_factory=list)
    """Per-image CLIP scores, in prompt-major order, to recompute intervals."""
    latency_s: float | None = None
    peak_memory_bytes: int | None = None
    feasible: bool = False
    reason: str | None = None
    """Why a trial was pruned or failed."""


class TuneConditions(BaseModel):
    """How busy the machine was while the tune timed its generations."""

    model_config = ConfigDict(frozen=True)

    torch_threads: int
    cpu_count: int
    load_avg_1m: float | None = None
    """Mean 1-minute load average sampled during the tune."""
    busy: bool = False
    """The load was high enough (more runnable work than cores) to distort latency."""


class StudyInfo(BaseModel):
    """Where the Optuna study behind a profile lives and how it ran."""

    model_config = ConfigDict(frozen=True)

    storage: str
    study_name: str
    sampler: str
    seed: int
    trials_completed: int
    trials_failed: int
    trials_pruned: int


class Profile(BaseModel):
    """Pareto-optimal tiers of one model on one device, best quality first."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    autoq_version: str
    created: datetime
    fingerprint: Fingerprint
    model: ModelIdentity
    constraints: Constraints
    prompts: list[str]
    seeds: list[int]
    guidance_scale: float
    height: int | None = None
    """Image height the tiers were measured at (``None``: the pipeline's default)."""
    width: int | None = None
    reference: Tier
    tiers: list[Tier] = Field(min_length=1)
    study: StudyInfo
    trials: list[TrialPoint] = Field(default_factory=list)
    conditions: TuneConditions | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"profile schema_version {value} is not supported by this autoq "
                f"(expects {SCHEMA_VERSION}); re-run `autoq tune` or upgrade autoq."
            )
        return value

    def tier(self, name: str) -> Tier:
        """The tier called ``name``.

        Raises:
            ConfigError: No tier has that name; the message lists them.
        """
        from autoq.errors import ConfigError

        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise ConfigError(f"Unknown tier {name!r}; valid: {[t.name for t in self.tiers]}.")
