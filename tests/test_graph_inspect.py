"""Looking at the graph without private methods: `trellis graph ...` and GET /graph/... over the films KG and two
passages (the embedded store, real ingestion)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.server import create_app
from tests.agent_data import build_agent_data
from tests.test_server import server_settings

runner = CliRunner()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_data(tmp_path_factory.mktemp("inspect") / "data")


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[TestClient]:
    application = create_app(server_settings(data_dir))
    with TestClient(application) as opened:
        yield opened


def graph(data_dir: Path, *args: str) -> list[dict]:
    """`trellis graph ... --json`: one JSON document per line."""
    result = runner.invoke(cli_app, ["graph", *args, "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_entities_by_any_case_exactly_and_fuzzily(data_dir: Path) -> None:
    (found,) = graph(data_dir, "entities", "anna KOWALSKI")
    assert found["name"] == "Anna Kowalski" and found["sources"] == ["triples:films.tsv"]
    assert graph(data_dir, "entities", "anna kowalski", "--match", "exact") == []
    assert graph(data_dir, "entities", "Ana Kowalsky", "--match", "fuzzy")[0]["name"] == "Anna Kowalski"
    table = runner.invoke(cli_app, ["graph", "entities", "Marek Lis", "--data-dir", str(data_dir)])
    assert table.exit_code == 0 and "Marek Lis" in table.stdout and "1 entities" in table.stdout


def test_relation_types_and_the_facts_of_one(data_dir: Path) -> None:
    types = {row["relation"]: row["count"] for row in graph(data_dir, "relations")}
    assert types["directed_by"] == 3 and types["written_by"] == 3 and types["starred_actors"] == 2
    facts = graph(data_dir, "relations", "directed_by")
    assert {(f["head"], f["tail"]) for f in facts} == {
        ("Blue Harbor", "Anna Kowalski"),
        ("Night Train", "Anna Kowalski"),
        ("Cold Spring", "Jan Wrona"),
    }
    assert len(graph(data_dir, "relations", "directed_by", "--limit", "1")) == 1


def test_an_entitys_neighbourhood_in_both_directions(data_dir: Path) -> None:
    (around,) = graph(data_dir, "neighbours", "Blue Harbor")
    edges = {(e["direction"], e["relation"], e["neighbour"]) for e in around["relations"]}
    assert ("out", "directed_by", "Anna Kowalski") in edges and ("out", "release_year", "1999") in edges
    (director,) = graph(data_dir, "neighbours", "anna kowalski")  # by normalised key as well
    assert {e["neighbour"] for e in director["relations"]} == {"Blue Harbor", "Night Train"}
    assert {e["direction"] for e in director["relations"]} == {"in"}
    assert director["relation_types"] == [{"relation": "directed_by", "direction": "in", "count": 2}]
    missing = runner.invoke(cli_app, ["graph", "neighbours", "Nobody", "--data-dir", str(data_dir)])
    assert missing.exit_code == 1 and "no entity called 'Nobody'" in missing.stderr


def test_a_chunks_text_and_what_it_mentions(data_dir: Path) -> None:
    (lighthouse,) = graph(data_dir, "neighbours", "Kerrow Lighthouse")
    chunk_id = lighthouse["chunks"][0]
    assert chunk_id == "lighthouse#0"
    (chunk,) = graph(data_dir, "chunk", chunk_id)
    assert chunk["doc_id"] == "lighthouse" and chunk["title"] == "Kerrow Lighthouse"
    assert chunk["text"].startswith("The Kerrow Lighthouse was built in 1852")
    assert "Thomas Abernethy" in chunk["entities"]
    plain = runner.invoke(cli_app, ["graph", "chunk", chunk_id, "--data-dir", str(data_dir)])
    assert plain.exit_code == 0 and "Thomas Abernethy" in plain.stdout
    missing = runner.invoke(cli_app, ["graph", "chunk", "nothing#0", "--data-dir", str(data_dir)])
    assert missing.exit_code == 1 and "no such chunk" in missing.stderr


def test_the_api_reads_the_same_as_the_cli(client: TestClient, data_dir: Path) -> None:
    assert client.get("/graph/entities", params={"name": "anna kowalski"}).json() == graph(
        data_dir, "entities", "anna kowalski"
    )
    assert client.get("/graph/relations").json() == graph(data_dir, "relations")
    assert client.get("/graph/relations", params={"relation": "written_by"}).json() == graph(
        data_dir, "relations", "written_by"
    )
    around = client.get("/graph/neighbourhood", params={"entity": "Blue Harbor"})
    assert around.status_code == 200 and around.json() == graph(data_dir, "neighbours", "Blue Harbor")[0]
    chunk = client.get("/graph/chunks/lighthouse#0".replace("#", "%23"))
    assert chunk.status_code == 200 and chunk.json()["chunk_id"] == "lighthouse#0"


def test_api_reads_refuse_clearly_and_pass_names_verbatim(client: TestClient) -> None:
    missing = client.get("/graph/neighbourhood", params={"entity": "Nobody"})
    assert missing.status_code == 404 and "Nobody" in missing.json()["error"]["message"]
    assert client.get("/graph/chunks/nothing%230").status_code == 404
    assert client.get("/graph/entities", params={"name": "x", "match": "regex"}).status_code == 422
    assert client.get("/graph/relations", params={"limit": 0}).status_code == 422
    # a name that is Cypher is a name: it finds nothing and changes nothing
    hostile = "x'}) MATCH (n) DETACH DELETE n //"
    assert client.get("/graph/entities", params={"name": hostile}).json() == []
    assert client.get("/graph/neighbourhood", params={"entity": hostile}).status_code == 404
    assert client.get("/status").json()["entities"] > 0


def test_graph_reads_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/graph/entities", "/graph/relations", "/graph/neighbourhood", "/graph/chunks/{chunk_id}"):
        assert "get" in paths[path], path
        assert paths[path]["get"]["tags"] == ["graph"]
    assert {p["name"] for p in paths["/graph/entities"]["get"]["parameters"]} == {"name", "match", "limit"}
