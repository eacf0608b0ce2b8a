"""Embedded graph store: LadybugDB (the maintained Kùzu fork) in a single file, no server to run.

LadybugDB has no secondary indexes and one writer process per file, which shapes this module:
entity ids are derived from names (`graph.model.entity_id`) so exact lookups hit the primary key; new
rows are bulk-copied from DataFrames (tens of times faster than `MERGE` at MetaQA scale) after the
existing ones have been read back and merged in Python; and a second writer gets `StoreLockedError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ladybug
import pandas as pd

from graph.cypher_store import ENTITY_FIELDS, CypherGraphStore
from graph.errors import DiskFullError, GraphStoreError, StoreLockedError
from graph.merge import dedupe_entities, dedupe_relations, merged_fields, union
from graph.model import (
    Chunk,
    DeleteReport,
    Document,
    Entity,
    Relation,
    alias_keys,
)

SCHEMA = (
    "CREATE NODE TABLE IF NOT EXISTS Entity(id STRING PRIMARY KEY, name STRING, key STRING, type STRING, "
    "aliases STRING[], alias_keys STRING[], sources STRING[])",
    "CREATE NODE TABLE IF NOT EXISTS Document(id STRING PRIMARY KEY, title STRING, source_path STRING, "
    "content_hash STRING, metadata_json STRING)",
    "CREATE NODE TABLE IF NOT EXISTS Chunk(id STRING PRIMARY KEY, doc_id STRING, ordinal INT64, page INT64, "
    "text STRING)",
    "CREATE REL TABLE IF NOT EXISTS RELATION(FROM Entity TO Entity, type STRING, sources STRING[], evidence STRING[])",
    "CREATE REL TABLE IF NOT EXISTS HAS_CHUNK(FROM Document TO Chunk)",
    "CREATE REL TABLE IF NOT EXISTS MENTIONS(FROM Chunk TO Entity)",
)

EDGES_QUERY = """
UNWIND $ids AS i MATCH (a:Entity {id: i})-[r:RELATION]->(b:Entity)
RETURN a.id, r.type, b.id, b.name, true AS forward
UNION ALL
UNWIND $ids AS i MATCH (a:Entity {id: i})<-[r:RELATION]-(b:Entity)
RETURN a.id, r.type, b.id, b.name, false AS forward
"""
# The same edges for a few ids. LadybugDB plans `UNWIND $ids ... {id: i}` as a hash join over every
# relation (~50 ms on MetaQA, whatever the number of ids), while `a.id IN $ids` tests each node against the
# list: 7-13 ms for 1-29 ids, but ~1 s for 5,000. Measured equal near 117 ids.
EDGES_FEW_QUERY = """
MATCH (a:Entity)-[r:RELATION]->(b:Entity) WHERE a.id IN $ids RETURN a.id, r.type, b.id, b.name, true AS forward
UNION ALL
MATCH (a:Entity)<-[r:RELATION]-(b:Entity) WHERE a.id IN $ids RETURN a.id, r.type, b.id, b.name, false AS forward
"""
_FEW_IDS = 100

# Below this many rows a parameterised CREATE beats COPY's fixed cost.
_COPY_THRESHOLD = 64
_LOCK_PID = re.compile(r"Lock is held by PID (\d+)")
_RECOVERY_PENDING = "checkpoint recovery is pending"
_NO_SPACE = "No space left on device"


class EmbeddedGraphStore(CypherGraphStore):
    """`GraphStore` over a LadybugDB file. Not thread-safe: share one per thread, or serialise calls."""

    backend = "embedded"
    ALIAS_QUERY = f"MATCH (e:Entity) WHERE list_contains(e.aliases, $name) RETURN {ENTITY_FIELDS}"
    KEY_QUERY = f"MATCH (e:Entity) WHERE e.key = $k OR list_contains(e.alias_keys, $k) RETURN {ENTITY_FIELDS}"
    EDGES_QUERY = EDGES_QUERY
    RELATION_TYPES_QUERY = (
        "MATCH (e:Entity {id: $i})-[r:RELATION]->() RETURN r.type, true, count(*) "
        "UNION ALL MATCH (e:Entity {id: $i})<-[r:RELATION]-() RETURN r.type, false, count(*)"
    )

    # The kinds are asked for a handful of ids at a time, which plan fastest as a filter (as EDGES_FEW_QUERY).
    RELATION_KINDS_QUERY = (
        "MATCH (a:Entity)-[r:RELATION]->(:Entity) WHERE a.id IN $ids RETURN DISTINCT a.id, r.type, true "
        "UNION ALL MATCH (a:Entity)<-[r:RELATION]-(:Entity) WHERE a.id IN $ids RETURN DISTINCT a.id, r.type, false"
    )

    def __init__(self, path: Path | str, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise GraphStoreError(f"no graph store at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open_database(read_only)
        except RuntimeError as error:
            if not (read_only and _RECOVERY_PENDING in str(error)):
                raise self._open_error(error) from None
            # A writer was killed mid-checkpoint. Opening read-write replays its log (committed work kept,
            # the rest dropped); if a live writer holds the file, that fails with the usual lock error.
            try:
                self._db = self._recovered_for_reading()
            except RuntimeError as retry_error:
                raise self._open_error(retry_error) from None
        self._conn = ladybug.Connection(self._db)
        self._tx_depth = 0
        if not read_only:
            for statement in SCHEMA:
                self._run(statement)

    def _open_database(self, read_only: bool, checkpoint: bool = True) -> ladybug.Database:
        return ladybug.Database(str(self.path), read_only=read_only, auto_checkpoint=checkpoint)

    def _recovered_for_reading(self) -> ladybug.Database:
        """A readable database where the log holds work not yet checkpointed into the file."""
        writable = self._open_database(read_only=False)
        try:
            writable.close()  # replays the log into the file, when the disk has room for it
            return self._open_database(read_only=True)
        except RuntimeError as error:
            if _RECOVERY_PENDING not in str(error):
                raise
        # No room to finish the checkpoint (a full disk): read through a writable handle that replays the log
        # in memory and never checkpoints. It holds the writer slot while open, which no writer holds now.
        return self._open_database(read_only=False, checkpoint=False)

    def _open_error(self, error: RuntimeError) -> GraphStoreError:
        held = _LOCK_PID.search(str(error))
        if held:
            return StoreLockedError(
                f"{self.path} is open for writing by another process (PID {held.group(1)}); "
                "the embedded store allows one writer at a time. Stop that process or wait for it."
            )
        if _NO_SPACE in str(error):
            return self._full_error()
        return GraphStoreError(f"cannot open graph store {self.path}: {error}")

    def _full_error(self) -> GraphStoreError:
        # LadybugDB's own message is a multi-line IO report; what the user can act on is which disk is full.
        return DiskFullError(
            f"no space left on the device holding the data directory {self.path.parent}: free some space and "
            "run the command again: it resumes as after a crash, and what earlier runs stored is kept"
        )

    def edges_query(self, count: int) -> str:
        return EDGES_FEW_QUERY if count <= _FEW_IDS else EDGES_QUERY

    # -- plumbing ---------------------------------------------------------------------------------

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        return self._execute(query, params).get_all()

    def _run(self, query: str, params: dict[str, Any] | None = None) -> None:
        self._execute(query, params)

    def _execute(self, query: str, params: dict[str, Any] | None) -> Any:
        try:
            return self._conn.execute(query, params or {})
        except RuntimeError as error:
            if _NO_SPACE in str(error):
                raise self._full_error() from None
            raise

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._tx_depth:
            self._tx_depth += 1
            try:
                yield
            finally:
                self._tx_depth -= 1
            return
        self._run("BEGIN TRANSACTION")
        self._tx_depth = 1
        try:
            yield
        except BaseException:
            self._tx_depth = 0
            self._run("ROLLBACK")
            self._names_changed()
            raise
        self._tx_depth = 0
        self._run("COMMIT")

    # -- writes -----------------------------------------------------------------------------------

    def upsert_entities(self, entities: Sequence[Entity]) -> int:
        incoming = dedupe_entities(entities)
        if not incoming:
            return 0
        with self.transaction():
            stored = {
                row[0]: row[1:]
                for row in self._rows(
                    "UNWIND $ids AS i MATCH (e:Entity {id: i}) RETURN e.id, e.type, e.aliases, e.sources",
                    {"ids": list(incoming)},
                )
            }
            new: list[Entity] = []
            changed: list[dict[str, Any]] = []
            for entity in incoming.values():
                if entity.id not in stored:
                    new.append(entity)
                elif (merged := merged_fields(*stored[entity.id], entity)) is not None:
                    type_, aliases, sources = merged
                    changed.append(
                        {
                            "id": entity.id,
                            "type": type_,
                            "aliases": aliases,
                            "sources": sources,
                            "alias_keys": alias_keys(entity.key, aliases),
                        }
                    )
            if changed:
                self._run(
                    "UNWIND $rows AS row MATCH (e:Entity {id: row.id}) SET e.type = row.type, "
                    "e.aliases = row.aliases, e.alias_keys = row.alias_keys, e.sources = row.sources",
                    {"rows": changed},
                )
            if new:
                self._insert("Entity", _entity_columns(new), ENTITY_CREATE)
            self._names_changed()
        return len(new)

    def upsert_relations(self, relations: Sequence[Relation]) -> int:
        incoming = dedupe_relations(relations)
        if not incoming:
            return 0
        endpoint_ids = {i for r in incoming.values() for i in (r.head_id, r.tail_id)}
        with self.transaction():
            self._require_entities(endpoint_ids)
            heads = list({r.head_id for r in incoming.values()})
            stored: dict[tuple[str, str, str], tuple[list[str], list[str]]] = {
                (row[0], row[1], row[2]): (list(row[3]), list(row[4] or []))
                for row in self._rows(
                    "UNWIND $ids AS i MATCH (h:Entity {id: i})-[r:RELATION]->(t:Entity) "
                    "RETURN h.id, r.type, t.id, r.sources, r.evidence",
                    {"ids": heads},
                )
            }
            changed, new = [], []
            for identity, relation in incoming.items():
                if identity in stored:
                    old_sources, old_evidence = stored[identity]
                    sources = union(old_sources, relation.sources)
                    evidence = union(old_evidence, relation.evidence)
                    if (sources, evidence) != stored[identity]:
                        changed.append(
                            {
                                "h": identity[0],
                                "type": identity[1],
                                "t": identity[2],
                                "sources": sources,
                                "evidence": evidence,
                            }
                        )
                else:
                    new.append(relation)
            if changed:
                self._run(
                    "UNWIND $rows AS row MATCH (h:Entity {id: row.h})-[r:RELATION]->(t:Entity {id: row.t}) "
                    "WHERE r.type = row.type SET r.sources = row.sources, r.evidence = row.evidence",
                    {"rows": changed},
                )
            if new:
                self._insert(
                    "RELATION",
                    {
                        "from": [r.head_id for r in new],
                        "to": [r.tail_id for r in new],
                        "type": [r.type for r in new],
                        "sources": [r.sources for r in new],
                        "evidence": [r.evidence for r in new],
                    },
                    "UNWIND $rows AS row MATCH (h:Entity {id: row.from}) MATCH (t:Entity {id: row.to}) "
                    "CREATE (h)-[:RELATION {type: row.type, sources: row.sources, evidence: row.evidence}]->(t)",
                )
        return len(new)

    def _insert(self, table: str, columns: dict[str, list[Any]], create_query: str) -> None:
        """Insert rows known to be new: bulk COPY for many, a parameterised CREATE for a few.

        Never COPY a row whose key exists: LadybugDB 0.22 can crash the process on that.
        """
        count = len(next(iter(columns.values())))
        if count < _COPY_THRESHOLD:
            names = list(columns)
            rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
            self._run(create_query, {"rows": rows})
        else:
            self._run(f"COPY {table} FROM $frame", {"frame": pd.DataFrame(columns)})

    def upsert_documents(self, documents: Sequence[Document]) -> int:
        if not documents:
            return 0
        rows = [asdict(d) for d in documents]
        with self.transaction():
            before = self._scalar("MATCH (d:Document) RETURN count(*)")
            self._run(
                "UNWIND $rows AS row MERGE (d:Document {id: row.id}) SET d.title = row.title, "
                "d.source_path = row.source_path, d.content_hash = row.content_hash, "
                "d.metadata_json = row.metadata_json",
                {"rows": rows},
            )
            return self._scalar("MATCH (d:Document) RETURN count(*)") - before

    def upsert_chunks(self, chunks: Sequence[Chunk]) -> int:
        if not chunks:
            return 0
        rows = [{"id": c.id, "doc_id": c.doc_id, "ordinal": c.ordinal, "page": c.page, "text": c.text} for c in chunks]
        mentions = [{"c": c.id, "e": e} for c in chunks for e in dict.fromkeys(c.mentions)]
        with self.transaction():
            self._require_documents({c.doc_id for c in chunks})
            before = self._scalar("MATCH (c:Chunk) RETURN count(*)")
            self._run(
                "UNWIND $rows AS row MERGE (c:Chunk {id: row.id}) "
                "SET c.doc_id = row.doc_id, c.ordinal = row.ordinal, c.page = row.page, c.text = row.text",
                {"rows": rows},
            )
            self._run(
                "UNWIND $rows AS row MATCH (d:Document {id: row.doc_id}) MATCH (c:Chunk {id: row.id}) "
                "MERGE (d)-[:HAS_CHUNK]->(c)",
                {"rows": rows},
            )
            self._run(
                "UNWIND $ids AS i MATCH (c:Chunk {id: i})-[m:MENTIONS]->(:Entity) DELETE m",
                {"ids": [c.id for c in chunks]},
            )
            if mentions:
                self._run(
                    "UNWIND $rows AS row MATCH (c:Chunk {id: row.c}) MATCH (e:Entity {id: row.e}) "
                    "CREATE (c)-[:MENTIONS]->(e)",
                    {"rows": mentions},
                )
            return self._scalar("MATCH (c:Chunk) RETURN count(*)") - before

    def delete_source(self, source: str) -> DeleteReport:
        params = {"s": source}
        with self.transaction():
            chunks = self._scalar("MATCH (c:Chunk) WHERE c.doc_id = $s RETURN count(*)", params)
            self._run("MATCH (c:Chunk) WHERE c.doc_id = $s DETACH DELETE c", params)
            documents = self._scalar("MATCH (d:Document {id: $s}) RETURN count(*)", params)
            self._run("MATCH (d:Document {id: $s}) DETACH DELETE d", params)
            # LadybugDB 0.22 cannot read a parameter inside a lambda; binding it with WITH first works.
            self._run(
                "WITH $s AS s MATCH ()-[r:RELATION]->() WHERE list_contains(r.sources, s) "
                "SET r.sources = list_filter(r.sources, x -> x <> s)",
                params,
            )
            self._run(
                "WITH $p AS p MATCH ()-[r:RELATION]->() WHERE size(r.evidence) > 0 "
                "SET r.evidence = list_filter(r.evidence, x -> NOT starts_with(x, p))",
                {"p": source + "\t"},
            )
            relations = self._scalar("MATCH ()-[r:RELATION]->() WHERE size(r.sources) = 0 RETURN count(*)")
            self._run("MATCH ()-[r:RELATION]->() WHERE size(r.sources) = 0 DELETE r")
            self._run(
                "WITH $s AS s MATCH (e:Entity) WHERE list_contains(e.sources, s) "
                "SET e.sources = list_filter(e.sources, x -> x <> s)",
                params,
            )
            # An entity still touched by a relation keeps it, whatever its own provenance says:
            # deleting it would take other sources' facts with it.
            orphans = (
                "MATCH (e:Entity) WHERE size(e.sources) = 0 AND NOT EXISTS { MATCH (e)-[:RELATION]-() } "
                "AND NOT EXISTS { MATCH (:Chunk)-[:MENTIONS]->(e) }"
            )
            entities = self._scalar(f"{orphans} RETURN count(*)")
            self._run(f"{orphans} DETACH DELETE e")
            self._names_changed()
        return DeleteReport(source, relations, entities, documents, chunks)

    def close(self) -> None:
        self._conn.close()
        self._db.close()


ENTITY_CREATE = (
    "UNWIND $rows AS row CREATE (e:Entity {id: row.id, name: row.name, key: row.key, type: row.type, "
    "aliases: row.aliases, alias_keys: row.alias_keys, sources: row.sources})"
)


def _entity_columns(entities: Sequence[Entity]) -> dict[str, list[Any]]:
    """Column lists in the Entity table's declared order, as COPY wants them."""
    return {
        "id": [e.id for e in entities],
        "name": [e.name for e in entities],
        "key": [e.key for e in entities],
        "type": [e.type for e in entities],
        "aliases": [e.aliases for e in entities],
        "alias_keys": [e.alias_keys for e in entities],
        "sources": [e.sources for e in entities],
    }
