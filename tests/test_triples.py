"""Triples files into the store: formats, headers, bad lines, idempotence, MetaQA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph.model import Entity, Relation, StoreCounts, entity_id
from graph.paths import neighbourhood
from graph.store import GraphStore
from ingest.triples import TripleFileError, ingest_triples, read_triples


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_tsv_without_header(tmp_path: Path) -> None:
    rows, problems = read_triples(write(tmp_path / "kb.tsv", "a\tr\tb\n\nc\tr\td\r\n"))
    assert problems == []
    assert [(r.line, r.head, r.relation, r.tail) for r in rows] == [(1, "a", "r", "b"), (3, "c", "r", "d")]


def test_csv_header_in_any_order_quotes_and_types(tmp_path: Path) -> None:
    text = 'tail,head,relation,tail_type\n"Paris, France",Alice,"lives in",GPE\n'
    [row], problems = read_triples(write(tmp_path / "kb.csv", text))
    assert problems == []
    assert (row.head, row.relation, row.tail, row.tail_type, row.line) == (
        "Alice",
        "lives in",
        "Paris, France",
        "GPE",
        2,
    )


def test_jsonl(tmp_path: Path) -> None:
    lines = [{"head": "a", "relation": "r", "tail": "b", "head_type": "T"}, {"head": "c", "relation": "r", "tail": "d"}]
    rows, problems = read_triples(write(tmp_path / "kb.jsonl", "\n".join(json.dumps(x) for x in lines)))
    assert problems == []
    assert [(r.head, r.head_type, r.tail) for r in rows] == [("a", "T", "b"), ("c", "", "d")]


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.tsv", b"a\tr\tb\nonly two\tfields\n\tr\tx\nok\tr\tfine\nbad \xff byte\tr\tx\na\tr\tb\tc\n"
    )
    rows, problems = read_triples(bad)
    assert [p.line for p in problems] == [2, 3, 5, 6]
    assert "expected 3 fields" in problems[0].reason
    assert "'head' is empty" in problems[1].reason
    assert "UTF-8" in problems[2].reason
    assert str(problems[0]).startswith(f"{bad}:2:")
    assert len(rows) == 2

    jsonl = write(
        tmp_path / "bad.jsonl",
        '{"head": "a", "relation": "r", "tail": "b"}\n{"head": "a"}\n[1]\n{oops\n'
        '{"head": "a", "relation": 3, "tail": "b"}\n'
        '{"head": "two\\nlines", "relation": "r", "tail": "b"}\n',
    )
    _rows, problems = read_triples(jsonl)
    assert [(p.line, p.reason.split(" ")[0]) for p in problems] == [
        (2, "missing"),
        (3, "expected"),
        (4, "not"),
        (5, "field"),
        (6, "field"),
    ]
    assert "control character" in problems[-1].reason


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TripleFileError, match="unknown triples format"):
        read_triples(write(tmp_path / "kb.xml", "<x/>"))
    with pytest.raises(TripleFileError, match="no such file"):
        read_triples(tmp_path / "absent.tsv")


def test_bad_line_stops_the_run_and_leaves_the_store_as_it_was(store: GraphStore, tmp_path: Path) -> None:
    ingest_triples(store, write(tmp_path / "first.tsv", "Alice\tknows\tBob\n"))
    before = store.counts()
    bad = write(tmp_path / "second.tsv", "Carol\tknows\tDan\nEve\tknows\n")
    with pytest.raises(TripleFileError) as caught:
        ingest_triples(store, bad)
    assert f"{bad}:2:" in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert store.counts() == before
    assert store.find_entities("Carol") == []


def test_skip_invalid_writes_the_good_lines_and_reports_the_bad(store: GraphStore, tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.tsv", "Carol\tknows\tDan\nEve\tknows\nFay\t\tGus\nHal\tknows\tIda\n")
    report = ingest_triples(store, path, skip_invalid=True)
    assert [p.line for p in report.skipped] == [2, 3]
    assert (report.rows, report.entities_created, report.relations_created) == (2, 4, 2)
    assert store.counts() == StoreCounts(4, 2, 0, 0)


def test_reingest_adds_nothing_and_a_second_source_is_recorded(store: GraphStore, tmp_path: Path) -> None:
    path = write(tmp_path / "kb.tsv", "head\trelation\ttail\nA\tr\tB\nA\tr\tB\nB\ts\tC\n")
    first = ingest_triples(store, path)
    assert (first.source, first.source_key, first.entities_created, first.relations_created) == (
        "kb.tsv",
        "triples:kb.tsv",
        3,
        2,
    )
    again = ingest_triples(store, path)
    assert (again.entities_created, again.relations_created) == (0, 0)
    ingest_triples(store, path, source="mirror")
    assert store.counts() == StoreCounts(3, 2, 0, 0)
    [a] = store.get_entities([entity_id("A")])
    assert a.sources == ["triples:kb.tsv", "triples:mirror"]
    store.delete_source("triples:kb.tsv")
    assert store.counts() == StoreCounts(3, 2, 0, 0)
    store.delete_source("triples:mirror")
    assert store.counts() == StoreCounts(0, 0, 0, 0)


def test_metaqa_slice_counts_and_the_joel_zwick_path(store: GraphStore, metaqa_kb: Path, tmp_path: Path) -> None:
    lines = metaqa_kb.read_text(encoding="utf-8").splitlines()
    picked = [line for line in lines if "My Big Fat Greek Wedding" in line or "Joel Zwick" in line] + lines[:3000]
    path = write(tmp_path / "slice.tsv", "\n".join(picked) + "\n")
    triples = {tuple(line.split("\t")) for line in picked}
    names = {name for h, _r, t in triples for name in (h, t)}
    report = ingest_triples(store, path)
    assert (report.entities_created, report.relations_created) == (len(names), len(triples))
    paths = [p.verbalise() for p in neighbourhood(store, [entity_id("Joel Zwick")], hops=2)]
    assert "Joel Zwick <-directed_by- My Big Fat Greek Wedding -in_language-> Greek" in paths


def test_facts_are_kept_apart_from_a_document_of_the_same_name(store: GraphStore, tmp_path: Path) -> None:
    """A document's id is its provenance key; withdrawing one called like a triples source (as deleting
    the document does) leaves that source's facts alone, and so does a store with the unprefixed keys of
    older versions once the file is ingested again."""
    path = write(tmp_path / "kb.tsv", "A\tr\tB\nB\ts\tC\n")
    for source in (None, "api-triples"):
        ingest_triples(store, path, source=source)
    for document in ("kb.tsv", "api-triples"):
        store.delete_source(document)
    assert store.counts() == StoreCounts(3, 2, 0, 0)
    # An older store: the same facts under the bare name, re-ingested (nothing new is created).
    store.upsert_entities([Entity("A", sources=["old.tsv"]), Entity("Z", sources=["old.tsv"])])
    store.upsert_relations([Relation(entity_id("A"), "r", entity_id("Z"), ["old.tsv"])])
    report = ingest_triples(store, write(tmp_path / "old.tsv", "A\tr\tZ\n"))
    assert (report.entities_created, report.relations_created) == (0, 0)
    store.delete_source("old.tsv")
    assert store.counts() == StoreCounts(4, 3, 0, 0)


@pytest.mark.parametrize(
    "line, reason",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"head": ' + "1" * 5_000 + ', "relation": "r", "tail": "b"}', "too many digits"),
    ],
)
def test_unparsable_json_lines_are_bad_lines(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path / "kb.jsonl", '{"head": "a", "relation": "r", "tail": "b"}\n' + line + "\n")
    rows, [problem] = read_triples(path)
    assert [(r.head, r.tail) for r in rows] == [("a", "b")]
    assert (problem.line, reason in problem.reason) == (2, True)
    assert str(problem).startswith(f"{path}:2: not usable JSON")
