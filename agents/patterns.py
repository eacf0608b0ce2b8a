"""Which relation chain a question asks for, read from the knowledge graph itself.

A KG question names its hops ("who directed the movies written by X": written_by from X, then
directed_by), nearest the topic entity first, and says what kind of answer it wants ("what year", "who",
"how many"). Nothing here knows a particular graph. Each relation is described by its own name read as
words (`graph.relations.relation_name`: snake_case, camelCase, dotted, URI, inverse) and, where a user
ships one, by a schema's cue words. A question word is linked to a relation

- lexically, when it shares a stem with the relation's words or a schema cue ("released" ~ release_year);
- by meaning, through the sentence embedder already loaded for retrieval: the word and the two-word
  phrases around it against the relation's description ("father" ~ parents, "club" ~ plays_in_club).

A chain then scores by how much of the question it explains (each word by its best relation in the
chain), minus what it leaves unexplained that some reachable relation would explain, minus hops no
question word asks for; plus whether its end entities have the value shape the question asks for (a year
for "when", a number for "how many", a name for "who") and whether the hops are met outward from the
entity in the order the question names them. Chains are grown as a beam from the entity over the
relations that actually leave the entities reached, so only chains that exist are ever scored.

One heuristic stays, measured on both shared KGs: a "return word" (share, same, also, co-, together,
other) beside a relation's cue lets one cue stand for a hop out along the relation and back ("films that
share a director with X": -directed_by-> <-directed_by-). It assumes English questions.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from agents.text import STOPWORDS, WH_WORDS, find_span, words
from graph.paths import Pattern, grow_patterns
from graph.relations import relation_name, split_words, value_shape
from graph.store import GraphStore

RETURN_WORDS = ("share", "same", "also", "co", "together", "other")
TIME_WORDS = frozenset(["when", "year", "years", "date", "dates", "decade", "century", "time"])
QUANTITY_WORDS = frozenset(["many", "much", "number", "old", "age", "count", "amount", "total"])

# Cosine similarities of all-MiniLM-L6-v2 between a word and an unrelated relation's words sit around
# 0.25-0.45; related ones at 0.55-0.85. Relevance maps [FLOOR, CEIL] onto [0, 1]. A hop needs a word of
# relevance at least SUPPORT to count as asked for.
FLOOR, CEIL, SUPPORT = 0.35, 0.8, 0.3
TARGET_SUPPORT = 0.5  # the answer-type word ("which [genres]") must name a hop this plainly to ask for it
LEXICAL, CUE = 0.9, 1.0  # a shared stem with the relation's own words; a schema cue
RETURN = 0.5  # a chain that goes out and back where a return word asks for it
SURPLUS = 0.3  # a word naming one more hop of a relation than the chain takes ("directed ... the director of")
KIND_SAMPLE = 3  # end entities per chain whose incoming relations say what kind of thing the chain reaches


@dataclass(frozen=True, slots=True)
class RelationCues:
    cues: tuple[str, ...]  # stems that name the relation in a question
    head: tuple[str, ...] = ()  # words that ask for the relation's head type ("movie")
    tail: tuple[str, ...] = ()  # ... and for its tail type ("who", "director")
    description: str = ""


@dataclass
class RelationSchema:
    """Optional cue words per relation, from a file a user writes or `trellis schema suggest` drafts."""

    relations: dict[str, RelationCues] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RelationSchema:
        """Read a schema file: `{relation: {"cues": [...], "head": [...], "tail": [...], "description"?}}`."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable relation schema: {error}") from error
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a relation schema is a JSON object keyed by relation type")
        relations = {}
        for name, entry in raw.items():
            if name.startswith("_"):
                continue  # comments and metadata (`_about`) of a drafted schema
            if not isinstance(entry, dict) or not isinstance(entry.get("cues"), list) or not entry["cues"]:
                raise ValueError(f"{path}: relation {name!r} needs a non-empty list field 'cues'")
            for key in ("cues", "head", "tail"):
                if not all(isinstance(word, str) and word.strip() for word in entry.get(key, [])):
                    raise ValueError(f"{path}: relation {name!r}: field {key!r} must list non-empty strings")
            relations[name] = RelationCues(
                tuple(s.lower() for s in entry["cues"]),
                tuple(s.lower() for s in entry.get("head", [])),
                tuple(s.lower() for s in entry.get("tail", [])),
                str(entry.get("description", "")),
            )
        return cls(relations)

    def cues_of(self, relation: str) -> RelationCues:
        """The schema's cues, or the relation's own name read as words (`directed_by` -> `direct`)."""
        if relation in self.relations:
            return self.relations[relation]
        name = relation_name(relation)
        return RelationCues(tuple(w for w in name.words.split() if w not in STOPWORDS) or (name.words,))


