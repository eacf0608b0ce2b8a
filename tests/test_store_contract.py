"""The GraphStore contract, run against every backend (Neo4j only when NEO4J_URI is set)."""

from __future__ import annotations

import itertools

import pytest

from graph.errors import GraphStoreError
from graph.model import Chunk, Document, Entity, Relation, StoreCounts, entity_id
from graph.paths import EdgeMemo, neighbourhood
from graph.store import GraphStore


def triple(store: GraphStore, head: str, relation: str, tail: str, source: str = "s1") -> None:
    store.upsert_entities([Entity(head, sources=[source]), Entity(tail, sources=[source])])
    store.upsert_relations([Relation(entity_id(head), relation, entity_id(tail), [source])])


def test_new_store_is_empty(store: GraphStore) -> None:
    assert store.counts() == StoreCounts(0, 0, 0, 0)


def test_upsert_is_idempotent_and_merges_provenance(store: GraphStore) -> None:
    assert (
        store.upsert_entities([Entity("Ada Lovelace", sources=["a"]), Entity("Analytical Engine", sources=["a"])]) == 2
    )
    assert store.upsert_entities([Entity("Ada Lovelace", sources=["a"])]) == 0
    assert (
        store.upsert_entities([Entity("Ada Lovelace", type="PERSON", aliases=["Countess of Lovelace"], sources=["b"])])
        == 0
    )
    rel = Relation(entity_id("Ada Lovelace"), "wrote_about", entity_id("Analytical Engine"), ["a"])
    assert store.upsert_relations([rel]) == 1
    assert store.upsert_relations([rel]) == 0
    assert store.upsert_relations([Relation(rel.head_id, rel.type, rel.tail_id, ["b"])]) == 0
    assert store.counts() == StoreCounts(2, 1, 0, 0)

    [ada] = store.get_entities([entity_id("Ada Lovelace")])
    assert ada.type == "PERSON"
    assert ada.aliases == ["Countess of Lovelace"]
    assert ada.sources == ["a", "b"]
    assert ada.key == "ada lovelace"


def test_duplicates_within_one_batch_merge(store: GraphStore) -> None:
    created = store.upsert_entities([Entity("Kyoto", sources=["x"]), Entity("Kyoto", type="GPE", sources=["y"])])
    assert created == 1
    [kyoto] = store.get_entities([entity_id("Kyoto")])
    assert (kyoto.type, kyoto.sources) == ("GPE", ["x", "y"])


def test_same_pair_may_hold_several_relation_types(store: GraphStore) -> None:
    triple(store, "Nia Vardalos", "wrote", "My Big Fat Greek Wedding")
    triple(store, "Nia Vardalos", "starred_in", "My Big Fat Greek Wedding")
    assert store.counts().relations == 2


def test_relation_to_unknown_entity_is_refused_and_writes_nothing(store: GraphStore) -> None:
    store.upsert_entities([Entity("Known")])
    with pytest.raises(GraphStoreError, match="not stored entities"):
        store.upsert_relations(
            [
                Relation(entity_id("Known"), "likes", entity_id("Known"), ["s"]),
                Relation(entity_id("Known"), "likes", entity_id("Nobody"), ["s"]),
            ]
        )
    assert store.counts().relations == 0


def test_transaction_rolls_back_everything_on_error(store: GraphStore) -> None:
    triple(store, "before", "r", "run")
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        triple(store, "inside", "r", "transaction")
        store.upsert_entities([Entity("before", sources=["other"])])
        raise RuntimeError("boom")
    assert store.counts() == StoreCounts(2, 1, 0, 0)
    [before] = store.get_entities([entity_id("before")])
    assert before.sources == ["s1"]


INJECTION_NAMES = [
    "O'Brien",
    'He said "hi"',
    "back\\slash \\' \\\" end\\",
    "{braces} and {{double}}",
    "'}) MATCH (n) DETACH DELETE n //",
    "MATCH (n) RETURN n",
    "$param `backtick` ; DROP TABLE Entity;",
    "Ünïcødé — 東京",
]


