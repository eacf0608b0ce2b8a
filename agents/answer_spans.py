"""Answers drawn from the evidence (KID: decoding constrained by the retrieved knowledge).

KID (Liu et al. 2022) keeps a small model's answer inside what was retrieved by constraining its decoding to
the retrieved knowledge. Here the knowledge is the selected evidence sentences, and the answer is one of
their spans: named entities, noun phrases, dates and numbers (spaCy, the pipeline ingestion uses), typed
against what the question asks (who, when, where, how many, which). Each candidate, followed by the end of
the answer, is one sequence of the set the model may write; the model's score of a candidate is its log-
probability given the numbered evidence and the question, every member of the set scored exactly
(`lm.scoring`, all candidates in one batch) rather than decoded greedily through a trie of them. The model
does not decide alone: a candidate also scores by its evidence (the sentence's own score) and by whether its
type is the one asked for (what the wh-phrase asks for first, or what it can also be); equal scores go to
reading order. A span that merely repeats the question is no answer.

A question that asks for an explanation (why, how, describe) is answered in free text from the evidence and
marked so.

Assumptions, named: English questions (the wh-words below), and spaCy's English entity labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from agents.evidence import Sentence, content_words, numbered
from agents.roles import AskedRole, asked_role, naming_spans, role_spans
from agents.text import STOPWORDS, words
from agents.usage import counted
from lm.remote import is_remote, note
from lm.scoring import continuation_log_probs

MAX_CANDIDATES = 48
MAX_SPAN_WORDS = 8
# Weights of the evidence features, set on NQ dev items 501-580 (disjoint from the 500 scored) with the
# default model; MuSiQue was not used to set them.
EVIDENCE_WEIGHT = 2.0  # per point of the sentence's evidence score
TYPE_WEIGHT = 2.0  # a span of the type the question asks for
ECHO_PENALTY = 3.0  # a span made only of the question's words
ROLE_WEIGHT = 1.0  # a span that fills the asked role on the question's predicate (`agents.roles`)

_PLACE_NOUNS = "city|country|place|state|town|region|continent"
EXPLANATION = re.compile(r"^\s*(why|how (?:does|do|did|can|could|is|are|was|were|to|should)|describe|explain)\b", re.I)
# "who/what is|was" and nothing but a capitalised name (assumes English capitalises names and joins their
# words with a few lower-case ones: "Journal of Orbital Studies"; "who is the director of X" asks for a
# person, and stays a span question)
DEFINITION = re.compile(
    r"^\s*(?i:who|what)\s+(?i:is|was|are|were)\s+(?:the\s+)?"
    r"(?P<name>[A-Z][\w.'-]*(?:\s+(?:(?:of|the|and|for|de|la|von|van)\s+)*[A-Z][\w.'-]*)*)\s*\??\s*$"
)
_BE = frozenset(["is", "are", "was", "were"])
_COPULAS = _BE | {"'s", "be", "been", "remains", "became", "becomes"}
MAX_DESCRIPTION_WORDS = 16
_ASKED = [
    (re.compile(r"\bhow many\b|\bnumber of\b", re.I), "count"),
    (re.compile(r"\bhow (much|old|long|far|big|tall|large)\b", re.I), "quantity"),
    (re.compile(r"\b(when|what year|which year|what date|what time|what century|what decade)\b", re.I), "time"),
    (re.compile(rf"\bwhere\b|\b(what|which) ({_PLACE_NOUNS})\b", re.I), "place"),
    (re.compile(r"\b(who|whom|whose)\b", re.I), "agent"),
]
# spaCy's English entity labels by the kind of answer each names: what the wh-phrase asks for first, and
# what it can also be ("who" asks for a person, and sometimes a group or a country; "how many" for a count,
# and sometimes an amount). Not NORP for "who": "American" describes who, it does not name them.
LABELS = {
    "count": ({"CARDINAL"}, {"QUANTITY", "MONEY", "PERCENT", "ORDINAL"}),
    "quantity": ({"QUANTITY", "MONEY", "PERCENT", "CARDINAL"}, {"ORDINAL"}),
    "time": ({"DATE", "TIME"}, set()),
    "place": ({"GPE", "LOC", "FAC"}, {"ORG"}),
    "agent": ({"PERSON"}, {"ORG", "GPE", "NORP"}),
}
NUMERIC = {"count", "quantity"}
SECONDARY_FIT = 0.5  # a label the asked kind can also be, against 1 for the one it asks for first
_DIGITS = re.compile(r"\d")
# brackets, braces, '=', '<', '>' or a dotted identifier ("AutoTokenizer.from_pretrained"): assumes prose
# answers do not contain them
_CODE_LIKE = re.compile(r"[()\[\]{}=<>]|\w\.[A-Za-z_]\w*\(|\b\w+_\w+\b")
_YEAR = re.compile(r"1\d{3}|20\d{2}")
# nouns that name a name rather than a class of thing: "the name of the airport" asks for an airport
_NAME_NOUNS = frozenset(["name", "names", "term", "title", "word", "one", "kind", "type", "sort"])


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str
    sentence: int  # index into the evidence
    start: int  # character offsets within the sentence
    end: int
    label: str  # spaCy's entity label, "NOUN" for a noun phrase, "NUM" for a bare number
    score: float = 0.0
    model: float = 0.0  # mean log-probability under the trie
    fills_role: bool = False  # fills, on the evidence's predicate, the role the question asks of it (`agents.roles`)


@dataclass
class SpanAnswer:
    text: str
    candidate: Candidate | None  # None: free text (an explanation question) or no candidate at all
    candidates: list[Candidate]
    free_text: bool = False


def asked_kind(question: str) -> str | None:
    """What the question asks for: quantity, time, place, agent (who), or None (a thing: "what", "which").
    The wh-phrase nearest the start asks; a later one opens a clause of its own ("where did he go [when] he
    left", "who was king [when] ...").

    Tried and dropped: only the question's first wh-phrase asks (a later one opens a relative clause or
    stands in a title, "The Girl Who Kicked ..."). MuSiQue EM fell 8 -> 6 %: its "what is X of the state
    where ..." questions often do ask for a place."""
    found = [
        (match.start(), n, kind) for n, (pattern, kind) in enumerate(_ASKED) if (match := pattern.search(question))
    ]
    return min(found)[2] if found else None


