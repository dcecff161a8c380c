"""The study record: every attribute a tune keeps in its Optuna study and trials, and the
layout of its work folder.

A study is the tune's whole memory: a resumed tune, a second worker and `autoq profile
export` read back from it what the first run measured. This module is the only one that
spells an attribute key; everything else reads and writes typed values through
`StudyRecord` (study attributes) and `TrialRecord` (one trial's), and finds images through
`WorkFolder`.

Study attributes:

- the context (`StudyContext`): what was tuned and how, one attribute per field;
- ``reference``: the reference plan's `Reference`;
- ``fp32:<steps>:<scheduler>``: fp32's per-image `Samples` at those steps and scheduler,
  the paired baseline of every plan there;
- ``extension:<trial>``: a screened plan's `Samples` on the rest of the full set (racing);
- ``race``: `RaceState`; ``side_by_side`` and ``step_dial_timing``: `Timings`;
- ``scheduler_aliases``: per step count, the scheduler standing for each;
- ``curve:<plan key>:<steps>``: a tier's `CurvePoint`;
- ``batch:<plan key>:<batch size>``: a tier's `BatchPoint`;
- ``conditions``: `Conditions`; ``time_budget``: `TimeBudget`.

Trial attributes: ``plan``, ``worker``, ``outcome``, ``twin_of``, ``pruned``, ``error``,
``interrupted``, ``evidence`` (`Evidence`), ``metrics``, ``images`` and ``timing``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autoq.pipeline import PipelinePlan
from autoq.profile import Constraints, Metrics

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "BatchPoint",
    "Conditions",
    "CurvePoint",
    "Evidence",
    "Outcome",
    "RaceState",
    "Reference",
    "Samples",
    "StudyContext",
    "StudyRecord",
    "StudyView",
    "TimeBudget",
    "Timings",
    "TrialRecord",
    "WorkFolder",
    "plan_key",
]

Outcome = Literal[
    "measured",
    "twin",
    "baseline",
    "taken",
    "over_budget",
    "too_slow",
    "error",
    "interrupted",
    "stale",
]
"""What happened to a trial (`autoq.tune._search.outcome` adds running and waiting)."""

Timings = dict[str, dict[str, list[float]]]
"""``{plan key: {steps: seconds}}``: plans timed together (`side_by_side`, `step_dial`)."""


def plan_key(plan: PipelinePlan) -> str:
    """A short stable key of ``plan`` (timings and step curves are stored under it)."""
    dump = plan.model_dump(mode="json")
    for added in ("execution", "memory"):  # absent at their defaults: older keys still hold
        if not dump[added]:
            del dump[added]
    text = json.dumps(dump, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Value(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Samples(_Value):
    """Per-image results of one plan over a run of evaluation images."""

    @field_validator("psnr", "ssim", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    scores: list[float] = Field(default_factory=list)
    seconds: list[float] = Field(default_factory=list)
    """Timed generations (fewer than the scores where a run reused images)."""
    psnr: list[float] = Field(default_factory=list)
    ssim: list[float] = Field(default_factory=list)

    def __add__(self, more: Samples) -> Samples:
        return Samples(
            scores=self.scores + more.scores,
            seconds=self.seconds + more.seconds,
            psnr=self.psnr + more.psnr,
            ssim=self.ssim + more.ssim,
        )


class Evidence(Samples):
    """What measuring a plan produced: per-image samples and the memory-tracked warm-up."""

    peak_bytes: int | None = None
    weight_bytes: int = 0
    memory_method: str = ""
    build_s: float | None = None
    """Seconds of the first call of a built component (compile, conversion)."""
    predicted_latency_s: float | None = None
    """What `autoq.tune._predict` predicted before the plan was built."""

    def extended(self, extension: Samples | None) -> Evidence:
        """This evidence with a racing extension's samples appended."""
        if extension is None:
            return self
        joined = self + extension
        return self.model_copy(update=joined.model_dump())


