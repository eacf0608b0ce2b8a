"""Neo4j 5 backend over the official driver: parameterised Cypher only, batched `UNWIND` writes.

Each relation is a relationship typed after its name, as Neo4j users expect: `directed_by` is
`[:DIRECTED_BY]` (`relationship_type` is the mapping). The name itself is kept verbatim in `r.relation`,
with its provenance in `r.sources` and `r.evidence`, and every read goes by `r.relation`, so names that
share a type (`directed_by`, `directedBy`) stay distinct relations. The type reaches the server only as a
parameter, through the dynamic types of Neo4j 5.26 (`[r:$(row.rel_type)]`): no statement text is ever
built from data. Chunk embeddings can also live in Neo4j (`write_chunk_embeddings`: `c.embedding` under a
vector index), so neo4j-graphrag's retrievers can read a Trellis graph.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import neo4j
import numpy as np

from graph.cypher_store import ENTITY_FIELDS, CypherGraphStore
from graph.errors import GraphStoreError
from graph.merge import dedupe_entities, dedupe_relations
from graph.model import (
    Chunk,
    DeleteReport,
    Document,
    Entity,
    Relation,
    StoreCounts,
)

BATCH = 5_000
# Rows of 384+ floats each: a smaller batch keeps one statement's parameters to a few MB.
EMBEDDING_BATCH = 500
MIGRATION_BATCH = 10_000
# The first Neo4j with dynamic relationship types in MERGE and MATCH.
MIN_SERVER_VERSION = (5, 26)

log = logging.getLogger(__name__)

# --- Relation name -> relationship type -------------------------------------------------------------

# The type of a relation name with no letter or digit in it (empty, or punctuation only).
FALLBACK_TYPE = "RELATION"
# What `relationship_type` can return: words of Unicode letters and digits joined by single underscores.
# Nothing else (no backtick, quote, brace, space, `$`) can reach the server as a type.
_TYPE_SHAPE = re.compile(r"[^\W_]+(?:_[^\W_]+)*")


def relationship_type(relation: str) -> str:
    """The Neo4j relationship type of a relation name: its words in upper snake case.

    Words are runs of Unicode letters and digits (read after NFC normalisation); a lower-case letter
    followed by an upper-case one starts a new word. Every other character separates words and is dropped:
    `directed_by` and `directedBy` -> `DIRECTED_BY`, `people.person.spouse` -> `PEOPLE_PERSON_SPOUSE`,
    `http://schema.org/birthPlace` -> `HTTP_SCHEMA_ORG_BIRTH_PLACE`, `~parents` -> `PARENTS`, `監督` ->
    `監督`. A name with no letter or digit maps to `RELATION`. The mapping is deterministic but not
    one-to-one; `r.relation` keeps the name itself.
    """
    words: list[str] = []
    word: list[str] = []
    previous = ""
    for char in unicodedata.normalize("NFC", relation):
        if not char.isalnum():
            if word:
                words.append("".join(word))
                word = []
        else:
            if word and previous.islower() and char.isupper():
                words.append("".join(word))
                word = []
            word.append(char)
        previous = char
    if word:
        words.append("".join(word))
    # Upper-casing may add characters that are not letters (`ǰ` -> `J` + a combining caron): drop them.
    upper = ("".join(c for c in w.upper() if c.isalnum()) for w in words)
    return validated_type("_".join(w for w in upper if w) or FALLBACK_TYPE)


def validated_type(rel_type: str) -> str:
    """`rel_type` if it has the shape `relationship_type` gives, else ValueError: a last check before a
    type is sent to the server, so that no other text can pass for one."""
    if not isinstance(rel_type, str) or not _TYPE_SHAPE.fullmatch(rel_type):
        raise ValueError(f"not a Trellis relationship type: {rel_type!r}")
    return rel_type


# --- Statements ---------------------------------------------------------------------------------------

SCHEMA = (
    "CREATE CONSTRAINT trellis_entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE",
    "CREATE CONSTRAINT trellis_document_id IF NOT EXISTS FOR (d:Document) REQUIRE d.id IS UNIQUE",
    "CREATE CONSTRAINT trellis_chunk_id IF NOT EXISTS FOR (c:Chunk) REQUIRE c.id IS UNIQUE",
    "CREATE INDEX trellis_entity_key IF NOT EXISTS FOR (e:Entity) ON (e.key)",
    "CREATE INDEX trellis_entity_name IF NOT EXISTS FOR (e:Entity) ON (e.name)",
    "CREATE INDEX trellis_chunk_doc IF NOT EXISTS FOR (c:Chunk) ON (c.doc_id)",
)

SERVER_VERSION = "CALL dbms.components() YIELD name, versions WHERE name = 'Neo4j Kernel' RETURN versions[0]"

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

# One relationship per (head, relation name, tail); its type is `relationship_type(name)`, a parameter.
UPSERT_RELATIONS = """
UNWIND $rows AS row
MATCH (h:Entity {id: row.head})
MATCH (t:Entity {id: row.tail})
MERGE (h)-[r:$(row.rel_type) {relation: row.relation}]->(t)
ON CREATE SET r.sources = row.sources, r.evidence = row.evidence, r._new = true
ON MATCH SET r.sources = r.sources + [s IN row.sources WHERE NOT s IN r.sources],
             r.evidence = coalesce(r.evidence, []) + [x IN row.evidence WHERE NOT x IN coalesce(r.evidence, [])]
