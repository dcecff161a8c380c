"""The package's imports run one way, down the floors, and never in a circle.

Floors, top to bottom: cli -> serve -> runtime -> tune -> profile -> pipeline ->
execution -> backends/zoo -> device/quality -> errors/logging (and the other root-level helpers).
A module may import its own subpackage or anything on a lower floor.

Every ``import`` in the source counts, lazy ones inside functions included: they run the
same code, only later. Imports under ``if TYPE_CHECKING:`` are exempt, since they never
run and exist only for annotations.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autoq"

FLOORS = [
    ["cli"],
    ["serve"],
    ["runtime"],
    ["tune"],
    ["profile"],
    ["pipeline"],
    ["execution"],
    ["backends", "zoo"],
    ["device", "quality"],
    ["errors", "_logging", "_version", "_files", "_dicts"],
]
FLOOR = {area: len(FLOORS) - i for i, areas in enumerate(FLOORS) for area in areas}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["autoq", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, skipping the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(module: str, path: Path) -> set[str]:
    """The autoq modules that ``module`` imports (``from pkg import sub`` means pkg.sub)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for name in names:
            while name and name not in MODULES and "." in name:
                name = name.rpartition(".")[0]  # `import autoq.x.y` of a name inside x
            if name in MODULES and name.split(".")[0] == "autoq":
                targets.add(name)
    return targets


GRAPH = {module: _targets(module, path) - {module} for module, path in MODULES.items()}


def _area(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root itself


def upward_imports() -> list[str]:
    """``importer -> imported (floor a < floor b)`` for every import against the floors."""
    bad = []
    for module, targets in sorted(GRAPH.items()):
        mine = _area(module)
        for target in sorted(targets):
            theirs = _area(target)
            if mine is None:  # the root re-exports; nothing may import it (below)
                continue
            if theirs is None:
                bad.append(f"{module} -> autoq (the package root; import the module itself)")
            elif theirs != mine and FLOOR.get(theirs, 0) >= FLOOR.get(mine, 0):
                bad.append(f"{module} -> {target} ({mine} may not import {theirs})")
    return bad


def import_cycles() -> list[list[str]]:
    """Each strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return groups


def test_every_area_has_a_floor() -> None:
    areas = {_area(m) for m in MODULES} - {None, "__main__"}
    assert areas <= set(FLOOR), f"place these in FLOORS: {sorted(areas - set(FLOOR))}"


def test_the_graph_sees_lazy_imports_and_skips_type_checking() -> None:
    # cli imports autoq.tune inside its command functions only.
    assert "autoq.tune" in GRAPH["autoq.cli"]
    # The root imports heavy modules only under TYPE_CHECKING (and lazily by name).
    assert "autoq.runtime" not in GRAPH["autoq"]


def test_no_import_cycle() -> None:
    cycles = import_cycles()
    assert not cycles, "modules importing each other: " + "; ".join(map(" <-> ".join, cycles))


def test_imports_only_go_down_the_floors() -> None:
    bad = upward_imports()
    assert not bad, "upward imports:\n" + "\n".join(bad)
