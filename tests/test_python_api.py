"""The Python API (`app.library.Trellis`) and the LangChain retriever, on the agent's small films KG and two
passages, ingested through the API itself; and the example script that shows them."""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from agents.resources import Resources
from agents.retriever import TrellisRetriever
from app.library import Trellis
from config import Settings
from ingest.triples import TripleFileError
from tests.agent_data import EXAMPLE_SCHEMA, PASSAGES, TRIPLES
from tests.test_kg_trie import MODEL_CACHE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "films.tsv").write_text(TRIPLES, encoding="utf-8")
    (folder / "passages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PASSAGES), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def trellis(tmp_path_factory: pytest.TempPathFactory, inputs: Path) -> Iterator[Trellis]:
    with Trellis.open(tmp_path_factory.mktemp("library") / "data", model_cache=MODEL_CACHE) as opened:
        opened.ingest_triples(inputs / "films.tsv", schema=EXAMPLE_SCHEMA)
        opened.ingest([inputs / "passages.jsonl"])
        yield opened


def test_ingesting_reports_and_stores_what_came_in(trellis: Trellis, inputs: Path) -> None:
    status = trellis.status()
    assert status["documents"] == 2 and status["chunks"] == status["vectors"] == 2
    assert status["entities"] >= 9 and status["relations"] >= 10
    again = trellis.ingest([inputs / "passages.jsonl"])  # unchanged documents are skipped
    assert again.ingested == [] and sorted(again.unchanged) == ["lighthouse", "river"]
    facts = trellis.ingest_triples(inputs / "films.tsv")
    assert facts.rows == 10 and facts.relations_created == 0  # idempotent


def test_a_bad_triples_file_writes_nothing(trellis: Trellis, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("Mist Road\tdirected_by\tEwa Sowa\nonly two\tfields\n", encoding="utf-8")
    before = trellis.status()["relations"]
    with pytest.raises(TripleFileError, match=r"bad\.tsv:2"):
        trellis.ingest_triples(bad)
    assert trellis.status()["relations"] == before


def test_ask_answers_from_the_graph_and_the_documents(trellis: Trellis) -> None:
    graph = trellis.ask("who directed the movies written by [Marek Lis]")
    assert graph["source"] == "graph" and set(graph["answers"]) == {"Anna Kowalski", "Jan Wrona"}
    document = trellis.ask("Who built the Kerrow Lighthouse?")
    assert document["source"] == "context" and document["answer"] == "Thomas Abernethy"
    assert document["citations"][0]["doc_id"] == "lighthouse"


def test_a_thread_remembers_its_turns(trellis: Trellis) -> None:
    assert trellis.ask("who directed [Night Train]", thread_id="films")["answer"] == "Anna Kowalski"
    assert trellis.ask("when was it released", thread_id="films")["answer"] == "2004"
    assert not trellis.ask("when was it released", thread_id="other")["entities"]


def test_stream_gives_tokens_then_the_result(trellis: Trellis) -> None:
    events = list(trellis.stream("Who built the Kerrow Lighthouse?"))
    *written, last = events
    assert written and all("token" in e or "retract" in e for e in written)
    result = last["result"]
    assert result["answer"] == "Thomas Abernethy" and result["trace"]["total_s"] > 0
    assert "Abernethy" in "".join(e.get("token", "") for e in written)
    assert result.keys() == trellis.ask("Who built the Kerrow Lighthouse?").keys()  # the same result as `ask`


def test_the_retriever_returns_documents_with_their_citation(trellis: Trellis) -> None:
    retriever = trellis.retriever(k=2)
    assert isinstance(retriever, BaseRetriever)
    documents = retriever.invoke("Who was the engineer of the Kerrow Lighthouse?")
    assert all(isinstance(d, Document) for d in documents) and len(documents) == 2
    best = documents[0]
    assert "Thomas Abernethy" in best.page_content
    assert best.id == best.metadata["chunk_id"] == "lighthouse#0"
    assert best.metadata["doc_id"] == "lighthouse" and best.metadata["title"] == "Kerrow Lighthouse"
    assert best.metadata["page"] == 0 and 0 < best.metadata["score"] <= 1
    assert documents[1].metadata["score"] <= best.metadata["score"]
    assert "Kerrow Lighthouse" in best.metadata["entities"]  # the linked name that seeded the graph spread
    [vector_only] = trellis.retriever(k=1, hybrid=False).batch(["Where does the Vellin River flow?"])
    assert [d.metadata["doc_id"] for d in vector_only] == ["river"]


def test_the_retriever_loads_no_language_model(trellis: Trellis) -> None:
    """Beside the writer, over a read-only store: retrieval needs the embedder only."""
    with Resources.open(Settings(data_dir=trellis.settings.data_dir, model_cache=MODEL_CACHE)) as resources:
        [document] = TrellisRetriever(resources=resources, k=1).invoke("the Grey Sea")
        assert document.metadata["doc_id"] == "river"
        assert not resources.models_loaded


def test_read_only_asks_but_does_not_write(trellis: Trellis, inputs: Path) -> None:
    with Trellis.open(trellis.settings.data_dir, read_only=True, model_cache=MODEL_CACHE) as reader:
        assert reader.ask("who wrote [Cold Spring]")["answer"] == "Marek Lis"
        with pytest.raises(PermissionError, match="read-only"):
            reader.ingest([inputs / "passages.jsonl"])


def test_delete_removes_a_document(tmp_path: Path, inputs: Path) -> None:
    with Trellis.open(tmp_path / "data", model_cache=MODEL_CACHE) as trellis:
        trellis.ingest([inputs / "passages.jsonl"])
        assert trellis.delete(["river", "nope"]) == (["river"], ["nope"])
        assert trellis.status()["documents"] == 1
        assert [d.metadata["doc_id"] for d in trellis.retriever(k=5).invoke("Where does the Vellin River flow?")] == [
            "lighthouse"
        ]


def test_the_example_script_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("TRELLIS_MODEL_CACHE", str(MODEL_CACHE))
    example = runpy.run_path(str(ROOT / "examples" / "python_api.py"))  # in this process: the models are loaded
    example["main"](tmp_path / "data")
    printed = capsys.readouterr().out
    assert "answer: Thomas Abernethy [context]" in printed
    assert "answer: Anna Kowalski by the path ['Night Train', '-directed_by->', 'Anna Kowalski']" in printed
    assert "follow-up: 2004" in printed
    assert "retrieved coast-" in printed