WITH r WHERE r._new
REMOVE r._new
RETURN count(r) AS created
"""

# A Trellis relation is a relationship between entities that carries `relation`; MENTIONS and HAS_CHUNK
# never join two entities, and other tools' relationships in the same database carry no `relation`.
RELATION_COUNTS = "MATCH (:Entity)-[r]->(:Entity) WHERE r.relation IS NOT NULL RETURN r.relation, count(*)"
RELATION_TOTAL = "MATCH (:Entity)-[r]->(:Entity) WHERE r.relation IS NOT NULL RETURN count(*)"
RELATION_SAMPLE = (
    "MATCH (a:Entity)-[r:$($rel_type)]->(b:Entity) WHERE r.relation = $t RETURN a.name, a.type, b.name, b.type LIMIT $n"
)

# --- Chunk embeddings and the vector index neo4j-graphrag reads -----------------------------------------

VECTOR_INDEX = "trellis_chunk_embedding"
VECTOR_PROPERTY = "embedding"
CREATE_VECTOR_INDEX = (
    f"CREATE VECTOR INDEX {VECTOR_INDEX} IF NOT EXISTS FOR (c:Chunk) ON c.{VECTOR_PROPERTY} "
    "OPTIONS {indexConfig: {`vector.dimensions`: toInteger($dim), `vector.similarity_function`: 'cosine'}}"
)
SHOW_VECTOR_INDEX = (
    "SHOW INDEXES YIELD name, type, labelsOrTypes, properties, options WHERE name = $name "
    "RETURN type, labelsOrTypes, properties, options"
)
WRITE_EMBEDDINGS = (
    f"UNWIND $rows AS row MATCH (c:Chunk {{id: row.id}}) SET c.{VECTOR_PROPERTY} = row.embedding RETURN count(c)"
)

# A `retrieval_query` for neo4j-graphrag's VectorCypherRetriever over a Trellis graph: it follows the
# vector search's `node` (a Chunk) and `score` to the chunk's document and the facts about what it mentions.
GRAPHRAG_RETRIEVAL_QUERY = """
WITH node, score
MATCH (d:Document)-[:HAS_CHUNK]->(node)
OPTIONAL MATCH (node)-[:MENTIONS]->(e:Entity)-[r]-(n:Entity) WHERE r.relation IS NOT NULL
WITH node, score, d, collect(DISTINCT CASE WHEN startNode(r) = e THEN e.name + ' ' + r.relation + ' ' + n.name
                                           ELSE n.name + ' ' + r.relation + ' ' + e.name END) AS facts
