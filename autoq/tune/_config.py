"""What `autoq tune` is asked to do, validated before any work starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autoq.errors import ConfigError

__all__ = ["DEFAULT_TIMEOUT_S", "Sampler", "TuneConfig", "parse_size", "read_prompts"]

DEFAULT_TIMEOUT_S = 600.0
"""`autoq tune`'s time budget when none is given: a default tune keeps to 10 minutes on
any machine (how long a whole one takes varies several-fold between machines of one kind:
docs/benchmarks.md), says what it left out, and a rerun finishes it. ``--timeout 0``
lifts it; `TuneConfig` itself has none unless asked."""

Sampler = Literal["gp", "gp-tpe", "tpe", "nsga2", "random", "grid"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}  # fmt: skip


def parse_size(text: str | int) -> int:
    """Bytes from ``"6GB"``, ``"512MiB"``, ``"1.5g"`` or a plain number of bytes.

    Raises:
        ConfigError: Not a size, or not positive.
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(-?[0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(f"Expected a size such as 6GB, 512MiB or 1.5G, but got {text!r}.")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ConfigError(f"A memory size must be positive, but got {text!r}.")
    return value


class TuneConfig(BaseModel):
    """Inputs of one tune. ``model=None`` tunes the embedded zoo model ``shapes``.

    Build it with `TuneConfig.create`, which turns validation errors into one-line
    `ConfigError` messages.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    scorer: str | None = None
    max_memory_bytes: int | None = Field(default=None, gt=0)
    max_latency_s: float | None = Field(default=None, gt=0)
    min_clip_score: float | None = Field(default=None, ge=0, le=100)
    max_clip_drop_pct: float | None = Field(default=None, ge=0, lt=100)
    trials: int = Field(default=30, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    """Time budget of the whole tune (search, racing, deep set, timing, step curves)."""
    sampler: Sampler = "gp-tpe"
    storage: str | None = None
    study_name: str | None = None
    prompts: tuple[str, ...] | None = None
    n_prompts: int = Field(default=6, ge=1)
    eval_images: int = Field(default=32, ge=1)
    """Images of the full evaluation set that plans near the front are raced to."""
    profiles_dir: Path = Path("profiles")
    tiers: int = Field(default=4, ge=1)
    seed: int = 0
    steps: tuple[int, int] | None = None
    step_size: int | None = Field(default=None, ge=1)
    """Step-count granularity; ``None``: `coarse_step` (5 for the default 5..30)."""
    precisions: tuple[str, ...] | None = None
    schedulers: tuple[str, ...] | None = None
    protect: bool = True
    executions: tuple[str, ...] | None = None
    """Executors to search (`autoq.execution`); ``None``: `default_executors` here."""
    memory_tools: tuple[str, ...] = ()
    """`autoq.pipeline.MEMORY_TOOLS` to search as on/off toggles."""
    max_batch: int = Field(default=8, ge=1)
    """The largest batch each tier is timed at (1, 2, 4, ... up to it, while memory and
    the budget allow) for the profile's batch curves; 1: none."""
    guidance_scale: float | None = Field(default=None, ge=0)
    height: int | None = Field(default=None, gt=0)
    width: int | None = Field(default=None, gt=0)
    device: str | None = None
    cache_bytes: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> TuneConfig:
        if self.min_clip_score is not None and self.max_clip_drop_pct is not None:
            raise ValueError("give either min_clip_score or max_clip_drop_pct, not both")
        if self.steps is not None and not 1 <= self.steps[0] <= self.steps[1]:
            raise ValueError(f"steps must satisfy 1 <= low <= high, but got {self.steps}")
        if (self.height is None) != (self.width is None):
            raise ValueError("give height and width together (or neither: the model's default)")
        for side in (self.height, self.width):
            if side is not None and side % 8:
                raise ValueError(f"height and width must be multiples of 8, but got {side}")
        if self.prompts is not None and not [p for p in self.prompts if p.strip()]:
            raise ValueError("the prompt list is empty")
        if self.precisions is not None:
            from autoq.backends import get_precision

            for name in self.precisions:
                get_precision(name)
        if self.executions is not None:
            from autoq.execution import get_executor

            for name in self.executions:
                get_executor(name)
        from autoq.pipeline import MEMORY_TOOLS

        unknown = [t for t in self.memory_tools if t not in MEMORY_TOOLS]
        if unknown:
            raise ValueError(f"Unknown memory tool(s) {unknown}; valid: {sorted(MEMORY_TOOLS)}.")
        return self

    @classmethod
    def create(cls, **values: object) -> TuneConfig:
        """Validate ``values``.

        Raises:
            ConfigError: One line naming the first invalid field and why.
            UnknownPrecisionError: A precision name is not registered.
        """
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            error = exc.errors()[0]
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, ConfigError | KeyError):
                raise cause from None
            field = ".".join(str(p) for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"{field}: {message}" if field else message) from None

    @property
    def min_clip_given(self) -> bool:
        return self.min_clip_score is not None or self.max_clip_drop_pct is not None


def read_prompts(path: str | Path) -> tuple[str, ...]:
    """One prompt per non-empty line of a text file.

    Raises:
        ConfigError: The file cannot be read or holds no prompt.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read prompts file {path}: {exc}.") from None
    prompts = tuple(line.strip() for line in lines if line.strip())
    if not prompts:
        raise ConfigError(f"Prompts file {path} has no prompt; write one prompt per line.")
    return prompts
