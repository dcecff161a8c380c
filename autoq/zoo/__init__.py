"""Embedded model zoo: small real diffusers pipelines trained in this repo, loadable offline.

Importing this package is cheap; torch and diffusers load when a model is requested.
"""

from __future__ import annotations

from autoq.zoo._registry import available, load_pipeline, model_path, prompts, scorer

__all__ = ["available", "load_pipeline", "model_path", "prompts", "scorer"]
