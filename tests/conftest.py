"""Shared fixtures: every store test runs on the embedded backend, and on Neo4j when NEO4J_URI is set."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import Settings
from graph.backends import open_store
from graph.store import GraphStore

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


# -- nothing left running -----------------------------------------------------------------------------------
# Every process the suite starts inherits this marker in its environment, orphans included (a worker whose
# parent a test killed with -9 is re-parented to init, so walking the process tree would miss it).
SESSION_MARKER = "TRELLIS_TEST_SESSION"
os.environ[SESSION_MARKER] = uuid.uuid4().hex
LEFTOVER_GRACE_SECONDS = 10.0


def _processes_with_marker(marker: str) -> list[tuple[int, str]]:
    needle = f"{SESSION_MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), command.strip()))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process the suite started is still alive once it ends (after a short grace)."""
    if not Path("/proc").is_dir():
        return
    deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    while (left := _processes_with_marker(os.environ[SESSION_MARKER])) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        listing = "\n".join(f"  PID {pid}: {command[:200]}" for pid, command in left)
        session.config.get_terminal_writer().line(f"\nprocesses started by the test suite still running:\n{listing}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
