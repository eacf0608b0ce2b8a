"""The HTTP API's refusals and bookkeeping that need an app of their own: per-thread turn locks, the linear
scan of OpenAI messages, trusted proxies and the test client's Host, deletes beside a long ingestion, and the
clean-up of an interrupted ingestion at start. Apps run in process over their own data dirs; keyless writes
come from a loopback client address, and the test client's Host (`testserver`) is allowed where wanted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agents.graph import KEPT_TURNS
from app.admission import ThreadBusy, TurnLocks
from app.server import ChatMessage, conversation_of, create_app
from app.service import document_rows, status_report
from tests.test_server import server_settings

LOOPBACK_CLIENT = ("127.0.0.1", 50000)
NO_FILES = {"other": ("x.txt", b"x", "text/plain")}  # a multipart write that is 400 once past the writer check


@pytest.fixture
def local_app(tmp_path: Path) -> Iterator[FastAPI]:
    app = create_app(server_settings(tmp_path / "data", allowed_hosts=["testserver"]))
    try:
        yield app
    finally:
        app.state.service.close()


# -- one turn at a time per thread -------------------------------------------------------------------------


def test_turn_locks_serialise_refuse_when_busy_and_forget_idle_threads() -> None:
    async def scenario() -> None:
        locks = TurnLocks(max_waiting=1, wait_s=0.2)
        await locks.acquire("t")
        order: list[str] = []

        async def second() -> None:
            await locks.acquire("t")
            order.append("second ran")
            locks.release("t")

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.05)
        with pytest.raises(ThreadBusy) as crowded:  # one running, one waiting: a third is refused at once
            await locks.acquire("t")
        assert crowded.value.status_code == 409 and "'t'" in str(crowded.value.detail)
        await locks.acquire("other")  # other threads are not held up
        locks.release("other")
        order.append("first done")
        locks.release("t")
        await waiting
        assert order == ["first done", "second ran"]
        assert len(locks) == 0, "a thread with no turn in flight keeps no lock"

        await locks.acquire("t")
        started = time.perf_counter()
        with pytest.raises(ThreadBusy) as timed_out:
            await locks.acquire("t")
        assert 0.15 < time.perf_counter() - started < 2
        assert timed_out.value.headers == {"Retry-After": "1"}
        locks.release("t")
        assert len(locks) == 0

    asyncio.run(scenario())


# -- OpenAI messages ---------------------------------------------------------------------------------------


def test_conversation_is_read_in_one_pass() -> None:
    many = [ChatMessage(role="user", content=f"q{i}") for i in range(20_000)]
    started = time.perf_counter()
    question, turns = conversation_of(many)
    assert time.perf_counter() - started < 1, "the scan is linear (it was quadratic: 20,000 messages took 43 s)"
    assert question == "q19999" and len(turns) == KEPT_TURNS and turns[-1] == {"question": "q19998", "answer": ""}

    chat = [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="who directed [Night Train]"),
        ChatMessage(role="assistant", content="Anna Kowalski"),
        ChatMessage(role="user", content="unanswered"),
        ChatMessage(role="user", content="and [Cold Spring]"),
        ChatMessage(role="assistant", content="Jan Wrona"),
        ChatMessage(role="assistant", content="a second reply is not an answer to anything"),
        ChatMessage(role="user", content=[{"type": "text", "text": "when was it released"}]),
    ]
    question, turns = conversation_of(chat)
    assert question == "when was it released"
    assert turns == [
        {"question": "who directed [Night Train]", "answer": "Anna Kowalski"},
        {"question": "unanswered", "answer": ""},
        {"question": "and [Cold Spring]", "answer": "Jan Wrona"},
    ]


# -- who may write without a key ---------------------------------------------------------------------------


def test_the_test_clients_host_is_not_this_server_unless_allowed(tmp_path: Path, local_app: FastAPI) -> None:
    bare = create_app(server_settings(tmp_path / "bare"))
    try:
        refused = TestClient(bare, client=LOOPBACK_CLIENT).post("/ingest", files=NO_FILES)
        assert refused.status_code == 403 and "Host 'testserver'" in refused.json()["error"]["message"]
    finally:
        bare.state.service.close()
    admitted = TestClient(local_app, client=LOOPBACK_CLIENT).post("/ingest", files=NO_FILES)
    assert admitted.status_code == 400 and admitted.json()["error"]["message"] == "files: no file uploaded"


def test_forwarding_headers_are_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    settings = server_settings(tmp_path / "data", allowed_hosts=["testserver"], trusted_proxies=["127.0.0.0/8"])
    app = create_app(settings)
    proxied = TestClient(app, client=LOOPBACK_CLIENT)  # a proxy on this machine
    untrusted = TestClient(app, client=("192.0.2.7", 5000))
    try:
        cases = {
            (proxied, "X-Forwarded-For", "127.0.0.1"): 400,  # a browser on this machine, through the proxy
            (proxied, "Forwarded", 'for="[::1]:4711";proto=http'): 400,
            (proxied, "X-Real-IP", "203.0.113.9"): 403,
            (proxied, "Forwarded", "for=203.0.113.9"): 403,
            (proxied, "X-Forwarded-For", "127.0.0.1, 203.0.113.9"): 403,  # a spoofed hop before the real one
            (proxied, "Forwarded", "for=unknown"): 403,
            (untrusted, "X-Forwarded-For", "127.0.0.1"): 403,
        }
        for (client, header, value), expected in cases.items():
            response = client.post("/ingest", files=NO_FILES, headers={header: value})
            assert response.status_code == expected, (header, value, response.text)
        mixed = proxied.post("/ingest", files=NO_FILES, headers={"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "::1"})
        assert mixed.status_code == 400
        spoofed = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "203.0.113.9"}
        assert proxied.post("/ingest", files=NO_FILES, headers=spoofed).status_code == 403
    finally:
        app.state.service.close()


def test_unknown_trusted_proxy_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"trusted_proxies: 'proxy\.local'"):
        server_settings(tmp_path / "data", trusted_proxies=["proxy.local"])


# -- deletes beside ingestion ------------------------------------------------------------------------------


def test_a_delete_does_not_wait_behind_a_long_ingestion(local_app: FastAPI) -> None:
    client = TestClient(local_app, client=LOOPBACK_CLIENT)
    note = {"files": ("harbour.txt", b"The Pellan Harbour was dredged in 1911 by the engineer Ida Morr.", "text/plain")}
    uploaded = client.post("/ingest?wait=true", files=note)
    assert uploaded.status_code == 200 and uploaded.json()["state"] == "done", uploaded.text
    (doc_id,) = uploaded.json()["report"]["ingested"]

    # The ingestion thread busy for longer than a delete may wait (as a large upload keeps it)
    service = local_app.state.service
    release = threading.Event()
    service.ingest_executor.submit(release.wait, 20)
    try:
        started = time.perf_counter()
        refused = client.delete(f"/documents/{doc_id}")
        assert time.perf_counter() - started < 5, "the delete waited behind the ingestion"
    finally:
        release.set()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "10"
    assert "not deleted" in refused.json()["error"]["message"]
    time.sleep(0.2)  # the withdrawn delete must not run once the thread is free
    assert [d["doc_id"] for d in client.get("/documents").json()] == [doc_id]
    assert client.delete(f"/documents/{doc_id}").json() == {"deleted": doc_id}
    assert client.get("/documents").json() == []


# -- an interrupted ingestion, at the next start -----------------------------------------------------------


class Interrupted(Exception):
    """Stands for the kill: raised once a batch is written to the store but before its vectors are saved."""


def test_server_start_cleans_up_an_interrupted_ingestion(tmp_path: Path) -> None:
    from graph.backends import open_store
    from ingest.extract import SpacyExtractor
    from ingest.pipeline import Ingestor
    from lm.embeddings import get_embedder

    settings = server_settings(tmp_path / "data", allowed_hosts=["testserver"])
    corpus = tmp_path / "notes.txt"
    corpus.write_text("The Orrin Tower was raised in 1630 by the mason Kell Varga.", encoding="utf-8")

    def stop_after_the_write(stage: str, _done: int, _total: int | None) -> None:
        if stage == "documents":
            raise Interrupted

    store = open_store(settings)
    embedder = get_embedder(settings.embedding_model, "cpu")
    ingestor = Ingestor(settings, store, embedder, SpacyExtractor(background=False), progress=stop_after_the_write)
    try:
        with pytest.raises(Interrupted):
            ingestor.ingest([corpus])
    finally:
        ingestor.close()
        store.close()
    left = status_report(settings)
    assert left["chunks"] > 0 == left["vectors"], "the interruption left chunks without vectors"
    (pending,) = [row["doc_id"] for row in document_rows(settings) if row["state"] == "pending"]

    app = create_app(settings)
    try:
        client = TestClient(app)
        status = client.get("/status").json()
        assert status["documents"] == 0 and status["chunks"] == 0 == status["vectors"], status
        assert status["recovered_at_start"] == [pending]
        assert client.get("/documents").json() == []
    finally:
        app.state.service.close()
