"""The Neo4j backend without a server: relation names to relationship types, and what the store sends.

A scripted stand-in for the driver records every statement and its parameters, so these tests check the
Python side (the type mapping and its validation, which parameters carry names, the migration loop, the
vector-index rules) and that every statement sent is one the Cypher grammar check covers. Behaviour on a
real server is the contract tests' job (NEO4J_URI).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graph.neo4j_store as neo4j_store
from graph.errors import GraphStoreError
from graph.model import Entity, Relation, entity_id
from graph.neo4j_store import FALLBACK_TYPE, Neo4jGraphStore, relationship_type, validated_type
from tests.test_neo4j_cypher import cypher_statements

SHAPE = re.compile(r"[^\W_]+(?:_[^\W_]+)*")

HOSTILE = [
    "",
    " ",
    "\n\t",
    "`",
    "``",
    "a`b",
    "`) DETACH DELETE n //",
    "RELATION`]->() MATCH (n) DETACH DELETE n //",
    "O'Brien",
    'He said "hi"',
    "back\\slash \\' \\\" end\\",
    "{braces} and {{double}}",
    "'}) MATCH (n) DETACH DELETE n //",
    "$(row.rel_type)",
    "$param `backtick` ; DROP TABLE Entity;",
    "RETURN",
    "MATCH (n) RETURN n",
    "null",
    "\x00nul\x00",
    "Ünïcødé — 東京",
    "e\u0301tat",
    "ǰ",
    "straße",
    "🎬 directed 🎬",
    "\u200b\u200d",
    "x" * 5_000,
]


@pytest.mark.parametrize(
    ("relation", "expected"),
    [
        ("directed_by", "DIRECTED_BY"),
        ("directedBy", "DIRECTED_BY"),
        ("Directed By", "DIRECTED_BY"),
        ("release_year", "RELEASE_YEAR"),
        ("releaseYear", "RELEASE_YEAR"),
        ("IMDbRating", "IMDB_RATING"),
        ("people.person.spouse", "PEOPLE_PERSON_SPOUSE"),
        ("http://schema.org/birthPlace", "HTTP_SCHEMA_ORG_BIRTH_PLACE"),
        ("parents_inverse", "PARENTS_INVERSE"),
        ("~parents", "PARENTS"),
        ("has__tags__", "HAS_TAGS"),
        ("2ndAlbum", "2ND_ALBUM"),
        ("RETURN", "RETURN"),
        ("detach delete", "DETACH_DELETE"),
        ("監督", "監督"),
        ("Ünïcødé — 東京", "ÜNÏCØDÉ_東京"),
        ("e\u0301tat", "ÉTAT"),  # decomposed é reads as the composed letter
        ("straße", "STRASSE"),
        ("ǰ", "J"),  # its upper case is J + a combining caron, which is not a letter
        ("$param `backtick` ; DROP TABLE Entity;", "PARAM_BACKTICK_DROP_TABLE_ENTITY"),
        ("", FALLBACK_TYPE),
        ("!!! ---", FALLBACK_TYPE),
        ("`", FALLBACK_TYPE),
    ],
)
def test_relation_names_map_to_upper_snake_case(relation: str, expected: str) -> None:
    assert relationship_type(relation) == expected


@pytest.mark.parametrize("relation", HOSTILE)
def test_hostile_names_give_only_letters_digits_and_underscores(relation: str) -> None:
    rel_type = relationship_type(relation)
    assert SHAPE.fullmatch(rel_type)
    assert not set(rel_type) & set("`'\"{}()[]$:;\\ \n\x00")
    assert validated_type(rel_type) == rel_type
    assert relationship_type(relation) == rel_type  # deterministic


@given(st.text())
def test_every_name_maps_to_a_valid_type(relation: str) -> None:
    rel_type = relationship_type(relation)
    assert SHAPE.fullmatch(rel_type)
    assert relationship_type(relation) == rel_type


@pytest.mark.parametrize(
    "bad", ["", " ", "A B", "A`B", "`A`", "A-B", "_A", "A_", "A__B", "$x", "A}", "A\n", "A\u0301", "RELATION`"]
)
def test_validation_refuses_anything_else(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Trellis relationship type"):
        validated_type(bad)


def test_validation_refuses_non_strings() -> None:
    with pytest.raises(ValueError):
        validated_type(None)  # type: ignore[arg-type]


# --- The store against a scripted driver ---------------------------------------------------------------


class FakeServer:
    """Answers each statement from `answers` (statement -> rows or a function of the parameters); 0 else."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], str]] = []  # (statement, parameters, where it ran)
        self.answers: dict[str, Any] = {
            neo4j_store.SERVER_VERSION: [("5.26.0",)],
            neo4j_store.LEGACY_RELATION_NAMES: [],
            neo4j_store.RELATION_SAMPLE: [],
            neo4j_store.RELATION_COUNTS: [],
            Neo4jGraphStore.EDGES_QUERY: [],
            Neo4jGraphStore.RELATION_TYPES_QUERY: [],
            Neo4jGraphStore.RELATION_KINDS_QUERY: [],
        }
        self.index: list[tuple[Any, ...]] = []  # rows of SHOW_VECTOR_INDEX

    def answer(self, query: str, params: dict[str, Any], where: str) -> list[tuple[Any, ...]]:
        self.calls.append((query, params, where))
        reply = self.answers.get(query)
        if callable(reply):
            return reply(params)
        if reply is not None:
            return reply
        if "RETURN e.id" in query or "RETURN c.id" in query:  # the endpoint checks: everything exists
            return [(i,) for i in params["ids"]]
        if "UNWIND $rows" in query:
            return [(len(params["rows"]),)]
        return [(0,)]

    def sent(self, query: str) -> list[dict[str, Any]]:
        return [params for q, params, _ in self.calls if q == query]

    def order(self) -> list[str]:
        return [f"{where}:{q.split()[0]}" for q, _, where in self.calls]


