"""The whole MetaQA knowledge graph through the CLI: the counts the issue promises, twice."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app
from config import Settings
from graph.backends import open_store
from graph.model import entity_id
from graph.paths import neighbourhood

runner = CliRunner()


def test_full_metaqa_load_is_complete_idempotent_and_walkable(metaqa_kb: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for _run in range(2):
        result = runner.invoke(app, ["ingest-triples", str(metaqa_kb), "--data-dir", str(data_dir)])
        assert result.exit_code == 0, result.output
        status = json.loads(runner.invoke(app, ["status", "--json", "--data-dir", str(data_dir)]).stdout)
        # 42,777 distinct names: identity keeps case, so the tag `comedy` and the genre `Comedy` stay apart.
        assert (status["relations"], status["entities"]) == (129_233, 42_777)
    assert "0 new entities, 0 new relations" in result.stdout

    with open_store(Settings(data_dir=data_dir), read_only=True) as store:
        paths = {p.verbalise() for p in neighbourhood(store, [entity_id("Joel Zwick")], hops=2)}
        assert "Joel Zwick <-directed_by- My Big Fat Greek Wedding -in_language-> Greek" in paths
        drama = neighbourhood(store, [entity_id("Drama")], hops=2, limit=5_000)
        assert len(drama) == 5_000
        assert all(p.start_name == "Drama" for p in drama)
