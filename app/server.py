"""The HTTP API (`trellis serve`): questions, streamed chat, an OpenAI-compatible endpoint, ingestion, a web page.

One process holds the store open for writing and shares it, serialised, between the agent and ingestion.
Questions run on a small pool of worker threads behind a bounded queue (429 with Retry-After past it);
ingestion jobs run one at a time on their own thread. Every error is JSON: {"error": {"message", "type", "code"}}.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agents.graph import ask, build_graph
from agents.resources import Resources
from app.service import document_rows, status_report
from config import Settings
from graph.store import GraphStoreError, SerialisedStore, open_store
from graph.vectors import VectorIndexError
from ingest.loaders import SUPPORTED
from ingest.triples import TripleFileError, ingest_triples

log = logging.getLogger("trellis.server")

STATIC = Path(__file__).parent / "static"
TRIPLE_SUFFIXES = {".tsv", ".csv"}
UPLOAD_SUFFIXES = SUPPORTED | TRIPLE_SUFFIXES
JSON_BODY_LIMIT = 1 << 20  # bytes, for every endpoint but uploads
MAX_PENDING_JOBS = 8
KEPT_JOBS = 50
MODEL_NAME = "trellis"


# -- errors -----------------------------------------------------------------------------------------------------


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    """The one error shape (OpenAI clients read error.message)."""
    return {"error": {"message": message, "type": kind, "code": status}}


class QueueFull(HTTPException):
    def __init__(self, retry_after: int, outstanding: int) -> None:
        super().__init__(
            429,
            f"the server is answering {outstanding} questions, its limit; retry in about {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
        self.outstanding = outstanding


def _install_error_handlers(app: FastAPI) -> None:
    kinds = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large"}

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        body = error_body(error.status_code, str(error.detail), kinds.get(error.status_code, "error"))
        if isinstance(error, QueueFull):
            body["error"]["type"] = "queue_full"
            body["error"]["outstanding"] = error.outstanding
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in error.errors()
        ]
        return JSONResponse(error_body(422, "; ".join(problems), "invalid_request"), status_code=422)

    @app.exception_handler(GraphStoreError)
    @app.exception_handler(VectorIndexError)
    async def store_error(_request: Request, error: Exception) -> JSONResponse:
        return JSONResponse(error_body(503, str(error), "store_unavailable"), status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")  # the trace goes to the log, never to the client
        return JSONResponse(error_body(500, f"internal error ({type(error).__name__})", "internal"), status_code=500)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit:,} bytes")


class BodyLimit:
    """Refuses request bodies over a per-path limit: at once from Content-Length, else while reading them."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = BodyTooLarge(limit)
            response = JSONResponse(error_body(413, str(error.detail), "too_large"), status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # FastAPI passes HTTPExceptions from body parsing through
            return message

        await self.app(scope, counted, send)


# -- admission: bounded concurrency for generation ----------------------------------------------------------


class GenerationGate:
    """`workers` questions run at once; `queue` more may wait; past that, QueueFull (429)."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers, self.limit = workers, workers + queue
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="trellis-answer")
        self.outstanding = 0  # touched only on the event loop
        self.seconds: deque[float] = deque([1.0], maxlen=32)
        self.answered = self.refused = 0

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead at the recent answering rate."""
        average = sum(self.seconds) / len(self.seconds)
        return max(1, math.ceil(average * (self.outstanding - self.workers + 1) / self.workers))

    def submit(self, work: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `work` on a worker thread; the future completes even if the client has gone."""
        if self.outstanding >= self.limit:
            self.refused += 1
            raise QueueFull(self.retry_after(), self.outstanding)
        self.outstanding += 1

        def timed() -> Any:
            started = time.perf_counter()
            try:
                return work()
            finally:
                self.seconds.append(time.perf_counter() - started)

        future = asyncio.get_running_loop().run_in_executor(self.executor, timed)
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: asyncio.Future[Any]) -> None:
        self.outstanding -= 1
        self.answered += 1

    def state(self) -> dict[str, int]:
        return {
            "workers": self.workers,
            "limit": self.limit,
            "outstanding": self.outstanding,
            "answered": self.answered,
            "refused": self.refused,
        }


# -- ingestion jobs ---------------------------------------------------------------------------------------------


@dataclass
class IngestJob:
    job_id: str
    kind: Literal["documents", "triples"]
    files: list[Path]
    source: str | None = None  # provenance for triples posted as JSON (else each file's name)
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
            "status_url": f"/ingest/jobs/{self.job_id}",
        }


def safe_upload_name(filename: str | None) -> str:
    """The base name of an uploaded file, reduced to safe characters; never a path, never hidden."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    base = re.sub(r"[^\w.\- ]", "_", base).strip(" .")[-200:]
    if not base:
        raise HTTPException(400, f"upload file name {filename!r} has no usable name")
    if Path(base).suffix.lower() not in UPLOAD_SUFFIXES:
        raise HTTPException(400, f"{base}: unsupported file type (supported: {', '.join(sorted(UPLOAD_SUFFIXES))})")
    return base


class TripleRecord(BaseModel):
    head: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    tail: str = Field(min_length=1)


class TriplesRequest(BaseModel):
    triples: list[TripleRecord] = Field(min_length=1)
    source: str = Field("api-triples", description="Provenance name; the same source again replaces nothing.")


# -- request bodies -----------------------------------------------------------------------------------------


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=4000)
    thread_id: str | None = Field(None, max_length=100, pattern=r"^[\w\-]+$")


class ChatMessage(BaseModel):
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts
            return " ".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class CompletionRequest(BaseModel):
    model: str = MODEL_NAME
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False

    model_config = {"extra": "allow"}  # temperature, max_tokens, ... are accepted and ignored


def conversation_of(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """(the last user message, earlier user/assistant pairs as agent turns)."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise HTTPException(400, "messages: no message with role 'user'")
    last = users[-1]
    turns: list[dict[str, str]] = []
    for i, message in enumerate(messages[:last]):
        if message.role == "user":
            reply = next((m for m in messages[i + 1 : last] if m.role == "assistant"), None)
            turns.append({"question": message.text(), "answer": reply.text() if reply else ""})
    return messages[last].text(), turns


# -- the service ------------------------------------------------------------------------------------------------


class Service:
    """What the endpoints share: store, agent graphs, the generation gate and the ingestion worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = SerialisedStore(open_store(settings))
        self.resources = Resources.open(settings, self.store)
        self.agent = build_graph(self.resources)
        from langgraph.checkpoint.sqlite import SqliteSaver

        self._conversations = sqlite3.connect(settings.conversations_path, check_same_thread=False)
        self.chat_agent = build_graph(self.resources, SqliteSaver(self._conversations))
        self.gate = GenerationGate(settings.generation_workers, settings.generation_queue)
        self.ingest_executor = ThreadPoolExecutor(1, thread_name_prefix="trellis-ingest")
        self.jobs: dict[str, IngestJob] = {}
        self._jobs_lock = threading.Lock()
        self.started = time.time()

    def warm(self) -> None:
        _ = self.resources.model, self.resources.embedder

    def close(self) -> None:
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

    def _ingest_documents(self, job: IngestJob) -> dict[str, Any]:
        from ingest.extract import SpacyExtractor
        from ingest.pipeline import Ingestor

        # In-process extraction: forking a process that runs model threads is not safe.
        extractor = SpacyExtractor(background=False)
        ingestor = Ingestor(self.settings, self.store, self.resources.embedder, extractor, progress=job.advance)
        try:
            report = ingestor.ingest(job.files)
        finally:
            ingestor.close()
            extractor.close()
        return {
            "ingested": report.ingested,
            "unchanged": report.unchanged,
            "removed": report.removed,
            "skipped": [str(problem) for problem in report.skipped],
            "chunks": report.chunks,
            "relations": report.relations,
        }

    def _ingest_triples(self, job: IngestJob) -> dict[str, Any]:
        rows = entities = relations = 0
        skipped: list[str] = []
        for path in job.files:
            source = job.source or path.name
            report = ingest_triples(self.store, path, source=source, skip_invalid=True, progress=job.advance)
            rows += report.rows
            entities += report.entities_created
            relations += report.relations_created
            skipped += [str(problem) for problem in report.skipped]
        return {"rows": rows, "entities_created": entities, "relations_created": relations, "skipped": skipped}

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

    def _uploaded(self, path: Path) -> bool:
        return path.resolve().parent == self.settings.uploads_path.resolve()

    def save_upload(self, name: str, data: bytes) -> Path:
        """Write an upload atomically under the uploads directory (name already made safe)."""
        folder = self.settings.uploads_path
        folder.mkdir(parents=True, exist_ok=True)
        target = (folder / name).resolve()
        if target.parent != folder.resolve():  # cannot happen after safe_upload_name; kept as a guard
            raise HTTPException(400, f"upload file name {name!r} leaves the upload directory")
        with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=".upload-", delete=False) as temporary:
            temporary.write(data)
        os.replace(temporary.name, target)
        return target


# -- server-sent events -----------------------------------------------------------------------------------------


def sse(event: str | None, data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return head + "".join(f"data: {line}\n" for line in payload.split("\n")) + "\n"


def answer_stream(
    service: Service, run: Callable[[Callable[[dict[str, Any]], None]], dict[str, Any]]
) -> AsyncIterator[tuple[str, Any]]:
    """Admit one question (or raise QueueFull now, before any response starts) and yield its events:
    ("token", text), ("retract", None), then ("done", result) or ("error", body)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(event: dict[str, Any]) -> None:
        kind = "retract" if event.get("retract") else "token"
        loop.call_soon_threadsafe(events.put_nowait, (kind, event.get("token")))

    def work() -> None:
        try:
            result = run(emit)
            loop.call_soon_threadsafe(events.put_nowait, ("done", result))
        except Exception as error:
            log.exception("answering failed")
            body = error_body(500, f"internal error ({type(error).__name__})", "internal")
            loop.call_soon_threadsafe(events.put_nowait, ("error", body))

    service.gate.submit(work)

    async def drain() -> AsyncIterator[tuple[str, Any]]:
        while True:
            kind, data = await events.get()
            yield kind, data
            if kind in ("done", "error"):
                return

    return drain()


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# -- the app ----------------------------------------------------------------------------------------------------


def create_app(settings: Settings, warm: bool = False) -> FastAPI:
    """The FastAPI application over the data that `settings` names; `warm` loads the models at start."""

    service = Service(settings)  # opened here so that a locked or missing store fails before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            await asyncio.get_running_loop().run_in_executor(None, service.warm)
        try:
            yield
        finally:
            service.close()

    app = FastAPIOffline(  # /docs and /redoc with their scripts served from the package, not a CDN
        title="Trellis",
        summary="Question answering that stays faithful to a knowledge graph.",
        version="0.1.0",
        lifespan=lifespan,
    )
    upload_limit = int(settings.max_upload_mb * 1024 * 1024)
    app.add_middleware(BodyLimit, limit_for=lambda path: upload_limit if path == "/ingest" else JSON_BODY_LIMIT)
    _install_error_handlers(app)

    app.state.service = service

    def require_writer(request: Request) -> None:
        """Writes need the API key; with none configured, they are accepted from loopback only."""
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        if key:
            given = request.headers.get("x-api-key") or ""
            authorization = request.headers.get("authorization") or ""
            if authorization.lower().startswith("bearer "):
                given = authorization[7:].strip()
            if not hmac.compare_digest(given.encode(), key.encode()):
                raise HTTPException(401, "this endpoint needs the API key (Authorization: Bearer ... or X-API-Key)")
            return
        host = request.client.host if request.client else ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise HTTPException(403, "writes are accepted from this machine only unless TRELLIS_API_KEY is set")

    # -- reading ------------------------------------------------------------------------------------------

    @app.get("/health", tags=["status"])
    async def health() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/status", tags=["status"])
    async def status() -> dict[str, Any]:
        """Counts in the store, the models, and the question queue."""
        report = await asyncio.get_running_loop().run_in_executor(None, status_report, settings, service.store)
        return {
            **report,
            "llm_model": settings.llm_model,
            "embedding_model": settings.embedding_model,
            "models_loaded": "model" in service.resources.__dict__,
            "generation": service.gate.state(),
            "ingest_jobs_pending": service.pending_jobs(),
            "uptime_s": round(time.time() - service.started, 1),
        }

    @app.get("/documents", tags=["documents"])
    async def documents() -> list[dict[str, Any]]:
        """Every ingested document."""
        return document_rows(settings)

    # -- asking -------------------------------------------------------------------------------------------

    @app.post("/ask", tags=["questions"])
    async def ask_endpoint(body: AskRequest) -> dict[str, Any]:
        """One question; the same JSON as `trellis ask --json` (answer, paths, citations, source, trace)."""
        return await service.gate.submit(lambda: ask(service.agent, body.question))

    @app.post("/chat", tags=["questions"], response_class=StreamingResponse)
    async def chat(body: ChatRequest) -> StreamingResponse:
        """A turn of a conversation, streamed as Server-Sent Events.

        Events: `thread` {thread_id}; `token` {text} as the answer is decoded; `retract` {} when an
        unsupported answer is replaced after more retrieval; `done` with the whole result (paths, citations,
        source, trace); or `error` {error}.
        """
        thread_id = body.thread_id or uuid.uuid4().hex[:12]
        events = answer_stream(
            service, lambda emit: ask(service.chat_agent, body.message, thread_id=thread_id, on_event=emit)
        )

        async def stream() -> AsyncIterator[str]:
            yield sse("thread", {"thread_id": thread_id})
            async for kind, data in events:
                if kind == "token":
                    yield sse("token", {"text": data})
                elif kind == "retract":
                    yield sse("retract", {})
                else:
                    yield sse(kind, {**data, "thread_id": thread_id} if kind == "done" else data)

        headers = {**SSE_HEADERS, "X-Thread-Id": thread_id}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @app.get("/v1/models", tags=["openai"])
    async def models() -> dict[str, Any]:
        """The one model name this server answers to (for OpenAI-compatible front ends)."""
        return {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "trellis"}]}

    @app.post("/v1/chat/completions", tags=["openai"])
    async def completions(body: CompletionRequest) -> Any:
        """OpenAI-compatible chat completion (streaming or not). The last user message is the question;
        earlier user/assistant pairs are the conversation; system messages are ignored. The Trellis result
        (paths, citations, source) rides along in a `trellis` field that OpenAI clients ignore."""
        question, turns = conversation_of(body.messages)
        if not question.strip():
            raise HTTPException(400, "messages: the last user message is empty")
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def envelope(kind: str, choice: dict[str, Any], **extra: Any) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": kind,
                "created": created,
                "model": MODEL_NAME,
                "choices": [{"index": 0, **choice}],
                **extra,
            }

        if not body.stream:
            result = await service.gate.submit(lambda: ask(service.agent, question, conversation=turns))
            encode = service.resources.model.encode
            asked, answered = len(encode(question)), len(encode(result["answer"])) if result["answer"] else 0
            return envelope(
                "chat.completion",
                {"message": {"role": "assistant", "content": result["answer"]}, "finish_reason": "stop"},
                usage={"prompt_tokens": asked, "completion_tokens": answered, "total_tokens": asked + answered},
                trellis=result,
            )
        events = answer_stream(service, lambda emit: ask(service.agent, question, conversation=turns, on_event=emit))

        async def stream() -> AsyncIterator[str]:
            chunk = "chat.completion.chunk"
            yield sse(None, envelope(chunk, {"delta": {"role": "assistant", "content": ""}, "finish_reason": None}))
            async for kind, data in events:
                if kind == "token":
                    yield sse(None, envelope(chunk, {"delta": {"content": data}, "finish_reason": None}))
                elif kind == "retract":
                    # A stream cannot take text back: say that a revised answer follows.
                    note = "\n\n(revised after more retrieval) "
                    yield sse(None, envelope(chunk, {"delta": {"content": note}, "finish_reason": None}))
                elif kind == "done":
                    yield sse(None, envelope(chunk, {"delta": {}, "finish_reason": "stop"}, trellis=data))
                else:
                    yield sse(None, data)
            yield sse(None, "[DONE]")

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    # -- writing ------------------------------------------------------------------------------------------

    @app.post(
        "/ingest",
        tags=["documents"],
        status_code=202,
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                                "kind": {"type": "string", "enum": ["auto", "documents", "triples"]},
                            },
                            "required": ["files"],
                        }
                    },
                    "application/json": {"schema": TriplesRequest.model_json_schema()},
                }
            }
        },
    )
    async def ingest(request: Request, wait: bool = False) -> JSONResponse:
        """Upload documents (txt, md, html, pdf, json, jsonl) or triples (tsv, csv, or jsonl with kind=triples)
        as multipart `files`, or post triples as JSON. Ingestion runs as a job: 202 with its status URL, or
        with `?wait=true` 200 once it has finished. Needs the API key (or loopback when none is set)."""
        require_writer(request)
        content_type = request.headers.get("content-type", "")
        job_id = uuid.uuid4().hex[:12]
        if content_type.startswith("application/json"):
            try:
                triples = TriplesRequest.model_validate_json(await request.body())
            except ValidationError as error:
                raise RequestValidationError(error.errors()) from None
            name = safe_upload_name(f"{triples.source}.jsonl")
            lines = "".join(json.dumps(t.model_dump(), ensure_ascii=False) + "\n" for t in triples.triples)
            saved = service.save_upload(name, lines.encode("utf-8"))
            job = IngestJob(job_id, "triples", [saved], source=triples.source)
        elif content_type.startswith("multipart/form-data"):
            job = await _upload_job(service, request, job_id)
        else:
            raise HTTPException(415, "send multipart/form-data with `files`, or JSON with `triples`")
        future = service.submit_job(job)
        if wait:
            await future
            return JSONResponse(job.public(), status_code=200 if job.state == "done" else 422)
        return JSONResponse(job.public(), status_code=202)

    async def _upload_job(service: Service, request: Request, job_id: str) -> IngestJob:
        async with request.form(max_files=100) as form:
            kind = str(form.get("kind") or "auto")
            if kind not in ("auto", "documents", "triples"):
                raise HTTPException(400, f"kind: expected auto, documents or triples, got {kind!r}")
            uploads = [item for item in form.getlist("files") if not isinstance(item, str)]
            if not uploads:
                raise HTTPException(400, "files: no file uploaded")
            names = [safe_upload_name(upload.filename) for upload in uploads]
            kinds = {("triples" if Path(n).suffix.lower() in TRIPLE_SUFFIXES else "documents") for n in names}
            chosen = kind if kind != "auto" else ("triples" if kinds == {"triples"} else "documents")
            if chosen == "documents" and "triples" in kinds:
                raise HTTPException(400, "tsv and csv files are triples: upload them separately or with kind=triples")
            saved = [service.save_upload(n, await upload.read()) for n, upload in zip(names, uploads, strict=True)]
        return IngestJob(job_id, chosen, saved)  # type: ignore[arg-type]

    @app.get("/ingest/jobs/{job_id}", tags=["documents"])
    async def job_status(job_id: str) -> dict[str, Any]:
        """An ingestion job's state and per-stage progress."""
        job = service.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no ingestion job {job_id!r}")
        return job.public()

    @app.get("/ingest/jobs", tags=["documents"])
    async def jobs() -> list[dict[str, Any]]:
        """Recent ingestion jobs, newest first."""
        found = sorted(service.jobs.values(), key=lambda j: j.created, reverse=True)
        return [job.public() for job in found]

    @app.delete("/documents/{doc_id:path}", tags=["documents"])
    async def delete_document(doc_id: str, request: Request) -> dict[str, Any]:
        """Delete a document: its chunks, vectors, and the facts no other source supports."""
        require_writer(request)
        loop = asyncio.get_running_loop()
        deleted = await loop.run_in_executor(service.ingest_executor, service.delete_document, doc_id)
        if not deleted:
            raise HTTPException(404, f"no such document: {doc_id!r}")
        return {"deleted": doc_id}

    # -- the web page -------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/upload", include_in_schema=False)
    async def upload_page() -> FileResponse:
        return FileResponse(STATIC / "upload.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
