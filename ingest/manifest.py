"""The ingestion manifest: SQLite under the data directory, the record of what has been ingested.

Each document's row holds its content hash and state. `pending` means a write of that document began and
may be partial in the graph or the vector index; the next run cleans such documents out before anything
else, which is what makes a killed run converge. Writes commit immediately (WAL journal).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source_path TEXT NOT NULL,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    chunk_ids TEXT NOT NULL,   -- JSON list: every chunk id this document may have in the graph and index
    entity_ids TEXT NOT NULL,  -- JSON list: entities it mentions (to prune the entity-name index on delete)
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_source ON documents (source_path);
CREATE TABLE IF NOT EXISTS entity_names (
    key TEXT PRIMARY KEY,  -- resolution key of a surface form
    name TEXT NOT NULL     -- the canonical name chosen the first time the key was seen
);
CREATE TABLE IF NOT EXISTS facts (
    key TEXT PRIMARY KEY,  -- what the manifest knows about the data directory beyond its documents
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    doc_id: str
    source_path: str
    title: str
    content_hash: str
    state: str
    chunk_ids: list[str]
    entity_ids: list[str]
    updated_at: float


class Manifest:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _records(self, where: str = "", params: Sequence[object] = ()) -> list[DocumentRecord]:
        rows = self._db.execute(
            "SELECT doc_id, source_path, title, content_hash, state, chunk_ids, entity_ids, updated_at "
            f"FROM documents {where} ORDER BY source_path, doc_id",
            params,
        ).fetchall()
        return [DocumentRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), r[7]) for r in rows]

    def documents(self) -> list[DocumentRecord]:
        return self._records()

    def get(self, doc_ids: Iterable[str]) -> dict[str, DocumentRecord]:
        wanted = list(doc_ids)
        found: dict[str, DocumentRecord] = {}
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            marks = ",".join("?" * len(batch))
            found.update((r.doc_id, r) for r in self._records(f"WHERE doc_id IN ({marks})", batch))
        return found

    def pending(self) -> list[DocumentRecord]:
        return self._records("WHERE state = 'pending'")

    def from_source(self, source_path: str) -> list[DocumentRecord]:
        return self._records("WHERE source_path = ?", (source_path,))

    def relative_sources(self) -> list[str]:
        """Source paths stored relative, as typed (manifests written before paths were resolved)."""
        rows = self._db.execute("SELECT DISTINCT source_path FROM documents WHERE substr(source_path, 1, 1) <> '/'")
        return [row[0] for row in rows]

    def set_sources(self, sources: dict[str, str]) -> None:
        """Record a new source path for documents (doc id -> path) whose content did not change."""
        with self._db:
            self._db.executemany(
                "UPDATE documents SET source_path = ? WHERE doc_id = ?", [(s, d) for d, s in sources.items()]
            )

    def mark_pending(self, records: Sequence[DocumentRecord]) -> None:
        self._write(records, "pending")

    def mark_done(self, records: Sequence[DocumentRecord]) -> None:
        self._write(records, "done")

    def _write(self, records: Sequence[DocumentRecord], state: str) -> None:
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT INTO documents (doc_id, source_path, title, content_hash, state, chunk_ids, entity_ids, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (doc_id) DO UPDATE SET "
                "source_path = excluded.source_path, title = excluded.title, content_hash = excluded.content_hash, "
                "state = excluded.state, chunk_ids = excluded.chunk_ids, entity_ids = excluded.entity_ids, "
                "updated_at = excluded.updated_at",
                [
                    (
                        r.doc_id,
                        r.source_path,
                        r.title,
                        r.content_hash,
                        state,
                        json.dumps(r.chunk_ids),
                        json.dumps(r.entity_ids),
                        now,
                    )
                    for r in records
                ],
            )

    def remove(self, doc_ids: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM documents WHERE doc_id = ?", [(d,) for d in doc_ids])

    def remember_names(self, names: dict[str, str]) -> None:
        """Record canonical names (resolution key -> name) for keys not yet known."""
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO entity_names (key, name) VALUES (?, ?)", list(names.items()))

    def fact(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM facts WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_fact(self, key: str, value: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO facts (key, value) VALUES (?, ?)", (key, value))

    def canonical_names(self, surfaces: dict[str, str]) -> dict[str, str]:
        """Canonical name per resolution key: the stored one, else `surfaces[key]`, which is then stored."""
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO entity_names (key, name) VALUES (?, ?)", list(surfaces.items()))
        names: dict[str, str] = {}
        keys = list(surfaces)
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            marks = ",".join("?" * len(batch))
            names.update(self._db.execute(f"SELECT key, name FROM entity_names WHERE key IN ({marks})", batch))
        return names
