"""The HTTP API (`trellis serve`): questions, streamed chat, an OpenAI-compatible endpoint, ingestion, a web page.

One process holds the store open for writing and shares it, serialised, between the agent and ingestion
(`app.serving`). Questions run on a small pool of worker threads behind a bounded queue, 429 with
Retry-After past it (`app.admission`), and a chat thread's turns one at a time; ingestion jobs run one at a
time on their own thread. Keyless writes come from this machine and this server's own pages only. Every
error is JSON in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from agents.graph import ask, paired_turns
from agents.state import Turn
from agents.usage import PROMPT_TALLY
from app.admission import BodyLimit, QueueFull, WriteOrigin, error_body
from app.service import chunk_row, document_rows, entity_rows, neighbourhood, relation_rows, status_report
from app.serving import TRIPLE_SUFFIXES, IngestJob, Service, refuse_duplicate_names, safe_upload_name
from config import EXTRACTORS, Settings
from graph.errors import GraphStoreError
from graph.vectors import VectorIndexError

log = logging.getLogger("trellis.server")

STATIC = Path(__file__).parent / "static"
JSON_BODY_LIMIT = 1 << 20  # bytes, for every endpoint but uploads
MODEL_NAME = "trellis"
# Longer questions are refused: the prompt holds the question twice (AdaCAD), and a 4,000-digit question
# (4,000 tokens) was measured at 35 s of a worker's time. The cost is in tokens (1,000 emoji are 3,000), so
# tokens of the language model's own tokenizer are the limit; characters are a cheap first gate before them.
MAX_QUESTION_CHARS = 1000
MAX_QUESTION_TOKENS = 300
# An OpenAI request's messages: more are refused before any is read (20,000 once stalled the server).
MAX_MESSAGES = 256
# Rows one graph read returns at most: a hub entity (a genre) has tens of thousands of relations.
MAX_GRAPH_ROWS = 1000


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None  # the request field at fault, as OpenAI names it
    code: int | str  # the HTTP status, or OpenAI's code where it has one ("model_not_found")


class ErrorResponse(BaseModel):
    """Every error: 4xx and 5xx alike."""

    error: ErrorDetail


_ERROR_MEANINGS = {
    400: "malformed request (a body that does not parse, a bad file name or type, no user message, an OpenAI "
    "parameter Trellis refuses: temperature other than 0, n over 1, more than 4 stop strings, max_tokens under 1)",
    401: "the API key is missing or wrong",
    403: "without an API key: a write from another machine, or from a page that is not this server's",
    404: "no such document, job or page; for an OpenAI request, a model other than `trellis` (model_not_found)",
    409: "the chat thread is still answering an earlier turn; see Retry-After",
    413: "request body over the limit",
    415: "unsupported content type",
    422: "a field fails validation (the message names it)",
    429: "the question queue (or ingestion queue) is full; see Retry-After",
    500: "an unexpected failure (its details are in the server log only)",
    503: "the store is unavailable, or a delete would wait behind an ingestion job; see Retry-After",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes, all with the one error shape."""
    return {code: {"model": ErrorResponse, "description": _ERROR_MEANINGS[code]} for code in (*codes, 500)}


QUESTION_ERRORS = errors(400, 422, 429, 503)
CHAT_ERRORS = errors(400, 409, 422, 429, 503)
COMPLETION_ERRORS = errors(400, 404, 422, 429, 503)
# Event-stream schemas describe one event (Open API before 3.2), whose `data` is a JSON document.
CHAT_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["thread", "token", "retract", "done", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
COMPLETION_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "description": "a chat.completion.chunk as JSON, last [DONE]"}},
}
STREAMED_OK = {
    200: {
        "description": "the answer as Server-Sent Events",
        "content": {"text/event-stream": {"schema": CHAT_EVENT}},
    }
}
COMPLETION_OK = {
    200: {
        "description": "a chat.completion object, or with `stream: true` chat.completion.chunk events",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": COMPLETION_EVENT},
        },
    }
}
WRITE_ERRORS = errors(400, 401, 403, 413, 415, 422, 429, 503)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its local `$defs` references inlined (for a hand-written request body)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


