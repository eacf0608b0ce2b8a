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


def merged_fields(
    type_: str, aliases: list[str], sources: list[str], other: Entity
) -> tuple[str, list[str], list[str]] | None:
    """Type, aliases and sources of a stored entity once `other` (same id) is folded in; None if unchanged."""
    if (not other.type or type_) and not other.aliases and set(other.sources) <= set(sources):
        return None  # the common case on re-ingestion, decided without building lists
    merged = (
        type_ or other.type,
        union(aliases, (a for a in other.aliases if a != other.name)),
        union(sources, other.sources),
    )
    return None if merged == (type_, aliases, sources) else merged


def merge_entity(into: Entity, other: Entity) -> bool:
    """Fold `other` into `into` (same id); returns whether `into` changed."""
    merged = merged_fields(into.type, into.aliases, into.sources, other)
    if merged is None:
        return False
    into.type, into.aliases, into.sources = merged
    return True


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
                name=seen.name,
                type=seen.type,
                aliases=list(seen.aliases),
                sources=list(seen.sources),
                id=seen.id,
                key=seen.key,
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
            seen = by_identity[identity] = Relation(
                seen.head_id, seen.type, seen.tail_id, list(seen.sources), list(seen.evidence)
            )
            copied.add(identity)
        seen.sources = union(seen.sources, relation.sources)
        seen.evidence = union(seen.evidence, relation.evidence)
    return by_identity
