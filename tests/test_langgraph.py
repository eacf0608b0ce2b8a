"""The agent by LangGraph's conventions: JSON schemas on Python 3.11, chat `messages` in and an AI message out,
and a `langgraph.json` that LangGraph's tooling can load on a fresh checkout (its dev server in a slow test)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver

import agents.graph as agent_graph
from agents.graph import KEPT_TURNS, ask, build_graph, make_graph, make_graph_async, turns_of
from agents.resources import Resources
from config import Settings
from tests.agent_data import build_agent_data
from tests.test_kg_trie import MODEL_CACHE

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"answer", "answers", "paths", "path_details", "citations", "source", "confidence", "route"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_data(tmp_path_factory.mktemp("langgraph") / "data")


@pytest.fixture(scope="module")
def resources(data_dir: Path) -> Iterator[Resources]:
    with Resources.open(Settings(data_dir=data_dir, model_cache=MODEL_CACHE)) as opened:
        yield opened


@pytest.fixture(scope="module")
def agent(resources: Resources):
    return build_graph(resources)


def test_the_compiled_graph_describes_its_input_and_output(agent) -> None:
    """What LangGraph Studio and Server ask of a graph (pydantic refused typing.TypedDict before 3.12)."""
    given = agent.get_input_jsonschema()
    assert {"question", "messages", "conversation"} <= given["properties"].keys()
    returned = agent.get_output_jsonschema()
    assert {"messages", "answer", "answers", "used_paths", "citations", "source", "trace"} <= returned[
        "properties"
    ].keys()
    assert not any(key.startswith("_") for key in returned["properties"])  # a turn's working data stays inside
    json.dumps([given, returned])  # plain JSON, as the server sends it


def test_a_chat_message_list_is_answered_with_an_ai_message_carrying_the_result(agent) -> None:
    state = agent.invoke({"messages": [{"role": "user", "content": "who directed [Night Train]"}]})
    *_, asked, reply = state["messages"]
    assert isinstance(asked, HumanMessage) and asked.content == "who directed [Night Train]"
    assert isinstance(reply, AIMessage) and reply.content == "Anna Kowalski"
    result = reply.response_metadata["trellis"]
    assert result.keys() >= RESULT_KEYS
    assert result["source"] == "graph" and result["paths"] == [["Night Train", "-directed_by->", "Anna Kowalski"]]
    # the state keeps its own keys for callers that read them (agents.graph.ask, the CLI, the HTTP API)
    assert state["answer"] == "Anna Kowalski" and state["used_paths"][0]["path"] == result["paths"][0]


def test_a_document_answer_cites_its_chunk_in_the_message(agent) -> None:
    state = agent.invoke({"messages": [HumanMessage("Who built the Kerrow Lighthouse?")]})
    result = state["messages"][-1].response_metadata["trellis"]
    assert result["source"] == "context" and result["answer"] == "Thomas Abernethy"
    assert result["citations"][0]["doc_id"] == "lighthouse"
    assert result["citations"] == state["citations"]


def test_earlier_messages_are_the_conversation(agent) -> None:
    """A stateless front end sends the whole history: the follow-up's "it" is read against the earlier turn."""
    history = [
        SystemMessage("You answer questions about films."),
        HumanMessage("who directed [Night Train]"),
        AIMessage("Anna Kowalski"),
        {"role": "user", "content": "when was it released"},
    ]
    state = agent.invoke({"messages": history})
    assert state["question"] == "when was it released"
    assert state["conversation"][0] == {"question": "who directed [Night Train]", "answer": "Anna Kowalski"}
    assert state["entities"] and state["entities"][0]["name"] in {"Night Train", "Anna Kowalski"}
    assert state["messages"][-1].content == "2004"


def test_a_thread_mixes_question_and_message_turns(resources: Resources) -> None:
    """As LangGraph Server runs it: a checkpointed thread, each run handing in only the new message."""
    chat = build_graph(resources, InMemorySaver())
    thread = {"configurable": {"thread_id": "films"}}
    assert ask(chat, "who directed [Night Train]", thread_id="films")["answer"] == "Anna Kowalski"
    state = chat.invoke({"messages": [{"role": "user", "content": "when was it released"}]}, thread)
    assert state["answer"] == "2004"
    assert [type(m) for m in state["messages"]] == [HumanMessage, AIMessage, HumanMessage, AIMessage]
    assert [turn["question"] for turn in state["conversation"]] == [
        "who directed [Night Train]",
        "when was it released",
    ]
    # a `question` turn after message turns answers that question, not the last human message again
    assert ask(chat, "who wrote [Cold Spring]", thread_id="films")["answer"] == "Marek Lis"
    assert [m.content for m in chat.get_state(thread).values["messages"]][-2:] == [
        "who wrote [Cold Spring]",
        "Marek Lis",
    ]


def test_a_thread_keeps_its_last_turns_of_messages(resources: Resources) -> None:
    """Messages are capped like the conversation: a long thread's checkpoints do not grow without end."""
    chat = build_graph(resources, InMemorySaver())
    thread = {"configurable": {"thread_id": "long"}}
    questions = [f"who directed [{film}]" for film in ("Night Train", "Blue Harbor", "Cold Spring")] * 8
    for question in questions[: KEPT_TURNS + 1]:
        chat.invoke({"messages": [{"role": "user", "content": question}]}, thread)
    messages = chat.get_state(thread).values["messages"]
    assert len(messages) == 2 * KEPT_TURNS
    assert [m.content for m in messages[::2]] == questions[1 : KEPT_TURNS + 1]  # the first turn is gone


