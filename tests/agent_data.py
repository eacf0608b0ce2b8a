"""A small knowledge graph (films) and two passages, loaded through the CLI: the agent's and the API's test data."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app
from tests.test_kg_trie import MODEL_CACHE

EXAMPLE_SCHEMA = Path(__file__).resolve().parents[1] / "examples" / "metaqa" / "relations.json"
TRIPLES = """\
Blue Harbor\tdirected_by\tAnna Kowalski
Blue Harbor\twritten_by\tMarek Lis
Blue Harbor\tstarred_actors\tOla Nowak
Blue Harbor\trelease_year\t1999
Night Train\tdirected_by\tAnna Kowalski
Night Train\twritten_by\tPiotr Zielinski
Night Train\trelease_year\t2004
Cold Spring\twritten_by\tMarek Lis
Cold Spring\tdirected_by\tJan Wrona
Cold Spring\tstarred_actors\tOla Nowak
"""
PASSAGES = [
    {
        "id": "lighthouse",
        "title": "Kerrow Lighthouse",
        "text": "The Kerrow Lighthouse was built in 1852 by the "
        "engineer Thomas Abernethy. Its lamp could be seen from forty kilometres away.",
    },
    {
        "id": "river",
        "title": "Vellin River",
        "text": "The Vellin River flows north through the town of Carrow "
        "and empties into the Grey Sea after two hundred kilometres.",
    },
]


def build_agent_data(root: Path) -> Path:
    """A data directory with the triples (and the example schema) and two ingested passages, via the CLI."""
    triples = root.parent / "films.tsv"
    triples.write_text(TRIPLES, encoding="utf-8")
    passages = root.parent / "passages.jsonl"
    passages.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES), encoding="utf-8")
    runner = CliRunner()
    environment = {"TRELLIS_MODEL_CACHE": str(MODEL_CACHE)}
    loaded = runner.invoke(
        app, ["ingest-triples", str(triples), "--schema", str(EXAMPLE_SCHEMA), "--data-dir", str(root)], env=environment
    )
    assert loaded.exit_code == 0, loaded.output
    ingested = runner.invoke(app, ["ingest", str(passages), "--data-dir", str(root)], env=environment)
    assert ingested.exit_code == 0, ingested.output
    return root