def _is_return_word(token: str) -> bool:
    """`share`, `shared`, `same`, `co` (of "co-starred"): whole words, or longer ones' inflections."""
    return any(token == w or (len(w) > 3 and token.startswith(w)) for w in RETURN_WORDS)


def _shares_stem(word: str, other: str) -> bool:
    """`released` ~ `release`, `directed` ~ `director`, `writers` ~ `written`: a common prefix of at least
    four letters that covers all but the last letter or two of the shorter word (a plural `s` aside). A
    compound's head counts too (`screenwriter` ~ `written`, `birthplace` ~ `place`): English compounds end
    on the word they are a kind of. Assumes English words."""
    if _prefix_stem(word, other):
        return True
    return any(_prefix_stem(word[cut:], other) for cut in range(3, len(word) - 3))


def _prefix_stem(word: str, other: str) -> bool:
    word, other = _singular(word), _singular(other)
    shorter = min(len(word), len(other))
    if shorter < 4:
        return word == other
    common = 0
    for a, b in zip(word, other, strict=False):
        if a != b:
            break
        common += 1
    return common >= max(4, shorter - 2)


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") and not word.endswith("ss") else word


class RelationLexicon:
    """Relation descriptions and question-phrase embeddings, computed once and cached per process.

    `embed` maps texts to unit vectors (the retrieval embedder); without one, only stems link words to
    relations.
    """

    def __init__(
        self, schema: RelationSchema, embed: Callable[[Sequence[str]], np.ndarray] | None = None, cache: int = 20_000
    ) -> None:
        self.schema = schema
        self.embed = embed
        self._relations: dict[str, tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]] = {}
        self._phrases: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache = cache
        self._lock = threading.Lock()
        self._known: list[str] | None = None

    def describe(self, relation: str) -> list[str]:
        """Texts that say what `relation` is: its name's words, with its type part, and the schema's cues."""
        name = relation_name(relation)
        entry = self.schema.relations.get(relation)
        texts = [name.words]
        content = [w for w in name.words.split() if w not in STOPWORDS]
        if content and content[-1] != name.words:
            texts.append(content[-1])  # names usually end on what the relation leads to: plays_in_club -> club
        if name.domain:
            texts.append(f"{name.domain} {name.words}")
        if entry is not None:
            texts += [c for c in entry.cues if len(c) > 3]
            if entry.description:
                texts.append(entry.description)
        return list(dict.fromkeys(texts))

    def _relation(self, relation: str) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
        known = self._relations.get(relation)
        if known is None:
            self.prepare([relation])
            known = self._relations[relation]
        return known

    def known_relations(self, store: GraphStore) -> list[str]:
        """Every relation type of the store (read once per lexicon; `forget` after an ingestion)."""
        if self._known is None:
            self._known = [relation for relation, _ in store.relation_counts()]
        return self._known

    def forget(self) -> None:
        self._known = None

    def prepare(self, relations: Sequence[str]) -> None:
        """Embed the descriptions of relations not seen yet, in one batch."""
        new = [r for r in dict.fromkeys(relations) if r not in self._relations]
        if not new:
            return
        texts = {r: self.describe(r) for r in new}
        flat = [t for r in new for t in texts[r]]
        vectors = self.embed(flat) if self.embed is not None else np.zeros((len(flat), 0), dtype=np.float32)
        at = 0
        for relation in new:
            count = len(texts[relation])
            name_words = tuple(w for w in split_words(relation_name(relation).words) if w not in STOPWORDS)
            cues = self.schema.relations[relation].cues if relation in self.schema.relations else ()
            with self._lock:
                self._relations[relation] = (vectors[at : at + count], name_words, cues)
            at += count

    def phrase_vectors(self, phrases: Sequence[str]) -> np.ndarray:
        """Unit vectors of `phrases`, from the cache where they were seen before (an LRU of `cache` phrases)."""
        if self.embed is None:
            return np.zeros((len(phrases), 0), dtype=np.float32)
        with self._lock:
            missing = [p for p in dict.fromkeys(phrases) if p not in self._phrases]
        if missing:
            vectors = self.embed(missing)
            with self._lock:
                for phrase, vector in zip(missing, vectors, strict=True):
                    self._phrases[phrase] = vector
                while len(self._phrases) > self._cache:
                    self._phrases.popitem(last=False)
        with self._lock:
            for phrase in phrases:
                self._phrases.move_to_end(phrase)
            return np.stack([self._phrases[p] for p in phrases])

    def relevance(self, token: str, phrase_vectors: np.ndarray, relation: str) -> float:
        """How strongly a question word (with the phrases around it) names `relation`, 0..1."""
        vectors, name_words, cues = self._relation(relation)
        score = 0.0
        if cues and token.startswith(cues):
            score = CUE
        elif any(_shares_stem(token, w) for w in name_words):
            score = LEXICAL
        if vectors.shape[1] and phrase_vectors.shape[1]:
            cosine = float((phrase_vectors @ vectors.T).max())
            score = max(score, min(1.0, max(0.0, (cosine - FLOOR) / (CEIL - FLOOR))))
        return score


