"""Property: on random graphs, neighbourhood() returns exactly the simple paths, each made of stored edges."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.embedded import EmbeddedGraphStore
from graph.model import Entity, Relation, entity_id
from graph.paths import neighbourhood

NAMES = [f"n{i}" for i in range(6)]
edge_lists = st.lists(
    st.tuples(st.sampled_from(NAMES), st.sampled_from(["r", "s"]), st.sampled_from(NAMES)), max_size=12, unique=True
)


def brute_force(edges: list[tuple[str, str, str]], start: str, hops: int) -> set[tuple]:
    steps = [(h, r, t, True) for h, r, t in edges if h != t] + [(t, r, h, False) for h, r, t in edges if h != t]
    found: set[tuple] = set()
    frontier = [((start,), ())]
    for _ in range(hops):
        frontier = [
            ((*nodes, b), (*rels, (r, fwd)))
            for nodes, rels in frontier
            for a, r, b, fwd in steps
            if a == nodes[-1] and b not in nodes
        ]
        found |= set(frontier)
    return found


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edges=edge_lists, start=st.sampled_from(NAMES), hops=st.integers(1, 3))
def test_neighbourhood_matches_brute_force(tmp_path_factory, edges, start, hops) -> None:
    path: Path = tmp_path_factory.mktemp("g") / "graph.lbug"
    with EmbeddedGraphStore(path) as store:
        store.upsert_entities([Entity(n, sources=["p"]) for n in NAMES])
        store.upsert_relations([Relation(entity_id(h), r, entity_id(t), ["p"]) for h, r, t in edges])
        paths = neighbourhood(store, [entity_id(start)], hops=hops)
    got = {(p.entity_names, tuple(zip(p.relations, p.forward, strict=True))) for p in paths}
    assert len(got) == len(paths)
    assert got == brute_force(edges, start, hops)
    stored = set(edges)
    for p in paths:
        assert all(triple in stored for triple in p.triples())
