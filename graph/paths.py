"""Paths through the graph around question entities, with direction kept, and their verbalisation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from graph.model import Edge
from graph.store import GraphStore


class EdgeMemo:
    """A view of `store` for one question's walk that reads each entity's edges once: ranking chains and then
    following the chosen one ask for the same entities again. Every other call goes to the store.

    Made per question and dropped after it, so a write to the store can never leave it stale for long; the
    edges of the entities one question touches are what it holds.
    """

    def __init__(self, store: GraphStore) -> None:
        self._store = store
        self._edges: dict[str, list[Edge]] = {}

    def edges(self, entity_ids: Sequence[str]) -> list[Edge]:
        ids = list(dict.fromkeys(entity_ids))
        if missing := [i for i in ids if i not in self._edges]:
            fetched: dict[str, list[Edge]] = {i: [] for i in missing}
            for edge in self._store.edges(missing):
                fetched[edge.origin_id].append(edge)
            self._edges.update(fetched)
        return [edge for i in ids for edge in self._edges[i]]

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def forward_arrow(relation: str) -> str:
    return f"-{relation}->"


def backward_arrow(relation: str) -> str:
    return f"<-{relation}-"


@dataclass(frozen=True, slots=True)
class Path:
    """Entities e0..en joined by relations r1..rn; `forward[i]` says whether e_i is the head of r_(i+1).

    `Joel Zwick <-directed_by- My Big Fat Greek Wedding -in_language-> Greek` is the path with
    entities (Joel Zwick, My Big Fat Greek Wedding, Greek), relations (directed_by, in_language) and
    forward (False, True): the film was directed by Joel Zwick, and the film is in Greek.
    """

    entity_ids: tuple[str, ...]
    entity_names: tuple[str, ...]
    relations: tuple[str, ...] = ()
    forward: tuple[bool, ...] = ()

    @property
    def hops(self) -> int:
        return len(self.relations)

    @property
    def start_name(self) -> str:
        return self.entity_names[0]

    @property
    def end_id(self) -> str:
        return self.entity_ids[-1]

    @property
    def end_name(self) -> str:
        return self.entity_names[-1]

    def extend(self, edge: Edge) -> Path:
        return Path(
            (*self.entity_ids, edge.neighbour_id),
            (*self.entity_names, edge.neighbour_name),
            (*self.relations, edge.type),
            (*self.forward, edge.forward),
        )

    def as_list(self) -> list[str]:
        """Entity, arrowed relation, entity, ...: `["Joel Zwick", "<-directed_by-", "My Big Fat Greek Wedding"]`."""
        items = [self.entity_names[0]]
        for relation, forward, name in zip(self.relations, self.forward, self.entity_names[1:], strict=True):
            items.append(forward_arrow(relation) if forward else backward_arrow(relation))
            items.append(name)
        return items

    def verbalise(self) -> str:
        return " ".join(self.as_list())

    def triples(self) -> list[tuple[str, str, str]]:
        """The path's facts as (head, relation, tail) names, in the graph's own direction."""
        names = self.entity_names
        return [
            (names[i], rel, names[i + 1]) if fwd else (names[i + 1], rel, names[i])
            for i, (rel, fwd) in enumerate(zip(self.relations, self.forward, strict=True))
        ]


def neighbourhood(store: GraphStore, start_ids: Sequence[str], hops: int = 2, limit: int = 10_000) -> list[Path]:
    """Simple paths of 1..`hops` relations from any start entity, both edge directions, shortest first.

    Expands one hop at a time with one batched `edges` query per hop, so the cost follows the paths
    actually produced, and stops once `limit` paths exist.
    """
    if hops < 1 or limit < 1:
        return []
    frontier = [Path((e.id,), (e.name,)) for e in store.get_entities(start_ids)]
    found: list[Path] = []
    for _hop in range(hops):
        by_origin: dict[str, list[Edge]] = defaultdict(list)
        for edge in store.edges([p.end_id for p in frontier]):
            by_origin[edge.origin_id].append(edge)
        next_frontier: list[Path] = []
        for path in frontier:
            for edge in by_origin.get(path.end_id, ()):
                if edge.neighbour_id in path.entity_ids:
                    continue
                extended = path.extend(edge)
                found.append(extended)
                next_frontier.append(extended)
                if len(found) >= limit:
                    return found
        frontier = next_frontier
        if not frontier:
            break
    return found


Step = tuple[str, bool]  # (relation type, forward)
Pattern = tuple[Step, ...]


def relation_patterns(
    store: GraphStore, start_id: str, hops: int = 2, max_frontier: int = 5_000
) -> dict[Pattern, frozenset[str]]:
    """Every relation chain of 1..`hops` steps that leaves `start_id`, with the set of entities it reaches.

    Grouping paths by their relation chain keeps the work proportional to distinct (chain, entity) pairs
    rather than to paths, which multiply at each hop; a chain's reach never includes the start entity.
    Chains whose reach exceeds `max_frontier` are not expanded further.
    """
    reached: dict[Pattern, frozenset[str]] = {}
    frontier: dict[Pattern, frozenset[str]] = {(): frozenset([start_id])}
    for _hop in range(hops):
        frontier = grow_patterns(store, frontier, start_id, max_frontier)
        reached.update(frontier)
        if not frontier:
            break
    return reached


def grow_patterns(
    store: GraphStore, frontier: dict[Pattern, frozenset[str]], start_id: str, max_frontier: int = 5_000
) -> dict[Pattern, frozenset[str]]:
    """Each chain of `frontier` (with its reach) extended by every relation leaving its reach, in one edge
    query; chains reaching more than `max_frontier` entities are not extended, nor is any reach the start."""
    ids = {entity for ends in frontier.values() if len(ends) <= max_frontier for entity in ends}
    by_origin: dict[str, list[Edge]] = defaultdict(list)
    for edge in store.edges(list(ids)):
        by_origin[edge.origin_id].append(edge)
    grown: dict[Pattern, set[str]] = defaultdict(set)
    for pattern, ends in frontier.items():
        if len(ends) > max_frontier:
            continue
        for entity in ends:
            for edge in by_origin.get(entity, ()):
                if edge.neighbour_id != start_id:
                    grown[(*pattern, (edge.type, edge.forward))].add(edge.neighbour_id)
    return {pattern: frozenset(ends) for pattern, ends in grown.items()}


def pattern_paths(
    store: GraphStore, start_id: str, pattern: Pattern, limit: int = 200, ends: Collection[str] | None = None
) -> list[Path]:
    """Paths from `start_id` that follow `pattern` and never return to it, at most `limit` of them; with
    `ends`, only paths that end on one of those entities.

    Like `relation_patterns`, a path may pass an entity twice elsewhere: "who directed the movies written
    by the writer of X" is answered by the writer when the writer also directed them.
    """
    frontier = [Path((e.id,), (e.name,)) for e in store.get_entities([start_id])]
    for hop, (relation, forward) in enumerate(pattern, start=1):
        by_origin: dict[str, list[Edge]] = defaultdict(list)
        for edge in store.edges(list({p.end_id for p in frontier})):
            if edge.type == relation and edge.forward == forward:
                by_origin[edge.origin_id].append(edge)
        frontier = [
            path.extend(edge)
            for path in frontier
            for edge in by_origin.get(path.end_id, ())
            # never back to the start, nor straight back along the edge just taken (the same relation,
            # reversed, to the entity before); another relation back to it is a different fact
            if edge.neighbour_id != start_id
            and not (
                edge.neighbour_id in path.entity_ids[-2:-1]
                and path.relations[-1:] == (relation,)
                and path.forward[-1:] == (not forward,)
            )
            and (ends is None or hop < len(pattern) or edge.neighbour_id in ends)
        ][: limit * 20]
    return frontier[:limit]
