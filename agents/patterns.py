"""Which relation chain a question asks for: cue words in the question, matched against a relation schema.

A KG question names its hops ("who directed the movies written by [X]": written_by from X, then
directed_by), nearest the topic entity first. Each relation has cue stems in a schema (a JSON file that
ships with a knowledge graph; without one, the stems of the relation's own name). A chain scores well when
it uses each cued relation as often as the question cues it, meets the cues outward from the entity, and
ends on the answer type the question asks for. Words like "share", "same", "also" or "co-" let a chain
go out and back along one relation ("films that share a director with X": -directed_by-> <-directed_by-).

Chains are grown as a beam from the entity, one hop at a time, over the relations that actually leave the
entities reached, so only chains that exist in the graph are ever scored.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from graph.paths import Pattern, grow_patterns
from graph.store import GraphStore

RETURN_WORDS = ("share", "same", "also", "co", "together", "other", "for")
_FILLER = {"by", "has", "have", "in", "is", "of", "the", "a", "an", "to", "imdb"}
_TOKEN = re.compile(r"[\w']+")
_ANCHOR = "qqtopicqq"


@dataclass(frozen=True, slots=True)
class RelationCues:
    cues: tuple[str, ...]  # stems that name the relation in a question
    head: tuple[str, ...] = ()  # words that ask for the relation's head type ("movie")
    tail: tuple[str, ...] = ()  # ... and for its tail type ("who", "director")


@dataclass
class RelationSchema:
    relations: dict[str, RelationCues] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RelationSchema:
        """Read a schema file: `{relation: {"cues": [...], "head": [...], "tail": [...]}}`."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable relation schema: {error}") from error
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a relation schema is a JSON object keyed by relation type")
        relations = {}
        for name, entry in raw.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("cues"), list) or not entry["cues"]:
                raise ValueError(f"{path}: relation {name!r} needs a non-empty list field 'cues'")
            relations[name] = RelationCues(
                tuple(s.lower() for s in entry["cues"]),
                tuple(s.lower() for s in entry.get("head", [])),
                tuple(s.lower() for s in entry.get("tail", [])),
            )
        return cls(relations)

    def cues_of(self, relation: str) -> RelationCues:
        """The schema's cues, or stems of the relation's own name (`directed_by` -> `direct`)."""
        if relation in self.relations:
            return self.relations[relation]
        words = [w for w in re.split(r"[_\W]+", relation.lower()) if w and w not in _FILLER]
        stems = tuple(w[:-2] if w.endswith("ed") and len(w) > 5 else w.rstrip("s") for w in words)
        return RelationCues(stems or (relation.lower(),))


@dataclass
class QuestionCues:
    """Where relations are cued: the order in which a chain should meet them, as (side, distance in words)
    from the topic entity. Hops read outward from the entity, first on its left ("the films written by
    the screenwriter of [X]"), then on its right ("[X] ... were directed by who")."""

    tokens: list[str]
    anchor: int
    return_cue: bool
    distances: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    fewest: dict[str, int] = field(default_factory=dict)  # the fewest hops a relation's cues may stand for
    positions: dict[str, list[int]] = field(default_factory=dict)  # token positions of each relation's cues
    returning: set[str] = field(default_factory=set)  # relations a return word turns back (see _turned_back)
    seen: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, question: str, mention: str) -> QuestionCues:
        marked = question.replace(f"[{mention}]", " \x00 ") if f"[{mention}]" in question else question
        if "\x00" not in marked and mention:
            marked = re.sub(re.escape(mention), " \x00 ", marked, count=1, flags=re.IGNORECASE)
        tokens = _TOKEN.findall(marked.replace("\x00", f" {_ANCHOR} ").lower())
        anchor = tokens.index(_ANCHOR) if _ANCHOR in tokens else 0
        return cls(tokens, anchor, any(t.startswith(RETURN_WORDS) for t in tokens if t != _ANCHOR))

    def add(self, relations: set[str], schema: RelationSchema) -> None:
        """Find the cues of relations not looked for yet."""
        for relation in relations - self.seen:
            self.seen.add(relation)
            stems = schema.cues_of(relation).cues
            hits = [
                (i, next(s for s in stems if token.startswith(s)))
                for i, token in enumerate(self.tokens)
                if token != _ANCHOR and token.startswith(stems)
            ]
            # Different cue words close together may name one hop ("released in which years") or two
            # ("movies starred by the actors in"); the same word twice names two ("directed by the
            # director of"). A relation is cued between `fewest` and len(distances) times.
            separate = [
                i for k, (i, stem) in enumerate(hits) if k == 0 or i - hits[k - 1][0] > 4 or stem == hits[k - 1][1]
            ]
            if hits:
                self.distances[relation] = sorted((int(i > self.anchor), abs(i - self.anchor)) for i, _ in hits)
                self.fewest[relation] = len(separate)
                self.positions[relation] = [i for i, _ in hits]
        self.returning = self._turned_back()  # once per new cue set, not once per chain scored

    def _turned_back(self) -> set[str]:
        """Relations a return word turns back: the relation cued nearest to it, within 3 words (on a tie,
        the one after it: "starred movies for the director of")."""
        turned = set()
        for word, token in enumerate(self.tokens):
            if token == _ANCHOR or not token.startswith(RETURN_WORDS):
                continue
            near = [
                (abs(i - word), i < word, relation)
                for relation, places in self.positions.items()
                for i in places
                if 0 < abs(i - word) <= 3
            ]
            if near:
                turned.add(min(near)[2])
        return turned

    def asks_for(self, stems: tuple[str, ...]) -> bool:
        return bool(stems) and any(t.startswith(stems) for t in self.tokens if t != _ANCHOR)