@dataclass
class QuestionCues:
    """The question as the chain scorer reads it: its content words, their relevance to each relation met,
    where they stand relative to the topic entity, and the kind of answer asked for."""

    tokens: list[str]
    anchor: int  # position of the topic entity's mention
    content: list[int]  # positions of words that may name a relation
    asked_shape: str | None  # "time", "quantity", or None (a name, or not said)
    target: int | None  # the word naming the answer type ("which [country]"), if any
    lexicon: RelationLexicon
    relevance: dict[str, list[float]] = field(default_factory=dict)  # relation -> per content word
    return_near: set[int] = field(default_factory=set)  # content words a return word modifies
    _returns: list[int] = field(default_factory=list)  # positions of return words
    _vectors: list[np.ndarray] = field(default_factory=list)
    _baseline: list[float] | None = None
    head_noun: int | None = None  # a content word right after the mention ("the [X] director")
    wh: int | None = None  # position of the first wh-word
    _best_kind: dict[tuple[int, int], float] = field(default_factory=dict)  # (word, relations met) -> best

    @classmethod
    def of(cls, question: str, mention: str, lexicon: RelationLexicon, others: Sequence[str] = ()) -> QuestionCues:
        tokens = words(question.replace("[", " ").replace("]", " "))
        span = find_span(tokens, mention)
        taken = set(span)
        for other in others:  # other entities' names are not relation words
            taken |= set(find_span(tokens, other, taken))
        anchor = span[0] if span else 0
        content = [
            i
            for i, t in enumerate(tokens)
            if i not in taken and t not in STOPWORDS and t not in WH_WORDS and len(t) > 1 and not _is_return_word(t)
        ]
        wh = next((i for i, t in enumerate(tokens) if t in WH_WORDS and i not in taken), None)
        target = None
        if wh is not None and tokens[wh] in ("where", "who", "whom"):
            target = wh  # "where", "who" name the answer's kind (a place, a person): read like a noun
            content = sorted([*content, wh])
        elif wh is not None and tokens[wh] in ("what", "which", "name", "list"):
            # the noun of the first run of content words after it: "which soccer [club] is based in X"
            first = next((i for i in content if wh < i <= wh + 3), None)
            if first is not None:
                target = first
                while target + 1 in content and target + 1 - first < 3 and not _is_return_word(tokens[target + 1]):
                    target += 1
        asked = None
        if any(tokens[i] in TIME_WORDS for i in content) or "when" in tokens:
            asked = "time"
        elif any(tokens[i] in QUANTITY_WORDS for i in content):
            asked = "quantity"
        cues = cls(tokens, anchor, content, asked, target, lexicon, wh=wh)
        # a word right after the name that a wh-word follows is the verb asking it ("X [starred] who"), no noun
        if span and span[-1] + 1 in content and not any(t in WH_WORDS for t in tokens[span[-1] + 2 :]):
            cues.head_noun = span[-1] + 1
        phrases: list[list[str]] = []
        for i in content:
            around = [tokens[i]]
            if i == wh:  # a wh-word stands for the answer's kind alone ("who", not "who plays")
                phrases.append(around)
                continue
            if i > 0 and i - 1 not in taken:
                around.append(f"{tokens[i - 1]} {tokens[i]}")
            if i + 1 < len(tokens) and i + 1 not in taken:
                around.append(f"{tokens[i]} {tokens[i + 1]}")
            phrases.append(around)
        flat = [p for group in phrases for p in group]
        vectors = lexicon.phrase_vectors(flat) if flat else np.zeros((0, 0), dtype=np.float32)
        at = 0
        for group in phrases:
            cues._vectors.append(vectors[at : at + len(group)])
            at += len(group)
        cues._returns = [j for j, t in enumerate(tokens) if j not in taken and _is_return_word(t)]
        return cues

    def add(self, relations: set[str]) -> None:
        """Relevance of every content word to relations not looked at yet."""
        new = sorted(relations - set(self.relevance))
        self.lexicon.prepare(new)
        raw = {
            relation: [
                self.lexicon.relevance(self.tokens[i], self._vectors[k], relation) for k, i in enumerate(self.content)
            ]
            for relation in new
        }
        if self._baseline is None and raw:
            # A word names a relation only as far as it names it more than it names relations at large: "movies"
            # is about as near every film relation, "club" near one. The median over the graph's relations is
            # that common level (the first call adds them all: see `rank_chains`).
            self._baseline = [
                float(np.median([r[k] for r in raw.values()])) if len(raw) > 2 else 0.0
                for k in range(len(self.content))
            ]
        for relation, scores in raw.items():
            self.relevance[relation] = [max(0.0, v - b) for v, b in zip(scores, self._baseline or [], strict=True)]
        if self._returns and not self.return_near and self.relevance:
            self._attach_returns()

    def _attach_returns(self) -> None:
        """Each return word modifies the word within three of it that most plainly names a relation: "films
        that share [directors] with X", "who [wrote] films together with X" (not "films", which at most
        restates the kind of thing; nor the wh-word or answer-type noun)."""
        salience = self.salience()
        naming = [k for k, i in enumerate(self.content) if salience[k] >= SUPPORT and i != self.target]
        for j in self._returns:
            near = [k for k in naming if abs(self.content[k] - j) <= 3]
            if near:
                self.return_near.add(max(near, key=lambda k: (salience[k], -abs(self.content[k] - j))))

    def kind_relevance(self, k: int, kind: Kind) -> float:
        """How well content word k names the kind of entity `kind` describes: by the words of the relations
        leading into them, and a schema's type words (or a dotted name's type part) for either end."""
        token = self.tokens[self.content[k]]
        best = max((self.relevance[r][k] for r in kind.into if r in self.relevance), default=0.0)
        # A word must name what a relation leads to plainly to say the chain's ends are that: a word of one
        # domain sits near all of its relations ("movies" ~ starred_actors), which says nothing about
        # whether the ends are the actors or the movies.
        best = best if best >= TARGET_SUPPORT else 0.0
        schema = self.lexicon.schema.relations
        for relations, end in ((kind.into, "tail"), (kind.out, "head")):
            for relation in relations:
                entry = schema.get(relation)
                if entry is not None and token.startswith(getattr(entry, end) or ("\x00",)):
                    return CUE
                domain = relation_name(relation).domain
                if end == "head" and domain and any(_shares_stem(token, w) for w in domain.split()):
                    best = max(best, LEXICAL)
        return best

    def best_kind_relevance(self, k: int) -> float:
        """How well content word k names the ends of the relation that fits it best (either end), over the
        relations met so far."""
        key = (k, len(self.relevance))
        if key not in self._best_kind:
            self._best_kind[key] = max(
                max(self.kind_relevance(k, Kind(frozenset([r]))), self.kind_relevance(k, Kind(out=frozenset([r]))))
                for r in self.relevance
            )
        return self._best_kind[key]

    def salience(self) -> list[float]:
        """Per content word, its relevance to the best relation met so far."""
        return [max((r[k] for r in self.relevance.values()), default=0.0) for k in range(len(self.content))]

    def outward(self, k: int) -> tuple[int, int]:
        """(side, distance) of content word k from the entity: left of it first, nearest first. A word right
        after the mention reads as the noun the name modifies ("the movies starred by [X] actors": the
        actors of X), so it comes first. Assumes English word order (a modifier before its noun)."""
        position = self.content[k]
        if position == self.head_noun:
            return (-1, 0)
        return (int(position > self.anchor), abs(position - self.anchor))


