"""The graph route on KGs it has never seen: relation names in several styles, questions that share no word
with them, names as people type them, constraint questions, many answers, a drafted schema. Small KGs
built here, loaded through the CLI, answered by the real default model and embedder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.graph import ask, build_graph
from agents.patterns import RelationSchema
from agents.resources import Resources
from agents.retrieval import link_entities
from app.cli import app
from app.evaluation import answer_set_f1
from config import Settings
from graph.relations import relation_name, value_shape
from tests.test_kg_trie import MODEL_CACHE

# Relation names in snake_case, camelCase, dotted Freebase style, a URI and an inverse suffix; none of them
# shares a word with the questions asked below.
FAMILY = """\
head\trelation\ttail
Ada Byron\tparents\tLord Byron
Ada Byron\tpeople.person.spouse\tWilliam King
Ada Byron\tgender\tfemale
Lord Byron\tcauseOfDeath\tFever
Lord Byron\thttp://example.org/ontology/birthPlace\tLondon
Don Juan\tauthorOf_inverse\tLord Byron
Pete Docter\tdirected\tUp
Pete Docter\tdirected\tInside Out
Pete Docter\tdirected\tSoul
Up\treleaseYear\t2009
Inside Out\treleaseYear\t2015
Soul\treleaseYear\t2020
Lord Byron\trel_7\tAda Byron
"""

PLAYERS = """\
Ana Silva\tplays_position\tMidfielder
Ana Silva\tplays_in_club\tFC Porto
Bea Costa\tplays_position\tDefender
Bea Costa\tplays_in_club\tFC Porto
Cleo Dias\tplays_position\tMidfielder
Cleo Dias\tplays_in_club\tSL Benfica
FC Porto\tis_in_country\tPortugal
SL Benfica\tis_in_country\tPortugal
"""


def _load(root: Path, name: str, triples: str, schema: dict | None = None) -> Path:
    data_dir = root / name
    source = root / f"{name}.tsv"
    source.write_text(triples, encoding="utf-8")
    arguments = ["ingest-triples", str(source), "--data-dir", str(data_dir)]
    if schema is not None:
        schema_file = root / f"{name}-schema.json"
        schema_file.write_text(json.dumps(schema), encoding="utf-8")
        arguments += ["--schema", str(schema_file)]
    loaded = CliRunner().invoke(app, arguments, env={"TRELLIS_MODEL_CACHE": str(MODEL_CACHE)})
    assert loaded.exit_code == 0, loaded.output
    return data_dir


def _agent_over(
    tmp_path_factory: pytest.TempPathFactory, name: str, triples: str
) -> Iterator[tuple[Resources, object]]:
    """(resources, agent) over a KG of `triples` loaded through the CLI, for a module's tests."""
    data_dir = _load(tmp_path_factory.mktemp(name), name, triples)
    with Resources.open(Settings(data_dir=data_dir, model_cache=MODEL_CACHE)) as resources:
        yield resources, build_graph(resources)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Resources, object]]:
    yield from _agent_over(tmp_path_factory, "family", FAMILY)


@pytest.fixture(scope="module")
def players(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Resources, object]]:
    yield from _agent_over(tmp_path_factory, "players", PLAYERS)


def test_relation_names_in_every_common_style_read_as_words() -> None:
    assert relation_name("directed_by").words == "directed by"
    assert relation_name("causeOfDeath").words == "cause of death"
    assert relation_name("hasIMDBRating").words == "has imdb rating"
    spouse = relation_name("people.person.spouse")
    assert (spouse.words, spouse.domain, spouse.inverse) == ("spouse", "person", False)
    assert relation_name("http://example.org/ontology/birthPlace").words == "birth place"
    assert relation_name("https://schema.org/author#").words == "author"
    for inverse in ("parents_inverse", "~parents", "parents^-1"):
        assert relation_name(inverse) == relation_name("parents").__class__("parents", True, "")
    assert [value_shape(v) for v in ("1999", "2009-05-29", "7.5", "Lord Byron")] == ["year", "date", "number", "name"]