class FakeResult(list):
    def consume(self) -> None:
        return None


class FakeTransaction:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def run(self, query: str, params: dict[str, Any]) -> FakeResult:
        return FakeResult(self.server.answer(query, params, "tx"))

    def commit(self) -> None:
        self.server.calls.append(("COMMIT", {}, "tx"))

    def rollback(self) -> None:
        self.server.calls.append(("ROLLBACK", {}, "tx"))


class FakeSession:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def run(self, query: str, params: dict[str, Any] | None = None) -> FakeResult:
        return FakeResult(self.server.answer(query, params or {}, "auto"))

    def begin_transaction(self) -> FakeTransaction:
        return FakeTransaction(self.server)

    def close(self) -> None:
        pass


class FakeDriver:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def verify_connectivity(self) -> None:
        pass

    def session(self, database: str) -> FakeSession:
        return FakeSession(self.server)

    def execute_query(self, query: str, params: dict[str, Any], **_: Any) -> tuple[list[tuple[Any, ...]], None, None]:
        self.server.calls.append((query, params, "driver"))
        return (self.server.index if query == neo4j_store.SHOW_VECTOR_INDEX else []), None, None

    def close(self) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(neo4j_store.neo4j.GraphDatabase, "driver", lambda uri, auth: FakeDriver(fake))
    return fake


@pytest.fixture
def open_store(server: FakeServer) -> Iterator[Callable[..., Neo4jGraphStore]]:
    opened: list[Neo4jGraphStore] = []

    def make(read_only: bool = False) -> Neo4jGraphStore:
        opened.append(Neo4jGraphStore("bolt://fake:7687", "neo4j", "pw", read_only=read_only))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


def _statements_sent(server: FakeServer) -> set[str]:
    return {q.strip() for q, _, _ in server.calls if q not in {"COMMIT", "ROLLBACK"}}


@pytest.mark.parametrize("name", HOSTILE)
def test_relation_names_travel_as_parameters_only(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore], name: str
) -> None:
    store = open_store()
    store.upsert_entities([Entity("head"), Entity("tail")])
    assert store.upsert_relations([Relation(entity_id("head"), name, entity_id("tail"), ["s"])]) == 1
    store.relation_sample(name)
    [[row]] = [params["rows"] for params in server.sent(neo4j_store.UPSERT_RELATIONS)]
    assert (row["relation"], row["rel_type"]) == (name, relationship_type(name))
    [sample] = server.sent(neo4j_store.RELATION_SAMPLE)
    assert (sample["t"], sample["rel_type"]) == (name, relationship_type(name))
    # The statement texts are the module's own, unchanged by the name: each one the grammar check covers.
    assert _statements_sent(server) <= set(cypher_statements())