@dataclass(frozen=True, slots=True)
class Kind:
    """What the KG says a chain's end entities are: the relations they are tails of, and heads of."""

    into: frozenset[str] = frozenset()
    out: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Explanation:
    """How a chain accounts for the question's words."""

    explained: float  # relevance of the words, each by its best relation in the chain
    unexplained: float  # what reachable relations would explain beyond that
    unsupported: int  # hops no word asks for
    ordered: bool  # hops met outward in the question's order
    returns: int = 0  # out-and-back turns a return word asks for
    surplus: int = 0  # words asking for more hops of a relation than the chain takes
    spare: int = 0  # separate words naming a relation beyond the chain's hops of it (a longer chain may use them)
    named: int = 0  # separate words naming one of the chain's hops


def explain(
    pattern: Pattern,
    cues: QuestionCues,
    salience: list[float] | None = None,
    kind: Kind | None = None,
    growing: bool = False,
) -> Explanation:
    """`kind`: the relations whose tails the chain's end entities are (what the KG says those entities are:
    clubs are what `plays_in_club` leads to). The word naming the answer type ("which [club]") is explained
    by that kind, and supports a hop only if the last hop leads into it; without `kind` (a chain still
    growing) it is read like any other word. `growing`: the chain may still go on from its last hop."""
    relations = [relation for relation, _ in pattern]
    turns = Counter(a[0] for a, b in pairwise(pattern) if a[0] == b[0] and a[1] != b[1])
    # turns the chain goes on from by another relation (it asks something of the entities it turned back to);
    # a growing chain's last turn may still go on
    tail = [(None, False)] if growing else []
    onward = Counter(
        a[0]
        for a, b, c in zip(pattern, pattern[1:], [*pattern[2:], *tail], strict=False)
        if a[0] == b[0] != c[0] and a[1] != b[1]
    )
    explained = unexplained = 0.0
    phrases: dict[str, list[int]] = {}  # relation -> content words that support a hop of it
    target = cues.content.index(cues.target) if cues.target is not None and kind is not None else None
    for k in range(len(cues.content)):
        scores = [cues.relevance[r][k] for r in relations]
        if k == target:
            into = relations[-1] in kind.into  # type: ignore[union-attr]
            scores = [0.0] * (len(scores) - 1) + [scores[-1] if into else 0.0]
            typed = cues.kind_relevance(k, kind)  # type: ignore[arg-type]
            scores[-1] = scores[-1] if scores[-1] >= SUPPORT else 0.0
            best = len(scores) - 1
            explained += max(typed, scores[best])
            if salience is not None:
                unexplained += max(0.0, salience[k] - max(typed, scores[best]))
            # A noun naming the answer type asks for a hop of its own only when it plainly names it ("what
            # genres"): "which movies share ..." also restates the kind of the entity asked about. A wh-word
            # ("where") has no other role than asking for the answer's kind.
            needed = SUPPORT if cues.tokens[cues.target] in WH_WORDS else TARGET_SUPPORT  # type: ignore[index]
            if scores[best] >= needed:
                phrases.setdefault(relations[best], []).append(k)
            continue
        best = max(range(len(scores)), key=lambda j: scores[j])
        explained += scores[best]
        if salience is not None:
            unexplained += max(0.0, salience[k] - scores[best])
        if scores[best] >= SUPPORT:
            phrases.setdefault(relations[best], []).append(k)
    unsupported = returns = surplus = spare = named = 0
    implied_hops = 0  # hops only a word naming a turn's entity asks for (see below)
    pool: dict[str, list[tuple[int, int]]] = {}  # relation -> outward places of the words naming its hops
    for relation, hops in Counter(relations).items():
        places = phrases.get(relation, [])
        # adjacent words name one hop ("release year"), the same word twice names two ("directed ... director")
        words = [cues.tokens[cues.content[k]] for k in places]
        positions = [cues.content[k] for k in places]
        separate = [
            k for n, k in enumerate(places) if n == 0 or positions[n] - positions[n - 1] > 1 or words[n] == words[n - 1]
        ]
        back = min(turns[relation], sum(1 for k in separate if k in cues.return_near))
        # A word naming the entity a chain turns at ("films for the [screenwriter] of X") names the hop out to
        # it and, when the question goes on to ask something of that entity's other facts, the hop back along
        # the same relation to them: what is said of "the screenwriter of X" is said along `written_by`.
        implied = min(onward[relation], len(separate))
        # Each separate word names a hop ("the films starred by X actors": two of starred_actors). A return word
        # beside one of them says the relation is taken out and back: two hops, not one more than the words
        # name ("the director of X also directed which films", "directed by the same director of X").
        unasked = max(0, hops - max(len(separate), 2 * back))
        unasked_with_turns = max(0, hops - max(len(separate) + implied, 2 * back))
        unsupported += unasked_with_turns
        implied_hops += unasked - unasked_with_turns
        # the same word (or stem) again names the relation again ("written by the writer of X"); different
        # words for one relation ("national team ... play for") usually say one hop twice
        repeats = max((sum(_shares_stem(w, v) for v in words) for w in words), default=0)
        surplus += max(0, repeats - hops)
        # a spare word asks for one more hop only if it names no other relation as well ("plays" names each
        # of plays_in_club, plays_position and plays_for_country: it is read as the hop of whichever it joins)
        # and is not the answer-type word ("what [movies] did X star in": it says what the hop reaches)
        distinct = [
            k
            for k in separate
            if cues.content[k] != cues.target and sum(r[k] >= SUPPORT for r in cues.relevance.values()) == 1
        ]
        spare += max(0, len(distinct) - hops)
        returns += back
        named += len(separate)
        pool[relation] = sorted(cues.outward(k) for k in separate)
    if len(relations) == 1 and unsupported:
        unsupported = 0  # a question about an entity asks for at least one hop: a single hop needs no cue word
    ordered = _in_order(relations, pool)
    if not ordered:
        # the turn's word names the entity the rest of the question speaks of only where it stands nearer the
        # topic entity than the words of the hops after the turn ("who starred films for the director of X"
        # is no turn along `starred_actors`)
        unsupported += implied_hops
    return Explanation(explained, unexplained, unsupported, ordered, returns, surplus, spare, named)


