"""The HTTP API's shared state: the store (serialised), the agent graphs, the question gate, ingestion jobs."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from starlette.exceptions import HTTPException

from agents.graph import build_graph
from agents.resources import Resources
from app.admission import GenerationGate, TurnLocks
from app.service import document_rows, make_extractor, write_atomically
from config import ExtractorName, Settings
from graph.backends import open_store
from graph.errors import GraphStoreError
from graph.store import SerialisedStore
from graph.vectors import VectorIndexError
from ingest.loaders import SUPPORTED
from ingest.triples import TripleFileError, ingest_triples, problem_listing

if TYPE_CHECKING:
    from ingest.extract import SpacyExtractor

log = logging.getLogger("trellis.server")

TRIPLE_SUFFIXES = {".tsv", ".csv"}
UPLOAD_SUFFIXES = SUPPORTED | TRIPLE_SUFFIXES
MAX_PENDING_JOBS = 8
KEPT_JOBS = 50
MAX_UPLOAD_NAME = 200  # characters, suffix included
# A chat turn waits this long for the thread's previous turn before 409; no more than this many wait at once.
TURN_WAIT_S = 120.0
MAX_WAITING_TURNS = 8
# A delete waits this long for the ingestion thread before 503 (Retry-After: DELETE_RETRY_AFTER_S).
DELETE_WAIT_S = 2.0
DELETE_RETRY_AFTER_S = 10


# -- ingestion jobs ---------------------------------------------------------------------------------------------


@dataclass
class IngestJob:
    job_id: str
    kind: Literal["documents", "triples"]
    files: list[Path]
    source: str | None = None  # provenance for triples posted as JSON (else each file's name)
    extractor: ExtractorName | None = None  # for documents; None: the settings' extractor
    state: Literal["queued", "running", "done", "failed"] = "queued"
    progress: dict[str, dict[str, int | None]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created: float = field(default_factory=time.time)

    def advance(self, stage: str, done: int, total: int | None) -> None:
        self.progress[stage] = {"done": done, "total": total}

    def public(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "files": [f.name for f in self.files],
            "state": self.state,
            "progress": self.progress,
            "report": self.report,
            "error": self.error,
            "extractor": self.extractor,
            "status_url": f"/ingest/jobs/{self.job_id}",
        }


def safe_upload_name(filename: str | None) -> str:
    """The base name of an uploaded file, reduced to safe characters; never a path, never hidden. A name over
    MAX_UPLOAD_NAME characters keeps its beginning and its suffix (`report … .pdf` stays a visible pdf)."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    base = re.sub(r"[^\w.\- ]", "_", base).strip(" .")
    if not base:
        raise HTTPException(400, f"upload file name {filename!r} has no usable name")
    suffix = Path(base).suffix
    if suffix.lower() not in UPLOAD_SUFFIXES:
        shown = base if len(base) <= MAX_UPLOAD_NAME else f"{base[:MAX_UPLOAD_NAME]}…"
        raise HTTPException(400, f"{shown}: unsupported file type (supported: {', '.join(sorted(UPLOAD_SUFFIXES))})")
    stem = base[: -len(suffix)][: MAX_UPLOAD_NAME - len(suffix)].rstrip(" .")
    if not stem:
        raise HTTPException(400, f"upload file name {filename!r} has no usable name before {suffix}")
    return stem + suffix


def refuse_duplicate_names(names: list[str]) -> None:
    """Two uploads of one request may not share a (safe) name: the second would replace the first on disk.
    Refused rather than renamed, so that a file's name, which is its document's source, stays the one given.
    Compared without case, as some filesystems do."""
    seen: dict[str, str] = {}
    for name in names:
        first = seen.get(name.casefold())
        seen.setdefault(name.casefold(), name)
        if first is not None:
            raise HTTPException(
                400, f"files: {name!r} is uploaded twice in this request (as {first!r}); rename one or send it alone"
            )


# -- the service ------------------------------------------------------------------------------------------------


