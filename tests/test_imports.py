"""Imports run one way: between packages (app -> agents, ingest -> graph, lm) and between graph's modules."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
# What each package may import of the others (config is shared by all).
ALLOWED = {
    "app": {"agents", "ingest", "graph", "lm", "config"},
    "agents": {"graph", "lm", "config"},
    "ingest": {"graph", "lm", "config"},
    "graph": {"config"},
    "lm": {"config"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import in the file, including imports inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_packages_import_only_the_layers_below_them() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in imported_modules(path):
                top = module.split(".")[0]
                if top in ALLOWED and top != package and top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


def test_graph_modules_import_each_other_without_a_circle() -> None:
    edges = [
        (path.stem, module.split(".")[1])
        for path in (ROOT / "graph").glob("*.py")
        for module in imported_modules(path)
        if module.startswith("graph.")
    ]
    assert list(nx.simple_cycles(nx.DiGraph(edges))) == []