def _noun_phrase(head: Any) -> Any:
    """The noun phrase `head` heads, up to its first clause or list ("a peer-reviewed journal about
    satellites" of "... about satellites, published monthly by ..."): a description, not a paragraph."""
    end = head.i
    for child in head.rights:
        if child.dep_ in ("acl", "relcl", "appos", "punct", "cc", "conj", "advcl"):
            break
        end = child.right_edge.i
    return head.doc[head.left_edge.i : end + 1]


def asked_class(nlp: Any, question: str) -> str | None:
    """The noun that names the class of thing asked for, lower-cased: "river" in "What river flows ...",
    "airport" in "What is the name of the airport ...", "range" in "... part of what mountain range?"
    (spaCy's parse: the noun the wh-determiner modifies, or the subject of "what is ..."; a name-like noun
    such as "name" or "term" passes on to its "of" object). An answer of that class usually ends in it."""
    doc = nlp(question)
    wh = next((t for t in doc if t.tag_ in ("WDT", "WP", "WP$")), None)
    if wh is None:
        return None
    if wh.dep_ == "det" and wh.head.pos_ == "NOUN":
        noun = wh.head
    elif wh.dep_ in ("attr", "nsubj") and wh.head.lower_ in _BE:
        noun = next((t for t in wh.head.children if t.dep_ in ("nsubj", "attr") and t.i != wh.i), None)
    else:
        return None
    while noun is not None and noun.lower_ in _NAME_NOUNS:
        of = next((t for t in noun.children if t.dep_ == "prep" and t.lower_ == "of"), None)
        noun = next((t for t in of.children if t.dep_ == "pobj"), None) if of is not None else None
    return noun.lower_ if noun is not None and noun.pos_ == "NOUN" else None


def _same_noun(word: str, noun: str) -> bool:
    """The same noun, singular or plural (assumes English plurals in -s or -es)."""
    return word == noun or word.removesuffix("s") == noun or word.removesuffix("es") == noun


def asks_explanation(question: str) -> bool:
    """Why, how, describe, explain."""
    return bool(EXPLANATION.match(question)) and asked_kind(question) not in NUMERIC


def defined_name(question: str) -> str | None:
    """The name a "who is <a name>?" / "what is <a name>?" question asks to describe ("Who is Alex Mercer?"
    is not answered by another name), or None."""
    found = DEFINITION.match(question)
    return found.group("name") if found else None


