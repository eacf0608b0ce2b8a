"""The graph-store interface every backend implements, and a thread-safe wrapper around any of them.

The backends import this module (for `MatchMode`) and `graph.errors`; the factory that imports the backends
is `graph.backends`, so imports run one way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Literal, Protocol, runtime_checkable

from graph.errors import DiskFullError, GraphStoreError, StoreLockedError
from graph.model import Chunk, DeleteReport, Document, Edge, Entity, Relation, StoreCounts

MatchMode = Literal["exact", "normalised", "fuzzy"]


@runtime_checkable
class GraphStore(Protocol):
    """Entities, typed relations with provenance, documents and chunks, behind one contract.

    Writes merge: upserting an entity or relation that exists adds its new sources and aliases and
    creates nothing. A relation or entity is deleted only when its last supporting source is removed.
    """

    backend: str

    def transaction(self) -> AbstractContextManager[None]:
        """Everything written inside the block commits together or not at all."""
        ...

    def upsert_entities(self, entities: Sequence[Entity]) -> int:
        """Insert or merge entities; returns how many were new."""
        ...

    def upsert_relations(self, relations: Sequence[Relation]) -> int:
        """Insert or merge relations whose endpoints exist; returns how many were new."""
        ...

    def upsert_documents(self, documents: Sequence[Document]) -> int: ...

    def upsert_chunks(self, chunks: Sequence[Chunk]) -> int:
        """Insert or replace chunks, linking each to its document and the entities it mentions."""
        ...

    def get_entities(self, ids: Sequence[str]) -> list[Entity]: ...

    def get_chunks(self, ids: Sequence[str]) -> list[Chunk]:
        """Stored chunks by id, in the order asked, with their document's title."""
        ...

    def find_entities(self, name: str, mode: MatchMode = "exact", limit: int = 5) -> list[Entity]:
        """Entities called `name`: exactly (name or alias), by normalised key, or by fuzzy similarity."""
        ...

    def edges(self, entity_ids: Sequence[str]) -> list[Edge]:
        """Every relation touching the given entities, in both directions, direction kept."""
        ...

    def relation_types(self, entity_id: str) -> list[tuple[str, bool, int]]:
        """(relation type, forward?, count) of the relations touching an entity."""
        ...

    def relation_kinds(self, entity_ids: Sequence[str]) -> list[tuple[str, str, bool]]:
        """(entity id, relation type, forward?) once for each relation type touching each entity: what kind
        of thing an entity is, without reading every edge of a hub."""
        ...

    def relation_counts(self) -> list[tuple[str, int]]:
        """(relation type, number of relations) for every type, most frequent first."""
        ...

    def relation_sample(self, relation: str, limit: int = 200) -> list[tuple[str, str, str, str]]:
        """(head name, head type, tail name, tail type) of up to `limit` relations of one type."""
        ...

    def chunks_mentioning(self, entity_ids: Sequence[str], limit: int = 20) -> list[tuple[str, str]]:
        """(entity id, chunk id) for chunks that mention any of `entity_ids`, at most `limit` rows."""
        ...

    def entities_mentioned(self, chunk_ids: Sequence[str]) -> list[tuple[str, str]]:
        """(chunk id, entity id) for every entity the given chunks mention."""
        ...

    def iter_entity_names(self) -> Iterator[tuple[str, str]]:
        """(id, name) of every entity and (id, alias) of every alias; feeds fuzzy and vector linking."""
        ...

    def counts(self) -> StoreCounts: ...

    def delete_source(self, source: str) -> DeleteReport:
        """Withdraw a source's support: drop its document and chunks, and facts nothing else supports."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> GraphStore: ...

    def __exit__(self, *exc: object) -> None: ...


class SerialisedStore:
    """A store shared by threads (a server's requests): one call, or one whole transaction, at a time.

    The embedded backend's connection must not run two statements at once, and a reader must not slip into
    another thread's open transaction. Methods are looked up on the wrapped store and called under one
    re-entrant lock, so a transaction's own calls (same thread) pass.
    """

    def __init__(self, store: GraphStore) -> None:
        self.inner = store
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self.inner.transaction():
            yield

    def iter_entity_names(self) -> Iterator[tuple[str, str]]:
        with self._lock:
            return iter(list(self.inner.iter_entity_names()))

    def __getattr__(self, name: str) -> object:
        value = getattr(self.inner, name)
        if not callable(value):
            return value

        def locked(*args: object, **kwargs: object) -> object:
            with self._lock:
                return value(*args, **kwargs)

        return locked

    def __enter__(self) -> SerialisedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "DiskFullError",
    "GraphStore",
    "GraphStoreError",
    "MatchMode",
    "SerialisedStore",
    "StoreLockedError",
]