def test_every_statement_the_store_sends_is_grammar_checked(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    server.answers[neo4j_store.LEGACY_RELATION_NAMES] = [("directed_by",)]
    moved = iter([3, 0])
    server.answers[neo4j_store.MIGRATE_LEGACY_RELATIONS] = lambda params: [(next(moved),)]
    store = open_store()
    store.upsert_entities([Entity("a"), Entity("b")])
    store.upsert_relations([Relation(entity_id("a"), "r", entity_id("b"), ["s"])])
    store.edges([entity_id("a")])
    store.relation_types(entity_id("a"))
    store.relation_counts()
    store.counts()
    store.write_chunk_embeddings(["c1"], [[0.1, 0.2]])
    store.delete_source("s")
    assert _statements_sent(server) <= set(cypher_statements())


def test_an_old_server_is_refused_with_the_version_it_needs(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    server.answers[neo4j_store.SERVER_VERSION] = [("5.20.0",)]
    with pytest.raises(GraphStoreError, match=r"5\.20\.0 .* 5\.26"):
        open_store()
    for version in ("5.26.0", "5.27-aura", "2025.01.0", "unknown"):
        server.answers[neo4j_store.SERVER_VERSION] = [(version,)]
        open_store()


def test_a_writable_open_converts_the_old_layout(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    server.answers[neo4j_store.LEGACY_RELATION_NAMES] = [("directed_by",), ("~parents",)]
    remaining = {"directed_by": [10_000, 5, 0], "~parents": [2, 0]}
    server.answers[neo4j_store.MIGRATE_LEGACY_RELATIONS] = lambda params: [(remaining[params["relation"]].pop(0),)]
    open_store()
    sent = server.sent(neo4j_store.MIGRATE_LEGACY_RELATIONS)
    assert [(p["relation"], p["rel_type"]) for p in sent] == [("directed_by", "DIRECTED_BY")] * 3 + [
        ("~parents", "PARENTS")
    ] * 2
    # Batches commit on their own (auto-commit), and the old index goes once they are done.
    assert {where for q, _, where in server.calls if q == neo4j_store.MIGRATE_LEGACY_RELATIONS} == {"auto"}
    assert server.order().index("auto:DROP") > max(
        i for i, (q, _, _) in enumerate(server.calls) if q == neo4j_store.MIGRATE_LEGACY_RELATIONS
    )


def test_a_read_only_open_of_the_old_layout_says_how_to_convert_it(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    server.answers[neo4j_store.LEGACY_RELATION_NAMES] = [("directed_by",)]
    with pytest.raises(GraphStoreError, match="old `:RELATION"):
        open_store(read_only=True)
    assert server.sent(neo4j_store.MIGRATE_LEGACY_RELATIONS) == []


def test_embeddings_are_checked_before_anything_is_written(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    store = open_store()
    for ids, vectors in [
        (["a", "b"], [[0.1, 0.2]]),
        (["a"], [[0.1, 0.2], [0.3, 0.4]]),
        (["a", "b"], [[0.1, 0.2], [0.3]]),
        (["a"], [[]]),
        (["a"], [[math.nan, 0.2]]),
        (["a"], [[math.inf, 0.2]]),
        (["a"], [0.1, 0.2]),
    ]:
        with pytest.raises(ValueError):
            store.write_chunk_embeddings(ids, vectors)
    assert store.write_chunk_embeddings([], []) == 0
    assert server.sent(neo4j_store.WRITE_EMBEDDINGS) == []
    assert server.sent(neo4j_store.CREATE_VECTOR_INDEX) == []


def test_embeddings_are_written_then_indexed_after_the_commit(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    store = open_store()
    vectors = np.array([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]], dtype=np.float32)
    assert store.write_chunk_embeddings(["c1", "c2"], vectors) == 2
    [written] = server.sent(neo4j_store.WRITE_EMBEDDINGS)
    assert [row["id"] for row in written["rows"]] == ["c1", "c2"]
    assert written["rows"][0]["embedding"] == pytest.approx([0.6, 0.8, 0.0])
    assert all(isinstance(x, float) for x in written["rows"][0]["embedding"])  # plain floats for the driver
    assert server.sent(neo4j_store.CREATE_VECTOR_INDEX) == [{"dim": 3}]
    steps = [(q, where) for q, _, where in server.calls]
    # The schema change runs after the data's transaction commits, on its own.
    assert steps.index((neo4j_store.CREATE_VECTOR_INDEX, "auto")) > steps.index(("COMMIT", "tx"))
    # Once made, the index is not created again.
    store.write_chunk_embeddings(["c1"], [[1.0, 0.0, 0.0]])
    assert len(server.sent(neo4j_store.CREATE_VECTOR_INDEX)) == 1


def test_inside_a_transaction_the_index_waits_for_its_commit(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    store = open_store()
    with store.transaction():
        store.write_chunk_embeddings(["c1"], [[1.0, 0.0]])
        assert server.sent(neo4j_store.CREATE_VECTOR_INDEX) == []
    assert server.sent(neo4j_store.CREATE_VECTOR_INDEX) == [{"dim": 2}]

    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        store.write_chunk_embeddings(["c1"], [[1.0, 0.0]])
        raise RuntimeError("boom")
    assert len(server.sent(neo4j_store.CREATE_VECTOR_INDEX)) == 1


def test_one_transaction_writes_embeddings_of_one_dimension(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    store = open_store()
    with pytest.raises(GraphStoreError, match="3-d embeddings after 2-d"), store.transaction():
        store.write_chunk_embeddings(["c1"], [[1.0, 0.0]])
        store.write_chunk_embeddings(["c2"], [[1.0, 0.0, 0.0]])
    assert server.sent(neo4j_store.CREATE_VECTOR_INDEX) == []


def test_a_rolled_back_first_write_creates_no_index(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    store = open_store()
    with pytest.raises(RuntimeError), store.transaction():
        store.write_chunk_embeddings(["c1"], [[1.0, 0.0]])
        raise RuntimeError("later step failed")
    assert server.sent(neo4j_store.CREATE_VECTOR_INDEX) == []


def test_embeddings_of_unknown_chunks_are_refused(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    store = open_store()
    server.answers["UNWIND $ids AS i MATCH (c:Chunk {id: i}) RETURN c.id"] = lambda params: [("c1",)]
    with pytest.raises(GraphStoreError, match="unknown chunks"):
        store.write_chunk_embeddings(["c1", "gone"], [[1.0, 0.0], [0.0, 1.0]])
    assert server.sent(neo4j_store.WRITE_EMBEDDINGS) == []
    assert server.order()[-1] == "tx:ROLLBACK"


def vector_index_row(dim: int, label: str = "Chunk", prop: str = "embedding", kind: str = "VECTOR") -> tuple:
    config = {"vector.dimensions": dim, "vector.similarity_function": "COSINE"}
    return (kind, [label], [prop], {"indexProvider": "vector-2.0", "indexConfig": config})


def test_an_index_of_another_dimension_is_refused(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore]
) -> None:
    server.index = [vector_index_row(384)]
    store = open_store()
    assert store.vector_index_dimensions() == 384
    with pytest.raises(GraphStoreError, match="384-d vectors, these are 768-d"):
        store.write_chunk_embeddings(["c1"], [[0.0] * 767 + [1.0]])
    assert server.sent(neo4j_store.WRITE_EMBEDDINGS) == []
    store.write_chunk_embeddings(["c1"], [[0.0] * 383 + [1.0]])
    assert server.sent(neo4j_store.CREATE_VECTOR_INDEX) == []  # it exists: nothing to create


@pytest.mark.parametrize(
    "row",
    [vector_index_row(384, label="Document"), vector_index_row(384, prop="vec"), vector_index_row(0, kind="RANGE")],
)
def test_an_index_of_that_name_but_another_shape_is_refused(
    server: FakeServer, open_store: Callable[..., Neo4jGraphStore], row: tuple
) -> None:
    server.index = [row]
    store = open_store()
    with pytest.raises(GraphStoreError, match="DROP INDEX trellis_chunk_embedding"):
        store.ensure_vector_index(384)
