"""Fuzzy entity-name matching over whatever a store lists, shared by the backends."""

from __future__ import annotations

from collections.abc import Iterable

from rapidfuzz import fuzz, process

from graph.model import normalised_key


class FuzzyNameIndex:
    """Normalised names and aliases held in memory for rapidfuzz; rebuild after the store changes."""

    def __init__(self, names: Iterable[tuple[str, str]]) -> None:
        self._ids: list[str] = []
        self._keys: list[str] = []
        for entity_id, name in names:
            self._ids.append(entity_id)
            self._keys.append(normalised_key(name))

    def __len__(self) -> int:
        return len(self._keys)

    def search(self, name: str, limit: int = 5, min_score: float = 75.0) -> list[tuple[str, float]]:
        """(entity id, score 0-100) of the closest names, best first, one entry per entity."""
        query = normalised_key(name)
        if not query or not self._keys:
            return []
        hits = process.extract(query, self._keys, scorer=fuzz.token_sort_ratio, limit=limit * 4, score_cutoff=min_score)
        best: dict[str, float] = {}
        for _key, score, position in hits:
            entity_id = self._ids[position]
            best[entity_id] = max(score, best.get(entity_id, 0.0))
        return sorted(best.items(), key=lambda item: -item[1])[:limit]


class NameKeyIndex:
    """Every entity name and alias by its normalised key, in memory: linking a question looks up each of
    its word spans, and LadybugDB has no secondary index to do that per span."""

    def __init__(self, names: Iterable[tuple[str, str]]) -> None:
        self._by_key: dict[str, dict[str, str]] = {}
        for entity_id, name in names:
            key = normalised_key(name)
            if key:
                self._by_key.setdefault(key, {}).setdefault(entity_id, name)
        self.longest = max((len(key.split()) for key in self._by_key), default=0)

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> dict[str, str]:
        """{entity id: name} of the entities whose name or alias has this normalised key."""
        return self._by_key.get(key, {})