class Reference(_Value):
    """The reference plan's measurement (metrics are filled in once its evidence is)."""

    plan: PipelinePlan
    evidence: Evidence
    metrics: Metrics | None = None

    @field_validator("metrics", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None


class CurvePoint(_Value):
    """A tier's plan measured at fewer steps on the full set (its step curve)."""

    steps: int
    scores: list[float]
    seconds: list[float]


class BatchPoint(_Value):
    """A tier's plan timed as one call of ``batch`` prompts (each its own seed), with the
    call's peak memory: a point of its batch curve."""

    batch: int = Field(ge=1)
    seconds: float = Field(gt=0)
    peak_bytes: int = Field(ge=0)


class RaceState(_Value):
    """The races so far: the last trial number weighed and the trials picked, in order."""

    through: int = -1
    picked: list[int] = Field(default_factory=list)


class Conditions(_Value):
    """How busy the machine was while the study measured."""

    torch_threads: int
    cpu_count: int
    load: list[float] = Field(default_factory=list)
    """1-minute load averages, one per measurement (the latest 200)."""


class TimeBudget(_Value):
    """The last run's ``--timeout`` and what it left out."""

    seconds: float | None = None
    cuts: list[str] = Field(default_factory=list)


class StudyContext(_Value):
    """What was tuned and how: all `autoq profile export` needs besides the evidence."""

    fingerprint: dict[str, Any]
    model: dict[str, Any]
    constraints: Constraints
    prompts: list[str]
    seeds: list[int]
    screen: int | None = None
    full: int = 0
    eval_protocol: int = 1
    guidance_scale: float
    height: int | None = None
    width: int | None = None
    tiers: int
    sampler: str
    seed: int
    workdir: str | None = None

    @property
    def fingerprint_id(self) -> str:
        return str(self.fingerprint.get("fingerprint_id", "unknown"))


_REFERENCE = "reference"
_RACE = "race"
_SIDE_BY_SIDE = "side_by_side"
_STEP_DIAL = "step_dial_timing"
_SCHEDULER_ALIASES = "scheduler_aliases"
_CONDITIONS = "conditions"
_TIME_BUDGET = "time_budget"


_EXTENSION = "extension:"


def _fp32(steps: int, scheduler: str) -> str:
    return f"fp32:{steps}:{scheduler}"


def _extension(trial: int) -> str:
    return f"{_EXTENSION}{trial}"


def _curve_prefix(key: str) -> str:
    return f"curve:{key}:"


def _batch_prefix(key: str) -> str:
    return f"batch:{key}:"


class StudyView:
    """Typed reads of a study's attributes, over one snapshot of them (`StudyRecord` reads
    the study each time)."""

    def __init__(self, attrs: Mapping[str, Any]) -> None:
        self._snapshot = attrs

    @property
    def attrs(self) -> Mapping[str, Any]:
        return self._snapshot

    def has_context(self) -> bool:
        return "fingerprint" in self.attrs

    def context(self) -> StudyContext:
        return StudyContext.model_validate(dict(self.attrs))

    def stored_model(self) -> dict[str, Any] | None:
        """The model identity the study was tuned for (``None``: a new study)."""
        return self.attrs.get("model")

    def eval_protocol(self) -> int:
        return int(self.attrs.get("eval_protocol", 1))

    def size(self) -> tuple[int | None, int | None]:
        return self.attrs.get("height"), self.attrs.get("width")

    def screen_images(self) -> int | None:
        value = self.attrs.get("screen")
        return None if value is None else int(value)

    def fingerprint_id(self) -> str:
        return str((self.attrs.get("fingerprint") or {}).get("fingerprint_id", "unknown"))

    def workdir(self) -> str | None:
        return self.attrs.get("workdir")

    def has_measured(self) -> bool:
        """Whether the study has measured anything (its reference was begun)."""
        return _REFERENCE in self.attrs

    def has_reference(self) -> bool:
        """Whether the reference's evidence is stored (its metrics may still be missing)."""
        return "evidence" in (self.attrs.get(_REFERENCE) or {})

    def reference(self) -> Reference:
        """The reference's measurement.

        Raises:
            KeyError: Not measured yet (`has_reference`).
        """
        return Reference.model_validate(self.attrs[_REFERENCE])

    def fp32(self, steps: int, scheduler: str) -> Samples:
        """fp32's samples at ``steps`` and ``scheduler`` (empty where none were made)."""
        return Samples.model_validate(self.attrs.get(_fp32(steps, scheduler)) or {})

    def extension(self, trial: int) -> Samples | None:
        raw = self.attrs.get(_extension(trial))
        return Samples.model_validate(raw) if raw else None

    def raced_any(self) -> bool:
        """Whether any plan was extended to the full set (a study raced before `race`)."""
        return any(key.startswith(_EXTENSION) for key in self.attrs)

    def race(self) -> RaceState | None:
        raw = self.attrs.get(_RACE)
        return RaceState.model_validate(raw) if raw is not None else None

    def side_by_side(self) -> Timings:
        return dict(self.attrs.get(_SIDE_BY_SIDE) or {})

    def step_dial(self) -> Timings:
        return dict(self.attrs.get(_STEP_DIAL) or {})

    def scheduler_aliases(self) -> dict[int, dict[str, str]]:
        raw = self.attrs.get(_SCHEDULER_ALIASES) or {}
        return {int(n): dict(a) for n, a in raw.items()}

    def curve_point(self, plan: PipelinePlan, steps: int) -> CurvePoint | None:
        raw = self.attrs.get(f"{_curve_prefix(plan_key(plan))}{steps}")
        return CurvePoint.model_validate(raw) if raw is not None else None

    def curve(self, plan: PipelinePlan) -> list[CurvePoint]:
        """Every point of ``plan``'s step curve measured so far."""
        prefix = _curve_prefix(plan_key(plan))
        return [
            CurvePoint.model_validate(raw) for k, raw in self.attrs.items() if k.startswith(prefix)
        ]

    def batch_curve(self, plan: PipelinePlan) -> list[BatchPoint]:
        """Every point of ``plan``'s batch curve measured so far, by batch size."""
        prefix = _batch_prefix(plan_key(plan))
        points = [
            BatchPoint.model_validate(v) for k, v in self.attrs.items() if k.startswith(prefix)
        ]
        return sorted(points, key=lambda p: p.batch)

    def conditions(self) -> Conditions | None:
        raw = self.attrs.get(_CONDITIONS)
        return Conditions.model_validate(raw) if raw else None

    def time_budget(self) -> TimeBudget:
        return TimeBudget.model_validate(self.attrs.get(_TIME_BUDGET) or {})


class StudyRecord(StudyView):
    """A study's attributes, read fresh from its storage and written through it."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    @property
    def attrs(self) -> Mapping[str, Any]:
        return self.study.user_attrs

    def snapshot(self) -> StudyView:
        """One read of every attribute, for many reads in a row."""
        return StudyView(dict(self.study.user_attrs))

    def _set(self, key: str, value: Any) -> None:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        self.study.set_user_attr(key, value)

    def set_context(self, context: StudyContext) -> None:
        for key, value in context.model_dump(mode="json").items():
            self._set(key, value)

    def set_reference(self, reference: Reference) -> None:
        self._set(_REFERENCE, reference)

    def set_fp32(self, steps: int, scheduler: str, samples: Samples) -> None:
        self._set(_fp32(steps, scheduler), samples.model_dump(include={"scores", "seconds"}))

    def set_extension(self, trial: int, samples: Samples) -> None:
        self._set(_extension(trial), samples)

    def set_race(self, state: RaceState) -> None:
        self._set(_RACE, state)

    def set_side_by_side(self, timings: Timings) -> None:
        self._set(_SIDE_BY_SIDE, timings)

    def set_step_dial(self, timings: Timings) -> None:
        self._set(_STEP_DIAL, timings)

    def set_scheduler_aliases(self, aliases: Mapping[int, Mapping[str, str]]) -> None:
        self._set(_SCHEDULER_ALIASES, {str(n): dict(a) for n, a in aliases.items()})

    def set_curve_point(self, plan: PipelinePlan, point: CurvePoint) -> None:
        self._set(f"{_curve_prefix(plan_key(plan))}{point.steps}", point)

    def set_batch_point(self, plan: PipelinePlan, point: BatchPoint) -> None:
        self._set(f"{_batch_prefix(plan_key(plan))}{point.batch}", point)

    def set_conditions(self, conditions: Conditions) -> None:
        self._set(_CONDITIONS, conditions)

    def set_time_budget(self, budget: TimeBudget) -> None:
        self._set(_TIME_BUDGET, budget)

    def summaries_tuned_for(self) -> Iterator[tuple[str, str | None]]:
        """``(study name, content hash)`` of every other study in the same storage."""
        import optuna

        for summary in optuna.get_all_study_summaries(
            self.study._storage, include_best_trial=False
        ):
            if summary.study_name != self.study.study_name:
                yield summary.study_name, summary.user_attrs.get("model", {}).get("content_hash")


_OWN = ("plan", "worker", "outcome", "timing", "twin_of", "pruned", "error", "interrupted")
"""Trial attributes about the trial itself, not its plan's result (a twin keeps its own)."""


class TrialRecord:
    """Typed reads and writes of one trial's attributes (writes need a live trial)."""

    def __init__(self, trial: optuna.Trial | FrozenTrial) -> None:
        self.trial = trial

    @property
    def attrs(self) -> Mapping[str, Any]:
        return self.trial.user_attrs

    def _set(self, key: str, value: Any) -> None:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        self.trial.set_user_attr(key, value)

    # reads

    def plan_json(self) -> dict[str, Any] | None:
        return self.attrs.get("plan")

    def plan(self) -> PipelinePlan | None:
        raw = self.plan_json()
        return PipelinePlan.model_validate(raw) if raw else None

    def worker(self) -> str | None:
        return self.attrs.get("worker")

    def outcome(self) -> str | None:
        return self.attrs.get("outcome")

    def is_twin(self) -> bool:
        return "twin_of" in self.attrs

    def twin_of(self) -> int | str | None:
        return self.attrs.get("twin_of")

    def pruned(self) -> str | None:
        return self.attrs.get("pruned")

    def error(self) -> str | None:
        return self.attrs.get("error")

    def interrupted(self) -> str | None:
        return self.attrs.get("interrupted")

    def evidence(self) -> Evidence | None:
        raw = self.attrs.get("evidence")
        return Evidence.model_validate(raw) if raw is not None else None

    def metrics(self) -> Metrics | None:
        raw = self.attrs.get("metrics")
        return Metrics.model_validate(raw) if raw else None

    def images(self) -> Path | None:
        raw = self.attrs.get("images")
        return Path(raw) if raw else None

    # writes

    def set_drawn(self, plan: PipelinePlan, worker: str) -> None:
        self._set("plan", plan.model_dump(mode="json"))
        self._set("worker", worker)

    def set_outcome(self, outcome: Outcome, reason: str | None = None) -> None:
        """``outcome``, with why where it is one of the ways a trial ends unmeasured."""
        if reason is not None:
            key = {"error": "error", "interrupted": "interrupted"}.get(outcome, "pruned")
            self._set(key, reason)
        self._set("outcome", outcome)

    def set_twin(self, of: int | str) -> None:
        self._set("twin_of", of)
        self._set("outcome", "twin")

    def set_result(self, result: Result) -> None:
        """A measured (or copied) result: evidence, metrics and where its images are."""
        for key, value in result.attrs().items():
            self._set(key, value)

    def set_timing(self, trial_s: float, generation_s: float) -> None:
        self._set("timing", {"trial_s": trial_s, "generation_s": generation_s})

    def copy_result(self, source: FrozenTrial) -> None:
        """``source``'s result on this trial (a twin); the trial's own attributes stay."""
        for key, value in source.user_attrs.items():
            if key not in _OWN:
                self._set(key, value)
        self.set_twin(TrialRecord(source).twin_of() or source.number)

    @staticmethod
    def baseline_attrs(result: Result | None, plan: PipelinePlan, worker: str) -> dict[str, Any]:
        """The attributes of fp32 added as a trial of its own (`optuna.trial.create_trial`);
        ``result``: what measuring it gave (``None``: a replay of stored objectives)."""
        return {
            **(result.attrs() if result is not None else {}),
            "plan": plan.model_dump(mode="json"),
            "worker": worker,
            "outcome": "baseline",
        }

    @staticmethod
    def mark_stale(study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
        """Record on a trial another process left running that it will not finish."""
        study._storage.set_trial_user_attr(trial._trial_id, "outcome", "stale")
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", reason)


class Result(_Value):
    """A measured plan's result as a trial records it."""

    evidence: Evidence
    metrics: Metrics
    images: str

    def attrs(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class WorkFolder:
    """Where a study's images live: ``trials/<nnnn>`` per trial, ``fp32/<steps>-<scheduler>``
    per baseline (the reference's images among them)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, cache: Path, study_name: str, storage: str) -> WorkFolder:
        """The work folder of ``study_name`` in ``storage``: one per study, in the cache
        (studies that share a name in other storages never mix)."""
        digest = hashlib.sha256(f"{storage}|{study_name}".encode()).hexdigest()[:10]
        return cls(cache / "tune" / f"{study_name}-{digest}")

    def trial(self, number: int) -> Path:
        return self.root / "trials" / f"{number:04d}"

    def fp32(self, steps: int, scheduler: str) -> Path:
        return self.root / "fp32" / f"{steps}-{scheduler}"
