"""Small things a CLI user trips on (issue 15, point 7): flags in --help, progress with rate and ETA, the
benchmark KG's load progress in `trellis eval`, a spinner with streamed text in `trellis chat`, and
`trellis ingest --extractor`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agents.graph import build_graph
from agents.resources import Resources
from app import cli
from app.cli import app
from config import Settings, load_settings
from tests.agent_data import PASSAGES, build_agent_data
from tests.test_kg_trie import MODEL_CACHE

runner = CliRunner()
WIDE = {"COLUMNS": "200", "TERM": "xterm"}


def terminal() -> tuple[Console, io.StringIO]:
    """A console that renders as on a terminal (live displays included) into a buffer."""
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=160, color_system=None), buffer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_data(tmp_path_factory.mktemp("small") / "data")


@pytest.mark.parametrize(
    "command", [[], ["ingest-triples"], ["ingest"], ["ask"], ["serve"], ["schema"], ["graph"], ["graph", "entities"]]
)
def test_help_shows_flags_as_flags(command: list[str]) -> None:
    shown = runner.invoke(app, [*command, "--help"], env=WIDE)
    assert shown.exit_code == 0, shown.output
    assert "--help" in shown.output
    assert "<bool>" not in shown.output  # a flag takes no value
    if command == ["ingest-triples"]:
        assert "--skip-invalid" in shown.output and "<path>" in shown.output  # options with values keep theirs


def test_progress_bars_show_the_rate_and_the_time_left() -> None:
    now = [0.0]
    progress = cli._progress(get_time=lambda: now[0])
    task = progress.add_task("relations", total=1000)
    for step in range(1, 6):  # 50 rows a second, 250 of 1,000 done after 5 s: 15 s left
        now[0] = float(step)
        progress.update(task, completed=50 * step)
    console, buffer = terminal()
    console.print(progress.make_tasks_table(progress.tasks))
    line = buffer.getvalue()
    assert "250/1000" in line and "50/s" in line, line
    assert "eta 0:00:15" in line, line


def test_eval_shows_progress_while_it_loads_a_benchmark_kg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    (shared / "metaqa").mkdir(parents=True)
    rows = [f"Film {i}\tdirected_by\tDirector {i % 7}" for i in range(300)]
    (shared / "metaqa" / "kb.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    monkeypatch.setattr("app.evaluation.SHARED_DATA", shared)
    console, buffer = terminal()
    monkeypatch.setattr(cli, "err", console)
    settings = load_settings(data_dir=tmp_path / "data")
    cli._prepare("metaqa-1hop", settings, schema=False)
    shown = buffer.getvalue()
    assert "loading" in shown and "kb.tsv" in shown
    assert "relations" in shown and "300/300" in shown, shown  # the load's bar, finished
    assert "300 rows, 300 relations" in shown


def test_chat_shows_a_spinner_then_the_answer_as_it_streams(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, model_cache=MODEL_CACHE)
    with Resources.open(settings) as resources:
        graph = build_graph(resources)
        console, buffer = terminal()
        result = cli.answer_live(graph, "who directed [Night Train]", console=console)
    assert result["answer"] == "Anna Kowalski"
    shown = buffer.getvalue()
    assert "thinking" in shown  # the spinner, before any text
    assert "Anna Kowalski" in shown  # the streamed token, on the live line


def test_chat_session_answers_each_turn(data_dir: Path) -> None:
    env = {"TRELLIS_MODEL_CACHE": str(MODEL_CACHE)}
    session = runner.invoke(app, ["chat", "--data-dir", str(data_dir)], input="who directed [Night Train]\n\n", env=env)
    assert session.exit_code == 0, session.output
    assert "Anna Kowalski" in session.stdout


def test_ingest_extractor_option_reaches_the_settings(tmp_path: Path) -> None:
    passages = tmp_path / "passages.jsonl"
    passages.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES), encoding="utf-8")
    data = tmp_path / "data"
    wrong = runner.invoke(app, ["ingest", str(passages), "--extractor", "regex", "--data-dir", str(data)])
    assert wrong.exit_code == 2 and "spacy or model" in wrong.stderr
    # model: reaches the extractor factory, which refuses a bad extraction schema by file and field before
    # any model loads; nothing is written
    schema = tmp_path / "schema.json"
    schema.write_text(
        '{"entity_types": {"Person": {}}, "relation_types": {"knows": {"head": ["Person"], "tail": ["Pet"]}}}'
    )
    bad = {"TRELLIS_EXTRACTION_SCHEMA": str(schema)}
    model = runner.invoke(app, ["ingest", str(passages), "--extractor", "model", "--data-dir", str(data)], env=bad)
    assert model.exit_code == 1 and "extractor 'model'" in model.stderr and "schema.json" in model.stderr, model.output
    assert not (data / "manifest.sqlite").exists()
    # the option wins over the environment, as every CLI option does
    env = {"TRELLIS_EXTRACTOR": "model", "TRELLIS_MODEL_CACHE": str(MODEL_CACHE), **bad}
    spacy = runner.invoke(app, ["ingest", str(passages), "--extractor", "spacy", "--data-dir", str(data)], env=env)
    assert spacy.exit_code == 0, spacy.output
    assert "2 ingested" in spacy.stdout
    from_env = runner.invoke(app, ["ingest", str(passages), "--data-dir", str(data)], env=env)
    assert from_env.exit_code == 1 and "extractor 'model'" in from_env.stderr


def test_ask_with_an_unreachable_model_server_fails_in_one_line(tmp_path: Path) -> None:
    kg = tmp_path / "kg.tsv"
    kg.write_text("Night Train\tdirected_by\tAnn Roe\n", encoding="utf-8")
    data = tmp_path / "data"
    assert runner.invoke(app, ["ingest-triples", str(kg), "--data-dir", str(data)]).exit_code == 0
    env = {"TRELLIS_LLM_BASE_URL": "http://127.0.0.1:9/v1", "TRELLIS_MODEL_CACHE": str(MODEL_CACHE)}
    asked = runner.invoke(app, ["ask", "who directed Night Train", "--data-dir", str(data)], env=env)
    assert asked.exit_code == 1, asked.output
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in asked.stderr
    assert "Traceback" not in asked.output
