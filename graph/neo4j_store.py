"""Neo4j 5 backend over the official driver: parameterised Cypher only, batched `UNWIND` writes.

Relations are `:RELATION` relationships with a `type` property rather than one relationship type per
relation: relationship types cannot be parameters in Neo4j 5 Cypher, and building them into the query
text is exactly the injection this project refuses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import neo4j

from graph.cypher_store import ENTITY_FIELDS, CypherGraphStore
from graph.errors import GraphStoreError
from graph.merge import dedupe_entities, dedupe_relations
from graph.model import (
    Chunk,
    DeleteReport,
    Document,
    Entity,
    Relation,
)

BATCH = 5_000

SCHEMA = (
    "CREATE CONSTRAINT trellis_entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE",
    "CREATE CONSTRAINT trellis_document_id IF NOT EXISTS FOR (d:Document) REQUIRE d.id IS UNIQUE",
    "CREATE CONSTRAINT trellis_chunk_id IF NOT EXISTS FOR (c:Chunk) REQUIRE c.id IS UNIQUE",
    "CREATE INDEX trellis_entity_key IF NOT EXISTS FOR (e:Entity) ON (e.key)",
    "CREATE INDEX trellis_entity_name IF NOT EXISTS FOR (e:Entity) ON (e.name)",
    "CREATE INDEX trellis_chunk_doc IF NOT EXISTS FOR (c:Chunk) ON (c.doc_id)",
    "CREATE INDEX trellis_relation_type IF NOT EXISTS FOR ()-[r:RELATION]-() ON (r.type)",
)

UPSERT_ENTITIES = """
UNWIND $rows AS row
MERGE (e:Entity {id: row.id})
ON CREATE SET e.name = row.name, e.key = row.key, e.type = row.type, e.aliases = row.aliases,
              e.alias_keys = row.alias_keys, e.sources = row.sources, e._new = true
ON MATCH SET e.type = CASE WHEN coalesce(e.type, '') = '' THEN row.type ELSE e.type END,
             e.aliases = e.aliases + [a IN row.aliases WHERE NOT a IN e.aliases AND a <> e.name],
             e.alias_keys = e.alias_keys + [k IN row.alias_keys WHERE NOT k IN e.alias_keys AND k <> e.key],
             e.sources = e.sources + [s IN row.sources WHERE NOT s IN e.sources]
WITH e WHERE e._new
REMOVE e._new
RETURN count(e) AS created
"""

UPSERT_RELATIONS = """
UNWIND $rows AS row
MATCH (h:Entity {id: row.head})
MATCH (t:Entity {id: row.tail})
MERGE (h)-[r:RELATION {type: row.type}]->(t)
ON CREATE SET r.sources = row.sources, r.evidence = row.evidence, r._new = true
ON MATCH SET r.sources = r.sources + [s IN row.sources WHERE NOT s IN r.sources],
             r.evidence = coalesce(r.evidence, []) + [x IN row.evidence WHERE NOT x IN coalesce(r.evidence, [])]
