"""Nested data as flat ``a.b[0].c`` keys: one home for the fingerprint diff and CLI tables."""

from __future__ import annotations

from typing import Any

__all__ = ["flatten"]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": 1, "c[0].d": 2}`` from ``{"a": {"b": 1}, "c": [{"d": 2}]}``.

    Dicts nest with dots, lists of dicts with ``[i]``; other values (lists of scalars
    included) are leaves.
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}
