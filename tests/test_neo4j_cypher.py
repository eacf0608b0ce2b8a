"""Every Cypher statement of the Neo4j backend, checked by Neo4j's own Cypher grammar and semantic analysis.

No Neo4j server runs on our machines; this catches syntax and scoping errors without one. Behaviour against
a live server is covered by the contract tests when NEO4J_URI is set.

Statements are found as the string literals of graph/neo4j_store.py and graph/cypher_store.py (f-strings
evaluated with the module's own names), plus the Cypher blocks of the README's "## Neo4j" section.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import graph.cypher_store as cypher_store
import graph.neo4j_store as neo4j_store

LINTER = Path(__file__).parent / "cypher_lint"
README = Path(__file__).resolve().parents[1] / "README.md"
CYPHER_START = ("MATCH", "OPTIONAL", "UNWIND", "CREATE", "MERGE", "WITH", "CALL", "RETURN", "SHOW", "DROP")
# neo4j-graphrag's VectorCypherRetriever runs its `retrieval_query` after this vector search; a statement
# that starts from the search's `node` and `score` is checked the way it runs.
VECTOR_SEARCH = "CALL db.index.vector.queryNodes($index_name, $top_k, $query_vector) YIELD node, score\n"
# Relationship types that Trellis's statements may write by name; every relation's own type is dynamic.
FIXED_TYPES = {"HAS_CHUNK", "MENTIONS"}


def cypher_statements() -> list[str]:
    """Cypher the Neo4j backend runs (its own and the shared base's), and the README's Neo4j Cypher."""
    found = [s for module in (neo4j_store, cypher_store) for s in _module_statements(module)[0]]
    return list(dict.fromkeys(found + readme_statements()))


def _docstrings(tree: ast.AST) -> set[int]:
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, owners) and node.body and isinstance(node.body[0], ast.Expr)
    }


def _module_statements(module: object) -> tuple[list[str], list[str]]:
    """(Cypher statements, f-strings of run-time values that look like Cypher) of a module's source."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    skipped = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    skipped |= _docstrings(tree)
    found: list[str] = []
    built_at_run_time: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.JoinedStr | ast.Constant):
            continue
        try:
            value = eval(compile(ast.Expression(node), "<cypher>", "eval"), vars(module))
        except NameError:  # an f-string of local values: an error message, never a query
            text = "".join(p.value for p in node.values if isinstance(p, ast.Constant))
            if text.strip().upper().startswith(CYPHER_START):
                built_at_run_time.append(ast.unparse(node))
            continue
        if isinstance(value, str) and value.strip().upper().startswith(CYPHER_START):
            found.append(value.strip())
    return found, built_at_run_time


def readme_statements() -> list[str]:
    """The ```cypher blocks of README.md's "## Neo4j" section, one statement per block."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Neo4j\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```cypher\n(.*?)```", section, flags=re.DOTALL)]


def as_run(statement: str) -> str:
    return VECTOR_SEARCH + statement if statement.startswith("WITH node, score") else statement


def test_the_backend_has_its_statements_found() -> None:
    statements = cypher_statements()
    assert len(statements) >= 30
    for expected in (
        neo4j_store.UPSERT_RELATIONS,
        neo4j_store.RELATION_SAMPLE,
        neo4j_store.CREATE_VECTOR_INDEX,
        neo4j_store.SHOW_VECTOR_INDEX,
        neo4j_store.WRITE_EMBEDDINGS,
        neo4j_store.MIGRATE_LEGACY_RELATIONS,
        neo4j_store.DROP_LEGACY_INDEX,
        neo4j_store.SERVER_VERSION,
        neo4j_store.GRAPHRAG_RETRIEVAL_QUERY,
        neo4j_store.Neo4jGraphStore.EDGES_QUERY,
        neo4j_store.Neo4jGraphStore.RELATION_TYPES_QUERY,
        neo4j_store.Neo4jGraphStore.RELATION_KINDS_QUERY,
    ):
        assert expected.strip() in statements
    assert any("MERGE (h)-[r:$(row.rel_type) {relation: row.relation}]->(t)" in s for s in statements)
    assert any("CREATE VECTOR INDEX trellis_chunk_embedding IF NOT EXISTS FOR (c:Chunk)" in s for s in statements)
    assert len(readme_statements()) >= 3


def test_no_statement_is_built_from_run_time_values() -> None:
    # Names and text reach the server as parameters only: an f-string of local values that reads as Cypher
    # would be text spliced into a query (and would escape the grammar check above).
    for module in (neo4j_store, cypher_store):
        assert _module_statements(module)[1] == []


def test_relations_are_typed_and_the_old_layout_is_only_read_to_migrate_it() -> None:
    own = _module_statements(neo4j_store)[0]
    legacy = {neo4j_store.LEGACY_RELATION_NAMES.strip(), neo4j_store.MIGRATE_LEGACY_RELATIONS.strip()}
    assert [s for s in own if ":RELATION" in s and s not in legacy] == []
    for statement in own:
        # Every relationship written by name is one of Trellis's own; a relation's type is always `$(...)`.
        for clause in re.findall(r"(?:MERGE|CREATE)\s*\([^)]*\)[^\n]*", statement):
            named = set(re.findall(r"\[\w*:(\w+)", clause))
            assert named <= FIXED_TYPES, clause
    # The shared base still reads the embedded layout: every method of it that does is Neo4j's own here.
    for name, method in inspect.getmembers(cypher_store.CypherGraphStore, inspect.isfunction):
        if ":RELATION" in inspect.getsource(method):
            assert name in vars(neo4j_store.Neo4jGraphStore), f"Neo4jGraphStore inherits {name}, which reads :RELATION"


@pytest.mark.skipif(
    shutil.which("node") is None or not (LINTER / "node_modules").is_dir(),
    reason="needs node and `npm ci --prefix tests/cypher_lint` (make test installs it when npm is present)",
)
def test_neo4j_cypher_is_valid() -> None:
    statements = cypher_statements()
    run = subprocess.run(
        ["node", str(LINTER / "lint.mjs")],
        input=json.dumps([as_run(s) for s in statements]),
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


@pytest.mark.skipif(
    shutil.which("node") is None or not (LINTER / "node_modules").is_dir(),
    reason="needs node and `npm ci --prefix tests/cypher_lint`",
)
def test_the_grammar_check_catches_a_broken_statement() -> None:
    # The check is only worth something if it can fail: a typo and an unbound variable are reported.
    broken = ["MATCH (a:Entity)-[r:$($rel_type)]->(b) RETRN a", "MATCH (a)-[r:$(kind)]->(b) RETURN a"]
    run = subprocess.run(
        ["node", str(LINTER / "lint.mjs")], input=json.dumps(broken), capture_output=True, text=True, timeout=120
    )
    assert all(json.loads(run.stdout))