class OpenAIRefusal(HTTPException):
    """A request the OpenAI endpoint refuses, with the error type and param OpenAI clients read."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(status, message)
        self.param, self.code = param, code


def _install_error_handlers(app: FastAPI) -> None:
    kinds = {
        400: "invalid_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        409: "busy",
        413: "too_large",
        422: "invalid_request",
        503: "unavailable",
    }

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        body = error_body(error.status_code, str(error.detail), kinds.get(error.status_code, "error"))
        if isinstance(error, OpenAIRefusal):
            body = error_body(error.status_code, str(error.detail), "invalid_request_error", error.param, error.code)
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


class TripleRecord(BaseModel):
    head: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    tail: str = Field(min_length=1)


class TriplesRequest(BaseModel):
    triples: list[TripleRecord] = Field(min_length=1)
    source: str = Field(
        "api-triples", max_length=200, description="Provenance of these facts; the same source again adds to it."
    )


# -- request bodies -----------------------------------------------------------------------------------------


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    thread_id: str | None = Field(None, max_length=100, pattern=r"^[\w\-]+$")


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts
            return " ".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(BaseModel):
    model: str = MODEL_NAME
    # No lower bound here: an empty list is refused by the endpoint with OpenAI's 400, not a validation 422.
    messages: list[ChatMessage] = Field(max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens; wins when both are given
    temperature: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None

    # Other OpenAI parameters are accepted and have no effect (top_p, penalties, seed, user, ...): decoding is
    # greedy under the graph constraint, so sampling parameters change nothing.
    model_config = {"extra": "allow"}


MAX_STOP_STRINGS = 4  # as OpenAI


def completion_limits(body: CompletionRequest) -> tuple[list[str], int | None]:
    """(stop strings, token limit) of a request, after refusing what Trellis cannot honour the way OpenAI
    clients expect: an unknown model (404), no messages, sampling, several choices, a limit under one token."""
    if body.model != MODEL_NAME:
        raise OpenAIRefusal(
            404,
            f"The model `{body.model}` does not exist: this server answers as `{MODEL_NAME}` (see GET /v1/models)",
            "model",
            "model_not_found",
        )
    if not body.messages:
        raise OpenAIRefusal(400, "messages: at least one message is required", "messages")
    if body.temperature not in (None, 0):
        raise OpenAIRefusal(
            400,
            f"temperature: {body.temperature} is not supported; Trellis decodes greedily under the knowledge "
            "graph's constraint, so only 0 (or no temperature) is accepted",
            "temperature",
        )
    if body.n not in (None, 1):
        raise OpenAIRefusal(400, f"n: {body.n} choices asked for; Trellis writes one answer (n = 1)", "n")
    limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    if limit is not None and limit < 1:
        raise OpenAIRefusal(400, f"{field}: {limit} is below the minimum of 1", field)
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise OpenAIRefusal(400, f"stop: {len(stops)} strings, over the limit of {MAX_STOP_STRINGS}", "stop")
    return [stop for stop in stops if stop], limit


class AnswerCut:
    """Cuts an answer, as its text arrives piece by piece, at the first stop string and at `limit` tokens.

    The answer is decoded whole (Trellis's own budget is a few dozen tokens), so a limit is applied to its text:
    what goes out is never more than `limit` tokens of the model's tokenizer, and `finish` says why it ended.
    Text that may be the start of a stop string is held back until the next piece settles it."""

    def __init__(
        self,
        encode: Callable[[str], list[int]],
        decode: Callable[[list[int]], str],
        stops: list[str],
        limit: int | None,
    ) -> None:
        self.encode, self.decode, self.stops, self.limit = encode, decode, stops, limit
        self.sent = ""  # the text released so far
        self.held = ""
        self.finish: Literal["stop", "length"] | None = None  # set when the answer was cut

    def feed(self, piece: str) -> str:
        """The part of `piece` (with any held text) that may go out now."""
        if self.finish is not None:
            return ""
        text, self.held = self.held + piece, ""
        found = [at for at in (text.find(stop) for stop in self.stops) if at >= 0]
        if found:
            text, self.finish = text[: min(found)], "stop"
        else:
            keep = max((n for stop in self.stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)
            text, self.held = text[: len(text) - keep], text[len(text) - keep :]
        return self._within_limit(text)

    def close(self) -> str:
        """Whatever was held back, at the end of the answer."""
        text, self.held = self.held, ""
        return "" if self.finish is not None else self._within_limit(text)

    def _within_limit(self, text: str) -> str:
        if self.limit is not None and text:
            ids = self.encode(self.sent + text)
            if len(ids) > self.limit:
                # Decoding a cut inside a character gives U+FFFD: leave that character out.
                allowed = self.decode(ids[: self.limit]).rstrip("\ufffd")
                text = allowed[len(self.sent) :] if allowed.startswith(self.sent) else ""
                self.finish = "length"
        self.sent += text
        return text

    def tokens(self) -> int:
        return len(self.encode(self.sent)) if self.sent else 0


def conversation_of(messages: list[ChatMessage]) -> tuple[str, list[Turn]]:
    """(the last user message, earlier user/assistant pairs as agent turns), in one pass over the messages.

    A user message is answered by the assistant message that follows it before the next user message."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if last is None:
        raise OpenAIRefusal(400, "messages: no message with role 'user'", "messages")
    chat = (m for m in messages[:last] if m.role in ("user", "assistant"))
    turns = paired_turns((m.role == "user", m.text()[:MAX_QUESTION_CHARS]) for m in chat)
    question = messages[last].text()
    if len(question) > MAX_QUESTION_CHARS:
        raise OpenAIRefusal(400, f"messages: the last user message is over {MAX_QUESTION_CHARS} characters", "messages")
    return question, turns


# -- server-sent events -----------------------------------------------------------------------------------------


def sse(event: str | None, data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return head + "".join(f"data: {line}\n" for line in payload.split("\n")) + "\n"


def answer_stream(
    service: Service,
    run: Callable[[Callable[[dict[str, Any]], None]], dict[str, Any]],
    finished: Callable[[], None] | None = None,
) -> AsyncIterator[tuple[str, Any]]:
    """Admit one question (or raise QueueFull now, before any response starts) and yield its events:
    ("token", text), ("retract", None), then ("done", result) or ("error", body). `finished` is called on the
    event loop when the work has ended, whether or not the client is still reading."""
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

    running = service.gate.submit(work)
    if finished is not None:
        running.add_done_callback(lambda _future: finished())

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
        service.open()  # again, after an earlier lifespan closed it
        if warm:
            await asyncio.get_running_loop().run_in_executor(None, service.resources.load_models)
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
    if settings.cors_origins:  # browser front ends served from elsewhere; the API key still guards writes
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=["X-Thread-Id", "Retry-After"],
        )
    _install_error_handlers(app)

    app.state.service = service
    write_origin = WriteOrigin(settings)

    def require_writer(request: Request) -> None:
        """Writes need the API key; with none configured, they are accepted only from this machine (no
        forwarding header unless from a trusted proxy) and only from this server's own site (Host, Origin)."""
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        if key:
            given = request.headers.get("x-api-key") or ""
            authorization = request.headers.get("authorization") or ""
            if authorization.lower().startswith("bearer "):
                given = authorization[7:].strip()
            if not hmac.compare_digest(given.encode(), key.encode()):
                raise HTTPException(401, "this endpoint needs the API key (Authorization: Bearer ... or X-API-Key)")
            return
        peer = request.client.host if request.client else ""
        if not write_origin.is_local(peer, request.headers):
            raise HTTPException(403, "writes are accepted from this machine only unless TRELLIS_API_KEY is set")
        foreign = write_origin.foreign(request.scope, request.headers)
        if foreign:  # another web page in the user's browser, or DNS rebinding
            raise HTTPException(403, f"cross-site write refused: {foreign}")

    async def check_question_length(text: str, field: str, status: int) -> None:
        """Refuse a question over MAX_QUESTION_TOKENS of the language model's tokenizer (a server model's are
        estimated; counted on a thread: the first count may load the model)."""
        tokens = await asyncio.get_running_loop().run_in_executor(
            None, lambda: service.resources.model.count_tokens(text)
        )
        if tokens > MAX_QUESTION_TOKENS:
            raise HTTPException(status, f"{field}: {tokens:,} tokens, over the limit of {MAX_QUESTION_TOKENS} tokens")

    # -- reading ------------------------------------------------------------------------------------------

    @app.get("/health", tags=["status"])
    async def health() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/status", tags=["status"], responses=errors(503))
    async def status() -> dict[str, Any]:
        """Counts in the store, the models, and the question queue."""
        report = await asyncio.get_running_loop().run_in_executor(None, status_report, settings, service.store)
        return {
            **report,
            "llm_model": settings.llm_model,
            "embedding_model": settings.embedding_model,
            "models_loaded": service.resources.models_loaded,
            "generation": service.gate.state(),
            "ingest_jobs_pending": service.pending_jobs(),
            "recovered_at_start": service.recovered,
            "uptime_s": round(time.time() - service.started, 1),
        }

    @app.get("/documents", tags=["documents"], responses=errors())
    async def documents() -> list[dict[str, Any]]:
        """Every ingested document."""
        return document_rows(settings)

    # -- looking at the graph (reads: no key, as /documents) -------------------------------------------------

    async def on_store(work: Callable[[], Any]) -> Any:
        """Run a store read on a thread (the store is serialised between questions, ingestion and these)."""
        return await asyncio.get_running_loop().run_in_executor(None, work)

    @app.get("/graph/entities", tags=["graph"], responses=errors(422, 503))
    async def graph_entities(
        name: str = Query(min_length=1, max_length=MAX_QUESTION_CHARS, description="The name to look up."),
        match: Literal["exact", "normalised", "fuzzy"] = Query(
            "normalised", description="exact (name or alias), normalised (case and punctuation forgiven), fuzzy."
        ),
        limit: int = Query(20, ge=1, le=MAX_GRAPH_ROWS),
    ) -> list[dict[str, Any]]:
        """Entities called `name`, with their ids, types, aliases and sources (as `trellis graph entities`)."""
        return await on_store(lambda: entity_rows(service.store, name, match, limit))

    @app.get("/graph/relations", tags=["graph"], responses=errors(422, 503))
    async def graph_relations(
        relation: str | None = Query(
            None, max_length=MAX_QUESTION_CHARS, description="A relation type: its facts (default: every type)."
        ),
        limit: int = Query(20, ge=1, le=MAX_GRAPH_ROWS),
    ) -> list[dict[str, Any]]:
        """Relation types with their counts, or up to `limit` facts of one type (as `trellis graph relations`)."""
        return await on_store(lambda: relation_rows(service.store, relation, limit))

    @app.get("/graph/chunks/{chunk_id:path}", tags=["graph"], responses=errors(404, 503))
    async def graph_chunk(chunk_id: str) -> dict[str, Any]:
        """A chunk's text, its document and page, and the entities it mentions (as `trellis graph chunk`)."""
        row = await on_store(lambda: chunk_row(service.store, chunk_id))
        if row is None:
            raise HTTPException(404, f"no such chunk: {chunk_id!r}")
        return row

    @app.get("/graph/neighbourhood", tags=["graph"], responses=errors(404, 422, 503))
    async def graph_neighbourhood(
        entity: str = Query(min_length=1, max_length=MAX_QUESTION_CHARS, description="A name, alias or entity id."),
        limit: int = Query(50, ge=1, le=MAX_GRAPH_ROWS),
    ) -> dict[str, Any]:
        """An entity's relation types with counts, up to `limit` of its relations in both directions, and the
        chunks that mention it (as `trellis graph neighbours`)."""
        found = await on_store(lambda: neighbourhood(service.store, entity, limit))
        if found is None:
            raise HTTPException(404, f"no entity called {entity!r}")
        return found

    # -- asking -------------------------------------------------------------------------------------------

    @app.post("/ask", tags=["questions"], responses=QUESTION_ERRORS)
    async def ask_endpoint(body: AskRequest) -> dict[str, Any]:
        """One question; the same JSON as `trellis ask --json` (answer, paths, citations, source, trace)."""
        await check_question_length(body.question, "question", 422)
        return await service.gate.submit(lambda: ask(service.agent, body.question))

    @app.post("/chat", tags=["questions"], response_class=StreamingResponse, responses={**STREAMED_OK, **CHAT_ERRORS})
    async def chat(body: ChatRequest) -> StreamingResponse:
        """A turn of a conversation, streamed as Server-Sent Events.

        Events: `thread` {thread_id}; `token` {text} as the answer is decoded; `retract` {} when an
        unsupported answer is replaced after more retrieval; `done` with the whole result (paths, citations,
        source, trace); or `error` {error}. Turns of one thread are answered one at a time, in order of
        arrival; a turn that would wait over two minutes for the ones before it is refused with 409.
        """
        await check_question_length(body.message, "message", 422)
        thread_id = body.thread_id or uuid.uuid4().hex[:12]
        # A turn reads the thread's checkpoint and writes it back: two at once would lose one.
        await service.turns.acquire(thread_id)
        try:
            events = answer_stream(
                service,
                lambda emit: ask(service.chat_agent, body.message, thread_id=thread_id, on_event=emit),
                finished=lambda: service.turns.release(thread_id),
            )
        except BaseException:
            service.turns.release(thread_id)  # not admitted (queue full): the next turn may go
            raise

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

    @app.post("/v1/chat/completions", tags=["openai"], responses={**COMPLETION_OK, **COMPLETION_ERRORS})
    async def completions(body: CompletionRequest) -> Any:
        """OpenAI-compatible chat completion (streaming or not). The last user message is the question;
        earlier user/assistant pairs are the conversation; system messages are ignored. The Trellis result
        (paths, citations, source) rides along in a `trellis` field that OpenAI clients ignore.

        Honoured: `max_tokens` / `max_completion_tokens` (the answer is cut there, finish_reason "length"),
        `stop` (up to 4 strings; the answer is cut before the first), `stream_options.include_usage`, and
        `usage` (prompt tokens: those of the prompts agents/generation.py builds, a lower bound). Refused with
        400: `temperature` other than 0 (decoding is greedy), `n` over 1, empty `messages`; with 404
        `model_not_found`: a model other than `trellis`."""
        stops, limit = completion_limits(body)
        question, turns = conversation_of(body.messages)
        if not question.strip():
            raise OpenAIRefusal(400, "messages: the last user message is empty", "messages")
        await check_question_length(question, "messages: the last user message", 400)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        model = service.resources.model
        cut = AnswerCut(model.encode, model.decode, stops, limit)

        def envelope(kind: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": kind,
                "created": created,
                "model": MODEL_NAME,
                "choices": choices,
                **extra,
            }

        def choice(**fields: Any) -> list[dict[str, Any]]:
            return [{"index": 0, **fields}]

        def answered(on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
            """The agent's result, with the tokens of every prompt the model read in its trace."""
            tally: list[int] = []
            token = PROMPT_TALLY.set(tally)
            try:
                result = ask(service.agent, question, conversation=turns, on_event=on_event)
            finally:
                PROMPT_TALLY.reset(token)
            # Only a run that built no prompt (none does today) falls back to the question's own tokens.
            result["trace"]["prompt_tokens"] = sum(tally) if tally else len(model.encode(question))
            return result

        def usage(result: dict[str, Any]) -> dict[str, int]:
            read, written = result["trace"]["prompt_tokens"], cut.tokens()
            return {"prompt_tokens": read, "completion_tokens": written, "total_tokens": read + written}

        if not body.stream:
            result = await service.gate.submit(answered)
            content = cut.feed(result["answer"]) + cut.close()
            return envelope(
                "chat.completion",
                choice(message={"role": "assistant", "content": content}, finish_reason=cut.finish or "stop"),
                usage=usage(result),
                trellis=result,
            )
        events = answer_stream(service, answered)
        include_usage = body.stream_options is not None and body.stream_options.include_usage

        async def stream() -> AsyncIterator[str]:
            chunk = "chat.completion.chunk"

            def content(text: str) -> str:
                return sse(None, envelope(chunk, choice(delta={"content": text}, finish_reason=None)))

            yield sse(None, envelope(chunk, choice(delta={"role": "assistant", "content": ""}, finish_reason=None)))
            async for kind, data in events:
                # A stream cannot take text back: on a retraction, say that a revised answer follows.
                piece = {"token": data, "retract": "\n\n(revised after more retrieval) "}.get(kind)
                if piece is not None:
                    if released := cut.feed(piece or ""):
                        yield content(released)
                elif kind == "done":
                    if rest := cut.close():
                        yield content(rest)
                    finish = cut.finish or "stop"
                    yield sse(None, envelope(chunk, choice(delta={}, finish_reason=finish), trellis=data))
                    if include_usage:  # OpenAI's last chunk: no choices, the usage of the whole completion
                        yield sse(None, envelope(chunk, [], usage=usage(data)))
                else:
                    yield sse(None, data)
            yield sse(None, "[DONE]")

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    # -- writing ------------------------------------------------------------------------------------------

    @app.post(
        "/ingest",
        tags=["documents"],
        status_code=202,
        responses={200: {"description": "with ?wait=true: the finished job"}, **WRITE_ERRORS},
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                                "kind": {"type": "string", "enum": ["auto", "documents", "triples"]},
                                "extractor": {
                                    "type": "string",
                                    "enum": list(EXTRACTORS),
                                    "description": "for documents: who finds entities and relations "
                                    "(default: the server's TRELLIS_EXTRACTOR)",
                                },
                            },
                            "required": ["files"],
                        }
                    },
                    "application/json": {"schema": inline_schema(TriplesRequest)},
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
            job = await _upload_job(request, job_id)
        else:
            raise HTTPException(415, "send multipart/form-data with `files`, or JSON with `triples`")
        future = service.submit_job(job)
        if wait:
            await future
            if job.state == "failed":
                body = error_body(422, f"ingestion failed: {job.error}", "ingest_failed")
                return JSONResponse({**body, "job": job.public()}, status_code=422)
            return JSONResponse(job.public())
        return JSONResponse(job.public(), status_code=202)

    async def _upload_job(request: Request, job_id: str) -> IngestJob:
        async with request.form(max_files=100) as form:
            kind = str(form.get("kind") or "auto")
            if kind not in ("auto", "documents", "triples"):
                raise HTTPException(400, f"kind: expected auto, documents or triples, got {kind!r}")
            extractor = str(form.get("extractor") or "") or None
            if extractor is not None and extractor not in EXTRACTORS:
                raise HTTPException(400, f"extractor: expected {' or '.join(EXTRACTORS)}, got {extractor!r}")
            uploads = [item for item in form.getlist("files") if not isinstance(item, str)]
            if not uploads:
                raise HTTPException(400, "files: no file uploaded")
            names = [safe_upload_name(upload.filename) for upload in uploads]
            refuse_duplicate_names(names)
            kinds = {("triples" if Path(n).suffix.lower() in TRIPLE_SUFFIXES else "documents") for n in names}
            chosen = kind if kind != "auto" else ("triples" if kinds == {"triples"} else "documents")
            if chosen == "documents" and "triples" in kinds:
                raise HTTPException(400, "tsv and csv files are triples: upload them separately or with kind=triples")
            saved = [service.save_upload(n, await upload.read()) for n, upload in zip(names, uploads, strict=True)]
        return IngestJob(job_id, chosen, saved, extractor=extractor)  # type: ignore[arg-type]

    @app.get("/ingest/jobs/{job_id}", tags=["documents"], responses=errors(404))
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

    @app.delete("/documents/{doc_id:path}", tags=["documents"], responses=errors(401, 403, 404, 503))
    async def delete_document(doc_id: str, request: Request) -> dict[str, Any]:
        """Delete a document: its chunks, vectors, and the facts no other source supports. While an ingestion
        job holds the store for more than a moment, 503 with Retry-After (and nothing deleted)."""
        require_writer(request)
        deleted = await service.delete_document_soon(doc_id)
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