class Service:
    """What the endpoints share: store, agent graphs, the generation gate and the ingestion worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jobs: dict[str, IngestJob] = {}
        self._jobs_lock = threading.Lock()
        self.started = time.time()
        self.closed = True
        self.open()

    def open(self) -> None:
        """Open the store (as its writer), the agents, the question gate and the ingestion worker, if closed.

        Separate from construction so that an app's lifespan can run more than once (test clients do)."""
        if not self.closed:
            return
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = SerialisedStore(open_store(self.settings))
        self.recovered = self._recover()
        self.resources = Resources.open(self.settings, self.store)
        self.agent = build_graph(self.resources)
        self._conversations = sqlite3.connect(self.settings.conversations_path, check_same_thread=False)
        self.chat_agent = build_graph(self.resources, SqliteSaver(self._conversations))
        self.gate = GenerationGate(self.settings.generation_workers, self.settings.generation_queue)
        self.ingest_executor = ThreadPoolExecutor(1, thread_name_prefix="trellis-ingest")
        self.turns = TurnLocks(MAX_WAITING_TURNS, TURN_WAIT_S)
        self.closed = False

    def _recover(self) -> list[str]:
        """Remove what documents left `pending` by a killed server or CLI run wrote (chunks without vectors),
        as `trellis ingest` does before its run; their jobs died with that process, so they are re-uploaded."""
        from ingest.pipeline import Ingestor

        ingestor = Ingestor(self.settings, self.store)
        try:
            recovered = ingestor.recover()
        finally:
            ingestor.close()
        if recovered:
            log.warning("cleaned up %d document(s) left half-written by an interrupted ingestion", len(recovered))
        return recovered

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.gate.executor.shutdown(wait=True)
        self.ingest_executor.shutdown(wait=True)
        self._conversations.close()
        self.store.close()

    # ingestion

    def pending_jobs(self) -> int:
        return sum(job.state in ("queued", "running") for job in self.jobs.values())

    def submit_job(self, job: IngestJob) -> asyncio.Future[Any]:
        with self._jobs_lock:
            if self.pending_jobs() >= MAX_PENDING_JOBS:
                raise HTTPException(429, f"{MAX_PENDING_JOBS} ingestion jobs already waiting", {"Retry-After": "5"})
            self.jobs[job.job_id] = job
            for old in sorted(self.jobs.values(), key=lambda j: j.created)[:-KEPT_JOBS]:
                if old.state in ("done", "failed"):
                    del self.jobs[old.job_id]
        return asyncio.get_running_loop().run_in_executor(self.ingest_executor, self._run_job, job)

    def _run_job(self, job: IngestJob) -> None:
        job.state = "running"
        try:
            job.report = self._ingest_triples(job) if job.kind == "triples" else self._ingest_documents(job)
            job.state = "done"
        except (TripleFileError, GraphStoreError, VectorIndexError, ValueError, OSError) as error:
            job.error, job.state = str(error), "failed"
        except Exception as error:  # a job's failure is reported on the job, never lost
            log.exception("ingestion job %s failed", job.job_id)
            job.error, job.state = f"internal error ({type(error).__name__})", "failed"
        finally:
            self.resources.refresh_indexes()

    @cached_property
    def extractor(self) -> SpacyExtractor:
        """One spaCy pipeline for every upload, loaded at the first. In-process: forking a process that runs
        model threads is not safe."""
        from ingest.extract import SpacyExtractor

        return SpacyExtractor(self.settings.spacy_model, background=False)

    def _ingest_documents(self, job: IngestJob) -> dict[str, Any]:
        from ingest.pipeline import Ingestor

        chosen = job.extractor or self.settings.extractor
        if chosen == "spacy":
            extractor = self.extractor
        else:  # built for this job (ExtractorUnavailable, a ValueError, fails the job with its reason)
            # the model extractor shares the model already loaded for answering
            local = None if self.settings.llm_base_url else self.resources.model
            extractor = make_extractor(
                self.settings.model_copy(update={"extractor": chosen}), background=False, model=local
            )
        ingestor = Ingestor(self.settings, self.store, self.resources.embedder, extractor, progress=job.advance)
        try:
            report = ingestor.ingest(job.files)
        finally:
            ingestor.close()
            if extractor is not self.__dict__.get("extractor"):
                extractor.close()
        return {
            "ingested": report.ingested,
            "unchanged": report.unchanged,
            "removed": report.removed,
            "skipped": [self._without_folder(problem) for problem in report.skipped],
            "chunks": report.chunks,
            "relations": report.relations,
        }

    def _ingest_triples(self, job: IngestJob) -> dict[str, Any]:
        rows = entities = relations = 0
        skipped: list[str] = []
        for path in job.files:
            source = job.source or path.name
            try:
                # As the CLI does by default: the whole file is validated, and one bad line writes nothing of it
                # and fails the job, naming the file and every bad line (a job must not say `done` for a file
                # that could not be read).
                report = ingest_triples(self.store, path, source=source, progress=job.advance)
            except TripleFileError as error:
                if not error.problems:
                    raise ValueError(self._without_folder(error)) from None
                lines = [self._without_folder(problem) for problem in error.problems]
                raise ValueError(
                    f"{len(lines)} invalid line(s) in {path.name}; nothing of it was written:\n{problem_listing(lines)}"
                ) from None
            rows += report.rows
            entities += report.entities_created
            relations += report.relations_created
            skipped += [self._without_folder(problem) for problem in report.skipped]
        return {"rows": rows, "entities_created": entities, "relations_created": relations, "skipped": skipped}

    async def delete_document_soon(self, doc_id: str) -> bool:
        """Delete on the ingestion thread, the one writer of the indexes, waiting at most DELETE_WAIT_S for it.

        An ingestion job holds that thread until it ends (its indexes live in memory until saved, so a delete
        cannot run beside it or inside it); rather than hang behind a long upload, the delete is withdrawn
        before it starts and refused with 503 and Retry-After. Nothing is deleted then."""
        queued = self.ingest_executor.submit(self.delete_document, doc_id)
        finished = asyncio.wrap_future(queued)
        try:
            return await asyncio.wait_for(asyncio.shield(finished), DELETE_WAIT_S)
        except TimeoutError:
            if not queued.cancel():
                return await finished  # it started just now: a delete's own work is short
            busy = sorted(job.job_id for job in self.jobs.values() if job.state in ("queued", "running"))
            raise HTTPException(
                503,
                f"not deleted: ingestion job(s) {', '.join(busy) or '(ending)'} hold the store; retry after them",
                {"Retry-After": str(DELETE_RETRY_AFTER_S)},
            ) from None

    def delete_document(self, doc_id: str) -> bool:
        from ingest.pipeline import Ingestor

        sources = {row["doc_id"]: row["source"] for row in document_rows(self.settings)}
        ingestor = Ingestor(self.settings, self.store)
        try:
            deleted, _unknown = ingestor.delete([doc_id])
        finally:
            ingestor.close()
            self.resources.refresh_indexes()
        source = sources.get(doc_id)
        if deleted and source and self._uploaded(Path(source)) and list(sources.values()).count(source) == 1:
            Path(source).unlink(missing_ok=True)  # an upload whose last document is gone
        return bool(deleted)

    def _without_folder(self, problem: object) -> str:
        """A problem as the uploader knows the file: by its name, not the server's path to it."""
        return (
            str(problem)
            .replace(f"{self.settings.uploads_path.resolve()}/", "")
            .replace(f"{self.settings.uploads_path}/", "")
        )

    def _uploaded(self, path: Path) -> bool:
        return path.resolve().parent == self.settings.uploads_path.resolve()

    def save_upload(self, name: str, data: bytes) -> Path:
        """Write an upload atomically under the uploads directory (name already made safe)."""
        folder = self.settings.uploads_path
        target = (folder / name).resolve()
        if target.parent != folder.resolve():  # cannot happen after safe_upload_name; kept as a guard
            raise HTTPException(400, f"upload file name {name!r} leaves the upload directory")
        write_atomically(target, data)
        return target