@pytest.mark.parametrize("name", INJECTION_NAMES)
def test_hostile_names_are_stored_verbatim(store: GraphStore, name: str) -> None:
    triple(store, name, "RETURN", "plain tail", source=name)
    [found] = store.find_entities(name, "exact")
    assert found.name == name
    assert found.sources == [name]
    [edge] = store.edges([found.id])
    assert (edge.type, edge.neighbour_name, edge.forward) == ("RETURN", "plain tail", True)
    assert store.counts() == StoreCounts(2, 1, 0, 0)
    report = store.delete_source(name)
    assert (report.relations_deleted, report.entities_deleted) == (1, 2)


def test_lookup_exact_normalised_fuzzy_and_aliases(store: GraphStore) -> None:
    store.upsert_entities(
        [
            Entity("Pat O'Connor", sources=["s"]),
            Entity("International Business Machines", aliases=["IBM"], sources=["s"]),
            Entity("Wolves", sources=["s"]),
            Entity("wolves", sources=["s"]),
        ]
    )
    assert [e.name for e in store.find_entities("Pat O'Connor")] == ["Pat O'Connor"]
    assert store.find_entities("pat o'connor") == []
    assert [e.name for e in store.find_entities("pat  o connor", "normalised")] == ["Pat O'Connor"]
    assert [e.name for e in store.find_entities("IBM")] == ["International Business Machines"]
    assert [e.name for e in store.find_entities("ibm", "normalised")] == ["International Business Machines"]
    # Case-distinct names stay distinct entities; a normalised lookup finds both.
    assert sorted(e.name for e in store.find_entities("WOLVES", "normalised")) == ["Wolves", "wolves"]
    assert next(e.name for e in store.find_entities("Pat OConnor", "fuzzy")) == "Pat O'Connor"
    assert [e.name for e in store.find_entities("Internatonal Busines Machines", "fuzzy", limit=1)] == [
        "International Business Machines"
    ]
    assert store.find_entities("zzzzqqq", "fuzzy") == []


def test_edges_and_relation_types_keep_direction(store: GraphStore) -> None:
    triple(store, "My Big Fat Greek Wedding", "directed_by", "Joel Zwick")
    triple(store, "My Big Fat Greek Wedding", "in_language", "Greek")
    edges = store.edges([entity_id("Joel Zwick")])
    assert [(e.type, e.neighbour_name, e.forward) for e in edges] == [
        ("directed_by", "My Big Fat Greek Wedding", False)
    ]
    assert store.relation_types(entity_id("My Big Fat Greek Wedding")) == [
        ("directed_by", True, 1),
        ("in_language", True, 1),
    ]
    assert store.relation_types(entity_id("Joel Zwick")) == [("directed_by", False, 1)]


@pytest.mark.parametrize("count", [1, 40, 250])
def test_edges_of_many_ids_equal_the_edges_of_each(store: GraphStore, count: int) -> None:
    """Any number of ids (backends may plan few and many differently), duplicates and unknown ids included."""
    names = [f"n{i}" for i in range(count + 1)]
    store.upsert_entities([Entity(n, sources=["s"]) for n in names])
    store.upsert_relations([Relation(entity_id(x), "next", entity_id(y), ["s"]) for x, y in itertools.pairwise(names)])
    ids = [entity_id(n) for n in names[:count]]
    together = sorted(map(repr, store.edges([*ids, ids[0], entity_id("nobody")])))
    one_by_one = sorted(repr(edge) for i in ids for edge in store.edges([i]))
    assert together == one_by_one
    assert len(together) == 2 * count - 1  # each chain node has a next and a previous, but the first


