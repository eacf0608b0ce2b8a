"""What the two Cypher backends share: reads whose Cypher both dialects accept, and the lookup logic.

Each backend supplies `_rows` (positional rows) and the few queries where LadybugDB and Neo4j differ.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from graph.errors import GraphStoreError
from graph.lookup import FuzzyNameIndex
from graph.model import Chunk, Edge, Entity, StoreCounts, canonical_name, entity_id, normalised_key
from graph.store import MatchMode

ENTITY_FIELDS = "e.id, e.name, e.key, e.type, e.aliases, e.sources"


def entity_from_row(row: Sequence[Any]) -> Entity:
    """An Entity from a row of ENTITY_FIELDS."""
    return Entity(
        name=row[1], key=row[2], type=row[3] or "", aliases=list(row[4] or []), sources=list(row[5] or []), id=row[0]
    )


class CypherGraphStore:
    """Base of the LadybugDB and Neo4j stores; see `graph.store.GraphStore` for the contract."""

    backend: ClassVar[str]
    # Rows of (entity fields) for an alias equal to $name / a key or alias key equal to $k.
    ALIAS_QUERY: ClassVar[str]
    KEY_QUERY: ClassVar[str]
    # Rows of (origin id, relation type, neighbour id, neighbour name, forward) for origins in $ids.
    EDGES_QUERY: ClassVar[str]
    # Rows of (relation type, forward, count) for the entity $i.
    RELATION_TYPES_QUERY: ClassVar[str]
    RELATION_KINDS_QUERY: ClassVar[str]

    _fuzzy: FuzzyNameIndex | None = None

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    def _scalar(self, query: str, params: dict[str, Any] | None = None) -> Any:
        return self._rows(query, params)[0][0]

    def _names_changed(self) -> None:
        self._fuzzy = None

    def _require_entities(self, ids: set[str]) -> None:
        query = "UNWIND $ids AS i MATCH (e:Entity {id: i}) RETURN e.id"
        found = {row[0] for row in self._rows(query, {"ids": list(ids)})}
        if missing := ids - found:
            raise GraphStoreError(
                f"{len(missing)} relation endpoint(s) are not stored entities, e.g. {sorted(missing)[:3]}; "
                "upsert the entities first"
            )

    def _require_documents(self, ids: set[str]) -> None:
        found = {
            row[0] for row in self._rows("UNWIND $ids AS i MATCH (d:Document {id: i}) RETURN d.id", {"ids": list(ids)})
        }
        if missing := ids - found:
            raise GraphStoreError(f"chunks refer to unknown documents {sorted(missing)[:3]}")

    def _entities(self, query: str, params: dict[str, Any]) -> list[Entity]:
        return [entity_from_row(row) for row in self._rows(query, params)]

    def get_entities(self, ids: Sequence[str]) -> list[Entity]:
        query = f"UNWIND $ids AS i MATCH (e:Entity {{id: i}}) RETURN {ENTITY_FIELDS}"
        found = {e.id: e for e in self._entities(query, {"ids": list(ids)})}
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    def find_entities(self, name: str, mode: MatchMode = "exact", limit: int = 5) -> list[Entity]:
        if mode == "exact":
            hits = self.get_entities([entity_id(name)])
            exact = {e.id for e in hits}
            hits += [e for e in self._entities(self.ALIAS_QUERY, {"name": canonical_name(name)}) if e.id not in exact]
        elif mode == "normalised":
            key = normalised_key(name)
            hits = sorted(self._entities(self.KEY_QUERY, {"k": key}), key=lambda e: e.name) if key else []
        elif mode == "fuzzy":
            if self._fuzzy is None:
                self._fuzzy = FuzzyNameIndex(self.iter_entity_names())
            hits = self.get_entities([i for i, _score in self._fuzzy.search(name, limit)])
        else:
            raise ValueError(f"unknown match mode {mode!r}")
        return hits[:limit]

    def get_chunks(self, ids: Sequence[str]) -> list[Chunk]:
        rows = self._rows(
            "UNWIND $ids AS i MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk {id: i}) "
            "RETURN c.id, c.doc_id, c.ordinal, c.page, c.text, d.title",
            {"ids": list(ids)},
        )
        found = {
            r[0]: Chunk(id=r[0], doc_id=r[1], ordinal=r[2], page=r[3] or 0, text=r[4], title=r[5] or "") for r in rows
        }
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    def chunks_mentioning(self, entity_ids: Sequence[str], limit: int = 20) -> list[tuple[str, str]]:
        if not entity_ids:
            return []
        rows = self._rows(
            "UNWIND $ids AS i MATCH (c:Chunk)-[:MENTIONS]->(e:Entity {id: i}) RETURN e.id, c.id ORDER BY c.id LIMIT $n",
            {"ids": list(dict.fromkeys(entity_ids)), "n": limit},
        )
        return [(row[0], row[1]) for row in rows]

    def entities_mentioned(self, chunk_ids: Sequence[str]) -> list[tuple[str, str]]:
        if not chunk_ids:
            return []
        rows = self._rows(
            "UNWIND $ids AS i MATCH (c:Chunk {id: i})-[:MENTIONS]->(e:Entity) RETURN c.id, e.id",
            {"ids": list(dict.fromkeys(chunk_ids))},
        )
        return [(row[0], row[1]) for row in rows]

    def iter_entity_names(self) -> Iterator[tuple[str, str]]:
        for entity, name, aliases in self._rows("MATCH (e:Entity) RETURN e.id, e.name, e.aliases"):
            yield entity, name
            for alias in aliases or []:
                yield entity, alias

    def edges(self, entity_ids: Sequence[str]) -> list[Edge]:
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return []
        return [Edge(*row) for row in self._rows(self.edges_query(len(ids)), {"ids": ids})]

    def edges_query(self, count: int) -> str:
        """The query for the edges of `count` entities (a backend may plan few ids differently)."""
        return self.EDGES_QUERY

    def relation_types(self, entity_id: str) -> list[tuple[str, bool, int]]:
        rows = [(t, f, n) for t, f, n in self._rows(self.RELATION_TYPES_QUERY, {"i": entity_id})]
        return sorted(rows, key=lambda row: (-row[2], row[0], not row[1]))

    def relation_kinds(self, entity_ids: Sequence[str]) -> list[tuple[str, str, bool]]:
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return []
        return [(i, t, bool(f)) for i, t, f in self._rows(self.RELATION_KINDS_QUERY, {"ids": ids})]

    def relation_counts(self) -> list[tuple[str, int]]:
        rows = self._rows("MATCH ()-[r:RELATION]->() RETURN r.type, count(*)")
        return sorted(((t, int(n)) for t, n in rows), key=lambda row: (-row[1], row[0]))

    def relation_sample(self, relation: str, limit: int = 200) -> list[tuple[str, str, str, str]]:
        rows = self._rows(
            "MATCH (a:Entity)-[r:RELATION]->(b:Entity) WHERE r.type = $t "
            "RETURN a.name, a.type, b.name, b.type LIMIT $n",
            {"t": relation, "n": limit},
        )
        return [(h, ht or "", t, tt or "") for h, ht, t, tt in rows]

    def counts(self) -> StoreCounts:
        return StoreCounts(
            entities=self._scalar("MATCH (e:Entity) RETURN count(*)"),
            relations=self._scalar("MATCH ()-[r:RELATION]->() RETURN count(*)"),
            documents=self._scalar("MATCH (d:Document) RETURN count(*)"),
            chunks=self._scalar("MATCH (c:Chunk) RETURN count(*)"),
        )

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> CypherGraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