def description_of(nlp: Any, name: str, evidence: Sequence[Sentence]) -> Candidate | None:
    """The evidence's own description of `name`, from the best-scored sentence that gives one: the
    complement of "<name> is/was ..." ("a Norwegian novelist") or an apposition ("<name>, the society's
    founder, ..."), read from spaCy's parse. Assumes English copulas."""
    key = name.casefold()
    order = sorted(range(len(evidence)), key=lambda n: -evidence[n].score)
    docs = dict(zip(order, nlp.pipe(evidence[n].text for n in order), strict=True))
    for number in order:
        doc = docs[number]
        at = doc.text.casefold().find(key)
        named = doc.char_span(at, at + len(name), alignment_mode="expand") if at >= 0 else None
        if named is None:
            continue
        root = named.root
        described = [c for c in root.children if c.dep_ == "appos"]
        if root.dep_ == "nsubj" and root.head.lower_ in _COPULAS:
            described = [c for c in root.head.children if c.dep_ == "attr"] + described
        for head in described:
            span = _noun_phrase(head)
            # a description is a noun phrase opened by an article or possessive ("a figure of central
            # authority"); the small parser also calls "steadfast like a bridge" an apposition
            if head.pos_ not in ("NOUN", "PROPN") or span[0].dep_ not in ("det", "poss"):
                continue
            if len(span) > MAX_DESCRIPTION_WORDS or key in span.text.casefold():
                continue
            return Candidate(span.text, number, span.start_char, span.end_char, "DESCRIPTION")
    return None


def candidates_of(
    nlp: Any, question: str, evidence: Sequence[Sentence], docs: Sequence[Any] | None = None
) -> list[Candidate]:
    """Spans of the evidence that could answer: entities, noun phrases (determiners trimmed), numbers.
    `docs`: the evidence sentences already parsed."""
    found: dict[str, Candidate] = {}
    for number, doc in enumerate(docs if docs is not None else nlp.pipe(s.text for s in evidence)):
        if evidence[number].heading:
            continue
        spans = [(e, e.label_) for e in doc.ents]
        spans += [(c, "NOUN") for c in doc.noun_chunks]
        # a number inside a date is part of that date ("May 17, 2016" holds no count of 2016)
        spans += [(doc[t.i : t.i + 1], t.ent_type_ or "NUM") for t in doc if t.like_num]
        for whole, label in spans:
            for span in _pieces(whole):
                text = span.text
                if _CODE_LIKE.search(text):
                    continue  # code (a call, an assignment, markup) is no short answer
                key = text.casefold()
                if key in found and found[key].label != "NOUN":
                    continue  # the first entity reading of a text stands
                if key in found and label == "NOUN":
                    continue
                found[key] = Candidate(text, number, span.start_char, span.end_char, label)
    # a span the question already holds restates it ("season 4" gives no count of episodes)
    said = set(words(question))
    kept = [c for c in found.values() if not (own := set(words(c.text)) - STOPWORDS) or not own <= said]
    return kept or list(found.values())


def with_roles(
    asked: AskedRole | None, noun: str | None, docs: Sequence[Any], candidates: list[Candidate]
) -> list[Candidate]:
    """The candidates, each marked whether it holds a token that fills the question's asked role on the
    same predicate in its sentence, or that its sentence identifies with the asked class noun `noun`
    (`agents.roles`)."""
    filled = role_spans(asked, docs) if asked is not None else set()
    if noun is not None:
        filled |= naming_spans(noun, docs)
    if not filled:
        return candidates
    return [
        replace(c, fills_role=any(n == c.sentence and c.start <= at < c.end for n, at in filled)) for c in candidates
    ]


def _pieces(span: Any) -> list[Any]:
    """A span cut where layout runs through it (a table's column gap, a line break: spaCy's whitespace
    tokens), each piece trimmed of leading determiners and punctuation and of a trailing possessive
    ("Lesley Gore 's" names Lesley Gore); pieces too long, or of stop words only, are dropped."""
    pieces, start = [], span.start
    for token in [*span, None]:
        if token is None or token.is_space:
            end = token.i if token is not None else span.end
            piece = span.doc[start:end]
            while len(piece) and (piece[0].is_stop or piece[0].is_punct) and not piece[0].like_num:
                piece = piece[1:]
            while len(piece) and (piece[-1].is_punct or piece[-1].tag_ == "POS" or piece[-1].is_space):
                piece = piece[:-1]
            if len(piece) and len(piece) <= MAX_SPAN_WORDS and not all(t.is_stop or t.is_punct for t in piece):
                pieces.append(piece)
            start = end + 1
    return pieces


