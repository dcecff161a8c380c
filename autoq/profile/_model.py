"""The profile: a device's Pareto-optimal tiers for one model, as versioned JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autoq.device import Fingerprint
from autoq.pipeline import ModelIdentity, PipelinePlan

__all__ = [
    "SCHEMA_VERSION",
    "BatchPoint",
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
    """CLIP score (torchmetrics definition: 100 x cosine) of the plan: fp32's mean at the
    plan's steps and scheduler (on the largest image set measured) plus the plan's paired
    difference to fp32 on its own images."""
    clip_score_std: float
    """Spread of the plan's own per-image scores."""
    clip_ci: tuple[float, float] | None = None
    """95% confidence interval of ``clip_score`` (bootstrap clustered by prompt)."""
    n_images: int = 0
    """How many images of this plan ``clip_score`` rests on."""
    clip_vs_fp32: float | None = None
    """Quantization damage: mean paired CLIP difference to fp32 at the same steps and
    scheduler (same prompts and seeds); ``0`` for fp32 plans."""
    clip_vs_fp32_ci: tuple[float, float] | None = None
    clip_vs_reference: float | None = None
    """``clip_score`` minus the reference's, paired (same prompts and seeds): the
    combined effect of precisions, steps and scheduler that ``--max-clip-drop`` judges."""
    clip_vs_reference_ci: tuple[float, float] | None = None
    psnr: float | None = None
    """Mean PSNR (dB, capped at 100) against fp32 at the same steps and scheduler;
    ``None`` for the reference itself."""
    ssim: float | None = None
    latency_s: float
    """Median seconds of one end-to-end generation."""
    latency_p90_s: float
    peak_memory_bytes: int
    """Weights of every component plus the activation peak of one generation."""
    weight_bytes: int
    memory_method: str
    build_s: float | None = None
    """Seconds the first generation of a process spends compiling kernels or converting
    components (``torch.compile``, OpenVINO) before its timed runs; ``None``: none."""
    predicted_latency_s: float | None = None
    """The tune's prediction of ``latency_s`` from component timings before the plan was
    built (`autoq.tune._predict`); ``None``: not predicted."""

    def quality_text(self) -> str:
        """``"73.1 [70.2, 75.9] n=64"``: the score, its 95% interval, the images behind it."""
        if self.clip_ci is None:  # a profile written before intervals were measured
            return f"{self.clip_score:.1f} (no interval)"
        low, high = self.clip_ci
        return f"{self.clip_score:.1f} [{low:.1f}, {high:.1f}] n={self.n_images}"


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

    def quality_shortfall(self, metrics: Metrics, reference_clip: float) -> float:
        """How far ``metrics`` is from surely meeting the quality limits (``<= 0``: it is).

        Conservative: the whole 95% interval must clear the floor, so a plan whose
        interval straddles it is infeasible. ``--min-clip-score`` is judged on the lower
        end of ``clip_ci``; ``--max-clip-drop`` on the lower end of the paired difference
        to the reference (``clip_vs_reference_ci``), which the reference's own noise does
        not widen. Without intervals the point estimates are used.
        """
        shortfall = 0.0
        if self.min_clip_score is not None:
            low = metrics.clip_ci[0] if metrics.clip_ci is not None else metrics.clip_score
            shortfall = max(shortfall, self.min_clip_score - low)
        if self.max_clip_drop_pct is not None:
            allowed = reference_clip * self.max_clip_drop_pct / 100
            if metrics.clip_vs_reference_ci is not None:
                change = metrics.clip_vs_reference_ci[0]
            elif metrics.clip_vs_reference is not None:
                change = metrics.clip_vs_reference
            else:
                change = metrics.clip_score - reference_clip
            shortfall = max(shortfall, -allowed - change)
        return shortfall

    def violations(self, metrics: Metrics, reference_clip: float) -> list[float]:
        """Optuna constraint values (``<= 0`` is feasible): memory, latency, quality."""
        return [
            metrics.peak_memory_bytes - self.max_memory_bytes if self.max_memory_bytes else 0.0,
            metrics.latency_s - self.max_latency_s if self.max_latency_s else 0.0,
            self.quality_shortfall(metrics, reference_clip) if self.has_quality_floor else 0.0,
        ]

    @property
    def has_quality_floor(self) -> bool:
        return self.min_clip_score is not None or self.max_clip_drop_pct is not None


