"""Every Cypher statement of the Neo4j backend, checked by Neo4j's own Cypher grammar and semantic analysis.

No Neo4j server runs on our machines; this catches syntax and scoping errors without one. Behaviour against
a live server is covered by the contract tests when NEO4J_URI is set.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import graph.cypher_store as cypher_store
import graph.neo4j_store as neo4j_store

LINTER = Path(__file__).parent / "cypher_lint"
CYPHER_START = ("MATCH", "OPTIONAL", "UNWIND", "CREATE", "MERGE", "WITH", "CALL", "RETURN")


def cypher_statements() -> list[str]:
    """Cypher the Neo4j backend runs: its own and the shared base's string literals (f-strings evaluated)."""
    return list(dict.fromkeys(s for module in (neo4j_store, cypher_store) for s in _module_statements(module)))


def _module_statements(module: object) -> list[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    fragments = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    found: list[str] = []
    for node in ast.walk(tree):
        if id(node) in fragments or not isinstance(node, ast.JoinedStr | ast.Constant):
            continue
        try:
            value = eval(compile(ast.Expression(node), "<cypher>", "eval"), vars(module))
        except NameError:  # an f-string of local values (an error message), not a query
            continue
        if isinstance(value, str) and value.strip().upper().startswith(CYPHER_START):
            found.append(value.strip())
    return found


def test_the_backend_has_its_statements_found() -> None:
    statements = cypher_statements()
    assert len(statements) >= 20
    assert any("MERGE (h)-[r:RELATION {type: row.type}]->(t)" in s for s in statements)


@pytest.mark.skipif(
    shutil.which("node") is None or not (LINTER / "node_modules").is_dir(),
    reason="needs node and `npm ci --prefix tests/cypher_lint` (make test installs it when npm is present)",
)
def test_neo4j_cypher_is_valid() -> None:
    statements = cypher_statements()
    run = subprocess.run(
        ["node", str(LINTER / "lint.mjs")],
        input=json.dumps(statements),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    problems = [
        f"{diag['message']}\n    in: {statement}"
        for statement, diagnostics in zip(statements, json.loads(run.stdout), strict=True)
        for diag in diagnostics
    ]
    assert problems == [], "\n".join(problems)