def evidence_features(
    question: str, candidate: Candidate, evidence: Sequence[Sentence], kind: str | None, noun: str | None = None
) -> dict[str, float]:
    """What the evidence says of a candidate: its sentence's score, how much of it only repeats the question
    (1: all of it; the asked class noun, `noun`, is no repetition: "North Canadian River" answers "what
    river"), and whether it has the asked type (`type_fit`).

    Nearness to the question's words is not a feature: the span beside them is most often the question's own
    topic ("Alec's mother" for "who played the mother"), and weighing it lowered EM on held-out NQ items at
    every weight tried (59.7 % without it, 54.7 % at 0.1-0.2, items 501-800)."""
    sentence = evidence[candidate.sentence]
    asked = {w for w in content_words(question) if noun is None or not _same_noun(w, noun)}
    own = {w for w in content_words(candidate.text) if noun is None or not _same_noun(w, noun)}
    echo = 1.0 if own and own <= asked else (0.5 * len(own & asked) / len(own) if own else 0.0)
    return {
        "sentence": sentence.score,
        "echo": echo,
        "type": type_fit(candidate, kind, noun),
        "role": float(candidate.fills_role),
    }


def evidence_score(
    question: str, candidate: Candidate, evidence: Sequence[Sentence], kind: str | None, noun: str | None = None
) -> float:
    """The evidence features, weighted: the sentence's score and the asked type; echoes lose."""
    found = evidence_features(question, candidate, evidence, kind, noun)
    return (
        EVIDENCE_WEIGHT * found["sentence"]
        - ECHO_PENALTY * found["echo"]
        + TYPE_WEIGHT * found["type"]
        + ROLE_WEIGHT * found["role"]
    )


def reading_order(candidate: Candidate) -> tuple[int, bool, int]:
    """Where equal scores leave a choice: the earlier sentence, a name before a plain noun phrase, then the
    span that comes first (assumes expository prose, whose sentences name their subject first)."""
    return candidate.sentence, candidate.label == "NOUN", candidate.start


def type_fit(candidate: Candidate, kind: str | None, noun: str | None = None) -> float:
    """+1 for a span of the kind asked for first, or one that ends in the asked class noun ("Sangre de Cristo
    Range" for "what mountain range"), `SECONDARY_FIT` for one the kind can also be, -1 for one that cannot
    be it (a year for "how many", no digit for "when"), -0.5 for another kind of name or a plain noun phrase
    where a name is asked for."""
    said = words(candidate.text)
    if noun is not None and candidate.label != "NOUN" and len(said) > 1 and said[-1] == noun:
        return 1.0
    if kind is None:
        return 0.0
    label = candidate.label
    if label in ("NUM", "CARDINAL") and kind == "time" and _YEAR.search(candidate.text):
        label = "DATE"  # a bare year
    elif label == "NUM":
        label = "CARDINAL"
    first, also = LABELS[kind]
    if label in first:
        return 1.0
    if label in also:
        return SECONDARY_FIT
    numeric_other = LABELS["time"][0] if kind in NUMERIC else LABELS["count"][0] | LABELS["quantity"][0]
    if (kind in NUMERIC or kind == "time") and (not _DIGITS.search(candidate.text) or label in numeric_other):
        return -1.0
    return -0.5


_OPEN_PARENTHESIS = re.compile(r"^\s*\([^)]*$")


