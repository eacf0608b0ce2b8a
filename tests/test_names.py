"""Names are stored exactly as the input gives them; only lookup keys are normalised (issue 13, item 5)."""

from __future__ import annotations

from pathlib import Path

from graph.model import entity_id
from graph.paths import neighbourhood
from graph.store import GraphStore
from ingest.triples import ingest_triples

# Each of these has a different NFKC or whitespace-collapsed form; none may be rewritten.
VERBATIM = [
    "Gen¹³",  # superscripts (a MetaQA film title)
    "Cafe\u0301 Society",  # a combining accent, not the precomposed é
    "ﬁlm noir",  # the fi ligature
    "Two  Spaces",  # doubled inner space
]


def test_names_are_stored_and_walked_as_given(store: GraphStore, tmp_path: Path) -> None:
    path = tmp_path / "kb.tsv"
    lines = [f"{name}\twritten_by\tKevin Altieri" for name in VERBATIM]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ingest_triples(store, path)
    given = {*VERBATIM, "Kevin Altieri"}
    # Every name in the store is one the file holds, character for character.
    assert {name for _id, name in store.iter_entity_names()} == given
    walked = {p.verbalise() for p in neighbourhood(store, [entity_id("Kevin Altieri")], hops=1)}
    assert walked == {f"Kevin Altieri <-written_by- {name}" for name in VERBATIM}


def test_lookups_forgive_the_forms_the_names_are_not_stored_in(store: GraphStore, tmp_path: Path) -> None:
    path = tmp_path / "kb.tsv"
    path.write_text("Gen¹³\tdirected_by\tKevin Altieri\nGen13\treleased_year\t2000\n", encoding="utf-8")
    ingest_triples(store, path)
    # Two names in the file, two entities: neither is folded into the other.
    assert {e.name for e in store.find_entities("Gen¹³")} == {"Gen¹³"}
    assert {e.name for e in store.find_entities("Gen13")} == {"Gen13"}
    assert {e.name for e in store.find_entities("gen13", mode="normalised")} == {"Gen¹³", "Gen13"}
