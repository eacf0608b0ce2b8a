"""Entity resolution: surface mentions into graph entities, merging variants and keeping them as aliases.

`Ada Lovelace`, `ADA LOVELACE`, `Ada Lovelace's` and `the Ada Lovelace` share one resolution key; the
first surface form ever seen for a key (less a leading article and possessive; remembered in the manifest)
is the entity's canonical name, and the other forms become its aliases. The manifest's name index is also
seeded from the graph's entities (`seed_names`), so mentions merge with entities that came from triples files
or any other source, in memory and one SQLite lookup per batch, never a store query per name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from graph.model import Chunk, Entity, Relation, evidence_entry, normalised_key
from ingest.extract import Extraction, Mention
from ingest.manifest import Manifest

_POSSESSIVE = re.compile("['\u2019]s?$")
_ARTICLE = re.compile(r"^(the|a|an) ")


def resolution_key(surface: str) -> str:
    """Case, punctuation, a possessive ending and a leading article do not distinguish entities."""
    return _ARTICLE.sub("", normalised_key(_POSSESSIVE.sub("", surface.strip())))


# Only a lower-case article is running text's determiner ("met the Ada Lovelace"); a capitalised one is part
# of the name as written ("The Hague", "The Beatles") and names are stored as given.
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+(?=\S)")


def plain_name(surface: str) -> str:
    """The form a new entity is named by: `the Ada Lovelace's` -> `Ada Lovelace`, `The Hague` stays (the
    surface stays an alias)."""
    bare = _LEADING_ARTICLE.sub("", _POSSESSIVE.sub("", surface.strip())).strip(" ,.;:")
    return bare or surface.strip()


def seed_names(manifest: Manifest, names: Iterable[tuple[str, str]]) -> int:
    """Teach the manifest's name index the graph's own entities (`(id, name)` then `(id, alias)` rows, as
    `GraphStore.iter_entity_names` gives them), so that a document's `the Ada Lovelace` resolves to an
    `Ada Lovelace` loaded from a triples file. One scan of the store per ingestion run, no query per name;
    keys the manifest already knows keep their name. Returns how many keys were offered."""
    canonical: dict[str, str] = {}  # entity id -> its name (the first row of each entity)
    offered: dict[str, str] = {}
    for entity_id, name in names:
        main = canonical.setdefault(entity_id, name)
        key = resolution_key(name)
        if key:
            offered.setdefault(key, main)
    manifest.remember_names(offered)
    return len(offered)


@dataclass(slots=True)
class Resolved:
    entities: list[Entity] = field(default_factory=list)  # one per (document, entity): sources = [doc_id]
    relations: list[Relation] = field(default_factory=list)
    mentions: dict[str, list[str]] = field(default_factory=dict)  # chunk id -> entity ids
    entity_ids_by_doc: dict[str, list[str]] = field(default_factory=dict)


def resolve(
    chunks: Sequence[Chunk], extraction: Extraction, manifest: Manifest, title_mentions: Mapping[str, Mention]
) -> Resolved:
    """Entities, relations and mentions for `chunks`; `title_mentions[doc_id]` is mentioned by all its chunks."""
    mentions_by_chunk = {
        c.id: ([title_mentions[c.doc_id]] if c.doc_id in title_mentions else []) + extraction.mentions.get(c.id, [])
        for c in chunks
    }
    proposals: dict[str, str] = {}
    for mentions in mentions_by_chunk.values():
        for mention in mentions:
            key = resolution_key(mention.text)
            if key:
                proposals.setdefault(key, plain_name(mention.text))
    for fact in extraction.facts:
        for surface in (fact.head, fact.tail):
            if key := resolution_key(surface):
                proposals.setdefault(key, plain_name(surface))
    canonical = manifest.canonical_names(proposals)

    resolved = Resolved()
    by_doc: dict[tuple[str, str], Entity] = {}

    def entity_for(doc_id: str, surface: str, label: str) -> str | None:
        key = resolution_key(surface)
        if not key:
            return None
        name = canonical[key]
        entity = by_doc.get((doc_id, name))
        if entity is None:
            entity = by_doc[(doc_id, name)] = Entity(name=name, type=label, sources=[doc_id])
            resolved.entities.append(entity)
            resolved.entity_ids_by_doc.setdefault(doc_id, []).append(entity.id)
        if surface != entity.name and surface not in entity.aliases:
            entity.aliases.append(surface)
        return entity.id

    doc_of = {c.id: c.doc_id for c in chunks}
    for chunk in chunks:
        ids = [entity_for(chunk.doc_id, m.text, m.label) for m in mentions_by_chunk[chunk.id]]
        resolved.mentions[chunk.id] = list(dict.fromkeys(i for i in ids if i))
    for fact in extraction.facts:
        doc_id = doc_of[fact.chunk_id]
        head, tail = entity_for(doc_id, fact.head, ""), entity_for(doc_id, fact.tail, "")
        if head and tail and head != tail:
            evidence = evidence_entry(doc_id, fact.chunk_id, fact.start, fact.end)
            resolved.relations.append(Relation(head, fact.relation, tail, [doc_id], [evidence]))
    return resolved
