"""The HTTP API end to end: a real uvicorn server on loopback, driven by httpx and the OpenAI client, over the
small films KG and two passages, with the default model and the embedded store."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.server import create_app
from app.serving import safe_upload_name
from config import Settings
from tests.agent_data import build_agent_data
from tests.test_kg_trie import MODEL_CACHE

GRAPH_QUESTION = "who directed the films written by [Marek Lis]"
DOCUMENT_QUESTION = "Who built the Kerrow Lighthouse?"


class LiveServer:
    """uvicorn serving `app` on a free loopback port, in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def server_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=data_dir, model_cache=MODEL_CACHE, **overrides)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_data(tmp_path_factory.mktemp("server") / "data")


@pytest.fixture(scope="module")
def live(data_dir: Path) -> Iterator[LiveServer]:
    with LiveServer(create_app(server_settings(data_dir), warm=True)) as server:
        yield server


@pytest.fixture
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=120) as opened:
        yield opened


def server_events(response: httpx.Response) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) of a Server-Sent Events response, in order of arrival."""
    events, name, data = [], None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif not line and data:
            text = "\n".join(data)
            events.append((name, text if text == "[DONE]" else json.loads(text)))
            name, data = None, []
    return events


# -- reading and asking ---------------------------------------------------------------------------------------


def test_health_status_and_openapi(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    status = client.get("/status").json()
    assert status["entities"] > 0 and status["documents"] == 2 and status["vectors"] == status["chunks"]
    assert status["generation"]["limit"] == 2 + 32
    spec = client.get("/openapi.json").json()
    for path in ("/ask", "/chat", "/v1/chat/completions", "/ingest", "/documents", "/documents/{doc_id}", "/status"):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/ingest"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_ask_answers_from_the_graph_with_paths(client: httpx.Client) -> None:
    response = client.post("/ask", json={"question": GRAPH_QUESTION})
    assert response.status_code == 200
    result = response.json()
    assert result["source"] == "graph"
    assert set(result["answers"]) == {"Anna Kowalski", "Jan Wrona"}
    path = result["path_details"][0]
    assert path["path"][0] == "Marek Lis" and path["path"][-1] == result["answer"]
    expected_keys = {"question", "answer", "answers", "paths", "path_details", "citations", "source"}
    assert expected_keys | {"confidence", "route", "entities", "trace", "free_text", "conflict"} == set(result)


def test_chat_streams_tokens_then_the_result_and_remembers_the_thread(client: httpx.Client) -> None:
    with client.stream("POST", "/chat", json={"message": DOCUMENT_QUESTION}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = server_events(response)
    names = [name for name, _ in events]
    assert names[0] == "thread" and names[-1] == "done"
    tokens = [data["text"] for name, data in events if name == "token"]
    assert len(tokens) >= 2, "the answer should arrive in pieces"
    done = events[-1][1]
    assert "".join(tokens).strip() == done["answer"]
    assert done["source"] == "context"
    assert done["citations"][0]["title"] == "Kerrow Lighthouse"
    # a short answer is drawn from the evidence: the candidates it was chosen among ride along
    assert done["trace"]["answer_candidates"][0]["text"] == done["answer"]
    assert any(c.get("answer_here") and done["answer"] in c["sentence"] for c in done["citations"])
    thread_id = events[0][1]["thread_id"]
    assert done["thread_id"] == thread_id == response.headers["x-thread-id"]

    # A follow-up in the same thread is read against the previous turn.
    with client.stream("POST", "/chat", json={"message": "who directed [Night Train]", "thread_id": thread_id}) as r:
        first = server_events(r)[-1][1]
    with client.stream("POST", "/chat", json={"message": "when was it released", "thread_id": thread_id}) as r:
        follow_up = server_events(r)[-1][1]
    assert first["answer"] == "Anna Kowalski"
    assert follow_up["answer"] == "2004" and follow_up["source"] == "graph"


def test_openai_client_non_streaming_and_streaming(live: LiveServer) -> None:
    from openai import OpenAI

    openai = OpenAI(base_url=f"{live.url}/v1", api_key="unused", timeout=120, max_retries=0)
    assert [m.id for m in openai.models.list()] == ["trellis"]
    completion = openai.chat.completions.create(
        model="trellis",
        messages=[
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "who directed [Night Train]"},
            {"role": "assistant", "content": "Anna Kowalski"},
            {"role": "user", "content": "when was it released"},  # read against the earlier turn
        ],
    )
    assert completion.choices[0].message.content == "2004"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model_extra["trellis"]["source"] == "graph"

    stream = openai.chat.completions.create(
        model="trellis", stream=True, messages=[{"role": "user", "content": DOCUMENT_QUESTION}]
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert sum(1 for c in chunks if c.choices[0].delta.content) >= 2
    assert chunks[-1].choices[0].finish_reason == "stop"
    final = chunks[-1].model_extra["trellis"]
    assert text.strip() == final["answer"] and final["citations"]


def test_errors_are_json_without_traces(client: httpx.Client) -> None:
    cases = [
        client.get("/no-such-page"),
        client.post("/ask", json={"query": "wrong field"}),
        client.post("/ask", content=b"{not json", headers={"content-type": "application/json"}),
        client.get("/ask"),
        client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]}),
        client.get("/ingest/jobs/nope"),
        client.delete("/documents/no-such-document"),
    ]
    assert [r.status_code for r in cases] == [404, 422, 422, 405, 400, 404, 404]
    for response in cases:
        error = response.json()["error"]
        assert error["message"] and error["code"] == response.status_code
        assert "Traceback" not in response.text
    assert "question" in cases[1].json()["error"]["message"]


# -- writing --------------------------------------------------------------------------------------------------


def test_upload_is_ingested_and_answerable_then_deleted(client: httpx.Client, data_dir: Path) -> None:
    text = b"The Ostrava Observatory was founded in 1921 by the astronomer Helena Brandt."
    response = client.post("/ingest", files={"files": ("observatory.txt", text, "text/plain")})
    assert response.status_code == 202
    job = response.json()
    for _ in range(600):
        job = client.get(job["status_url"]).json()
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert job["state"] == "done", job
    assert job["progress"]["load"] == {"done": 1, "total": 1}
    (doc_id,) = job["report"]["ingested"]
    assert any(d["doc_id"] == doc_id for d in client.get("/documents").json())
    result = client.post("/ask", json={"question": "Who founded the Ostrava Observatory?"}).json()
    assert result["citations"][0]["doc_id"] == doc_id, "the new document is searchable without a restart"

    assert client.delete(f"/documents/{doc_id}").json() == {"deleted": doc_id}
    assert all(d["doc_id"] != doc_id for d in client.get("/documents").json())
    assert not (data_dir / "uploads" / "observatory.txt").exists()
    assert client.get("/status").json()["documents"] == 2


def test_triples_posted_as_json_reach_the_graph(client: httpx.Client) -> None:
    triples = [{"head": "Quiet Meadow", "relation": "directed_by", "tail": "Lena Hart"}]
    response = client.post("/ingest?wait=true", json={"triples": triples, "source": "api-films"})
    assert response.status_code == 200, response.text
    assert response.json()["report"]["relations_created"] == 1
    result = client.post("/ask", json={"question": "who directed [Quiet Meadow]"}).json()
    assert result["answer"] == "Lena Hart" and result["source"] == "graph"
    bad = client.post("/ingest", json={"triples": [{"head": "x", "relation": ""}]})
    assert bad.status_code == 422 and "triples.0" in bad.json()["error"]["message"]


def test_bad_uploads_are_reported_by_name_and_change_nothing(client: httpx.Client) -> None:
    before = {k: v for k, v in client.get("/status").json().items() if k in ("entities", "relations", "chunks")}
    bad = [("blank.txt", b""), ("fake.pdf", b"not a pdf")]
    for name, data in bad:
        response = client.post("/ingest?wait=true", files={"files": (name, data, "application/octet-stream")})
        assert response.status_code == 200, response.text
        (problem,) = response.json()["report"]["skipped"]
        assert problem.startswith(f"{name}:"), problem  # the uploader's name, not the server's path
    after = {k: v for k, v in client.get("/status").json().items() if k in before}
    assert after == before


def test_a_triples_upload_with_a_bad_line_fails_naming_the_file_and_line(client: httpx.Client) -> None:
    """As `trellis ingest-triples` refuses it: a job whose only line is bad is failed, not `done`."""
    before = {k: v for k, v in client.get("/status").json().items() if k in ("entities", "relations")}
    for name, data, line in [
        ("broken.tsv", b"\xff\xfe\x00garbage\n", 1),
        ("short.tsv", b"Quiet Hill\tdirected_by\tIda Berg\nonly two\tfields\n", 2),
    ]:
        response = client.post("/ingest?wait=true", files={"files": (name, data, "text/tab-separated-values")})
        assert response.status_code == 422, response.text
        job = response.json()["job"]
        assert job["state"] == "failed"
        assert f"{name}:{line}:" in job["error"] and "nothing of it was written" in job["error"]
        assert "uploads/" not in job["error"]  # the uploader's name, not the server's path
        assert client.get(job["status_url"]).json()["state"] == "failed"
        queued = client.post("/ingest", files={"files": (name, data, "text/tab-separated-values")})
        assert queued.status_code == 202  # without wait: accepted, and the job says failed once it ran
        for _ in range(100):
            state = client.get(queued.json()["status_url"]).json()
            if state["state"] in ("done", "failed"):
                break
            time.sleep(0.1)
        assert state["state"] == "failed" and f"{name}:{line}:" in state["error"]
    after = {k: v for k, v in client.get("/status").json().items() if k in before}
    assert after == before  # the good line of short.tsv was not written either


def test_upload_extractor_option(client: httpx.Client) -> None:
    files = {"files": ("note.txt", b"Ida Berg painted the harbour.", "text/plain")}
    wrong = client.post("/ingest?wait=true", files=files, data={"extractor": "regex"})
    assert wrong.status_code == 400 and "extractor" in wrong.json()["error"]["message"]
    # the model extractor runs in the server's job, with the model the server answers with
    fresh = {"files": ("mill.txt", b"Oskar Lind built the old mill at Varby in 1881.", "text/plain")}
    model = client.post("/ingest?wait=true", files=fresh, data={"extractor": "model"})
    assert model.status_code == 200, model.text
    job = model.json()
    assert job["extractor"] == "model" and job["state"] == "done" and len(job["report"]["ingested"]) == 1, str(job)


def test_upload_names_never_leave_the_upload_directory(client: httpx.Client, data_dir: Path) -> None:
    outside = data_dir.parent / "escaped.txt"
    hostile = ["../escaped.txt", "..\\..\\escaped.txt", "/etc/../../escaped.txt"]
    for name in hostile:
        response = client.post(
            "/ingest?wait=true", files={"files": (name, b"Escape attempt text about Brindle Hall.", "text/plain")}
        )
        assert response.status_code == 200, response.text
        assert response.json()["files"] == ["escaped.txt"]
    assert not outside.exists()
    assert (data_dir / "uploads" / "escaped.txt").exists()
    for name in ["..", "...", "/", "noextension", "payload.exe"]:
        response = client.post("/ingest", files={"files": (name, b"x", "text/plain")})
        assert response.status_code == 400, name
    assert safe_upload_name("../../a b?.md") == "a b_.md"


def test_long_upload_names_keep_their_start_and_suffix() -> None:
    kept = safe_upload_name("b" * 300 + ".txt")
    assert kept == "b" * 196 + ".txt"  # 200 characters, visible, still a .txt
    dotted = safe_upload_name("notes" + "." * 5 + "b" * 400 + ".md")
    assert dotted.startswith("notes.") and dotted.endswith(".md") and len(dotted) == 200
    hidden_before = safe_upload_name("report." + "b" * 195 + ".txt")  # its last 200 characters begin with "."
    assert hidden_before.startswith("report.b") and hidden_before.endswith(".txt") and len(hidden_before) == 200
    assert safe_upload_name("." * 300 + "x.txt") == "x.txt"


def test_two_uploads_of_one_name_in_a_request_are_refused(client: httpx.Client, data_dir: Path) -> None:
    files = [
        ("files", ("same.txt", b"The Amber Bridge crosses the Tollen.", "text/plain")),
        ("files", ("folder/same.txt", b"The Cinder Mill stands by the Tollen.", "text/plain")),
    ]
    response = client.post("/ingest", files=files)
    assert response.status_code == 400
    assert "'same.txt' is uploaded twice" in response.json()["error"]["message"]
    assert not (data_dir / "uploads" / "same.txt").exists(), "nothing of a refused request is kept"


def test_concurrent_turns_of_one_thread_are_all_kept(live: LiveServer) -> None:
    questions = [
        "who directed [Night Train]",
        "who wrote [Cold Spring]",
        "when was [Blue Harbor] released",
        DOCUMENT_QUESTION,
        "who directed [Blue Harbor]",
    ]
    thread_id = "concurrent-turns"

    def turn(question: str) -> tuple[int, Any]:
        with httpx.Client(base_url=live.url, timeout=120) as own:
            response = own.post("/chat", json={"message": question, "thread_id": thread_id})
            return response.status_code, server_events(response)[-1]

    with ThreadPoolExecutor(len(questions)) as pool:
        results = list(pool.map(turn, questions))
    assert [status for status, _ in results] == [200] * len(questions)
    assert all(name == "done" for _status, (name, _data) in results), results
    service = live.server.config.app.state.service
    stored = service.chat_agent.get_state({"configurable": {"thread_id": thread_id}}).values["conversation"]
    assert sorted(turn["question"] for turn in stored) == sorted(questions), "every turn is in the thread"
    # The last turn's lock is released on the event loop once its work has returned, which can be just after
    # its `done` event reached the client: wait for that moment rather than race it.
    deadline = time.monotonic() + 5
    while len(service.turns) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(service.turns) == 0, "no lock outlives its thread's turns"


def _admitted(response: httpx.Response) -> bool:
    """A multipart write with no `files` field: 400 once past the writer check, 403 when refused before it."""
    assert response.status_code in (400, 403), response.text
    return response.status_code == 400


def test_cross_site_writes_are_refused_without_a_key(client: httpx.Client, live: LiveServer) -> None:
    port = int(live.url.rsplit(":", 1)[1])
    no_files = {"other": ("x.txt", b"x", "text/plain")}

    def write(**headers: str) -> httpx.Response:
        return client.post("/ingest", files=no_files, headers=headers)

    evil_origin = write(Origin="https://evil.example")
    assert evil_origin.status_code == 403 and "Origin 'https://evil.example'" in evil_origin.json()["error"]["message"]
    assert evil_origin.json()["error"]["type"] == "forbidden"
    rebound = write(Host=f"evil.example:{port}")  # DNS rebinding: evil.example now resolves to 127.0.0.1
    assert rebound.status_code == 403 and "Host 'evil.example" in rebound.json()["error"]["message"]
    documents = client.get("/documents").json()
    delete = client.delete(f"/documents/{documents[0]['doc_id']}", headers={"Host": f"evil.example:{port}"})
    assert delete.status_code == 403
    assert client.get("/documents").json() == documents
    assert not _admitted(write(Origin="null"))
    assert not _admitted(write(Origin=f"http://localhost:{port + 1}")), "another local site is another origin"
    # This server's own pages (same origin), and clients that send no Origin (curl, scripts)
    assert _admitted(write(Origin=live.url))
    assert _admitted(write(Origin=f"http://localhost:{port}", Host=f"localhost:{port}"))
    assert _admitted(write())
    assert client.get("/upload", headers={"Host": f"evil.example:{port}"}).status_code == 200, "reads stay open"


def test_forwarding_headers_make_a_write_remote_unless_trusted(client: httpx.Client) -> None:
    """No proxy is trusted by default: a request with any forwarding header is not from this machine."""
    no_files = {"other": ("x.txt", b"x", "text/plain")}
    for header, value in [
        ("X-Real-IP", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9;proto=https"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-For", "127.0.0.1"),  # even a proxy's word that the client is local is not taken
    ]:
        response = client.post("/ingest", files=no_files, headers={header: value})
        assert response.status_code == 403, (header, value)
        assert "this machine only" in response.json()["error"]["message"]


def test_many_messages_are_refused_at_once_and_the_server_stays_responsive(live: LiveServer) -> None:
    flood = {"messages": [{"role": "user", "content": ""}] * 20_000}  # about 600 KB, under the body limit

    def health_while(call: Any) -> tuple[Any, list[float]]:
        seconds: list[float] = []
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(call)
            while not pending.done():
                started = time.perf_counter()
                assert httpx.get(f"{live.url}/health", timeout=5).status_code == 200
                seconds.append(time.perf_counter() - started)
                time.sleep(0.05)
            return pending.result(), seconds

    started = time.perf_counter()
    response, health = health_while(lambda: httpx.post(f"{live.url}/v1/chat/completions", json=flood, timeout=120))
    assert time.perf_counter() - started < 5
    assert response.status_code == 422
    assert "messages" in response.json()["error"]["message"] and "256" in response.json()["error"]["message"]
    assert max(health, default=0) < 1


def test_question_limit_counts_tokens(client: httpx.Client) -> None:
    emoji = "\U0001f600" * 300  # 300 characters, 900 tokens
    asked = client.post("/ask", json={"question": emoji})
    assert asked.status_code == 422
    assert asked.json()["error"]["message"] == "question: 900 tokens, over the limit of 300 tokens"
    chat = client.post("/chat", json={"message": emoji})
    assert chat.status_code == 422 and "message: 900 tokens" in chat.json()["error"]["message"]
    openai = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": emoji}]})
    assert openai.status_code == 400 and "300 tokens" in openai.json()["error"]["message"]
    too_many_chars = client.post("/ask", json={"question": "a" * 1001})
    assert too_many_chars.status_code == 422 and "1000 characters" in too_many_chars.json()["error"]["message"]
    long_but_fine = " ".join(["Who built the Kerrow Lighthouse?"] * 30)  # 989 characters, about 210 tokens
    assert client.post("/ask", json={"question": long_but_fine}).status_code == 200


# -- limits and refusals (apps over their own data dirs, driven in process; the client address is settable) --


def test_writes_from_other_machines_are_refused_without_a_key(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path / "data"))
    remote = TestClient(app, client=("192.0.2.7", 5000))  # an httpx client whose requests come from that address
    try:
        upload = remote.post("/ingest", files={"files": ("a.txt", b"text", "text/plain")})
        assert upload.status_code == 403 and "TRELLIS_API_KEY" in upload.json()["error"]["message"]
        assert remote.delete("/documents/anything").status_code == 403
        assert remote.get("/documents").status_code == 200, "reads stay open"
        assert not (tmp_path / "data" / "uploads").exists()
    finally:
        remote.close()
        app.state.service.close()


def test_api_key_guards_writes_and_upload_size_is_limited(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path / "data", api_key="s3cret", max_upload_mb=0.01))  # 10,485 bytes
    local = TestClient(app)  # with a key set, the key decides whatever the address
    small = {"files": ("note.txt", b"Harlow Mill grinds grain for the village of Tess.", "text/plain")}
    try:
        assert local.post("/ingest", files=small).status_code == 401, "loopback is not enough once a key is set"
        wrong = local.post("/ingest", files=small, headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        ok = local.post("/ingest?wait=true", files=small, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200 and ok.json()["state"] == "done"

        big = {"files": ("big.txt", b"word " * 4000, "text/plain")}
        refused = local.post("/ingest", files=big, headers={"X-API-Key": "s3cret"})
        assert refused.status_code == 413 and "limit" in refused.json()["error"]["message"]

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
            yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n\r\n'
            for _ in range(40):
                yield b"x" * 1000
            yield b"\r\n--b--\r\n"

        headers = {"X-API-Key": "s3cret", "content-type": "multipart/form-data; boundary=b"}
        streamed = local.post("/ingest", content=chunked(), headers=headers)
        assert streamed.status_code == 413
        assert sorted(p.name for p in (tmp_path / "data" / "uploads").iterdir()) == ["note.txt"]
        assert [d["title"] for d in local.get("/documents").json()] == ["note"]
    finally:
        local.close()
        app.state.service.close()


def test_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    """With one worker and no queue, a question beside a running one is refused at once, not queued."""
    app = create_app(server_settings(tmp_path / "data", generation_workers=1, generation_queue=0))
    gate = app.state.service.gate
    release = threading.Event()

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            running = gate.submit(lambda: release.wait(30))
            refused = await client.post("/ask", json={"question": "anything"})
            stream_refused = await client.post("/chat", json={"message": "anything"})
            release.set()
            await running
            return refused, stream_refused

    try:
        refused, stream_refused = asyncio.run(scenario())
    finally:
        release.set()
        app.state.service.close()
    for response in (refused, stream_refused):
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["type"] == "queue_full"
    assert gate.outstanding == 0 and gate.refused == 2


def test_cross_origin_calls_only_from_configured_origins(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path / "data", cors_origins=["https://chat.example"]))
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    try:
        client = TestClient(app)
        allowed = client.options("/v1/chat/completions", headers={"Origin": "https://chat.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://chat.example"
        other = client.options("/v1/chat/completions", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
        simple = client.get("/health", headers={"Origin": "https://evil.example"})
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
    finally:
        app.state.service.close()


def test_unexpected_errors_become_json_500(tmp_path: Path) -> None:
    app = create_app(server_settings(tmp_path / "data"))

    @app.get("/explode")
    async def explode() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    try:
        response = TestClient(app, raise_server_exceptions=False).get("/explode")
    finally:
        app.state.service.close()
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "internal error (RuntimeError)"
    assert "secret" not in response.text


def test_a_document_named_like_a_triples_source_never_takes_its_facts_through_the_api(client: httpx.Client) -> None:
    triples = [{"head": "Kestrel Bay", "relation": "directed_by", "tail": "Ivo Marsh"}]
    posted = client.post("/ingest?wait=true", json={"triples": triples})  # the default source, api-triples
    assert posted.status_code == 200, posted.text
    upload = client.post(
        "/ingest?wait=true", files={"files": ("films.tsv", b"Kestrel Bay\twritten_by\tNora Vale\n", "text/plain")}
    )
    assert upload.status_code == 200, upload.text
    before = client.get("/status").json()["relations"]
    records = [{"id": "api-triples", "text": "A note on a bay."}, {"id": "films.tsv", "text": "A note on films."}]
    lines = "\n".join(json.dumps(r) for r in records).encode()
    documents = client.post("/ingest?wait=true", files={"files": ("notes.jsonl", lines, "application/json")})
    assert sorted(documents.json()["report"]["ingested"]) == ["api-triples", "films.tsv"]
    for doc_id in ("api-triples", "films.tsv"):
        assert client.delete(f"/documents/{doc_id}").json() == {"deleted": doc_id}
    assert client.get("/status").json()["relations"] == before
    result = client.post("/ask", json={"question": "who directed [Kestrel Bay]"}).json()
    assert result["answer"] == "Ivo Marsh"


# -- the OpenAI endpoint, faithful to the API ------------------------------------------------------------------


def test_answer_cut_holds_a_stop_string_across_pieces_and_counts_the_limit() -> None:
    from app.server import AnswerCut

    def chars(text: str) -> list[int]:  # one token a character, so the limits are easy to read
        return [ord(c) for c in text]

    def text(ids: list[int]) -> str:
        return "".join(map(chr, ids))

    cut = AnswerCut(chars, text, ["END"], None)
    assert [cut.feed(p) for p in ("abc E", "N", "xy E", "ND zzz")] == ["abc ", "", "ENxy ", ""]
    assert (cut.sent, cut.finish, cut.close()) == ("abc ENxy ", "stop", "")
    limited = AnswerCut(chars, text, [], 5)
    assert [limited.feed(p) for p in ("abc", "def", "g")] == ["abc", "de", ""]
    assert (limited.finish, limited.tokens()) == ("length", 5)
    held = AnswerCut(chars, text, ["!!"], None)
    assert (held.feed("wow!"), held.close(), held.finish) == ("wow", "!", None)


def test_openai_endpoint_usage_limits_and_stop(live: LiveServer) -> None:
    from openai import OpenAI

    encode = live.server.config.app.state.service.resources.model.encode
    openai = OpenAI(base_url=f"{live.url}/v1", api_key="unused", timeout=120, max_retries=0)
    messages = [{"role": "user", "content": DOCUMENT_QUESTION}]
    full = openai.chat.completions.create(model="trellis", messages=messages, temperature=0)
    answer = full.choices[0].message.content
    assert full.model_extra["trellis"]["source"] == "context"
    # The model read the passages (and the closed-book prompt AdaCAD weighs them against), not just the question.
    assert full.usage.prompt_tokens > 5 * len(encode(DOCUMENT_QUESTION))
    assert full.usage.prompt_tokens == full.model_extra["trellis"]["trace"]["prompt_tokens"]
    assert full.usage.completion_tokens == len(encode(answer)) >= 2
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens

    short = openai.chat.completions.create(model="trellis", messages=messages, max_tokens=1)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens <= 1
    assert short.choices[0].message.content and answer.startswith(short.choices[0].message.content)

    stop = answer[1:3]  # found at 1 or before: the answer is cut ahead of it
    stopped = openai.chat.completions.create(model="trellis", messages=messages, stop=[stop, "never there"])
    assert stopped.choices[0].message.content == answer[: answer.find(stop)]
    assert stopped.choices[0].finish_reason == "stop"

    chunks = list(
        openai.chat.completions.create(
            model="trellis",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=2,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(encode(text)) <= 2
    assert chunks[-2].choices[0].finish_reason == "length" and answer.startswith(text)
    assert chunks[-1].usage.prompt_tokens > 5 * len(encode(DOCUMENT_QUESTION))


def test_openai_endpoint_refuses_what_it_cannot_honour(live: LiveServer) -> None:
    import openai as api

    openai = api.OpenAI(base_url=f"{live.url}/v1", api_key="unused", timeout=120, max_retries=0)
    messages = [{"role": "user", "content": GRAPH_QUESTION}]
    with pytest.raises(api.NotFoundError) as unknown:
        openai.chat.completions.create(model="gpt-4o", messages=messages)
    assert (unknown.value.code, unknown.value.param, unknown.value.type) == (
        "model_not_found",
        "model",
        "invalid_request_error",
    )
    refused = [
        ({"temperature": 0.7}, "temperature"),
        ({"n": 2}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
    ]
    for extra, param in refused:
        with pytest.raises(api.BadRequestError) as bad:
            openai.chat.completions.create(model="trellis", messages=messages, **extra)
        assert bad.value.param == param and bad.value.type == "invalid_request_error", extra
        assert bad.value.status_code == 400 and param in bad.value.message
    with pytest.raises(api.BadRequestError) as empty:
        openai.chat.completions.create(model="trellis", messages=[])
    assert empty.value.param == "messages"
