"""The autoq exception tree: everything autoq raises on purpose derives from `AutoqError`."""

from __future__ import annotations

from typing import Literal

__all__ = [
    "AutoqError",
    "BackendError",
    "ConfigError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "OutOfMemoryError",
    "OverloadedError",
    "PrecisionUnavailableError",
    "ProfileMismatchError",
    "UnknownPrecisionError",
]


class AutoqError(Exception):
    """Base class of every error autoq raises deliberately.

    The CLI turns it into one line and exit code 1; messages say what was expected, what
    arrived and how to fix it.
    """


class ConfigError(AutoqError, ValueError):
    """A configuration value is out of range or malformed."""


class UnknownPrecisionError(AutoqError, KeyError):
    """A precision name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PrecisionUnavailableError(AutoqError):
    """A known precision cannot run on this device; the message says why."""


class BackendError(AutoqError):
    """A quantization backend failed while applying or loading a precision."""


class ModelNotFoundError(AutoqError):
    """A model id or folder cannot be found or loaded offline."""


class ModelMismatchError(ModelNotFoundError):
    """The weights found are not the model a profile was tuned for (content hash or
    pipeline class differ)."""


class ProfileMismatchError(AutoqError):
    """A profile was tuned on another device; the message lists the differences."""


class OutOfMemoryError(AutoqError):
    """Every tier ran out of memory for a request."""


class OverloadedError(AutoqError):
    """A request was refused at once: the queue is full (``reason`` ``"queue_full"``),
    or no tier can finish it within the latency objective, even alone (``"cost"``) or at
    this load (``"slo"``). ``retry_after_s`` is when trying again may succeed."""

    def __init__(
        self,
        message: str,
        *,
        reason: Literal["queue_full", "cost", "slo"],
        retry_after_s: float,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s