@pytest.mark.parametrize(
    ("question", "answer", "relation"),
    [
        ("who was the father of ada byron", "Lord Byron", "-parents->"),  # father ~ parents
        ("who was ada byron's husband?", "William King", "-people.person.spouse->"),  # possessive, dotted
        ("what was the sex of Ada Byron", "female", "-gender->"),
        ("what caused the death of lord byron", "Fever", "-causeOfDeath->"),  # camelCase
        ("where was Lord Byron born", "London", "-http://example.org/ontology/birthPlace->"),  # a URI
        ("what year was inside out released", "2015", "-releaseYear->"),
    ],
)
def test_phrasings_that_share_no_word_with_the_relation_are_answered_from_the_graph(
    family, question: str, answer: str, relation: str
) -> None:
    resources, agent = family
    result = ask(agent, question)
    assert result["source"] == "graph", result["trace"]
    assert result["answer"] == answer
    assert relation in result["paths"][0]
    for head, rel, tail in result["path_details"][0]["triples"]:  # every cited step is a stored relation
        [entity] = resources.store.find_entities(head)
        assert any(e.type == rel and e.forward and e.neighbour_name == tail for e in resources.store.edges([entity.id]))


def test_an_inverse_relation_is_read_backwards(family) -> None:
    """`authorOf_inverse` stores (work, author): "who wrote Don Juan" follows it forward to the author."""
    _, agent = family
    result = ask(agent, "who wrote Don Juan")
    assert result["answer"] == "Lord Byron"
    assert result["paths"][0] == ["Don Juan", "-authorOf_inverse->", "Lord Byron"]


def test_many_answers_are_all_listed(family) -> None:
    _, agent = family
    result = ask(agent, "which films did pete docter make")
    assert set(result["answers"]) == {"Up", "Inside Out", "Soul"}
    assert answer_set_f1(result["answers"], ["Up", "Soul", "Inside Out"]) == 1.0


def test_names_are_linked_as_people_type_them(family) -> None:
    resources, agent = family
    assert [e["name"] for e in link_entities(resources, "what year was up released")][:1] == ["Up"]  # a common word
    assert ask(agent, "what year was up released")["answer"] == "2009"
    assert [e["name"] for e in link_entities(resources, "when was Insde Out released")] == ["Inside Out"]  # misspelt
    linked = {e["name"] for e in link_entities(resources, "Is LORD BYRON the father of Ada Byron?")}
    assert linked == {"Lord Byron", "Ada Byron"}  # two names, any case


def test_a_schema_adds_cues_the_names_lack(tmp_path: Path) -> None:
    """`rel_7` says nothing; a user's schema says it is asked for as "heir"."""
    question = "who is the heir of Lord Byron"
    plain = _load(tmp_path, "plain", FAMILY)
    cued = _load(tmp_path, "cued", FAMILY, {"rel_7": {"cues": ["heir"], "tail": ["who"]}})
    for data_dir, expected in ((plain, False), (cued, True)):
        with Resources.open(Settings(data_dir=data_dir, model_cache=MODEL_CACHE)) as resources:
            result = ask(build_graph(resources), question)
            assert (result["paths"][:1] == [["Lord Byron", "-rel_7->", "Ada Byron"]]) is expected, result["paths"]


@pytest.mark.parametrize(
    "question",
    [
        "name a player who plays at Midfielder position at the club FC Porto?",
        # "plays" names each plays_* relation alike: no word asks for a longer chain from FC Porto
        "who plays at position Midfielder for club FC Porto?",
    ],
)
def test_a_constraint_question_answers_the_intersection_and_cites_both_paths(players, question: str) -> None:
    _, agent = players
    result = ask(agent, question)
    assert result["answers"] == ["Ana Silva"]
    assert sorted(p[0] for p in result["paths"]) == ["FC Porto", "Midfielder"]
    assert all(p[-1] == "Ana Silva" for p in result["paths"])
    assert result["trace"]["constrained_by"]["entity"] in {"FC Porto", "Midfielder"}


def test_a_word_every_relation_shares_asks_for_no_extra_hop(players) -> None:
    """ "plays" names plays_in_club, plays_position and plays_for_country alike: beside "club" it asks for no
    second hop of plays_in_club (a longer chain from the club would answer a position, not a player)."""
    from agents.patterns import QuestionCues, RelationLexicon, explain

    resources, _ = players
    lexicon = RelationLexicon(RelationSchema(), resources.lexicon.embed)
    relations = {"plays_in_club", "plays_position", "plays_for_country", "is_in_country", "wears_number", "is_aged"}
    cues = QuestionCues.of("who plays at position Midfielder for club FC Porto?", "FC Porto", lexicon)
    cues.add(relations)
    assert explain((("plays_in_club", False),), cues).spare == 0
    two = QuestionCues.of("which players play for the club of the club of FC Porto?", "FC Porto", lexicon)
    two.add(relations)
    assert explain((("plays_in_club", False),), two).spare == 1  # "club" twice: a word of its own each time


