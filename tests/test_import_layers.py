"""The package's layers import downward only, and no module imports itself in a circle:
read from the source with ``ast`` (no import runs), against the written layer order."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mole_lightning"

LAYERS = [
    # bottom: what every other layer may use (task specs, tokenizer loading, E2E text,
    # optimizer group settings, run records, figures and tables)
    {"errors", "core", "utils", "reporting", "parsing"},
    {"graphs", "metrics"},
    {"methods"},
    # data and models never import each other: they meet in train.py
    {"data", "models", "callbacks"},
    {"evaluation", "analysis", "probing"},
    # the entry point and its start-up check of the resources a config needs
    {"evidence", "train", "resources"},
]
"""Sub-packages (and top-level modules) from the bottom up: a module may import any layer
below its own, and inside its layer only what ``SIDEWAYS`` names."""

SIDEWAYS = {
    ("core", "errors"),
    ("utils", "errors"),
    ("parsing", "errors"),
    ("reporting", "errors"),
    ("callbacks", "models"),
    ("evaluation", "analysis"),
    ("probing", "evaluation"),
    ("train", "resources"),
}
"""Imports allowed inside a layer, as (importer, imported)."""


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``module -> package modules it imports`` (``from x import y`` counts ``x.y`` when
    ``x.y`` is a module, else ``x``), over every ``.py`` file below ``root``."""
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in root.rglob("*.py"):
        name = module_name(path, root)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1]
                        + ([base] if base else [])
                    )
                if not base.startswith("mole_lightning"):
                    continue
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    graph[name].add(target if target in modules else base)
            elif isinstance(node, ast.Import):
                graph[name].update(
                    a.name for a in node.names if a.name.startswith("mole_lightning")
                )
    return graph


def layer_of(module: str) -> tuple[int, str] | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package itself (its version)
    for index, members in enumerate(LAYERS):
        if parts[1] in members:
            return index, parts[1]
    raise AssertionError(f"{module} is in no layer of LAYERS: add its sub-package")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for importer, targets in graph.items():
        source = layer_of(importer)
        for target in targets:
            dest = layer_of(target)
            if source is None or dest is None or source[1] == dest[1]:
                continue
            if dest[0] > source[0] or (
                dest[0] == source[0] and (source[1], dest[1]) not in SIDEWAYS
            ):
                found.append(f"{importer} -> {target}")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Module-level import cycles (Tarjan's strongly connected components > 1)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return result


def test_layers_import_downward_only() -> None:
    assert upward_imports(imports()) == []


def test_no_import_cycles() -> None:
    # a package's __init__ re-exporting its modules is not a cycle of code
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in imports().items()}
    assert cycles(graph) == []


def test_an_injected_upward_import_is_caught(tmp_path: Path) -> None:
    """The check fails on an upward import and on a cycle written into a copy."""
    fake = tmp_path / "mole_lightning"
    (fake / "data").mkdir(parents=True)
    (fake / "models").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "models" / "__init__.py").write_text("")
    (fake / "data" / "loader.py").write_text("from mole_lightning.models.head import Head\n")
    (fake / "data" / "graphs.py").write_text("from mole_lightning.evidence import report\n")
    (fake / "models" / "head.py").write_text("from mole_lightning.data.loader import x\n")
    graph = imports(fake)
    assert upward_imports(graph) == [  # data and models share a layer: neither way
        "mole_lightning.data.graphs -> mole_lightning.evidence",
        "mole_lightning.data.loader -> mole_lightning.models.head",
        "mole_lightning.models.head -> mole_lightning.data.loader",
    ]
    assert cycles(graph) == [["mole_lightning.data.loader", "mole_lightning.models.head"]]


@pytest.mark.parametrize("module", ["mole_lightning.unknown_layer.x"])
def test_a_module_outside_the_layers_is_named(module: str) -> None:
    with pytest.raises(AssertionError, match="unknown_layer"):
        layer_of(module)