def mismatch(pattern: Pattern, cues: QuestionCues, partial: bool = False) -> int:
    """Hops the question does not cue plus cues the chain does not use (`partial`: only the former)."""
    hops = Counter(relation for relation, _ in pattern)
    most = {relation: len(d) for relation, d in cues.distances.items()}
    if partial:
        return sum(max(0, n - most.get(r, 0)) for r, n in hops.items())
    back = returns_on(pattern, cues)
    count = 0
    for relation in set(hops) | set(most):
        # "share the director with": one cue, out and back
        low, high = cues.fewest.get(relation, 0), most.get(relation, 0) + (relation in back)
        used = hops[relation]
        count += low - used if used < low else max(0, used - high)
    return count


def returns_on(pattern: Pattern, cues: QuestionCues) -> set[str]:
    """Relations the chain goes out and back along where the question puts a return word beside their cue."""
    return {a[0] for a, b in pairwise(pattern) if a[0] == b[0] and a[1] != b[1] and a[0] in cues.returning}


def score_pattern(pattern: Pattern, cues: QuestionCues, schema: RelationSchema, partial: bool = False) -> float:
    """Higher is better. `partial` scores a chain still growing: cued relations it lacks cost nothing yet."""
    score = -2.0 * mismatch(pattern, cues, partial) + 0.5 * bool(returns_on(pattern, cues))
    last, forward = pattern[-1]
    relation_cues = schema.cues_of(last)
    score += 1.0 * cues.asks_for(relation_cues.tail if forward else relation_cues.head)
    remaining = {r: list(d) for r, d in cues.distances.items()}
    met = [remaining[r].pop(0) for r, _ in pattern if remaining.get(r)]
    score += 0.5 * (met == sorted(met))
    return score - 0.1 * len(pattern)


@dataclass(frozen=True, slots=True)
class ScoredPattern:
    pattern: Pattern
    score: float
    reach: frozenset[str]  # entities at the end of the chain


def rank_patterns(
    store: GraphStore,
    start_id: str,
    question: str,
    mention: str,
    schema: RelationSchema,
    max_hops: int = 3,
    beam: int = 8,
    max_frontier: int = 5_000,
) -> list[ScoredPattern]:
    """Relation chains of 1..`max_hops` hops that leave `start_id`, best first for `question`."""
    frontier: dict[Pattern, frozenset[str]] = {(): frozenset([start_id])}
    found: list[tuple[Pattern, frozenset[str]]] = []
    cues = QuestionCues.of(question, mention)
    cues.add(set(schema.relations), schema)
    for _hop in range(max_hops):
        grown = list(grow_patterns(store, frontier, start_id, max_frontier).items())
        if not grown:
            break
        cues.add({pattern[-1][0] for pattern, _ in grown}, schema)
        grown.sort(key=lambda item: -score_pattern(item[0], cues, schema, partial=True))
        found += grown
        frontier = dict(grown[:beam])
        if not cues.return_cue and any(mismatch(p, cues) == 0 for p, _ in grown):
            break  # a chain already uses every cue once; a longer one could only add unexplained hops
    scored = [ScoredPattern(p, score_pattern(p, cues, schema), reach) for p, reach in found]
    return sorted(scored, key=lambda s: (-s.score, len(s.pattern)))