def _in_order(relations: Sequence[str], pool: dict[str, list[tuple[int, int]]]) -> bool:
    """Whether each hop can take a word naming it that stands further out from the entity than the previous
    hop's word ("the films [written] by the [director] of X": directed_by, then written_by). A hop whose
    relation has no word left (a return word's way back, or a hop nobody asked for) takes none."""
    last, taken = (-1, -1), False
    left = {relation: list(places) for relation, places in pool.items()}
    for relation in relations:
        places = left.get(relation) or []
        later = [place for place in places if place > last]
        if later:
            last, taken = later[0], True
            places.remove(later[0])
        elif places:
            return False
    return taken


def answer_shape_score(cues: QuestionCues, reach_names: Sequence[str]) -> float:
    """Whether the chain ends on the value shape the question asks for: a year or date for "when", a
    number for "how many", a name otherwise."""
    score = 0.0
    if reach_names:
        shapes = Counter(value_shape(name) for name in reach_names)
        shape = shapes.most_common(1)[0][0]
        if cues.asked_shape == "time":
            score += 0.5 if shape in ("year", "date") else -1.0
        elif cues.asked_shape == "quantity":
            score += 0.5 if shape == "number" else -1.0
        elif shape in ("year", "date", "number"):
            score -= 0.5  # "who", "which club": a name is asked for
    return score


