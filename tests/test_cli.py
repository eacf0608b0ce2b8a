"""The trellis CLI as a user runs it: ingest-triples, status, errors, and the one-writer rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app

runner = CliRunner()
STATUS_KEYS = ["backend", "data_dir", "entities", "relations", "documents", "chunks", "vectors"]


def status_json(data_dir: Path) -> dict[str, object]:
    result = runner.invoke(app, ["status", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_status_of_a_new_data_dir_creates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    status = status_json(data_dir)
    assert list(status) == STATUS_KEYS
    assert status["backend"] == "embedded"
    assert status["entities"] == status["relations"] == status["vectors"] == 0
    assert not data_dir.exists()


def test_ingest_then_status(tmp_path: Path) -> None:
    kb = tmp_path / "kb.jsonl"
    kb.write_text(
        '{"head": "Alice", "relation": "knows", "tail": "Bob"}\n'
        '{"head": "Bob", "relation": "knows", "tail": "Carol"}\n',
        encoding="utf-8",
    )
    data_dir = tmp_path / "data"
    result = runner.invoke(app, ["ingest-triples", str(kb), "--data-dir", str(data_dir), "--source", "people"])
    assert result.exit_code == 0, result.output
    assert "3 new entities, 2 new relations" in result.stdout
    status = status_json(data_dir)
    assert (status["entities"], status["relations"], status["data_dir"]) == (3, 2, str(data_dir.resolve()))
    result = runner.invoke(app, ["status", "--data-dir", str(data_dir)])
    assert "relations" in result.stdout and "embedded" in result.stdout


def test_bad_file_exits_non_zero_naming_file_and_line(tmp_path: Path) -> None:
    kb = tmp_path / "kb.tsv"
    kb.write_text("a\tr\tb\nbroken line\n", encoding="utf-8")
    data_dir = tmp_path / "data"
    result = runner.invoke(app, ["ingest-triples", str(kb), "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert f"{kb}:2:" in result.stderr
    assert status_json(data_dir)["relations"] == 0
    result = runner.invoke(app, ["ingest-triples", str(kb), "--data-dir", str(data_dir), "--skip-invalid"])
    assert result.exit_code == 0
    assert f"skipped {kb}:2:" in result.stderr
    assert status_json(data_dir)["relations"] == 1


def test_a_second_writer_gets_a_clear_error_and_readers_still_work(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    kb = tmp_path / "kb.tsv"
    kb.write_text("a\tr\tb\n", encoding="utf-8")
    assert runner.invoke(app, ["ingest-triples", str(kb), "--data-dir", str(data_dir)]).exit_code == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys
            from graph.embedded import EmbeddedGraphStore
            store = EmbeddedGraphStore({str(data_dir / "graph.lbug")!r})
            print("holding", flush=True)
            sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        second = subprocess.run(
            [sys.executable, "-m", "app.cli", "ingest-triples", str(kb), "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert f"PID {holder.pid}" in second.stderr
        assert "one writer" in second.stderr
        assert "Traceback" not in second.stderr
        reader = subprocess.run(
            [sys.executable, "-m", "app.cli", "status", "--json", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reader.returncode == 0, reader.stderr
        assert json.loads(reader.stdout)["relations"] == 1
    finally:
        holder.communicate("", timeout=60)


def test_ingest_documents_delete_through_the_cli(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ada.txt").write_text("Ada Lovelace was born in London.", encoding="utf-8")
    (docs / "broken.jsonl").write_text('{"title": "no text"}\n', encoding="utf-8")
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "ingest", str(docs), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr  # something was skipped
    assert f"skipped {docs / 'broken.jsonl'}:1: missing 'text'" in result.stderr
    assert "1 ingested, 0 unchanged, 0 removed, 1 skipped" in result.stdout
    status = status_json(data_dir)
    assert (status["documents"], status["chunks"], status["vectors"]) == (1, 1, 1)

    listed = runner.invoke(app, ["documents", "--json", "--data-dir", str(data_dir)])
    [doc] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (doc["title"], doc["chunks"], doc["state"]) == ("ada", 1, "done")

    deleted = runner.invoke(app, ["delete", doc["doc_id"], "--data-dir", str(data_dir)])
    assert deleted.exit_code == 0, deleted.output
    status = status_json(data_dir)
    assert (status["documents"], status["chunks"], status["vectors"], status["entities"]) == (0, 0, 0, 0)
    missing = runner.invoke(app, ["delete", "nope", "--data-dir", str(data_dir)])
    assert missing.exit_code == 1 and "no such document: nope" in missing.stderr


def test_a_document_named_like_a_triples_source_never_takes_its_facts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    kb = tmp_path / "kb.tsv"
    kb.write_text("Ada Lovelace\tborn_in\tLondon\nAda Lovelace\tworked_with\tCharles Babbage\n", encoding="utf-8")
    posted = tmp_path / "posted.jsonl"  # what POST /ingest/triples stores under its default source
    posted.write_text('{"head": "Grace Hopper", "relation": "served_in", "tail": "US Navy"}\n', encoding="utf-8")
    assert runner.invoke(app, ["ingest-triples", str(kb), "--data-dir", str(data_dir)]).exit_code == 0
    result = runner.invoke(app, ["ingest-triples", str(posted), "--source", "api-triples", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    before = status_json(data_dir)
    assert (before["entities"], before["relations"]) == (5, 3)

    docs = tmp_path / "docs.jsonl"

    def ingest_docs(second_text: str) -> str:
        records = [{"id": "kb.tsv", "text": "Notes on the tables."}, {"id": "api-triples", "text": second_text}]
        docs.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
        run = subprocess.run(
            [sys.executable, "-m", "app.cli", "ingest", str(docs), "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert "2 ingested" in ingest_docs("What was posted.")
    assert "1 ingested, 1 unchanged" in ingest_docs("What was posted, changed.")  # replaces api-triples
    deleted = runner.invoke(app, ["delete", "kb.tsv", "api-triples", "--data-dir", str(data_dir)])
    assert deleted.exit_code == 0, deleted.output
    after = status_json(data_dir)
    assert (after["documents"], after["entities"], after["relations"]) == (0, 5, 3)


def test_document_ids_are_listed_whole_on_a_narrow_terminal(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    long_id = "an-unusually-long-record-identifier-that-must-survive-a-narrow-terminal-0042"
    source = tmp_path / "notes.jsonl"
    source.write_text(json.dumps({"id": long_id, "title": "T " * 60, "text": "Ada Lovelace was born in London."}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "80"}
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "ingest", str(source), "--data-dir", str(data_dir)], env=env, check=True, timeout=300)
    listed = subprocess.run(
        [*cli, "documents", "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, timeout=120
    )
    assert long_id in listed.stdout