def full_name(
    chosen: Candidate, candidates: Sequence[Candidate], evidence: Sequence[Sentence], kind: str | None = None
) -> Candidate:
    """The evidence's full name for the person a chosen mention names: "Furman" in "Furman holds more than
    191 records" is "Ashrita Furman" of "Ashrita Furman (born Keith Furman, ...) is a record-breaker".

    Mentions are joined when one stands in parentheses after the other (a birth or other name) and when a
    shorter one ends a longer one (a surname), where the longer names it could end are all one person;
    the person's full name is the first mention of two or more words outside parentheses. Assumes names
    written as in English prose: given names before the family name, a later mention by family name. A
    mention the entity tagger did not call a person ("Furman" tagged an organisation) counts as one where
    the question asks who (`kind` "agent")."""
    if chosen.label != "PERSON" and kind != "agent":
        return chosen
    # the chosen mention joins the people whatever its label, and stands for its text
    people = sorted(
        {c.text: c for c in [*(c for c in candidates if c.label == "PERSON"), chosen]}.values(), key=reading_order
    )
    group = {c.text: c.text for c in people}

    def root(text: str) -> str:
        while group[text] != text:
            text = group[text]
        return text

    inside: set[str] = set()
    for outer in people:
        for inner in people:
            between = evidence[outer.sentence].text[outer.end : inner.start]
            if inner.sentence == outer.sentence and inner.start > outer.end and _OPEN_PARENTHESIS.match(between):
                group[root(inner.text)] = root(outer.text)
                inside.add(inner.text)
    for short in people:
        said = words(short.text)
        longer = {
            root(c.text) for c in people if len(words(c.text)) > len(said) and words(c.text)[-len(said) :] == said
        }
        if len(longer) == 1:
            group[root(short.text)] = longer.pop()
    own = root(chosen.text)
    named = [c for c in people if root(c.text) == own and c.text not in inside and len(words(c.text)) > 1]
    return named[0] if named else chosen


def answer_prompt(model: Any, question: str, evidence: Sequence[Sentence]) -> str:
    return counted(
        model,
        model.chat_prompt(
            f"Evidence:\n{numbered(list(evidence))}\n\nQuestion: {question}\n"
            "Answer with a short phrase copied from the evidence."
        ),
    )


def choose_span(
    model: Any,
    nlp: Any,
    question: str,
    evidence: Sequence[Sentence],
    bridges: Sequence[str] = (),
    model_weight: float = 1.0,
) -> SpanAnswer:
    """The best span of the evidence for the question, by the model over the set of candidates and by the
    evidence; every candidate's scores are kept for the trace. `bridges`: names earlier rounds followed."""
    kind, noun = asked_kind(question), asked_class(nlp, question)
    if kind is None and noun is not None and re.fullmatch(_PLACE_NOUNS, noun):
        kind = "place"  # "what is the country where ...": the class noun names a place
    docs = list(nlp.pipe(s.text for s in evidence))
    candidates = with_roles(asked_role(nlp(question)), noun, docs, candidates_of(nlp, question, evidence, docs))
    if not candidates:
        return SpanAnswer("", None, [])
    # a bridge the retrieval followed answers the question's first hop, not the question
    followed = [set(content_words(b)) for b in bridges]
    priors = {
        id(c): evidence_score(question, c, evidence, kind, noun)
        - ECHO_PENALTY * any(set(content_words(c.text)) <= names for names in followed if names)
        for c in candidates
    }
    every = candidates
    candidates = sorted(candidates, key=lambda c: (-priors[id(c)], *reading_order(c)))[:MAX_CANDIDATES]
    # every sequence of the candidates' trie, scored whole: with so few, exhaustive search is exact where
    # greedy decoding through the trie would be approximate, and it yields every candidate's score
    remote = model_weight > 0 and is_remote(model)
    scores = (
        model.score_continuations(answer_prompt(model, question, evidence), [c.text for c in candidates])
        if remote
        else None
    )
    if remote and scores is None:
        note(
            "answer span: model scores skipped (the server returns no prompt log-probabilities); evidence alone",
            question,
        )
    if scores is not None:
        note(
            "answer span: scored by the server's prompt log-probabilities (echo) on a plain-text prompt, "
            "without the end token",
            question,
        )
        means = [total / max(tokens, 1) for total, tokens in scores]
    elif model_weight > 0 and not remote:
        sequences = [[*model.encode(c.text), model.eos_token_id] for c in candidates]
        prompt_ids = model.encode(answer_prompt(model, question, evidence))
        means = [s.mean for s in continuation_log_probs(model, prompt_ids, sequences)]
    else:  # the model's say weighs nothing (a small model: see `agents.documents.span_model_weight`)
        means = [0.0] * len(candidates)
        model_weight = 0.0
    scored = [
        replace(c, score=model_weight * mean + priors[id(c)], model=mean)
        for c, mean in zip(candidates, means, strict=True)
    ]
    scored.sort(key=lambda c: (-c.score, *reading_order(c)))
    best = full_name(scored[0], every, evidence, kind)
    if best is not scored[0]:  # the full name answers, scored as the mention it names
        top = replace(best, score=scored[0].score, model=scored[0].model)
        scored = [top, *(c for c in scored if c.text != best.text)]
    return SpanAnswer(best.text, scored[0], scored)