def test_schema_suggest_drafts_a_schema_that_loads(players, tmp_path: Path) -> None:
    resources, _ = players
    draft = tmp_path / "draft.json"
    run = CliRunner().invoke(
        app, ["schema", "suggest", "-o", str(draft), "--data-dir", str(resources.settings.data_dir)]
    )
    assert run.exit_code == 0, run.output
    raw = json.loads(draft.read_text(encoding="utf-8"))
    assert set(raw) - {"_about"} == {"plays_position", "plays_in_club", "is_in_country"}
    assert raw["plays_in_club"]["cues"] == ["plays", "club"] and raw["plays_in_club"]["examples"]
    assert set(RelationSchema.load(draft).relations) == {"plays_position", "plays_in_club", "is_in_country"}


FILMS = """\
Some Mother's Son\twritten_by\tTerry George
Some Mother's Son\tdirected_by\tJim Sheridan
Some Mother's Son\tstarred_actors\tHelen Mirren
Hotel Rwanda\twritten_by\tTerry George
Hotel Rwanda\twritten_by\tKeir Pearson
Hotel Rwanda\tdirected_by\tAnna Reid
Hotel Rwanda\tstarred_actors\tDon Cheadle
"""


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Resources, object]]:
    yield from _agent_over(tmp_path_factory, "films", FILMS)


def test_a_possessive_inside_a_name_is_part_of_it(films) -> None:
    resources, _ = films
    assert [e["name"] for e in link_entities(resources, "who starred in some mother's son")][:1] == [
        "Some Mother's Son"
    ]


@pytest.mark.parametrize(
    ("question", "answers", "relations"),
    [
        # a compound ("screenwriter" ~ written_by) and a return word asking for a hop out and back
        (
            "which films share the screenwriter with Some Mother's Son",
            {"Hotel Rwanda"},
            ["-written_by->", "<-written_by-"],
        ),
        # "together" modifies the verb that names a relation, not the nearest word
        ("who wrote films together with Keir Pearson", {"Terry George"}, ["<-written_by-", "-written_by->"]),
        # the same stem twice ("written ... screenwriter") asks for two hops of one relation
        (
            "who directed the films written by the screenwriter of Some Mother's Son",
            {"Anna Reid"},  # the other film's director: a path does not come back through the entity asked about
            ["-written_by->", "<-written_by-", "-directed_by->"],
        ),
        # "the screenwriter of X" names the entity the chain turns at: what is asked of their films goes back
        # along written_by first, with no return word and no second word for it
        (
            "who starred films for the screenwriter of Some Mother's Son",
            {"Don Cheadle"},
            ["-written_by->", "<-written_by-", "-starred_actors->"],
        ),
        (
            "who directed films for the screenwriter of Some Mother's Son",
            {"Anna Reid"},
            ["-written_by->", "<-written_by-", "-directed_by->"],
        ),
    ],
)
def test_chains_that_turn_back_or_repeat_a_relation(films, question: str, answers: set, relations: list) -> None:
    _, agent = films
    result = ask(agent, question)
    assert result["source"] == "graph", result["trace"]
    assert set(result["answers"]) == answers
    assert result["paths"][0][1::2] == relations


def test_a_verb_after_the_name_is_a_hop_not_the_answer_type() -> None:
    """ "what does X [act] in": "act" names the hop, not the kind of the answer, so the one hop explains the
    whole question and no longer chain is grown (on a large KG one may outscore it)."""
    from agents.patterns import QuestionCues, RelationCues, RelationLexicon, _explains_all

    schema = RelationSchema({"starred_actors": RelationCues(("act", "starred"), ("movie",), ("actor",))})
    question = "what does Mirren act in"
    cues = QuestionCues.of(question, "Mirren", RelationLexicon(schema))
    cues.add({"starred_actors", "directed_by"})
    assert _explains_all((("starred_actors", False),), cues)


def test_a_question_naming_no_relation_is_explained_by_one_hop() -> None:
    """ "what does X appear in" on a KG without a schema: no word names a relation, so no hop can be out of the
    question's order and the one hop explains it all (the beam stops instead of growing 2- and 3-hop chains)."""
    from agents.patterns import QuestionCues, RelationLexicon, _explains_all, explain

    cues = QuestionCues.of("what does Mirren appear in", "Mirren", RelationLexicon(RelationSchema()))
    cues.add({"starred_actors", "directed_by"})
    assert explain((("starred_actors", False),), cues).named == 0
    assert _explains_all((("starred_actors", False),), cues)


