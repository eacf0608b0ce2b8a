"""What the CLI and the HTTP API share: the store's counts, the document list, and atomic file writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from config import Settings
from graph.backends import open_store
from graph.store import GraphStore
from graph.vectors import stored_vector_count
from ingest.manifest import Manifest


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