def score_pattern(
    pattern: Pattern,
    cues: QuestionCues,
    reach_names: Sequence[str] = (),
    salience: list[float] | None = None,
    partial: bool = False,
    kind: Kind | None = None,
) -> float:
    """Higher is better. `partial` scores a chain still growing: what it does not explain yet costs nothing."""
    found = explain(
        pattern, cues, None if partial else (salience if salience is not None else cues.salience()), kind, partial
    )
    # a return word ("the same director as X") asks for a chain that goes out along a relation and back
    score = _explanation_score(found, len(pattern))
    if partial:
        return score
    # ... and a chain that never turns leaves that word's request unmet ("novels with the same author as X"
    # asks for novels, not for the author)
    unmet = bool(cues.return_near) and not found.returns
    return score - RETURN * unmet + 0.3 * found.ordered + answer_shape_score(cues, reach_names)


def _future(pattern: Pattern, cues: QuestionCues, left: int) -> float:
    """What `left` more hops could at best still explain: the largest gaps between a word's salience and its
    explanation by this chain, one per hop (a beam's estimate of the cost to come, so that a chain whose
    first hops explain little is not dropped before the hops that would explain the rest)."""
    if left <= 0:
        return 0.0
    relations = {r for r, _ in pattern}
    gaps = [max(0.0, best - max(cues.relevance[r][k] for r in relations)) for k, best in enumerate(cues.salience())]
    return sum(sorted(gaps)[-left:])