def test_relation_kinds_name_each_type_and_direction_once(store: GraphStore) -> None:
    for film in ("Film A", "Film B", "Film C"):
        triple(store, film, "directed_by", "Joel Zwick")
    triple(store, "Film A", "written_by", "Joel Zwick")
    triple(store, "Joel Zwick", "born_in", "Boston")
    kinds = store.relation_kinds([entity_id("Joel Zwick"), entity_id("Boston"), entity_id("nobody")])
    assert sorted(kinds) == sorted(
        [
            (entity_id("Boston"), "born_in", False),
            (entity_id("Joel Zwick"), "born_in", True),
            (entity_id("Joel Zwick"), "directed_by", False),  # three films, one row
            (entity_id("Joel Zwick"), "written_by", False),
        ]
    )
    assert store.relation_kinds([]) == []


class CountingStore:
    """Counts the ids each edge query asks for (to see what a memo spares the store)."""

    def __init__(self, store: GraphStore) -> None:
        self.store, self.asked = store, []

    def edges(self, ids: list[str]) -> list:
        self.asked.append(sorted(ids))
        return self.store.edges(ids)


def test_edge_memo_reads_each_entity_once_and_answers_as_the_store(store: GraphStore) -> None:
    triple(store, "Film A", "directed_by", "Joel Zwick")
    triple(store, "Film B", "directed_by", "Joel Zwick")
    triple(store, "Film A", "in_language", "Greek")
    counting = CountingStore(store)
    memo = EdgeMemo(counting)  # type: ignore[arg-type]
    zwick, film_a, lonely = entity_id("Joel Zwick"), entity_id("Film A"), entity_id("nobody")
    assert sorted(map(repr, memo.edges([zwick]))) == sorted(map(repr, store.edges([zwick])))
    both = memo.edges([zwick, film_a, lonely])
    assert sorted(map(repr, both)) == sorted(map(repr, store.edges([zwick, film_a])))
    memo.edges([film_a, zwick, lonely])
    assert counting.asked == [[zwick], sorted([film_a, lonely])]  # known ids, even edgeless ones, not re-asked


def test_neighbourhood_paths_both_directions(store: GraphStore) -> None:
    triple(store, "My Big Fat Greek Wedding", "directed_by", "Joel Zwick")
    triple(store, "My Big Fat Greek Wedding", "in_language", "Greek")
    triple(store, "Greek", "spoken_in", "Greece")
    paths = neighbourhood(store, [entity_id("Joel Zwick")], hops=2)
    assert sorted(p.verbalise() for p in paths) == [
        "Joel Zwick <-directed_by- My Big Fat Greek Wedding",
        "Joel Zwick <-directed_by- My Big Fat Greek Wedding -in_language-> Greek",
    ]
    longest = max(paths, key=lambda p: p.hops)
    assert longest.as_list() == ["Joel Zwick", "<-directed_by-", "My Big Fat Greek Wedding", "-in_language->", "Greek"]
    assert longest.triples() == [
        ("My Big Fat Greek Wedding", "directed_by", "Joel Zwick"),
        ("My Big Fat Greek Wedding", "in_language", "Greek"),
    ]
    assert len(neighbourhood(store, [entity_id("Joel Zwick")], hops=3)) == 3
    assert len(neighbourhood(store, [entity_id("Joel Zwick")], hops=3, limit=2)) == 2


def test_delete_source_removes_only_what_nothing_else_supports(store: GraphStore) -> None:
    triple(store, "Alice", "knows", "Bob", source="b")
    before = store.counts()
    triple(store, "Alice", "knows", "Bob", source="a")  # shared fact
    triple(store, "Alice", "works_at", "Acme", source="a")  # only in a
    store.upsert_documents([Document("a", title="Doc A")])
    store.upsert_chunks([Chunk("a#0", "a", 0, "Alice works at Acme.", mentions=[entity_id("Acme")])])
    assert store.counts() == StoreCounts(3, 2, 1, 1)

    report = store.delete_source("a")
    assert (report.relations_deleted, report.entities_deleted, report.documents_deleted, report.chunks_deleted) == (
        1,
        1,
        1,
        1,
    )
    assert store.counts() == before
    [alice] = store.get_entities([entity_id("Alice")])
    assert alice.sources == ["b"]
    [edge] = store.edges([entity_id("Alice")])
    assert edge.neighbour_name == "Bob"
    assert store.delete_source("a") == type(report)("a", 0, 0, 0, 0)