RETURN node.text AS text, d.title AS title, node.doc_id AS doc_id, score, facts[..20] AS facts
""".strip()

# --- The layout before typed relationships: `(:Entity)-[:RELATION {type}]->(:Entity)` -----------------

LEGACY_RELATION_NAMES = (
    "MATCH (:Entity)-[r:RELATION]->(:Entity) WHERE r.relation IS NULL AND r.type IS NOT NULL RETURN DISTINCT r.type"
)
# Moves up to $batch old relationships named $relation onto their typed form, merging provenance into a
# typed one that already exists (written after an upgrade); run until it returns 0.
MIGRATE_LEGACY_RELATIONS = """
MATCH (h:Entity)-[old:RELATION]->(t:Entity) WHERE old.relation IS NULL AND old.type = $relation
WITH h, t, old LIMIT $batch
MERGE (h)-[r:$($rel_type) {relation: $relation}]->(t)
ON CREATE SET r.sources = [], r.evidence = []
SET r.sources = r.sources + [s IN coalesce(old.sources, []) WHERE NOT s IN r.sources],
    r.evidence = coalesce(r.evidence, []) + [x IN coalesce(old.evidence, []) WHERE NOT x IN coalesce(r.evidence, [])]
DELETE old
RETURN count(*)
"""
DROP_LEGACY_INDEX = "DROP INDEX trellis_relation_type IF EXISTS"


def _batches(rows: list[dict[str, Any]], size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _server_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of a Neo4j version string: `5.26.2`, `2025.01.0`, `5.27-aura`; None if unreadable."""
    found = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(found[1]), int(found[2])) if found else None