def _explains_all(pattern: Pattern, cues: QuestionCues) -> bool:
    """Every word that names some relation (relevance >= SUPPORT) is explained about as well by this chain,
    every hop is asked for, the hops named are met in the question's order (a question naming none, "what
    does X appear in" on a KG without a schema, has no order to break), and no word names a hop more of a
    relation than the chain takes (then a longer chain could still read the question better)."""
    found = explain(pattern, cues)
    out_of_order = found.named > 0 and not found.ordered
    if found.unsupported or found.surplus or found.spare or out_of_order or not _reaches_asked_kind(pattern, cues):
        return False
    relations = {r for r, _ in pattern}
    for k, best in enumerate(cues.salience()):
        if best >= SUPPORT and max(cues.relevance[r][k] for r in relations) < best - 0.1:
            return False
    return True


def _reaches_asked_kind(pattern: Pattern, cues: QuestionCues) -> bool:
    """Whether the chain's last hop leads to entities of the kind the answer-type word asks for ("who", "which
    person") about as well as any relation's ends would: what a relation leads to (its tails) for a forward
    hop, what it leaves (its heads) for a backward one. The entities' other relations are not looked up
    here, so this is only a growing chain's estimate of `QuestionCues.kind_relevance`."""
    if cues.target is None or cues.target not in cues.content:
        return True
    if cues.wh is not None and cues.wh < cues.anchor < cues.target:
        return True  # a word after the entity ("what does X [act] in") names a hop, not the answer's type
    k = cues.content.index(cues.target)
    relation, forward = pattern[-1]
    here = cues.kind_relevance(k, Kind(frozenset([relation])) if forward else Kind(out=frozenset([relation])))
    return here >= cues.best_kind_relevance(k) - 0.1


@dataclass(frozen=True, slots=True)
class ScoredPattern:
    pattern: Pattern
    score: float
    reach: frozenset[str]  # entities at the end of the chain
    passes: frozenset[str] = frozenset()  # excluded entities (other names of the question) it also reaches


def rank_patterns(*args: object, **kwargs: object) -> list[ScoredPattern]:
    """Relation chains that leave an entity, best first (see `rank_chains`)."""
    return rank_chains(*args, **kwargs)[0]  # type: ignore[arg-type]


def _explanation_score(found: Explanation, hops: int) -> float:
    return (
        found.explained
        - 0.5 * found.unexplained
        - 1.0 * found.unsupported
        - SURPLUS * found.surplus
        - 0.1 * hops
        + RETURN * bool(found.returns)
    )