def test_a_message_a_failed_run_took_up_is_not_asked_again(resources: Resources) -> None:
    """A run that died after taking up its human message leaves it unanswered in the thread; the next run's
    `question` is the question."""
    chat = build_graph(resources, InMemorySaver())
    thread = {"configurable": {"thread_id": "t"}}
    stale = HumanMessage("who directed [Night Train]", id="stale")
    chat.update_state(thread, {"messages": [stale], "question": stale.content, "_asked": "stale"}, as_node="intake")
    result = ask(chat, "who wrote [Cold Spring]", thread_id="t")
    assert result["question"] == "who wrote [Cold Spring]" and result["answer"] == "Marek Lis"


def test_without_a_question_the_run_is_refused(agent) -> None:
    with pytest.raises(ValueError, match="no question"):
        agent.invoke({"messages": [{"role": "system", "content": "be brief"}]})
    with pytest.raises(ValueError, match="no question"):  # the last human message is already answered
        agent.invoke({"messages": [HumanMessage("who directed [Night Train]"), AIMessage("Anna Kowalski")]})


def test_turns_pair_each_human_message_with_the_reply_after_it() -> None:
    messages = [
        HumanMessage("first"),
        HumanMessage("second"),
        AIMessage("answer to second"),
        AIMessage("an extra reply"),
        HumanMessage([{"type": "text", "text": "third"}, {"type": "image_url", "image_url": {"url": "x.png"}}]),
    ]
    assert turns_of(messages) == [
        {"question": "first", "answer": ""},
        {"question": "second", "answer": "answer to second"},
        {"question": "third", "answer": ""},
    ]


def test_langgraph_json_loads_on_a_fresh_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file it names exists in a checkout (no `.env`), and its graph builds over an empty data directory."""
    config = json.loads((ROOT / "langgraph.json").read_text(encoding="utf-8"))
    assert "env" not in config or (ROOT / config["env"]).is_file()
    assert list(config["graphs"]) == ["trellis"]
    spec = config["graphs"]["trellis"]
    path, attribute = spec.split(":")
    assert (ROOT / path).is_file()
    factory = getattr(importlib.import_module(path.removeprefix("./").removesuffix(".py").replace("/", ".")), attribute)
    assert factory is make_graph_async

    monkeypatch.chdir(tmp_path)  # the default data directory, ./trellis_data, does not exist yet
    monkeypatch.delenv("TRELLIS_DATA_DIR", raising=False)
    monkeypatch.setenv("TRELLIS_MODEL_CACHE", str(MODEL_CACHE))
    monkeypatch.setattr(agent_graph, "_SERVED", {})
    try:
        graph = asyncio.run(factory())
        assert make_graph() is graph  # built once per process: the server calls the factory for every request
        assert "messages" in graph.get_input_jsonschema()["properties"]
        assert (tmp_path / "trellis_data" / "graph.lbug").exists()
    finally:
        if "resources" in agent_graph._SERVED:
            agent_graph._SERVED["resources"].store.close()


# -- LangGraph's own dev server, where langgraph-cli[inmem] is installed (it is not a Trellis dependency) ----


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("langgraph_api") is None, reason='needs `pip install "langgraph-cli[inmem]"`'
)
def test_langgraph_dev_serves_the_agent(data_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "langgraph-dev.log"
    environment = {
        **os.environ,
        "TRELLIS_DATA_DIR": str(data_dir),
        "TRELLIS_MODEL_CACHE": str(MODEL_CACHE),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
    }
    # `langgraph dev` reads the config's paths against its working directory and keeps its own state there
    # (.langgraph_api/): it runs in the test's folder, on langgraph.json with those paths made absolute
    config = json.loads((ROOT / "langgraph.json").read_text(encoding="utf-8"))
    config["dependencies"] = [str(ROOT / dependency) for dependency in config["dependencies"]]
    config["graphs"] = {name: str(ROOT / spec) for name, spec in config["graphs"].items()}
    (tmp_path / "langgraph.json").write_text(json.dumps(config), encoding="utf-8")
    command = [sys.executable, "-m", "langgraph_cli", "dev", "--no-browser", "--no-reload"]
    with log.open("wb") as output:
        server = subprocess.Popen(
            [*command, "--port", str(_free_port())],
            cwd=tmp_path,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its reloader and workers end with it
        )
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(rb"API: \S*(http://127\.0\.0\.1:\d+)", log.read_bytes())):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        with httpx.Client(base_url=found.group(1).decode(), timeout=120) as client:
            while not _answers(client, "/ok"):  # the address is printed before the server listens
                assert server.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.5)
            [assistant] = client.post("/assistants/search", json={"graph_id": "trellis"}).json()
            schemas = client.get(f"/assistants/{assistant['assistant_id']}/schemas").json()
            assert "messages" in schemas["input_schema"]["properties"]
            assert "answer" in schemas["output_schema"]["properties"]
            thread = client.post("/threads", json={}).json()["thread_id"]
            for question, expected in (
                ("who directed [Night Train]", "Anna Kowalski"),
                ("when was it released", "2004"),
            ):
                run = {
                    "assistant_id": assistant["assistant_id"],
                    "input": {"messages": [{"role": "user", "content": question}]},
                }
                state = client.post(f"/threads/{thread}/runs/wait", json=run).json()
                reply = state["messages"][-1]
                assert reply["type"] == "ai" and reply["content"] == expected, state
                assert reply["response_metadata"]["trellis"]["source"] == "graph"
    finally:
        _end_session(server)


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.TransportError:
        return False


def _end_session(server: subprocess.Popen[bytes]) -> None:
    """End the server and every process of its session (the session outlives a server that exited first)."""
    for stop, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, stop)
        except ProcessLookupError:
            break  # nothing of the session is left
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