class Neo4jGraphStore(CypherGraphStore):
    """`GraphStore` over a Neo4j 5.26+ server reached by Bolt."""

    backend = "neo4j"
    ALIAS_QUERY = f"MATCH (e:Entity) WHERE $name IN e.aliases RETURN {ENTITY_FIELDS}"
    # Two branches so that the key branch uses the index on :Entity(key).
    KEY_QUERY = (
        f"MATCH (e:Entity {{key: $k}}) RETURN {ENTITY_FIELDS} "
        f"UNION MATCH (e:Entity) WHERE $k IN e.alias_keys RETURN {ENTITY_FIELDS}"
    )
    EDGES_QUERY = (
        "UNWIND $ids AS i MATCH (a:Entity {id: i})-[r]-(b:Entity) WHERE r.relation IS NOT NULL "
        "RETURN a.id, r.relation, b.id, b.name, startNode(r) = a"
    )
    RELATION_TYPES_QUERY = (
        "MATCH (e:Entity {id: $i})-[r]-(:Entity) WHERE r.relation IS NOT NULL "
        "RETURN r.relation, startNode(r) = e, count(*)"
    )
    RELATION_KINDS_QUERY = (
        "UNWIND $ids AS i MATCH (a:Entity {id: i})-[r]-(:Entity) WHERE r.relation IS NOT NULL "
        "RETURN DISTINCT a.id, r.relation, startNode(r) = a"
    )

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
        # Dimension of the chunk vector index once checked or created; one to create after the commit.
        self._vector_dim: int | None = None
        self._vector_index_due: int | None = None
        try:
            self._check_server_version()
            if read_only:
                self._refuse_legacy_layout()
            else:
                for statement in SCHEMA:
                    self._session.run(statement).consume()
                self.migrate_legacy_relations()
                self._session.run(DROP_LEGACY_INDEX).consume()
        except BaseException:
            self.close()
            raise

    def _check_server_version(self) -> None:
        try:
            version = str(self._scalar(SERVER_VERSION))
        except (neo4j.exceptions.ClientError, IndexError):
            return  # a server that will not say: let the first write tell
        parsed = _server_version(version)
        if parsed is not None and parsed < MIN_SERVER_VERSION:
            raise GraphStoreError(
                f"Neo4j {version} at {self.uri} is too old: Trellis writes each relation as a typed relationship "
                "with Cypher's dynamic types, which need Neo4j 5.26 or later (the neo4j:5 image is 5.26)"
            )

    def _refuse_legacy_layout(self) -> None:
        if names := self._legacy_relation_names():
            raise GraphStoreError(
                f"this Neo4j database holds relations in the old `:RELATION {{type}}` layout ({len(names)} "
                "relation names); open it once for writing to convert them to typed relationships (any Trellis "
                "write such as `trellis ingest`, or `open_store(settings).close()` in Python)"
            )

    def _legacy_relation_names(self) -> list[str]:
        return [row[0] for row in self._rows(LEGACY_RELATION_NAMES) if isinstance(row[0], str)]

    def migrate_legacy_relations(self) -> int:
        """Convert relations of the old `:RELATION {type}` layout to typed ones; returns how many moved.

        Run by every writable open, so an existing database converts once; a no-op when nothing is old.
        Batches commit one by one outside a transaction, so an interrupted run resumes where it stopped.
        """
        names = self._legacy_relation_names()
        if names:
            log.warning("converting %d relation names of the old :RELATION layout to typed relationships", len(names))
        moved = 0
        for name in names:
            params = {"relation": name, "rel_type": relationship_type(name), "batch": MIGRATION_BATCH}
            while count := self._scalar(MIGRATE_LEGACY_RELATIONS, params):
                moved += count
        return moved

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
            self._vector_index_due = None
            raise
        else:
            self._tx.commit()
        finally:
            self._tx = None
        # Neo4j runs no schema change in a transaction that writes data: the vector index comes after.
        if self._vector_index_due is not None:
            self.ensure_vector_index(self._vector_index_due)

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
            {
                "head": r.head_id,
                "relation": r.type,
                "rel_type": relationship_type(r.type),
                "tail": r.tail_id,
                "sources": r.sources,
                "evidence": r.evidence,
            }
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
            # A chunk whose text changes drops its embedding (setting null removes it): a stale vector
            # would otherwise keep answering the vector index for text that is gone.
            created = self._scalar(
                "UNWIND $rows AS row "
                "MATCH (d:Document {id: row.doc_id}) "
                "MERGE (c:Chunk {id: row.id}) ON CREATE SET c._new = true "
                "SET c.embedding = CASE WHEN c.text = row.text THEN c.embedding END "
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

    # Reads whose Cypher differs from the embedded backend's: relations are typed, named by `r.relation`.

    def relation_counts(self) -> list[tuple[str, int]]:
        rows = self._rows(RELATION_COUNTS)
        return sorted(((t, int(n)) for t, n in rows), key=lambda row: (-row[1], row[0]))

    def relation_sample(self, relation: str, limit: int = 200) -> list[tuple[str, str, str, str]]:
        rows = self._rows(RELATION_SAMPLE, {"rel_type": relationship_type(relation), "t": relation, "n": limit})
        return [(h, ht or "", t, tt or "") for h, ht, t, tt in rows]

    def counts(self) -> StoreCounts:
        return StoreCounts(
            entities=self._scalar("MATCH (e:Entity) RETURN count(*)"),
            relations=self._scalar(RELATION_TOTAL),
            documents=self._scalar("MATCH (d:Document) RETURN count(*)"),
            chunks=self._scalar("MATCH (c:Chunk) RETURN count(*)"),
        )

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
                "MATCH (:Entity)-[r]->(:Entity) WHERE r.relation IS NOT NULL AND $s IN r.sources "
                "SET r.sources = [x IN r.sources WHERE x <> $s]",
                params,
            )
            self._rows(
                "MATCH (:Entity)-[r]->(:Entity) WHERE r.relation IS NOT NULL "
                "AND any(x IN r.evidence WHERE x STARTS WITH $p) "
                "SET r.evidence = [x IN r.evidence WHERE NOT x STARTS WITH $p]",
                {"p": source + "\t"},
            )
            relations = self._scalar(
                "OPTIONAL MATCH (:Entity)-[r]->(:Entity) WHERE r.relation IS NOT NULL AND size(r.sources) = 0 "
                "WITH collect(r) AS rs FOREACH (r IN rs | DELETE r) RETURN size(rs)"
            )
            self._rows("MATCH (e:Entity) WHERE $s IN e.sources SET e.sources = [x IN e.sources WHERE x <> $s]", params)
            entities = self._scalar(
                "OPTIONAL MATCH (e:Entity) WHERE size(e.sources) = 0 "
                "AND NOT EXISTS { (e)-[r]-(:Entity) WHERE r.relation IS NOT NULL } "
                "AND NOT EXISTS { (:Chunk)-[:MENTIONS]->(e) } "
                "WITH collect(e) AS es FOREACH (e IN es | DETACH DELETE e) RETURN size(es)"
            )
        self._names_changed()
        return DeleteReport(source, relations, entities, documents, chunks)

    # Chunk embeddings in Neo4j, for neo4j-graphrag (TRELLIS_NEO4J_VECTOR_INDEX): Trellis itself searches
    # its own vector file and does not read them.

    def write_chunk_embeddings(
        self, chunk_ids: Sequence[str], embeddings: Sequence[Sequence[float]] | np.ndarray
    ) -> int:
        """Store one embedding per chunk as `c.embedding`, indexed by the `trellis_chunk_embedding` vector
        index (cosine), which is created on first use; returns how many chunks were written.

        All chunks must exist and all vectors share one dimension, the index's if it exists; otherwise
        nothing is written. Inside `transaction()` the index is created after the commit.
        """
        ids = list(chunk_ids)
        if not ids:
            return 0
        vectors = np.asarray(embeddings, dtype=np.float64)
        if vectors.ndim != 2 or len(vectors) != len(ids) or vectors.shape[1] == 0:
            raise ValueError(f"expected one vector per chunk id ({len(ids)}), got an array of shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            # Neo4j would store it and silently leave the chunk out of the index.
            raise ValueError("chunk embeddings must be finite")
        dim = int(vectors.shape[1])
        if self._vector_index_due not in (None, dim):  # an index for other vectors awaits this transaction
            raise GraphStoreError(f"{dim}-d embeddings after {self._vector_index_due}-d ones in one transaction")
        self._check_vector_index(dim)
        by_id = dict(zip(ids, vectors.tolist(), strict=True))  # a repeated id: the last vector wins
        rows = [{"id": i, "embedding": v} for i, v in by_id.items()]
        written = 0
        with self.transaction():
            self._require_chunks(set(by_id))
            for batch in _batches(rows, EMBEDDING_BATCH):
                written += self._scalar(WRITE_EMBEDDINGS, {"rows": batch})
            if self._vector_dim is None:
                self._vector_index_due = dim
        return written

    def ensure_vector_index(self, dimensions: int) -> None:
        """Makes sure the chunk vector index for `dimensions`-d vectors exists (GraphStoreError if one exists
        for another dimension or shape). The server populates a new index in the background."""
        if self._tx is not None:  # a schema change must wait for the open transaction to commit
            self._vector_index_due = dimensions
            return
        self._vector_index_due = None
        self._check_vector_index(dimensions)
        if self._vector_dim is None:
            self._session.run(CREATE_VECTOR_INDEX, {"dim": dimensions}).consume()
            self._vector_dim = dimensions

    def vector_index_dimensions(self) -> int | None:
        """Dimensions of the chunk vector index, or None when there is none."""
        # Read through the driver's own session: schema is visible from any, and an open transaction of
        # this store's session must not be disturbed.
        records, _, _ = self._driver.execute_query(
            SHOW_VECTOR_INDEX, {"name": VECTOR_INDEX}, database_=self.database, routing_=neo4j.RoutingControl.READ
        )
        if not records:
            return None
        kind, labels, properties, options = records[0]
        config = (options or {}).get("indexConfig") or {}
        if (
            kind != "VECTOR"
            or list(labels or []) != ["Chunk"]
            or list(properties or []) != [VECTOR_PROPERTY]
            or str(config.get("vector.similarity_function", "")).lower() != "cosine"
        ):
            raise GraphStoreError(
                f"the index {VECTOR_INDEX} in this Neo4j database is not Trellis's cosine vector index on "
                f":Chunk({VECTOR_PROPERTY}); drop it (DROP INDEX {VECTOR_INDEX}) to let Trellis create its own"
            )
        return int(config["vector.dimensions"])

    def _check_vector_index(self, dimensions: int) -> None:
        if self._vector_dim is None:
            self._vector_dim = self.vector_index_dimensions()
        if self._vector_dim is not None and self._vector_dim != dimensions:
            raise GraphStoreError(
                f"the Neo4j vector index {VECTOR_INDEX} holds {self._vector_dim}-d vectors, these are "
                f"{dimensions}-d: the embedding model changed. Drop it (DROP INDEX {VECTOR_INDEX}) and write the "
                "chunk embeddings again"
            )

    def _require_chunks(self, ids: set[str]) -> None:
        found = {
            row[0] for row in self._rows("UNWIND $ids AS i MATCH (c:Chunk {id: i}) RETURN c.id", {"ids": list(ids)})
        }
        if missing := ids - found:
            raise GraphStoreError(f"embeddings for unknown chunks {sorted(missing)[:3]}; upsert the chunks first")

    def close(self) -> None:
        self._session.close()
        self._driver.close()
