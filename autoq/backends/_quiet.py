"""Silence the import-time chatter of quantization libraries (warnings, log lines, prints)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet", "silence_libraries"]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Suppress warnings, log records below ERROR and stray stdout/stderr writes."""
    previous = logging.root.manager.disable
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


_NOISY = ("diffusers", "transformers", "torchao", "bitsandbytes", "optimum.quanto", "gguf")


def silence_libraries() -> None:
    """Import the model and quantization libraries once, quietly, and keep them quiet.

    Their import-time chatter and load-time progress bars are noise in autoq's output;
    autoq reports progress and problems itself.
    """
    import importlib
    import importlib.util

    with quiet():
        for name in _NOISY:
            if importlib.util.find_spec(name.split(".")[0]) is not None:
                importlib.import_module(name)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in _NOISY:
        warnings.filterwarnings("ignore", module=name.replace(".", r"\."))
    warnings.filterwarnings("ignore", category=FutureWarning)