Resource = Literal["quality", "latency", "memory"]


class StepPoint(BaseModel):
    """A tier's plan measured at another step count (same components and scheduler)."""

    model_config = ConfigDict(frozen=True)

    steps: int = Field(ge=1)
    latency_s: float = Field(gt=0)
    clip_score: float
    clip_ci: tuple[float, float] | None = None


class BatchPoint(BaseModel):
    """A tier's plan timed as one pipeline call of ``batch_size`` prompts."""

    model_config = ConfigDict(frozen=True)

    batch_size: int = Field(ge=1)
    latency_s: float = Field(gt=0)
    """Seconds of the whole call (every image of the batch)."""
    peak_memory_bytes: int = Field(ge=0)
    """Weights plus the call's activation peak."""


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
    batch_curve: list[BatchPoint] = Field(default_factory=list)
    """Latency and peak memory of one call per batch size, ascending, all timed in one
    run (empty: not measured; the runtime then expects no gain from batching)."""
    max_batch: int | None = None
    """The largest measured batch whose peak fits the tune's memory limit (the device's
    memory without one); ``None``: not measured."""

    def summary(self) -> dict[str, str]:
        """Display strings of the plan and metrics, for tables and reports."""
        m = self.metrics
        return {
            "tier": self.name,
            "plan": self.plan.describe(),
            "CLIP [95% CI] n": m.quality_text(),
            "vs fp32": "-" if m.clip_vs_fp32 is None else f"{m.clip_vs_fp32:+.1f}",
            "PSNR dB": "-" if m.psnr is None else f"{m.psnr:.1f}",
            "SSIM": "-" if m.ssim is None else f"{m.ssim:.3f}",
            "latency s": f"{m.latency_s:.3f} (p90 {m.latency_p90_s:.3f})",
            "peak MiB": f"{m.peak_memory_bytes / 2**20:,.1f}",
            "weights MiB": f"{m.weight_bytes / 2**20:,.1f}",
            "cheapest in": ", ".join(self.cheapest_in) or "-",
            "steps dial": (
                f"{self.min_steps}-{self.plan.steps}" if self.min_steps is not None else "-"
            ),
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
    """Per-image CLIP scores of the plan's own images, to recompute intervals. Images run
    round-major: image ``i`` is prompt ``prompts[i % P]`` with noise seed
    ``seeds[i // P] * P + i % P`` (``P = len(Profile.prompts)``); a trial measured the
    first ``n_images``."""
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
    latency_drift: tuple[float, float] | None = None
    """Lowest and highest ratio, over the reference and the tiers, of the latency timed side
    by side after racing to the plan's earlier timing: how far the machine's speed moved
    during the tune (the tiers' latencies are the side-by-side ones)."""

    @property
    def drifted(self) -> bool:
        """Plans timed at different moments of the tune compare only roughly: their
        drift ratios differ by more than 20%."""
        return (
            self.latency_drift is not None and self.latency_drift[1] > 1.2 * self.latency_drift[0]
        )


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
    timeout_s: float | None = None
    """The tune's time budget (``--timeout``), if it had one."""
    left_out: list[str] = Field(default_factory=list)
    """What the time budget left out (trials, racing, deep set, step curves); a rerun of
    the same study finishes it."""
    tiers_asked: int | None = Field(default=None, ge=1)
    """The most tiers the tune was asked for (``--tiers``)."""


class Profile(BaseModel):
    """Pareto-optimal tiers of one model on one device.

    Tiers are listed by CLIP estimate, best first, but tiers in `ties` are not ranked and
    the order says nothing about cost: choose by each tier's metrics or ``cheapest_in``.
    """

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    autoq_version: str
    created: datetime
    fingerprint: Fingerprint
    model: ModelIdentity
    constraints: Constraints
    prompts: list[str]
    seeds: list[int]
    """One seed per round of prompts; image ``i`` draws noise seed ``seeds[i // P] * P + i % P``."""
    guidance_scale: float
    quality_floor: float | None = None
    """The CLIP floor every tier meets, judged with intervals (the constraint's floor, or
    the default tier floor when none was given); ``min_steps`` keeps to it too."""
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

    def ties(self) -> list[tuple[str, str]]:
        """Pairs of tiers whose quality is not ranked.

        Two tiers measured on the same images (their trials' per-image scores) tie when
        the 95% interval of their paired per-image difference, resampled by prompt,
        contains 0: the shared prompts and noise cancel, so this ranks far more pairs
        than comparing the two marginal intervals, which both carry the prompts' spread.
        Without per-image scores, overlapping CLIP intervals are ties.
        """
        from autoq.quality import clustered_mean, overlap

        scores = {t.number: t.scores for t in self.trials if t.scores}
        pairs = []
        for i, a in enumerate(self.tiers):
            for b in self.tiers[i + 1 :]:
                own_a, own_b = scores.get(a.trial), scores.get(b.trial)  # type: ignore[arg-type]
                if own_a and own_b and self.prompts:
                    n = min(len(own_a), len(own_b))
                    diff = [x - y for x, y in zip(own_a[:n], own_b[:n], strict=True)]
                    clusters = [j % len(self.prompts) for j in range(n)]
                    paired = clustered_mean(diff, clusters)
                    tie = paired.low <= 0 <= paired.high
                else:
                    tie = overlap(_bounds(a.metrics), _bounds(b.metrics))
                if tie:
                    pairs.append((a.name, b.name))
        return pairs

    @property
    def fewer_tiers(self) -> str | None:
        """Why the profile has fewer tiers than the tune asked for, if it has."""
        asked = self.study.tiers_asked
        if asked is None or not 0 < len(self.tiers) < asked:
            return None
        return (
            f"{len(self.tiers)} tiers of the {asked} asked: no other plan within the limits "
            "is faster, smaller or better than them beyond noise"
        )

    def notes(self) -> list[str]:
        """One-line notes that belong under a table of the tiers: the quality floor, the
        ties, and whether the machine was busy while timing."""
        lines = []
        if self.quality_floor is not None:
            lines.append(
                f"quality floor: CLIP {self.quality_floor:.1f} (every tier's 95% interval "
                "clears it; the step dial keeps to it)"
            )
        if self.tiers and self.tiers[0].metrics.clip_ci is not None:
            ties = ", ".join(f"{a} ~ {b}" for a, b in self.ties())
            lines.append(f"ties (quality difference not significant, not ranked): {ties or 'none'}")
        if self.fewer_tiers is not None:
            lines.append(self.fewer_tiers)
        if self.study.left_out:
            seconds = self.study.timeout_s
            lines.append(
                f"time budget ({'-' if seconds is None else f'{seconds:g}'} s) left out: "
                f"{'; '.join(self.study.left_out)}; re-run the tune with more time to finish "
                "(the study resumes)"
            )
        if self.conditions is not None and self.conditions.drifted:
            low, high = self.conditions.latency_drift or (1.0, 1.0)
            lines.append(
                f"machine speed drifted during the tune (tiers timed side by side after racing "
                f"ran {low:.2f}-{high:.2f}x their earlier timings): the tiers' latencies "
                "compare, the search's trial latencies only roughly"
            )
        if self.conditions is not None and self.conditions.busy:
            c = self.conditions
            load = "?" if c.load_avg_1m is None else f"{c.load_avg_1m:.1f}"
            lines.append(
                f"machine busy while timing (load {load} on {c.cpu_count} CPUs, "
                f"{c.torch_threads} torch threads): latencies are inflated"
            )
        return lines

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


def _bounds(metrics: Metrics) -> tuple[float, float]:
    return metrics.clip_ci or (metrics.clip_score, metrics.clip_score)
