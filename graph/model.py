"""The logical model every graph backend stores: entities, typed relations with provenance, documents, chunks.

Plain slotted dataclasses rather than pydantic models: a knowledge graph load builds hundreds of thousands
of these, and validation belongs at the edges (file readers, the HTTP API), not in the inner loop.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

_SPACES = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def canonical_name(name: str) -> str:
    """The form an entity is stored and identified by: the name as given, less surrounding whitespace.

    Nothing inside the name is rewritten (no Unicode normalisation, no case folding, no collapsing of
    spaces): `Gen¹³` stays `Gen¹³`, so a cited path can be checked against the user's own file. Case is
    kept too: curated graphs such as MetaQA use `Wolves` (a film) and `wolves` (a tag) for different
    things. Looser matching is the job of `normalised_key` and of lookups, not of identity.
    """
    return name.strip()


def normalised_key(name: str) -> str:
    """A lookup key that forgives case, accents-as-composed, punctuation and spacing."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return _SPACES.sub(" ", _PUNCT.sub(" ", folded)).strip()


def entity_id(name: str) -> str:
    """Stable id of the entity called `name`: the same name always maps to the same id, in any backend."""
    return _id_of_canonical(canonical_name(name))


def _id_of_canonical(name: str) -> str:
    return hashlib.blake2b(name.encode("utf-8"), digest_size=8).hexdigest()


@dataclass(slots=True)
class Entity:
    name: str
    type: str = ""
    aliases: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    id: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        self.name = canonical_name(self.name)
        self.id = self.id or _id_of_canonical(self.name)
        self.key = self.key or normalised_key(self.name)

    @property
    def alias_keys(self) -> list[str]:
        return alias_keys(self.key, self.aliases)


def alias_keys(key: str, aliases: list[str]) -> list[str]:
    """Normalised keys of an entity's aliases, less its own key: what a normalised lookup also matches."""
    if not aliases:
        return []
    return sorted({normalised_key(a) for a in aliases} - {key})


@dataclass(slots=True)
class Relation:
    """A typed, directed fact `head -type-> tail`, supported by one or more sources (documents or triple files)."""

    head_id: str
    type: str
    tail_id: str
    sources: list[str] = field(default_factory=list)
    # Where in the text it was read: `evidence_entry(source, chunk id, sentence span)` strings.
    evidence: list[str] = field(default_factory=list)

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.head_id, self.type, self.tail_id)


def evidence_entry(source: str, chunk_id: str, start: int, end: int) -> str:
    """One piece of evidence for a fact: the sentence `text[start:end]` of chunk `chunk_id` of `source`.

    The source comes first, tab-separated, so deleting a source can drop its evidence by prefix.
    """
    return f"{source}\t{chunk_id}\t{start}:{end}"


@dataclass(slots=True)
class Document:
    id: str
    title: str = ""
    source_path: str = ""
    content_hash: str = ""
    metadata_json: str = "{}"


@dataclass(slots=True)
class Chunk:
    id: str
    doc_id: str
    ordinal: int
    text: str
    page: int = 0  # 1-based page of a paged source (PDF); 0 when the source has no pages
    mentions: list[str] = field(default_factory=list)  # entity ids mentioned in the chunk (written, not read)
    title: str = ""  # the document's title, filled in by reads


@dataclass(frozen=True, slots=True)
class Edge:
    """One relation seen from `origin_id`: `forward` is True when origin is the relation's head."""

    origin_id: str
    type: str
    neighbour_id: str
    neighbour_name: str
    forward: bool


@dataclass(frozen=True, slots=True)
class StoreCounts:
    entities: int
    relations: int
    documents: int
    chunks: int


@dataclass(frozen=True, slots=True)
class DeleteReport:
    source: str
    relations_deleted: int
    entities_deleted: int
    documents_deleted: int
    chunks_deleted: int
