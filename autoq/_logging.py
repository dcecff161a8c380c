"""Logging configuration: structlog, JSON when not attached to a terminal.

Global state lives behind `configure()` / `reset()` so tests can restore defaults.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure", "get_logger", "reset"]

_configured = False


def configure(*, json: bool | None = None, level: int | str = logging.INFO) -> None:
    """Configure structlog for autoq.

    Args:
        json: Render JSON lines; ``None`` means JSON unless stderr is a terminal.
        level: Minimum level to emit.
    """
    global _configured
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def reset() -> None:
    """Return structlog to its defaults (used by tests)."""
    global _configured
    structlog.reset_defaults()
    _configured = False


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name``; configures defaults on first use."""
    if not _configured:
        configure()
    return structlog.get_logger(name)
