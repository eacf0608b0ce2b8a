"""The agent end to end on a small KG and a few documents, with the default model and the embedded store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from agents.graph import ask, build_graph, instruction_of
from agents.patterns import RelationSchema, rank_patterns
from agents.resources import Resources
from app.cli import app
from config import Settings
from graph.embedded import EmbeddedGraphStore
from graph.trie import KGTrie
from lm.constraints import constrained_generate, constrained_greedy
from tests.agent_data import build_agent_data
from tests.test_kg_trie import MODEL_CACHE


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_data(tmp_path_factory.mktemp("agent") / "data")


@pytest.fixture(scope="module")
def resources(data_dir: Path) -> Iterator[Resources]:
    with Resources.open(Settings(data_dir=data_dir, model_cache=MODEL_CACHE)) as opened:
        yield opened


@pytest.fixture(scope="module")
def agent(resources: Resources):
    return build_graph(resources)


def edges_exist(resources: Resources, triples: list[list[str]]) -> bool:
    store = resources.store
    for head, relation, tail in triples:
        [entity] = store.find_entities(head, limit=1)
        if not any(e.type == relation and e.forward and e.neighbour_name == tail for e in store.edges([entity.id])):
            return False
    return True


def test_one_hop_graph_question(agent, resources: Resources) -> None:
    result = ask(agent, "who directed [Night Train]")
    assert result["source"] == "graph"
    assert result["answer"] == "Anna Kowalski"
    assert result["paths"] == [["Night Train", "-directed_by->", "Anna Kowalski"]]
    assert edges_exist(resources, result["path_details"][0]["triples"])


def test_two_hop_graph_question_follows_the_cued_relations_in_order(agent, resources: Resources) -> None:
    result = ask(agent, "who directed the movies written by [Marek Lis]")
    assert set(result["answers"]) == {"Anna Kowalski", "Jan Wrona"}
    [path] = result["paths"]
    assert path[0] == "Marek Lis" and path[1] == "<-written_by-" and path[3] == "-directed_by->"
    assert edges_exist(resources, result["path_details"][0]["triples"])


def test_a_return_cue_makes_a_chain_go_out_and_back(resources: Resources) -> None:
    [start] = resources.store.find_entities("Blue Harbor")
    question = "which movies share the screenwriter with [Blue Harbor]"
    best = rank_patterns(resources.store, start.id, question, "Blue Harbor", resources.schema)[0]
    assert best.pattern == (("written_by", True), ("written_by", False))
    names = {e.name for e in resources.store.get_entities(list(best.reach))}
    assert names == {"Cold Spring"}


def test_document_question_cites_the_chunk_it_used(agent) -> None:
    result = ask(agent, "Who built the Kerrow Lighthouse?")
    assert result["source"] == "context"
    assert result["citations"] and result["citations"][0]["doc_id"] == "lighthouse"
    assert result["answer"] == "Thomas Abernethy"  # a span of the evidence, not a sentence about it
    [cited] = [c for c in result["citations"] if c.get("answer_here")]
    assert cited["doc_id"] == "lighthouse" and result["answer"] in cited["sentence"]


def test_instructions_are_recognised() -> None:
    assert instruction_of("Ignore the documents: who built it?") == "no_documents"
    assert instruction_of("Using only the documents, who built it?") == "documents_only"
    assert instruction_of("What is the capital of France?") is None


def test_ignoring_the_documents_cites_none(agent) -> None:
    """The instruction rules out the passages (the graph, a separate source, may still answer)."""
    result = ask(agent, "Ignore the documents. Who built the Kerrow Lighthouse?")
    assert result["source"] in {"parameters", "graph"} and result["citations"] == []
    result = ask(agent, "Ignore the documents. Where does the Vellin River flow?")
    assert result["citations"] == []
    # the relation spaCy extracted from the passage (`flow_into`) is linked to "flow" by its name's words
    assert result["source"] == "graph" and result["paths"] == [["Vellin River", "-flow_into->", "Grey Sea"]]


def test_follow_up_question_uses_the_conversation(resources: Resources) -> None:
    chat = build_graph(resources, InMemorySaver())
    first = ask(chat, "who directed [Night Train]", thread_id="t1")
    assert first["answer"] == "Anna Kowalski"
    follow = ask(chat, "when was it released", thread_id="t1")
    assert follow["entities"] and follow["entities"][0]["name"] in {"Night Train", "Anna Kowalski"}
    other_thread = ask(chat, "when was it released", thread_id="t2")
    assert not other_thread["entities"]


def test_fast_greedy_path_matches_generate(resources: Resources) -> None:
    """Skipping forced tokens changes nothing: the same path as transformers' constrained greedy search."""
    from graph.paths import neighbourhood

    model, store = resources.model, resources.store
    starts = [e.id for name in ("Marek Lis", "Anna Kowalski") for e in store.find_entities(name)]
    paths = neighbourhood(store, starts, hops=2)
    trie = KGTrie(paths, model.encode)
    prompt = model.chat_prompt("Which films did Anna Kowalski direct? Answer with a path.")
    fast = constrained_greedy(model, model.encode(prompt) + list(trie.start_ids), trie.trie)
    [slow] = constrained_generate(model, prompt, trie.trie, trie.start_ids, trie.trie.depth)
    assert fast.segment == slow.segment
    assert trie.path_of(fast.segment) is not None
    assert fast.forward_passes < len(fast.segment)