def test_the_answer_type_word_asks_for_no_hop_of_its_own() -> None:
    """ "what [films] did X star in": "films" says what the one hop reaches; it is no spare word asking for a
    second hop of the relation it names (the beam stops at the one hop)."""
    from agents.patterns import QuestionCues, RelationCues, RelationLexicon, _explains_all, explain

    schema = RelationSchema({"starred_actors": RelationCues(("star", "film"), ("film",), ("actor",))})
    cues = QuestionCues.of("what films did Mirren star in", "Mirren", RelationLexicon(schema))
    cues.add({"starred_actors", "directed_by"})
    found = explain((("starred_actors", False),), cues)
    assert found.named == 2 and found.spare == 0
    assert _explains_all((("starred_actors", False),), cues)


def test_a_word_right_after_the_name_is_the_first_hop() -> None:
    """ "the movies written by the [Hotel Rwanda] writers": the writers of Hotel Rwanda come first, then the
    movies they wrote, then who directed them."""
    from agents.patterns import QuestionCues, RelationLexicon

    question = "who directed the movies written by the Hotel Rwanda writers"
    cues = QuestionCues.of(question, "Hotel Rwanda", RelationLexicon(RelationSchema()))
    order = sorted(cues.content, key=lambda i: cues.outward(cues.content.index(i)))
    assert [cues.tokens[i] for i in order][:3] == ["writers", "written", "movies"]


def test_a_verb_after_the_name_that_a_wh_word_follows_is_read_in_place() -> None:
    """ "the films written by [X] starred who": "starred" asks the last hop (who starred in them), not the
    first, so it is no noun the name modifies and keeps its place in the outward order."""
    from agents.patterns import QuestionCues, RelationLexicon

    cues = QuestionCues.of(
        "the films written by Terry George starred who", "Terry George", RelationLexicon(RelationSchema())
    )
    assert cues.head_noun is None
    order = sorted(cues.content, key=lambda i: cues.outward(cues.content.index(i)))
    assert [cues.tokens[i] for i in order][:3] == ["written", "films", "starred"]


def test_a_path_may_come_back_to_an_entity_by_another_relation(tmp_path: Path) -> None:
    """The writer of A also directed B, which they wrote: "who directed the films written by the writer of
    A" ends on the writer again, by `directed_by`, which is no step back along `written_by`."""
    from graph.paths import pattern_paths

    data_dir = _load(tmp_path, "auteur", "A\twritten_by\tW\nB\twritten_by\tW\nB\tdirected_by\tW\n")
    with Resources.open(Settings(data_dir=data_dir, model_cache=MODEL_CACHE)) as resources:
        [start] = resources.store.find_entities("A")
        found = pattern_paths(
            resources.store, start.id, (("written_by", True), ("written_by", False), ("directed_by", True))
        )
        assert [p.as_list() for p in found] == [
            ["A", "-written_by->", "W", "<-written_by-", "B", "-directed_by->", "W"]
        ]
        # the same edge straight back is still refused
        assert (
            pattern_paths(
                resources.store, start.id, (("written_by", True), ("written_by", False), ("written_by", True))
            )
            == []
        )


# A person who both writes and illustrates: their kind (what leads to them) includes a relation that a
# word of the domain ("novels", "books") sits near, which must not make them the answer to "which novels".
BOOKS = """\
Moon Garden\twritten_by\tInes Park
Moon Garden\tillustrated_by\tTom Reyes
River Song\twritten_by\tInes Park
River Song\tillustrated_by\tLena Voss
Salt Roads\twritten_by\tTom Reyes
Salt Roads\tillustrated_by\tLena Voss
Glass Harbour\twritten_by\tOmar Hale
Glass Harbour\tillustrated_by\tTom Reyes
"""


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Resources, object]]:
    yield from _agent_over(tmp_path_factory, "books", BOOKS)


@pytest.mark.parametrize(
    ("question", "answers", "relations"),
    [
        ("which novels have the same author as Moon Garden", {"River Song"}, ["-written_by->", "<-written_by-"]),
        # a return word makes the words of one relation name its way out and back, not a third hop
        (
            "the illustrator of Moon Garden also illustrated which books",
            {"Glass Harbour"},
            ["-illustrated_by->", "<-illustrated_by-"],
        ),
        ("the author of Moon Garden also wrote which books", {"River Song"}, ["-written_by->", "<-written_by-"]),
        (
            "which books share the illustrator with Moon Garden",
            {"Glass Harbour"},
            ["-illustrated_by->", "<-illustrated_by-"],
        ),
    ],
)
def test_a_return_word_asks_for_the_chain_to_turn_back(books, question: str, answers: set, relations: list) -> None:
    _, agent = books
    result = ask(agent, question)
    assert result["source"] == "graph", result["trace"]
    assert set(result["answers"]) == answers
    assert result["paths"][0][1::2] == relations