WITH r WHERE r._new
REMOVE r._new
RETURN count(r) AS created
"""


def _batches(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


class Neo4jGraphStore(CypherGraphStore):
    """`GraphStore` over a Neo4j 5 server reached by Bolt."""

    backend = "neo4j"
    ALIAS_QUERY = f"MATCH (e:Entity) WHERE $name IN e.aliases RETURN {ENTITY_FIELDS}"
    # Two branches so that the key branch uses the index on :Entity(key).
    KEY_QUERY = (
        f"MATCH (e:Entity {{key: $k}}) RETURN {ENTITY_FIELDS} "
        f"UNION MATCH (e:Entity) WHERE $k IN e.alias_keys RETURN {ENTITY_FIELDS}"
    )
    EDGES_QUERY = (
        "UNWIND $ids AS i MATCH (a:Entity {id: i})-[r:RELATION]-(b:Entity) "
        "RETURN a.id, r.type, b.id, b.name, startNode(r) = a"
    )
    RELATION_TYPES_QUERY = "MATCH (e:Entity {id: $i})-[r:RELATION]-() RETURN r.type, startNode(r) = e, count(*)"

    def __init__(self, uri: str, user: str, password: str, database: str = "neo4j", read_only: bool = False) -> None:
        self.uri = uri
        self.database = database
        try:
            self._driver = neo4j.GraphDatabase.driver(uri, auth=(user, password))
            self._driver.verify_connectivity()
        except (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.AuthError, ValueError) as error:
            raise GraphStoreError(f"cannot reach Neo4j at {uri}: {error}") from error
        self._session = self._driver.session(database=database)
        self._tx: neo4j.Transaction | None = None
        if not read_only:
            for statement in SCHEMA:
                self._session.run(statement).consume()

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[neo4j.Record]:
        runner = self._tx if self._tx is not None else self._session
        return list(runner.run(query, params or {}))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._tx is not None:
            yield
            return
        self._tx = self._session.begin_transaction()
        try:
            yield
        except BaseException:
            self._tx.rollback()
            self._names_changed()
            raise
        else:
            self._tx.commit()
        finally:
            self._tx = None

    def upsert_entities(self, entities: Sequence[Entity]) -> int:
        rows = [
            {
                "id": e.id,
                "name": e.name,
                "key": e.key,
                "type": e.type,
                "aliases": e.aliases,
                "alias_keys": e.alias_keys,
                "sources": e.sources,
            }
            for e in dedupe_entities(entities).values()
        ]
        created = 0
        with self.transaction():
            for batch in _batches(rows):
                created += self._scalar(UPSERT_ENTITIES, {"rows": batch})
        self._names_changed()
        return created

    def upsert_relations(self, relations: Sequence[Relation]) -> int:
        incoming = dedupe_relations(relations).values()
        rows = [
            {"head": r.head_id, "type": r.type, "tail": r.tail_id, "sources": r.sources, "evidence": r.evidence}
            for r in incoming
        ]
        endpoint_ids = {i for r in incoming for i in (r.head_id, r.tail_id)}
        created = 0
        with self.transaction():
            self._require_entities(endpoint_ids)
            for batch in _batches(rows):
                created += self._scalar(UPSERT_RELATIONS, {"rows": batch})
        return created

    def upsert_documents(self, documents: Sequence[Document]) -> int:
        rows = [asdict(d) for d in documents]
        with self.transaction():
            return self._scalar(
                "UNWIND $rows AS row MERGE (d:Document {id: row.id}) "
                "ON CREATE SET d._new = true "
                "SET d.title = row.title, d.source_path = row.source_path, "
                "d.content_hash = row.content_hash, d.metadata_json = row.metadata_json "
                "WITH d WHERE d._new REMOVE d._new RETURN count(d)",
                {"rows": rows},
            )

    def upsert_chunks(self, chunks: Sequence[Chunk]) -> int:
        rows = [{"id": c.id, "doc_id": c.doc_id, "ordinal": c.ordinal, "page": c.page, "text": c.text} for c in chunks]
        with self.transaction():
            self._require_documents({c.doc_id for c in chunks})
            created = self._scalar(
                "UNWIND $rows AS row "
                "MATCH (d:Document {id: row.doc_id}) "
                "MERGE (c:Chunk {id: row.id}) ON CREATE SET c._new = true "
                "SET c.doc_id = row.doc_id, c.ordinal = row.ordinal, c.page = row.page, c.text = row.text "
                "MERGE (d)-[:HAS_CHUNK]->(c) "
                "WITH c WHERE c._new REMOVE c._new RETURN count(c)",
                {"rows": rows},
            )
            self._rows(
                "UNWIND $ids AS i MATCH (:Chunk {id: i})-[m:MENTIONS]->(:Entity) DELETE m",
                {"ids": [c.id for c in chunks]},
            )
            self._rows(
                "UNWIND $rows AS row MATCH (c:Chunk {id: row.c}) MATCH (e:Entity {id: row.e}) "
                "MERGE (c)-[:MENTIONS]->(e)",
                {"rows": [{"c": c.id, "e": e} for c in chunks for e in dict.fromkeys(c.mentions)]},
            )
            return created

    def delete_source(self, source: str) -> DeleteReport:
        params = {"s": source}
        with self.transaction():
            chunks = self._scalar(
                "MATCH (c:Chunk {doc_id: $s}) WITH collect(c) AS cs, count(c) AS n "
                "FOREACH (c IN cs | DETACH DELETE c) RETURN n",
                params,
            )
            documents = self._scalar(
                "OPTIONAL MATCH (d:Document {id: $s}) WITH collect(d) AS ds "
                "FOREACH (d IN ds | DETACH DELETE d) RETURN size(ds)",
                params,
            )
            self._rows(
                "MATCH ()-[r:RELATION]->() WHERE $s IN r.sources SET r.sources = [x IN r.sources WHERE x <> $s]", params
            )
            self._rows(
                "MATCH ()-[r:RELATION]->() WHERE any(x IN r.evidence WHERE x STARTS WITH $p) "
                "SET r.evidence = [x IN r.evidence WHERE NOT x STARTS WITH $p]",
                {"p": source + "\t"},
            )
            relations = self._scalar(
                "OPTIONAL MATCH ()-[r:RELATION]->() WHERE size(r.sources) = 0 "
                "WITH collect(r) AS rs FOREACH (r IN rs | DELETE r) RETURN size(rs)"
            )
            self._rows("MATCH (e:Entity) WHERE $s IN e.sources SET e.sources = [x IN e.sources WHERE x <> $s]", params)
            entities = self._scalar(
                "OPTIONAL MATCH (e:Entity) WHERE size(e.sources) = 0 "
                "AND NOT EXISTS { (e)-[:RELATION]-() } AND NOT EXISTS { (:Chunk)-[:MENTIONS]->(e) } "
                "WITH collect(e) AS es FOREACH (e IN es | DETACH DELETE e) RETURN size(es)"
            )
        self._names_changed()
        return DeleteReport(source, relations, entities, documents, chunks)

    def close(self) -> None:
        self._session.close()
        self._driver.close()
