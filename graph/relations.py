"""What a knowledge graph says about its own relations: their names as words, and what they connect.

A user's KG arrives with relation names, not with a description of them. Names come in a few common
styles, and each can be read as words: `directed_by`, `releaseYear`, `people.person.spouse` (Freebase:
domain, type, property), `http://schema.org/birthPlace` (a URI's local name), `parents_inverse` or
`~parents` (the same relation read backwards). The triples themselves say the rest: how many there are,
which entity types and value shapes (years, numbers, names) sit at each end, and a few examples.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from graph.store import GraphStore

_INVERSE_SUFFIX = re.compile(r"(?:[_\-. ](?:inverse|inv|reverse)|\^-1)$", re.IGNORECASE)
_INVERSE_PREFIX = re.compile(r"^(?:~|inverse[_\-. ]|reverse[_\-. ])", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[_\W]+")
_YEAR = re.compile(r"^(1[0-9]{3}|20[0-9]{2})$")
_NUMBER = re.compile(r"^[+-]?[0-9][0-9,]*(\.[0-9]+)?%?$")
_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?|^\d{1,2}[/.]\d{1,2}[/.]\d{2,4}$")


@dataclass(frozen=True, slots=True)
class RelationName:
    """A relation type read as words. `inverse`: the name says it runs from tail to head (`parents_inverse`),
    so its words describe the reversed step. `domain`: words of a dotted name's type part, if any."""

    words: str
    inverse: bool = False
    domain: str = ""


def split_words(text: str) -> list[str]:
    """`releaseYear` -> [release, year]; `directed_by` -> [directed, by]; lower case."""
    return [w.lower() for w in _SEPARATORS.split(_CAMEL.sub(" ", text)) if w]


def relation_name(relation: str) -> RelationName:
    """Words of a relation type, in any of the common naming styles (see the module docstring)."""
    name = relation.strip()
    if "/" in name or "#" in name:  # a URI: its local name
        name = re.split(r"[/#]", name.rstrip("/#"))[-1] or name
    inverse = False
    for pattern in (_INVERSE_SUFFIX, _INVERSE_PREFIX):
        stripped = pattern.sub("", name)
        if stripped != name and stripped:
            name, inverse = stripped, True
    domain = ""
    if "." in name:  # Freebase style: domain.type.property; the property names the relation
        parts = [p for p in name.split(".") if p]
        domain = " ".join(split_words(parts[-2])) if len(parts) > 1 else ""
        name = parts[-1] if parts else name
    words = " ".join(split_words(name)) or relation.lower()
    return RelationName(words, inverse, domain)


def value_shape(name: str) -> str:
    """`year`, `date`, `number` or `name`: what kind of value an entity's name is."""
    text = name.strip()
    if _YEAR.match(text):
        return "year"
    if _DATE.match(text):
        return "date"
    if _NUMBER.match(text):
        return "number"
    return "name"


@dataclass
class EndProfile:
    """One end (heads or tails) of a relation: its entity types, value shapes and example names."""

    types: Counter[str] = field(default_factory=Counter)
    shapes: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, name: str, entity_type: str, keep: int) -> None:
        if entity_type:
            self.types[entity_type] += 1
        self.shapes[value_shape(name)] += 1
        if len(self.examples) < keep and name not in self.examples:
            self.examples.append(name)

    @property
    def shape(self) -> str:
        return self.shapes.most_common(1)[0][0] if self.shapes else "name"

    @property
    def type(self) -> str:
        return self.types.most_common(1)[0][0] if self.types else ""


@dataclass
class RelationProfile:
    relation: str
    name: RelationName
    count: int
    head: EndProfile
    tail: EndProfile
    examples: list[tuple[str, str]]  # (head, tail) names


def profile_relations(store: GraphStore, sample: int = 200, keep: int = 5) -> dict[str, RelationProfile]:
    """Every relation type of the store with its count, and its ends profiled from up to `sample` triples."""
    profiles: dict[str, RelationProfile] = {}
    for relation, count in store.relation_counts():
        head, tail = EndProfile(), EndProfile()
        examples: list[tuple[str, str]] = []
        for head_name, head_type, tail_name, tail_type in store.relation_sample(relation, sample):
            head.add(head_name, head_type, keep)
            tail.add(tail_name, tail_type, keep)
            if len(examples) < keep:
                examples.append((head_name, tail_name))
        profiles[relation] = RelationProfile(relation, relation_name(relation), count, head, tail, examples)
    return profiles


_SHAPE_LABEL = {"year": "a year", "date": "a date", "number": "a number", "name": ""}
_SHAPE_WORDS = {"year": ["when", "year"], "date": ["when", "date"], "number": ["how many", "number"]}


def draft_schema(profiles: dict[str, RelationProfile]) -> dict[str, object]:
    """A relation schema drafted from the data, for a user to read and edit (the format `RelationSchema.load`
    reads): per relation its name's words as cues, type words for each end (the entity type, a dotted
    name's type part, or the value shape), a description, and what the data showed (count, shapes,
    examples), which the loader ignores."""
    schema: dict[str, object] = {
        "_about": (
            "Drafted by `trellis schema suggest` from the loaded graph. Edit 'cues' (word stems a question "
            "uses for the relation), 'head' and 'tail' (words that ask for each end's type), 'description'; "
            "keys starting with '_' and the fields 'count', 'shapes', 'examples' are ignored on loading."
        )
    }
    for relation, profile in sorted(profiles.items()):
        name = profile.name
        cues = [w for w in name.words.split() if len(w) > 2 and w not in ("has", "the", "and", "for")]
        head, tail = (profile.tail, profile.head) if name.inverse else (profile.head, profile.tail)
        schema[relation] = {
            "cues": cues or [name.words],
            "head": _end_words(head, name.domain),
            "tail": _end_words(tail, ""),
            "description": " ".join(
                w for w in (head.type or name.domain, name.words, tail.type or _SHAPE_LABEL[tail.shape]) if w
            ),
            "count": profile.count,
            "shapes": {"head": head.shape, "tail": tail.shape},
            "examples": [list(pair) for pair in profile.examples],
        }
    return schema


def _end_words(end: EndProfile, domain: str) -> list[str]:
    words = split_words(end.type) if end.type else []
    if domain:
        words += domain.split()
    words += _SHAPE_WORDS.get(end.shape, [])
    return list(dict.fromkeys(words))
