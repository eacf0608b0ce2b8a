"""Documents into the knowledge store: load, chunk, embed, extract, write the graph, save the indexes.

Consistency across the three stores (graph, FAISS file, SQLite manifest) rests on one rule: a document is
marked `pending` in the manifest before the graph or an index changes for it, and `done` only once the
index holding its vectors has been saved. A run that dies leaves some documents `pending`; the next run
first removes everything they may have written, then ingests them like new ones.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from langchain_core.documents import Document as TextDocument

from config import Settings
from graph.model import Chunk, Document
from graph.store import GraphStore
from graph.vectors import VectorIndex
from ingest.chunking import Chunker
from ingest.extract import Dropped, Extraction, Extractor, Mention
from ingest.loaders import LoadedFile, LoadProblem, derived_id, file_doc_id, find_files, load_file, source_of
from ingest.manifest import DocumentRecord, Manifest
from ingest.resolve import resolve, seed_names
from lm.embeddings import Embedder

ProgressFn = Callable[[str, int, int | None], None]
STAGES = ("load", "chunk", "embed", "extract", "graph_write", "index_save")
NAME_BATCH = 128  # names are a few tokens: large batches pad little and run ~3x faster than 16
NAMES_KNOWN_AT = "entity_names_known_at"  # the graph's entity count when the name index last held all names
LOOKAHEAD = 2  # batches handed to the extraction worker ahead of the one being written
UNLINKED_TYPES = {"DATE", "TIME", "MONEY", "PERCENT", "QUANTITY"}


@dataclass(slots=True)
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # gone from a file that was re-ingested
    recovered: list[str] = field(default_factory=list)  # left pending by an interrupted run, cleaned
    skipped: list[LoadProblem] = field(default_factory=list)
    chunks: int = 0
    entities: int = 0
    relations: int = 0
    # Triples the extractor's reflection pass dropped, each with its chunk and reason (model extractor only).
    dropped: list[Dropped] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


@dataclass(slots=True)
class _Pending:
    """One loaded document on its way in."""

    doc_id: str
    parts: list[TextDocument]
    content_hash: str
    previous: DocumentRecord | None
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def meta(self) -> dict:
        return self.parts[0].metadata


def content_hash(parts: Sequence[TextDocument]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        for value in (part.metadata.get("title", ""), str(part.metadata.get("page", 0)), part.page_content):
            digest.update(value.encode("utf-8"))
            digest.update(b"\0")
    return digest.hexdigest()


class Ingestor:
    """Keeps graph, vector index and manifest consistent as documents are added, changed and deleted."""

    def __init__(
        self,
        settings: Settings,
        store: GraphStore,
        embedder: Embedder | None = None,
        extractor: Extractor | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        """Without an embedder and extractor the ingestor can only recover and delete."""
        self.settings, self.store, self.embedder, self.extractor = settings, store, embedder, extractor
        self.progress: ProgressFn = progress or (lambda _stage, _done, _total: None)
        self.manifest = Manifest(settings.manifest_path)
        self._index_model = (embedder.dim, embedder.name) if embedder else (None, None)
        self.chunker = (
            Chunker(embedder.count_tokens, settings.chunk_tokens, settings.chunk_overlap) if embedder else None
        )
        self._report = IngestReport()
        self._unindexed: dict[str, str] = {}  # id -> name of entities written but not yet in the name index
        self._embedded = self._to_embed = 0

    # The vector indexes are read from disk when first used: recovering with nothing pending (every server
    # start, every library open) then reads neither.
    @cached_property
    def index(self) -> VectorIndex:
        """The chunk vectors."""
        return VectorIndex(self.settings.vectors_path, *self._index_model, self.settings.vector_index)

    @cached_property
    def entity_index(self) -> VectorIndex:
        """The entity-name vectors, for linking."""
        return VectorIndex(self.settings.entity_vectors_path, *self._index_model, "flat")

    def close(self) -> None:
        self.manifest.close()

    # -- recovery and deletion --------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Remove whatever documents left `pending` by an interrupted run may have written."""
        pending = self.manifest.pending()
        if pending:
            self._remove(pending)
        return [r.doc_id for r in pending]

    def delete(self, doc_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete documents with their chunks, vectors and the facts only they supported.

        Returns (deleted, unknown) document ids.
        """
        self.recover()
        known = self.manifest.get(doc_ids)
        self._remove(list(known.values()))
        return [d for d in doc_ids if d in known], [d for d in doc_ids if d not in known]

    def _remove(self, records: Sequence[DocumentRecord]) -> None:
        pending = [_as_pending(r) for r in records]
        self.manifest.mark_pending(pending)
        with self.store.transaction():
            for record in records:
                self.store.delete_source(record.doc_id)
        self.index.remove([c for r in records for c in r.chunk_ids])
        self._prune_entity_index([e for r in records for e in r.entity_ids])
        self._save_indexes()
        self.manifest.remove(r.doc_id for r in records)

    def _prune_entity_index(self, candidate_ids: Sequence[str]) -> None:
        """Drop names of entities that no longer exist in the graph."""
        candidates = list(dict.fromkeys(candidate_ids))
        alive = {e.id for e in self.store.get_entities(candidates)}
        self.entity_index.remove([i for i in candidates if i not in alive])

    def _save_indexes(self) -> None:
        start = time.perf_counter()
        for name in ("index", "entity_index"):
            if name in self.__dict__:  # an index never read holds nothing new
                self.__dict__[name].save()
        self._report.stages["index_save"] += time.perf_counter() - start

    # -- ingestion --------------------------------------------------------------------------------

    def ingest(
        self,
        paths: Sequence[Path | str],
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> IngestReport:
        if self.embedder is None or self.extractor is None or self.chunker is None:
            raise ValueError("ingesting needs an embedder and an extractor")
        report = self._report = IngestReport()
        report.recovered = self.recover()

        start = time.perf_counter()
        files, refused = find_files(paths, include, exclude)
        report.skipped.extend(refused)
        loaded_docs, previous, complete_sources = self._load(files, report)
        todo: list[_Pending] = []
        relocated: dict[str, str] = {}
        for doc_id, parts in loaded_docs.items():
            digest = content_hash(parts)
            record = previous.get(doc_id)
            if record and record.state == "done" and record.content_hash == digest:
                report.unchanged.append(doc_id)
                if record.source_path != parts[0].metadata["source"]:
                    relocated[doc_id] = parts[0].metadata["source"]  # a legacy relative path, or a moved record
            else:
                todo.append(_Pending(doc_id, parts, digest, record))
        self.manifest.set_sources(relocated)
        # Documents a fully read file no longer holds were removed from it.
        gone = self._stored_from(complete_sources, exclude=loaded_docs.keys())
        report.stages["load"] += time.perf_counter() - start
        if gone:
            self._remove(gone)
            report.removed = [r.doc_id for r in gone]

        start = time.perf_counter()
        for doc in todo:
            doc.chunks = self.chunker.split(doc.parts)
            for chunk in doc.chunks:
                chunk.title = doc.meta.get("title", "")  # the extractor may name what the document is about
        report.stages["chunk"] += time.perf_counter() - start
        # Mentions merge with entities already in the graph, whatever wrote them (a triples file too). The scan
        # is skipped when the graph holds as many entities as when this manifest last knew all their names
        # (assumes no other writer removed and added as many entities in between).
        if todo and self.manifest.fact(NAMES_KNOWN_AT) != str(self.store.counts().entities):
            seed_names(self.manifest, self.store.iter_entity_names())

        # Extraction runs in a background worker, LOOKAHEAD batches ahead of the embedding and graph writes.
        self._embedded, self._to_embed = 0, sum(len(d.chunks) for d in todo)
        size = self.settings.ingest_batch_documents
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        # (Measured: torch keeping both threads while the worker runs beats giving it one, 63-66 s vs 71 s.)
        unsaved = self._write_batches(batches, report)
        if unsaved or gone:
            # Names last, in one go, once the worker is idle.
            self._index_entity_names(report)
            self._save_indexes()
            self.manifest.mark_done(unsaved)
        if todo:
            # every entity this run wrote was named through the manifest's name index
            self.manifest.set_fact(NAMES_KNOWN_AT, str(self.store.counts().entities))
        return report

    def _load(
        self, files: Sequence[Path], report: IngestReport
    ) -> tuple[dict[str, list[TextDocument]], dict[str, DocumentRecord], list[str]]:
        """(parts per document id, manifest records of those ids, sources read completely).

        A document id belongs to one file. A second file holding it, in this run or a later one, is
        reported and its document skipped; the first keeps it. An id may move to another file only in a
        run that also re-reads the file it was in, in full, and finds it gone from there.
        """
        max_bytes = int(self.settings.max_document_mb * 1_000_000)
        read: list[tuple[Path, str, LoadedFile]] = []
        for number, path in enumerate(files, start=1):
            loaded = load_file(path, max_bytes)
            report.skipped.extend(loaded.problems)
            read.append((path, source_of(path), loaded))
            self.progress("load", number, len(files))
        holders: dict[str, set[str]] = {}
        for _path, source, loaded in read:
            for part in loaded.documents:
                holders.setdefault(part.metadata["doc_id"], set()).add(source)
        previous = self.manifest.get(holders)
        complete = [source for _path, source, loaded in read if loaded.complete]
        docs: dict[str, list[TextDocument]] = {}
        for path, source, loaded in read:
            base = file_doc_id(path)
            for part in loaded.documents:
                doc_id = part.metadata["doc_id"]
                first = docs.get(doc_id)
                if first:
                    # Pages of one PDF share an id; anything else sharing one is a duplicate.
                    if first[0].metadata["source"] == source and "record" not in part.metadata:
                        first.append(part)
                    else:
                        reason = f"duplicate document id {doc_id!r} (first in {first[0].metadata['source']})"
                        report.skipped.append(_problem_at(path, part, reason))
                    continue
                record = previous.get(doc_id)
                owner = _stored_source(record.source_path) if record else source
                # Only a record's own id can clash across files: a derived id hashes its file's path.
                given = not _derived_from(doc_id, base)
                if given and owner != source and (owner in holders[doc_id] or owner not in complete):
                    reason = (
                        f"duplicate document id {doc_id!r}: already ingested from {record.source_path}; "
                        "skipped (delete that document first, or give this record another id)"
                    )
                    report.skipped.append(_problem_at(path, part, reason))
                    continue
                docs[doc_id] = [part]
        return docs, previous, complete

    def _stored_from(self, sources: Sequence[str], exclude: Collection[str]) -> list[DocumentRecord]:
        """Manifest records of documents read from `sources` (real paths), less the ids in `exclude`.

        Manifests written before paths were resolved hold them as typed. A relative one is read against the
        current directory, as the old code did, and trusted only for records whose id does not say they
        came from another file (a derived id names its file by hash).
        """
        if not sources:
            return []
        legacy: dict[str, list[str]] = {}
        for stored in self.manifest.relative_sources():
            legacy.setdefault(_stored_source(stored), []).append(stored)
        found: dict[str, DocumentRecord] = {}
        for source in sources:
            found.update((r.doc_id, r) for r in self.manifest.from_source(source))
            base = file_doc_id(Path(source))
            for stored in legacy.get(source, []):
                for r in self.manifest.from_source(stored):
                    if not derived_id(r.doc_id) or _derived_from(r.doc_id, base):
                        found.setdefault(r.doc_id, r)
        return [r for r in found.values() if r.doc_id not in exclude]

    def _write_batches(self, batches: list[list[_Pending]], report: IngestReport) -> list[DocumentRecord]:
        """Embed, extract (LOOKAHEAD batches ahead, in the worker) and write each batch; returns what is
        written but not yet marked done."""
        extracting: list[Future[Extraction]] = []
        unsaved: list[DocumentRecord] = []
        last_save = time.monotonic()
        done = 0
        total = sum(len(b) for b in batches)
        for number, batch in enumerate(batches):
            while len(extracting) < min(number + LOOKAHEAD, len(batches)):
                extracting.append(self.extractor.submit([c for d in batches[len(extracting)] for c in d.chunks]))
            unsaved.extend(self._ingest_batch(batch, extracting[number], report))
            extracting[number] = None  # type: ignore[call-overload]  # let the result go
            done += len(batch)
            self.progress("documents", done, total)
            if time.monotonic() - last_save >= self.settings.index_save_seconds:
                self._index_entity_names(report)
                self._save_indexes()
                self.manifest.mark_done(unsaved)
                unsaved, last_save = [], time.monotonic()
        return unsaved

    def _ingest_batch(
        self, batch: list[_Pending], extracting: Future[Extraction], report: IngestReport
    ) -> list[DocumentRecord]:
        stages = report.stages
        chunks = [c for doc in batch for c in doc.chunks]
        start = time.perf_counter()
        titles = {doc.doc_id: doc.meta.get("title", "") for doc in batch}
        vectors = self.embedder.embed(
            [f"{titles[c.doc_id]}\n{c.text}".strip() for c in chunks], progress=self._count_embedded
        )
        stages["embed"] += time.perf_counter() - start

        # The time recorded for extraction is the wait for the background worker, not its whole run.
        start = time.perf_counter()
        extraction = extracting.result()
        report.dropped.extend(extraction.dropped)
        # A record's title names what the record is about: every chunk of it mentions that entity.
        title_mentions = {
            d.doc_id: Mention(titles[d.doc_id], "TITLE") for d in batch if "record" in d.meta and titles[d.doc_id]
        }
        resolved = resolve(chunks, extraction, self.manifest, title_mentions)
        for chunk in chunks:
            chunk.mentions = resolved.mentions.get(chunk.id, [])
        stages["extract"] += time.perf_counter() - start

        records = []
        for doc in batch:
            old_chunks = doc.previous.chunk_ids if doc.previous else []
            old_entities = doc.previous.entity_ids if doc.previous else []
            records.append(
                DocumentRecord(
                    doc.doc_id,
                    str(doc.meta["source"]),
                    titles[doc.doc_id],
                    doc.content_hash,
                    "pending",
                    list(dict.fromkeys([*old_chunks, *(c.id for c in doc.chunks)])),
                    list(dict.fromkeys([*old_entities, *resolved.entity_ids_by_doc.get(doc.doc_id, [])])),
                    0.0,
                )
            )
        self.manifest.mark_pending(records)

        start = time.perf_counter()
        with self.store.transaction():
            for doc in batch:
                if doc.previous:
                    self.store.delete_source(doc.doc_id)
            self.store.upsert_documents(
                [Document(d.doc_id, titles[d.doc_id], str(d.meta["source"]), d.content_hash) for d in batch]
            )
            self.store.upsert_entities(resolved.entities)
            self.store.upsert_chunks(chunks)
            if self.settings.neo4j_vector_index and self.store.backend == "neo4j":
                # Chunk vectors in Neo4j too, for neo4j-graphrag's retrievers; FAISS stays what Trellis searches.
                self.store.write_chunk_embeddings([c.id for c in chunks], vectors)  # type: ignore[attr-defined]
            self.store.upsert_relations(resolved.relations)
        self.index.remove([c for r in records for c in r.chunk_ids])
        self.index.add([c.id for c in chunks], vectors)
        stages["graph_write"] += time.perf_counter() - start

        self._unindexed.update(
            (e.id, e.name) for e in resolved.entities if e.type not in UNLINKED_TYPES and e.id not in self.entity_index
        )
        report.ingested.extend(d.doc_id for d in batch)
        report.chunks += len(chunks)
        report.entities += len({e.id for e in resolved.entities})
        report.relations += len(resolved.relations)
        # What is final once saved: the current chunks and entities only.
        return [
            DocumentRecord(
                r.doc_id,
                r.source_path,
                r.title,
                r.content_hash,
                "done",
                [c.id for c in doc.chunks],
                resolved.entity_ids_by_doc.get(doc.doc_id, []),
                0.0,
            )
            for r, doc in zip(records, batch, strict=True)
        ]

    def _count_embedded(self, count: int) -> None:
        self._embedded += count
        self.progress("embedding", self._embedded, self._to_embed)

    def _index_entity_names(self, report: IngestReport) -> None:
        """Embed the names of new entities into the name index, for linking questions to them.

        Dates, times and amounts are left out: they are matched by their text, and they are many.
        """
        start = time.perf_counter()
        names, self._unindexed = self._unindexed, {}
        if names:
            self.entity_index.add(list(names), self.embedder.embed(list(names.values()), batch_size=NAME_BATCH))
        report.stages["embed"] += time.perf_counter() - start


def _stored_source(stored: str) -> str:
    """The real path a manifest's source path names; a relative one (from before paths were resolved) is
    read against the current directory."""
    return stored if Path(stored).is_absolute() else source_of(Path(stored))


def _derived_from(doc_id: str, file_id: str) -> bool:
    """Whether `doc_id` is the id derived from the file whose id is `file_id`, or one of its records'."""
    return doc_id == file_id or doc_id.startswith(f"{file_id}:")


def _problem_at(path: Path, part: TextDocument, reason: str) -> LoadProblem:
    """A problem with one record of a file: by line in JSONL, by position in a JSON list."""
    number = part.metadata.get("record")
    if path.suffix.lower() == ".json":
        return LoadProblem(path, reason, record=number)
    return LoadProblem(path, reason, line=number)


def _as_pending(record: DocumentRecord) -> DocumentRecord:
    return DocumentRecord(
        record.doc_id,
        record.source_path,
        record.title,
        record.content_hash,
        "pending",
        record.chunk_ids,
        record.entity_ids,
        record.updated_at,
    )
