"""What the CLI and the HTTP API share: the store's counts, the document list, and atomic file writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from config import Settings
from graph.backends import open_store
from graph.model import Entity
from graph.store import GraphStore
from graph.vectors import stored_vector_count
from ingest.manifest import Manifest

if TYPE_CHECKING:
    from ingest.extract import Extractor


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as temporary:
        temporary.write(data)
        temporary.flush()
        os.fsync(temporary.fileno())  # the data is on disk before the rename makes it visible
    os.chmod(temporary.name, 0o644)  # a temporary file is created private; the result is an ordinary file
    os.replace(temporary.name, path)


def install_schema(settings: Settings, schema: Path) -> None:
    """Check a relation schema file (ValueError naming what is wrong), then copy it into the data directory
    atomically; nothing changes when it is bad."""
    from agents.patterns import RelationSchema

    RelationSchema.load(schema)
    write_atomically(settings.relation_schema_path, schema.read_bytes())


def status_report(settings: Settings, store: GraphStore | None = None) -> dict[str, Any]:
    """Backend, data directory, and counts of entities, relations, documents, chunks and vectors.

    Without a store handed in, one is opened read-only for the count, and none is created where nothing was
    ingested (a status check must not take the embedded store's single writer slot).
    """
    counts = {"entities": 0, "relations": 0, "documents": 0, "chunks": 0}
    opened = None
    if store is None and (settings.backend != "embedded" or settings.graph_path.exists()):
        store = opened = open_store(settings, read_only=True)
    try:
        if store is not None:
            c = store.counts()
            counts = {"entities": c.entities, "relations": c.relations, "documents": c.documents, "chunks": c.chunks}
    finally:
        if opened is not None:
            opened.close()
    return {
        "backend": settings.backend,
        "data_dir": str(settings.data_dir.resolve()),
        **counts,
        "vectors": stored_vector_count(settings.vectors_path),
    }


def document_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every ingested document: id, title, source file, chunk count and state (done, or pending mid-ingest)."""
    if not settings.manifest_path.exists():
        return []
    manifest = Manifest(settings.manifest_path)
    try:
        records = manifest.documents()
    finally:
        manifest.close()
    return [
        {"doc_id": r.doc_id, "title": r.title, "source": r.source_path, "chunks": len(r.chunk_ids), "state": r.state}
        for r in records
    ]


# -- looking at the graph (`trellis graph`, GET /graph/...) ------------------------------------------------------
# Everything goes through the GraphStore interface, whose queries take names as parameters.

MatchMode = Literal["exact", "normalised", "fuzzy"]


def _entity_row(entity: Entity) -> dict[str, Any]:
    return {
        "id": entity.id,
        "name": entity.name,
        "type": entity.type,
        "aliases": entity.aliases,
        "sources": entity.sources,
    }


def entity_rows(store: GraphStore, name: str, match: MatchMode = "normalised", limit: int = 20) -> list[dict[str, Any]]:
    """Entities called `name`: exactly (name or alias), by normalised key (any case and punctuation), or fuzzily."""
    return [_entity_row(entity) for entity in store.find_entities(name, match, limit)]


def resolve_entity(store: GraphStore, name: str) -> Entity | None:
    """The entity a user means by `name`: its exact name or alias first, else the normalised key, else an id."""
    for mode in ("exact", "normalised"):
        found = store.find_entities(name, mode, 1)
        if found:
            return found[0]
    by_id = store.get_entities([name])
    return by_id[0] if by_id else None


def relation_rows(store: GraphStore, relation: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Without `relation`: every relation type with its count, most frequent first. With one: up to `limit` of
    its facts (head, tail and their types)."""
    if relation is None:
        return [{"relation": name, "count": count} for name, count in store.relation_counts()[:limit]]
    return [
        {"head": head, "head_type": head_type, "relation": relation, "tail": tail, "tail_type": tail_type}
        for head, head_type, tail, tail_type in store.relation_sample(relation, limit)
    ]


def chunk_row(store: GraphStore, chunk_id: str) -> dict[str, Any] | None:
    """A chunk's text, its document and page, and the entities it mentions; None when there is no such chunk."""
    found = store.get_chunks([chunk_id])
    if not found:
        return None
    chunk = found[0]
    mentioned = [entity_id for _chunk, entity_id in store.entities_mentioned([chunk.id])]
    names = sorted(entity.name for entity in store.get_entities(mentioned))
    return {
        "chunk_id": chunk.id,
        "doc_id": chunk.doc_id,
        "title": chunk.title,
        "ordinal": chunk.ordinal,
        "page": chunk.page,
        "text": chunk.text,
        "entities": names,
    }


def neighbourhood(store: GraphStore, name: str, limit: int = 50) -> dict[str, Any] | None:
    """An entity, the relation types around it with their counts, up to `limit` of its relations (each with
    its direction: `out` when the entity is the head) and up to `limit` chunks that mention it; None when no
    entity has that name."""
    entity = resolve_entity(store, name)
    if entity is None:
        return None
    edges = sorted(store.edges([entity.id]), key=lambda e: (e.type, not e.forward, e.neighbour_name))
    return {
        "entity": _entity_row(entity),
        "relation_types": [
            {"relation": relation, "direction": "out" if forward else "in", "count": count}
            for relation, forward, count in store.relation_types(entity.id)
        ],
        "relations": [
            {
                "relation": edge.type,
                "direction": "out" if edge.forward else "in",
                "neighbour": edge.neighbour_name,
                "neighbour_id": edge.neighbour_id,
            }
            for edge in edges[:limit]
        ],
        "relations_total": len(edges),
        "chunks": [chunk_id for _entity, chunk_id in store.chunks_mentioning([entity.id], limit)],
    }


class ExtractorUnavailable(ValueError):
    """The configured extractor cannot be built here (a bad extraction schema, or no in-process model)."""


def make_extractor(settings: Settings, background: bool = True, model: Any | None = None) -> Extractor:
    """The extractor `settings.extractor` names, for the CLI, the server and the Python API alike
    (`ingest.extract.make_extractor`; `background`: spaCy in a worker process, as the CLI runs it; the server
    keeps it in-process; `model`: a loaded language model to share). A bad extraction schema, or the model
    extractor with a remote generator, is refused as `ExtractorUnavailable` naming why."""
    from ingest.extract import make_extractor as build
    from ingest.schema import SchemaError

    if settings.extractor == "model" and settings.llm_base_url:
        # the model extractor constrains decoding token by token, which needs the model in this process
        raise ExtractorUnavailable(
            "extractor 'model': needs the in-process model (its JSON grammar works on the model's logits); "
            "unset TRELLIS_LLM_BASE_URL for ingestion or use --extractor spacy"
        )
    try:
        return build(settings, background=background, model=model)
    except SchemaError as error:
        raise ExtractorUnavailable(f"extractor 'model': {error}") from None
