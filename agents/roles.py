"""Answer-role alignment: the answer fills, on the evidence's predicate, the role the wh-phrase fills on the
question's.

Question answering by predicate-argument matching (Narayanan & Harabagiu 2004; Shen & Lapata 2007) reads
"Who publishes the Journal?" as publish(agent=?, theme=the Journal) and looks in the evidence for the same
predicate with that role filled: "a journal published monthly by the American Institute of Physics" gives
publish(agent=the American Institute of Physics, theme=a journal). Those papers use a semantic-role
labeller; here spaCy's dependency parse (the pipeline ingestion already runs) stands in for one, with the
passive mapped onto the active: the by-phrase is the agent, the passive subject and a participle's noun
(a reduced relative, "a journal published by ...") the theme. The predicate is matched by lemma.

Assumptions, named: English, and spaCy's English dependency labels. Copulas and light verbs ("be", "have",
"do") predicate nothing to match on, and only a wh-phrase of the main clause asks ("the city where he was
born" asks nothing). "When" and "where" ask for an adjunct, which any prepositional object would fill: they
are left to the answer's type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

AGENT, THEME = "agent", "theme"
_LIGHT = frozenset(["be", "have", "do", "get", "become"])
_RELATIVE = frozenset(["who", "which", "that", "whom"])
_SUBORDINATE = frozenset(["relcl", "acl", "advcl", "ccomp", "pcomp", "xcomp", "csubj"])


@dataclass(frozen=True, slots=True)
class AskedRole:
    predicate: str  # the verb's lemma, lower-cased
    role: str  # AGENT, THEME, or "prep:<preposition>"


def _content_verb(token: Any) -> bool:
    return token.pos_ == "VERB" and token.lemma_.lower() not in _LIGHT


def _main_clause(token: Any) -> bool:
    """Whether `token` stands in the main clause: a "where" or "which" inside a relative clause ("the city
    where he was born") asks nothing."""
    return token.dep_ not in _SUBORDINATE and not any(a.dep_ in _SUBORDINATE for a in token.ancestors)


def asked_role(question_doc: Any) -> AskedRole | None:
    """The role the question's wh-phrase fills on its verb, or None where the parse gives none."""
    wh = next((t for t in question_doc if t.tag_ in ("WP", "WDT", "WP$", "WRB") and _main_clause(t)), None)
    if wh is None:
        return None
    phrase = wh.head if wh.dep_ in ("det", "poss") and wh.head.pos_ in ("NOUN", "PROPN") else wh
    head = phrase.head
    if wh.tag_ == "WRB":
        # when, where: any prepositional object of the verb would fill it, which told dates apart no better
        # than their type does (NQ-Swap items 201-500 lost one, MuSiQue gained one)
        return None
    if phrase.dep_ == "pobj" and head.dep_ in ("prep", "agent") and _content_verb(head.head):
        role = AGENT if head.dep_ == "agent" else f"prep:{head.lower_}"
        return AskedRole(head.head.lemma_.lower(), role)
    if not _content_verb(head):
        return None
    if phrase.dep_ == "nsubj":
        return AskedRole(head.lemma_.lower(), AGENT)
    if phrase.dep_ in ("dobj", "nsubjpass"):
        return AskedRole(head.lemma_.lower(), THEME)
    return None


def _subject(verb: Any) -> Any | None:
    """The verb's own subject, or that of the verb it is conjoined to ("was born in X and died in Y") or
    hangs from without a subject of its own ("Dakota Johnson was in Boston, playing ...")."""
    while verb is not None:
        found = next((c for c in verb.children if c.dep_ in ("nsubj", "nsubjpass")), None)
        if found is not None:
            return found
        verb = verb.head if verb.dep_ in ("conj", "advcl", "xcomp") and verb.head.i != verb.i else None
    return None


def fillers(verb: Any, role: str) -> list[Any]:
    """The tokens heading the phrases that fill `role` on `verb` in an evidence sentence's parse."""
    found: list[Any] = []
    subject = _subject(verb)
    if subject is not None and subject.lower_ in _RELATIVE and verb.dep_ == "relcl":
        subject = verb.head  # "the society which publishes ...": the society does
    passive = subject is not None and subject.dep_ == "nsubjpass"
    if role == AGENT:
        if subject is not None and not passive:
            found.append(subject)
        found += [p for c in verb.children if c.dep_ == "agent" for p in c.children if p.dep_ == "pobj"]
        if verb.dep_ == "acl" and verb.tag_ == "VBG":  # "a company making engines"
            found.append(verb.head)
    elif role == THEME:
        found += [c for c in verb.children if c.dep_ == "dobj"]
        if subject is not None and passive:
            found.append(subject)
        if verb.dep_ == "acl" and verb.tag_ == "VBN":  # "a journal published by ..."
            found.append(verb.head)
    else:
        preposition = role.removeprefix("prep:")
        found += [
            p
            for c in verb.children
            if c.dep_ == "prep" and c.lower_ == preposition
            for p in c.children
            if p.dep_ == "pobj"
        ]
    return found


def role_spans(asked: AskedRole, docs: Iterable[Any]) -> set[tuple[int, int]]:
    """(sentence number, character offset) of every token that fills the asked role on a verb of the asked
    predicate's lemma, in the parsed evidence sentences `docs`."""
    spans: set[tuple[int, int]] = set()
    for number, doc in enumerate(docs):
        for verb in doc:
            if verb.pos_ == "VERB" and verb.lemma_.lower() == asked.predicate:
                spans |= {(number, token.idx) for token in fillers(verb, asked.role)}
    return spans


def naming_spans(noun: str, docs: Iterable[Any]) -> set[tuple[int, int]]:
    """(sentence number, character offset) of every token an evidence sentence identifies with the asked
    class noun (`agents.answer_spans.asked_class`): the nominal predicate's counterpart of `role_spans`.
    "Who was the first president of X?" is answered by "G. Stanley Hall, the first president of X", "the
    first president was G. Stanley Hall", "G. Stanley Hall was its first president" or "President Hall":
    an apposition, either side of a copula, or the noun as a title."""
    spans: set[tuple[int, int]] = set()
    for number, doc in enumerate(docs):
        for token in doc:
            # a noun used as a title is capitalised and tagged a proper noun ("President Hale")
            title = token.dep_ == "compound" and token.text[:1].isupper()
            # in the number asked: "seven countries: Poland, ..." lists countries, it names no "what country"
            same = token.lower_ == noun or (token.lemma_.lower() == noun and token.tag_ not in ("NNS", "NNPS"))
            if (token.pos_ != "NOUN" and not title) or not same:
                continue
            named = [c for c in token.children if c.dep_ == "appos"]
            # the noun as a title is a compound of a name ("President Hall"), not of a noun ("network television")
            if token.dep_ == "appos" or (token.dep_ == "compound" and token.head.pos_ == "PROPN"):
                named.append(token.head)
            if token.dep_ in ("nsubj", "attr") and token.head.lemma_ == "be":
                other = "attr" if token.dep_ == "nsubj" else "nsubj"
                named += [c for c in token.head.children if c.dep_ == other]
            spans |= {(number, t.idx) for t in named if t.i != token.i}
    return spans
