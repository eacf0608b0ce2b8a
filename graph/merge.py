"""Merge rules shared by every backend: how two records of the same entity or relation combine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from graph.model import Entity, Relation


def union(existing: Sequence[str], extra: Iterable[str]) -> list[str]:
    """`existing` followed by the items of `extra` it lacks, order kept (so re-running changes nothing)."""
    seen = set(existing)
    merged = list(existing)
    for item in extra:
        if item not in seen:
            seen.add(item)
            merged.append(item)
    return merged


def merge_entity(into: Entity, other: Entity) -> bool:
    """Fold `other` into `into` (same id); returns whether `into` changed."""
    changed = False
    if not into.type and other.type:
        into.type, changed = other.type, True
    aliases = union(into.aliases, (a for a in other.aliases if a != into.name))
    if other.name != into.name and other.name not in aliases:
        aliases.append(other.name)
    if aliases != into.aliases:
        into.aliases, changed = aliases, True
    sources = union(into.sources, other.sources)
    if sources != into.sources:
        into.sources, changed = sources, True
    return changed


def dedupe_entities(entities: Iterable[Entity]) -> dict[str, Entity]:
    """One entity per id, duplicates within a batch merged (into a copy: the caller's objects stay as they were)."""
    by_id: dict[str, Entity] = {}
    copied: set[str] = set()
    for entity in entities:
        seen = by_id.get(entity.id)
        if seen is None:
            by_id[entity.id] = entity
            continue
        if entity.id not in copied:
            seen = by_id[entity.id] = Entity(
                name=seen.name, type=seen.type, aliases=list(seen.aliases),
                sources=list(seen.sources), id=seen.id, key=seen.key,
            )
            copied.add(entity.id)
        merge_entity(seen, entity)
    return by_id


def dedupe_relations(relations: Iterable[Relation]) -> dict[tuple[str, str, str], Relation]:
    """One relation per (head, type, tail), sources merged (into a copy, as for entities)."""
    by_identity: dict[tuple[str, str, str], Relation] = {}
    copied: set[tuple[str, str, str]] = set()
    for relation in relations:
        identity = (relation.head_id, relation.type, relation.tail_id)
        seen = by_identity.get(identity)
        if seen is None:
            by_identity[identity] = relation
            continue
        if identity not in copied:
            seen = by_identity[identity] = Relation(seen.head_id, seen.type, seen.tail_id, list(seen.sources))
            copied.add(identity)
        seen.sources = union(seen.sources, relation.sources)
    return by_identity