def test_chunks_replace_their_mentions(store: GraphStore) -> None:
    store.upsert_entities([Entity("Acme", sources=["d"]), Entity("Bob", sources=["d"])])
    assert store.upsert_documents([Document("d", title="D", content_hash="h1")]) == 1
    assert store.upsert_documents([Document("d", title="D2", content_hash="h2")]) == 0
    assert store.upsert_chunks([Chunk("d#0", "d", 0, "Acme.", mentions=[entity_id("Acme")])]) == 1
    assert store.upsert_chunks([Chunk("d#0", "d", 0, "Bob.", mentions=[entity_id("Bob")])]) == 0
    assert store.counts() == StoreCounts(2, 0, 1, 1)
    with pytest.raises(GraphStoreError, match="unknown documents"):
        store.upsert_chunks([Chunk("x#0", "x", 0, "orphan")])
    report = store.delete_source("d")
    assert (report.documents_deleted, report.chunks_deleted, report.entities_deleted) == (1, 1, 2)


def test_large_batches_mixing_stored_and_new_rows(store: GraphStore) -> None:
    # Large batches take the embedded store's bulk-copy path, which must skip rows already stored.
    names = [f"node {i}" for i in range(300)]
    assert store.upsert_entities([Entity(n, sources=["a"]) for n in names[:150]]) == 150
    assert store.upsert_entities([Entity(n, sources=["b"]) for n in names]) == 150
    chain = [Relation(entity_id(x), "next", entity_id(y), ["a"]) for x, y in itertools.pairwise(names)]
    assert store.upsert_relations(chain[:100]) == 100
    assert store.upsert_relations([Relation(r.head_id, r.type, r.tail_id, ["b"]) for r in chain]) == 199
    assert store.counts() == StoreCounts(300, 299, 0, 0)
    [first] = store.get_entities([entity_id("node 0")])
    assert first.sources == ["a", "b"]
    store.delete_source("b")
    assert store.counts() == StoreCounts(150, 100, 0, 0)


def test_evidence_follows_its_source_and_chunks_read_back(store: GraphStore) -> None:
    from graph.model import evidence_entry

    store.upsert_entities([Entity(n, sources=["d1", "d2"]) for n in ("Ada", "Babbage")])
    for doc in ("d1", "d2"):
        store.upsert_documents([Document(doc, title=f"Title {doc}")])
        store.upsert_chunks([Chunk(f"{doc}#0", doc, 0, "Ada met Babbage.", page=3)])
        store.upsert_relations(
            [Relation(entity_id("Ada"), "met", entity_id("Babbage"), [doc], [evidence_entry(doc, f"{doc}#0", 0, 16)])]
        )
    [edge] = store.edges([entity_id("Ada")])
    assert edge.type == "met"
    [chunk] = store.get_chunks(["d2#0"])
    assert (chunk.doc_id, chunk.page, chunk.title, chunk.text) == ("d2", 3, "Title d2", "Ada met Babbage.")
    store.delete_source("d1")
    assert store.get_chunks(["d1#0", "d2#0"])[0].id == "d2#0"
    rows = store._rows("MATCH ()-[r:RELATION]->() RETURN r.sources, r.evidence")  # type: ignore[attr-defined]
    assert [list(r[0]) for r in rows] == [["d2"]]
    assert [list(r[1]) for r in rows] == [[evidence_entry("d2", "d2#0", 0, 16)]]