def joint_score(primary: ScoredPattern, constraint: Pattern, cues: QuestionCues) -> float:
    """The score of a constraint reading: the primary chain's, with the question's words explained by the
    relations of both chains together (each word once), and the second chain's hops paid for. The second
    chain's first hop is cued by its entity's own name."""
    salience = cues.salience()
    alone = _explanation_score(explain(primary.pattern, cues, salience), len(primary.pattern))
    both = (*primary.pattern, *constraint)
    found = explain(both, cues, salience)
    together = _explanation_score(found, len(both)) + (1.0 if found.unsupported else 0.0)
    return primary.score - alone + together


def rank_chains(
    store: GraphStore,
    start_id: str,
    question: str,
    mention: str,
    schema: RelationSchema | RelationLexicon,
    max_hops: int = 3,
    beam: int = 8,
    max_frontier: int = 5_000,
    others: Sequence[str] = (),
    sample_names: int = 12,
    exclude: Collection[str] = (),
) -> tuple[list[ScoredPattern], QuestionCues]:
    """Relation chains of 1..`max_hops` hops that leave `start_id`, best first for `question`, and the
    question as read for them.

    `schema` is a lexicon (which links words to relations by meaning too) or a bare schema (stems only).
    `others`: names of other entities in the question, whose words are not relation cues. `exclude`:
    entities that are no answer (those the question names); a chain that reaches only them is dropped.
    """
    lexicon = schema if isinstance(schema, RelationLexicon) else RelationLexicon(schema)
    frontier: dict[Pattern, frozenset[str]] = {(): frozenset([start_id])}
    found: list[tuple[Pattern, frozenset[str]]] = []
    cues = QuestionCues.of(question, mention, lexicon, others)
    # Every relation of the graph, so that a word no relation near the entity explains still counts as
    # asking for something (the early stop below must not end a chain the question names more hops of).
    cues.add(set(lexicon.known_relations(store)))
    for _hop in range(max_hops):
        grown = list(grow_patterns(store, frontier, start_id, max_frontier).items())
        if not grown:
            break
        if exclude:
            grown = [(p, reach) for p, reach in grown if reach - set(exclude)]
        cues.add({pattern[-1][0] for pattern, _ in grown})
        left = max_hops - _hop - 1
        grown.sort(key=lambda item: -score_pattern(item[0], cues, partial=True) - _future(item[0], cues, left))
        found += grown
        frontier = dict(grown[:beam])
        if not cues.return_near and any(_explains_all(p, cues) for p, _ in grown[:beam]):
            break  # a chain already explains every word; a longer one could only add hops nobody asked for
    salience = cues.salience()
    rough = sorted(found, key=lambda item: -score_pattern(item[0], cues, salience=salience) + 0.01 * len(item[0]))
    rough = rough[: beam * 2]
    sample = {p: sorted(reach)[:sample_names] for p, reach in rough}
    sampled = sorted({i for ids in sample.values() for i in ids})
    names = {e.id: e.name for e in store.get_entities(sampled)}
    into: dict[str, set[str]] = {}  # entity -> relations it is the tail of
    out: dict[str, set[str]] = {}  # ... and the head of
    # a few end entities per chain say what kind they are (one small query for their relation types)
    for entity, relation, forward in store.relation_kinds(
        sorted({i for ids in sample.values() for i in ids[:KIND_SAMPLE]})
    ):
        (out if forward else into).setdefault(entity, set()).add(relation)
    cues.add({r for kinds in into.values() for r in kinds})
    salience = cues.salience()
    scored = []
    for p, reach in rough:
        passes = reach & set(exclude)
        reach = reach - passes
        ends = sample[p][:KIND_SAMPLE]
        kind = Kind(
            frozenset(r for i in ends for r in into.get(i, ())), frozenset(r for i in ends for r in out.get(i, ()))
        )
        shown = [names[i] for i in sample[p] if i in names]
        scored.append(ScoredPattern(p, score_pattern(p, cues, shown, salience, kind=kind), reach, frozenset(passes)))
    return sorted(scored, key=lambda s: (-s.score, len(s.pattern))), cues
