"""The backends package imports one way: no module imports another that imports it back,
at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import autoq.backends

PACKAGE = Path(autoq.backends.__file__).parent


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("_*.py"):
        edges = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[:2] == ["autoq", "backends"] and len(parts) == 3:
                    edges.add(parts[2])
    return graph


def test_backend_modules_import_without_cycles() -> None:
    graph = _graph()
    assert "_probe" in graph["_apply"]  # apply checks its precision with the probe ...
    assert "_apply" not in graph["_probe"]  # ... and the probe never needs apply

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, " -> ".join([*path, node])
        for nxt in graph.get(node, ()):
            visit(nxt, [*path, node])

    for module in graph:
        visit(module, [])
