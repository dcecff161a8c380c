"""Logging: structlog events, delivered through the standard `logging` module.

As a library, autoq only creates events. A `get_logger` logger hands each one to
``logging.getLogger(name)`` (a child of ``autoq``) with a readable ``event key=value``
message and the event dict on the record (``record.autoq_event``), so the host
application's logging configuration decides what appears and where. The ``autoq`` logger
holds only a `logging.NullHandler` (the logging HOWTO's rule for libraries): nothing is
printed unless the application configures logging.

Only command-line entry points call `configure`, which attaches one handler to ``autoq``:
console lines on a terminal, written through a rich ``Console`` so that they print above
a live progress bar on the same console, and JSON lines otherwise. `reset` undoes it.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["EVENT_ATTR", "configure", "get_logger", "reset"]

ROOT = "autoq"
EVENT_ATTR = "autoq_event"
"""The `logging.LogRecord` attribute holding the structlog event dict."""

logging.getLogger(ROOT).addHandler(logging.NullHandler())


def _to_stdlib(_logger: Any, _method: str, event_dict: Any) -> tuple[tuple[Any, ...], dict]:
    """Last processor: a plain message for any formatter, the event dict for ours."""
    fields = " ".join(
        f"{key}={value!r}"
        for key, value in event_dict.items()
        if key not in ("event", "level", "logger", "timestamp")
    )
    message = f"{event_dict.get('event', '')} {fields}".rstrip()
    return (message,), {"extra": {EVENT_ATTR: dict(event_dict)}}


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # no work for events the host's config drops
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
    _to_stdlib,
]


def get_logger(name: str) -> Any:
    """A structlog logger for ``name`` (under ``autoq``) that emits through `logging`.

    It does not depend on structlog's global configuration, so an application that
    configures structlog for itself changes nothing here.
    """
    if name != ROOT and not name.startswith(f"{ROOT}."):
        name = f"{ROOT}.{name}"
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
    )


class _CliHandler(logging.Handler):
    """Renders ``autoq`` records as JSON lines or console lines (through rich)."""

    def __init__(self, *, json: bool, console: Console | None) -> None:
        super().__init__()
        self._console = console
        self._json = json
        colors = console is not None and console.is_terminal and not console.no_color
        self._render: Any = (
            structlog.processors.JSONRenderer()
            if json
            else structlog.dev.ConsoleRenderer(colors=colors)
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = dict(getattr(record, EVENT_ATTR, None) or {})
            if not event:  # a plain `logging` call under autoq
                event = {
                    "event": record.getMessage(),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "timestamp": datetime.fromtimestamp(record.created, timezone.utc)
                    .isoformat()
                    .replace("+00:00", "Z"),
                }
            line = self._render(None, record.levelname.lower(), event)
            if self._json or self._console is None:
                sys.stderr.write(f"{line}\n")
                sys.stderr.flush()
            else:
                from rich.text import Text

                self._console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    # getLevelName maps names to numbers on every supported Python (3.10 has no
    # getLevelNamesMapping); unknown names come back as the string "Level X".
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(
            f"Unknown log level {level!r}; valid: DEBUG, INFO, WARNING, ERROR, CRITICAL."
        )
    return value


def configure(
    *, json: bool | None = None, level: int | str = logging.INFO, console: Console | None = None
) -> None:
    """Print autoq's events (for command-line entry points; libraries leave this alone).

    Args:
        json: Render JSON lines; ``None`` means JSON unless stderr is a terminal.
        level: Minimum level to emit, as a number or a name such as ``"INFO"``.
        console: The rich console console lines go through (the one live progress bars
            use, so lines print above them); ``None`` writes plain lines to stderr.
    """
    if json is None:
        json = not sys.stderr.isatty()
    logger = logging.getLogger(ROOT)
    _remove_handlers(logger)
    logger.addHandler(_CliHandler(json=json, console=console))
    logger.setLevel(_level(level))
    logger.propagate = False  # the command line owns the output; no duplicates via root


def _remove_handlers(logger: logging.Logger) -> None:
    for handler in [h for h in logger.handlers if isinstance(h, _CliHandler)]:
        logger.removeHandler(handler)


def reset() -> None:
    """Undo `configure`: autoq's events go to the host's `logging` setup again (tests)."""
    logger = logging.getLogger(ROOT)
    _remove_handlers(logger)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
