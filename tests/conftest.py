"""Shared fixtures: every store test runs on the embedded backend, and on Neo4j when NEO4J_URI is set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import Settings
from graph.store import GraphStore, open_store

SHARED_DATA = Path(os.environ.get("TRELLIS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
METAQA_KB = SHARED_DATA / "metaqa" / "kb.tsv"

NEO4J_SKIP_REASON = (
    "NEO4J_URI is not set: the Neo4j contract tests need a Neo4j 5 server "
    "(e.g. `docker compose up neo4j`, then NEO4J_URI=bolt://localhost:7687 NEO4J_PASSWORD=...)"
)

BACKENDS = [
    "embedded",
    pytest.param(
        "neo4j",
        marks=[pytest.mark.neo4j, pytest.mark.skipif(not os.environ.get("NEO4J_URI"), reason=NEO4J_SKIP_REASON)],
    ),
]


def make_settings(data_dir: Path, backend: str = "embedded") -> Settings:
    if backend == "embedded":
        return Settings(data_dir=data_dir, graph_uri="embedded")
    return Settings(
        data_dir=data_dir,
        graph_uri=os.environ["NEO4J_URI"],
        neo4j_user=os.environ.get("NEO4J_USER", "neo4j"),
        neo4j_password=os.environ.get("NEO4J_PASSWORD", ""),
        neo4j_database=os.environ.get("NEO4J_DATABASE", "neo4j"),
    )


def _wipe_neo4j(store: GraphStore) -> None:
    # Only Trellis's own labels: the test database may be shared with nothing else, but be polite.
    store._rows("MATCH (n) WHERE n:Entity OR n:Document OR n:Chunk DETACH DELETE n")  # type: ignore[attr-defined]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings(tmp_path: Path, backend: str) -> Settings:
    return make_settings(tmp_path / "data", backend)


@pytest.fixture
def store(settings: Settings) -> Iterator[GraphStore]:
    opened = open_store(settings)
    if settings.backend == "neo4j":
        _wipe_neo4j(opened)
    try:
        yield opened
    finally:
        if settings.backend == "neo4j":
            _wipe_neo4j(opened)
        opened.close()


@pytest.fixture(scope="session")
def metaqa_kb() -> Path:
    if not METAQA_KB.exists():
        pytest.fail(f"{METAQA_KB} is missing: the tests expect ../shared/data beside the checkout")
    return METAQA_KB


def pytest_report_header() -> str:
    return "neo4j backend: " + (
        f"testing against {os.environ['NEO4J_URI']}"
        if os.environ.get("NEO4J_URI")
        else "skipped (" + NEO4J_SKIP_REASON + ")"
    )
