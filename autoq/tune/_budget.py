"""The time budget of a tune: when it must be done, what each phase may spend, and what
the budget left out.

A tune's cost follows from its budget, not from the model's size. The first measurements
say what a generation costs here (`StepCost`: fp32's fixed seconds plus its seconds per
denoising step); `size_tune` then sizes the phases before they start (the reference's
steps and images, the screening set, the scheduler probe) so each keeps to its share,
and says what it cut. A tune that cannot measure one plan besides the reference in its
budget stops at once, with the budget it would need.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from autoq._logging import get_logger
from autoq.errors import ConfigError

__all__ = ["Deadline", "Sizing", "StepCost", "size_tune"]

log = get_logger("autoq.tune")

T = TypeVar("T")

SCREEN_SHARE = 0.15
"""Share of the budget the compatibility screen may take; the rest waits for a rerun."""
REFERENCE_SHARE = 0.2
"""Share of what the screen left that the reference's first measurement may take."""
PROBE_SHARE = 0.1
"""Share of what the screen left that the scheduler probe may take; over it, the search
keeps the model's own scheduler."""
MIN_IMAGES = 2
"""Fewest screening images a sized tune measures a plan on (a paired interval needs 2)."""


@dataclass
class Deadline:
    """When the whole tune must be done (``at``: a `time.monotonic` time; ``None``: no
    time budget) and what it left out to keep to that."""

    at: float | None = None
    cuts: list[str] = field(default_factory=list)
    progress: Callable[[str, int, int], None] | None = None
    """Told ``(phase, done, total)`` as `each` goes, for progress bars."""

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(None if seconds is None else time.monotonic() + seconds)

    def left(self) -> float | None:
        """Seconds until the deadline (negative once passed); ``None`` without one."""
        return None if self.at is None else self.at - time.monotonic()

    def reserving(self, seconds: float) -> Deadline:
        """This deadline ``seconds`` earlier, for work that must leave them to what comes
        after it (cuts and progress are shared)."""
        return Deadline(None if self.at is None else self.at - seconds, self.cuts, self.progress)

    def share(self, fraction: float) -> float | None:
        """``fraction`` of the seconds left (``None`` without a budget)."""
        left = self.left()
        return None if left is None else max(0.0, left * fraction)

    def allows(self, seconds: float = 0.0) -> bool:
        """Whether work expected to take ``seconds`` ends before the deadline."""
        left = self.left()
        return left is None or left > seconds

    def each(
        self,
        phase: str,
        items: Sequence[T],
        left_out: Callable[[int], str],
        expect: Callable[[T], float] | None = None,
    ) -> Iterator[T]:
        """``items`` of ``phase`` one at a time while the next one is expected to end in
        time: ``expect(item)`` seconds where given, else as long as the mean of those
        before it took (so the first always starts); ``left_out(remaining)`` says what was
        not."""
        took: list[float] = []
        for done, item in enumerate(items):
            if self.progress is not None:
                self.progress(phase, done, len(items))
            guess = sum(took) / len(took) if took else 0.0
            if not self.allows(expect(item) if expect is not None else guess):
                self.cut(left_out(len(items) - done))
                return
            start = time.monotonic()
            yield item
            took.append(time.monotonic() - start)
        if self.progress is not None:
            self.progress(phase, len(items), len(items))

    def cut(self, what: str) -> None:
        log.warning("time_budget_cut", left_out=what)
        self.cuts.append(what)


@dataclass(frozen=True)
class StepCost:
    """What one fp32 generation costs here: ``fixed`` seconds (text encoding, decoding)
    plus ``per_step`` seconds per denoising step."""

    fixed: float
    per_step: float

    @classmethod
    def from_timings(cls, one_step: float, two_steps: float) -> StepCost:
        """From a 1-step and a 2-step generation, both warm."""
        per_step = max(two_steps - one_step, 0.0)
        return cls(max(one_step - per_step, 0.0), per_step)

    def image(self, steps: int) -> float:
        """Predicted seconds of one fp32 image at ``steps``."""
        return self.fixed + self.per_step * steps


@dataclass(frozen=True)
class Sizing:
    """The phases as the budget sized them; ``cuts`` says what that left out."""

    screen_images: int
    reference_images: int
    max_steps: int
    schedulers: tuple[str, ...]
    cuts: tuple[str, ...] = ()


def size_tune(
    left: float | None,
    cost: StepCost,
    *,
    steps: Sequence[int],
    schedulers: Sequence[str],
    screen_images: int,
    full_images: int,
    probe_images: int,
    budget_s: float | None = None,
) -> Sizing:
    """Size a tune's first phases to the ``left`` seconds of its budget.

    The reference (fp32 at the most steps) is measured on the full set when that takes
    at most `REFERENCE_SHARE` of what is left, else on the screening set (racing extends
    it later, when time allows); if even that is too long, the step range is lowered,
    then the screening set shrinks (to `MIN_IMAGES`). Probing the schedulers (fp32
    images of each at every step count) is skipped over `PROBE_SHARE`: the search keeps
    the first scheduler. ``None`` (no budget) sizes nothing. ``budget_s``, the whole
    budget, only makes the error's advice exact.

    Raises:
        ConfigError: ``left`` cannot hold the reference and one more plan on
            `MIN_IMAGES` images at the fewest steps; the message gives the budget needed.
    """
    values = sorted(steps)
    if left is None:
        return Sizing(screen_images, full_images, values[-1], tuple(schedulers))
    need = 2 * MIN_IMAGES * cost.image(values[0])  # the reference and one plan beside it
    if need > left:
        advice = f"{math.ceil(budget_s + need - left)} s" if budget_s else "a longer one"
        raise ConfigError(
            f"The time budget leaves {max(left, 0.0):.0f} s after loading and screening, but "
            f"the reference and one plan beside it need about {need:.0f} s here "
            f"({MIN_IMAGES} images each at {values[0]} steps, {cost.image(values[0]):.1f} s "
            f"an image); pass --timeout {advice} or more (--timeout 0: no budget)."
        )
    share = REFERENCE_SHARE * left
    cuts: list[str] = []
    images, reference = screen_images, full_images
    if full_images * cost.image(values[-1]) > share:
        reference = images
        wanted = values[-1]
        while len(values) > 1 and images * cost.image(values[-1]) > share:
            values.pop()
        if values[-1] < wanted:
            cuts.append(
                f"steps: at most {values[-1]} instead of {wanted} (the reference at {wanted} "
                f"steps would take {images * cost.image(wanted):.0f} s)"
            )
        fits = max(MIN_IMAGES, int(share // cost.image(values[-1])))
        if fits < images:
            cuts.append(f"screening set: {fits} images instead of {images}")
            images = reference = fits
    kept = tuple(schedulers)
    probe = probe_images * len(kept) * sum(cost.image(n) for n in values)
    if len(kept) > 1 and probe > PROBE_SHARE * left:
        cuts.append(
            f"schedulers: only {kept[0]!r} searched (probing {len(kept)} would take {probe:.0f} s)"
        )
        kept = kept[:1]
    return Sizing(images, reference, values[-1], kept, tuple(cuts))