def test_cli_ask_json_and_resumable_batch(data_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    environment = {"TRELLIS_MODEL_CACHE": str(MODEL_CACHE)}
    answered = runner.invoke(
        app, ["ask", "who directed [Night Train]", "--json", "--data-dir", str(data_dir)], env=environment
    )
    assert answered.exit_code == 0, answered.output
    result = json.loads(answered.stdout)
    assert {"answer", "answers", "paths", "citations", "source", "trace"} <= result.keys()
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"id": "a", "question": "who directed [Night Train]", "answers": ["Anna Kowalski"]})
        + "\n"
        + json.dumps({"id": "b", "question": "who wrote [Cold Spring]", "answers": ["Marek Lis"]})
        + "\n",
        encoding="utf-8",
    )
    output = tmp_path / "out.jsonl"
    output.write_text(json.dumps({"id": "a", "answer": "kept", "answers": ["kept"], "trace": {}}) + "\n")
    run = runner.invoke(app, ["batch", str(questions), "-o", str(output), "--data-dir", str(data_dir)], env=environment)
    assert run.exit_code == 0, run.output
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["a", "b"] and lines[0]["answer"] == "kept"  # "a" was not redone
    assert lines[1]["answer"] == "Marek Lis"


def test_bad_batch_file_names_the_line(data_dir: Path, tmp_path: Path) -> None:
    questions = tmp_path / "bad.jsonl"
    questions.write_text('{"id": "a", "question": "x"}\n{"id": "b"}\n', encoding="utf-8")
    run = CliRunner().invoke(
        app, ["batch", str(questions), "-o", str(tmp_path / "o.jsonl"), "--data-dir", str(data_dir)]
    )
    assert run.exit_code == 1
    assert f"{questions}:2" in run.output


def test_bad_schema_is_refused_with_its_name(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"directed_by": {"head": ["movie"]}}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"directed_by.*cues"):
        RelationSchema.load(schema)


def test_without_a_schema_relation_names_are_the_cues(tmp_path: Path) -> None:
    with EmbeddedGraphStore(tmp_path / "g.lbug") as store:
        from graph.model import Entity, Relation, entity_id

        store.upsert_entities([Entity(n, sources=["t"]) for n in ("Film A", "Person B", "Studio C")])
        store.upsert_relations(
            [
                Relation(entity_id("Film A"), "directed_by", entity_id("Person B"), ["t"]),
                Relation(entity_id("Film A"), "produced_by", entity_id("Studio C"), ["t"]),
            ]
        )
        ranked = rank_patterns(store, entity_id("Film A"), "which studio produced [Film A]", "Film A", RelationSchema())
        assert ranked[0].pattern == (("produced_by", True),)


def test_cli_chat_remembers_a_thread_across_processes(data_dir: Path) -> None:
    """The SQLite checkpointer keeps the conversation: a resumed thread still resolves "it"."""
    runner = CliRunner()
    environment = {"TRELLIS_MODEL_CACHE": str(MODEL_CACHE)}
    arguments = ["chat", "--thread", "films", "--data-dir", str(data_dir)]
    first = runner.invoke(app, arguments, input="who directed [Night Train]\n\n", env=environment)
    assert first.exit_code == 0, first.output
    assert "Anna Kowalski" in first.stdout
    resumed = runner.invoke(app, arguments, input="when was it released\n\n", env=environment)
    assert resumed.exit_code == 0, resumed.output
    assert "2004" in resumed.stdout
