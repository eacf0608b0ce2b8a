"""The FAISS index of chunk vectors: ids mapped to chunk ids, saved atomically, removable.

One file holds the index, its id map and the embedding model it was built with, so that they can never
disagree after a crash: it is written to a temporary file and renamed over the old one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "hnsw"]


class VectorIndexError(RuntimeError):
    pass


def vector_id(key: str) -> int:
    """A stable non-negative int64 for a chunk id (FAISS ids are int64)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") >> 1


class VectorIndex:
    """Inner-product search over unit vectors (cosine), keyed by string ids.

    `flat` is exact (IndexIDMap2 over IndexFlatIP); `hnsw` is approximate for large corpora (HNSW cannot
    delete in place, so a removal rebuilds it from the stored vectors).
    """

    def __init__(
        self, path: Path | str, dim: int | None, model: str | None, kind: IndexKind = "flat", hnsw_m: int = 32
    ) -> None:
        """Open the index at `path`, or start an empty one. `dim` and `model` are checked against a stored
        index; None accepts what is stored (for removals, which need no model)."""
        self.path = Path(path)
        self.dim, self.model, self.kind, self.hnsw_m = dim or 0, model or "", kind, hnsw_m
        self._keys: dict[int, str] = {}
        self._index: faiss.IndexIDMap2 | None = None
        if self.path.exists():
            self._load(check=dim is not None)
        elif dim:
            self._index = self._empty()

    def _empty(self) -> faiss.IndexIDMap2:
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    def _load(self, check: bool) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                meta = json.loads(str(saved["meta"]))
                index = faiss.deserialize_index(saved["index"])
                ids, keys = saved["ids"], saved["keys"]
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise VectorIndexError(f"cannot read vector index {self.path}: {error}") from error
        if check and (meta["dim"], meta["model"]) != (self.dim, self.model):
            raise VectorIndexError(
                f"{self.path} holds {meta['dim']}-d vectors of {meta['model']!r}, but the configured embedding "
                f"model is {self.model!r} ({self.dim}-d); re-ingest into a fresh data directory to switch models"
            )
        self.dim, self.model, self.kind = meta["dim"], meta["model"], meta["kind"]
        self._index = index
        self._keys = dict(zip(ids.tolist(), keys.tolist(), strict=True))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return vector_id(key) in self._keys

    def keys(self) -> list[str]:
        return list(self._keys.values())

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add (or replace) one vector per key."""
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if not keys:
            return
        if self._index is None:
            raise VectorIndexError(f"{self.path} was opened without a dimension and holds no index to add to")
        if vectors.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d vectors, got {vectors.shape[1]}-d")
        self.remove([k for k in keys if k in self])
        ids = np.array([vector_id(k) for k in keys], dtype=np.int64)
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self._keys.update(zip(ids.tolist(), keys, strict=True))

    def remove(self, keys: Sequence[str]) -> int:
        """Remove the vectors of `keys` that are present; returns how many were."""
        ids = [i for i in (vector_id(k) for k in keys) if i in self._keys]
        if not ids or self._index is None:
            return 0
        if self.kind == "hnsw":
            gone = set(ids)
            kept = np.array([i for i in self._keys if i not in gone], dtype=np.int64)
            vectors = np.vstack([self._index.reconstruct(int(i)) for i in kept]) if len(kept) else None
            self._index = self._empty()
            if vectors is not None:
                self._index.add_with_ids(vectors, kept)
        else:
            self._index.remove_ids(np.array(ids, dtype=np.int64))
        for i in ids:
            del self._keys[i]
        return len(ids)

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """For each query row, up to `k` (key, cosine) pairs, best first."""
        if len(self) == 0 or self._index is None:
            return [[] for _ in range(len(queries))]
        scores, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self)))
        return [
            [(self._keys[int(i)], float(s)) for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def score(self, query: np.ndarray, keys: Sequence[str]) -> list[tuple[str, float]]:
        """(key, cosine with `query`) for the stored `keys`, best first; unknown keys are left out."""
        known = [key for key in keys if key in self]
        if not known or self._index is None:
            return []
        vectors = np.vstack([self._index.reconstruct(vector_id(key)) for key in known])
        scores = vectors @ np.asarray(query, dtype=np.float32)
        return sorted(zip(known, scores.tolist(), strict=True), key=lambda pair: -pair[1])

    def save(self) -> None:
        """Write index, id map and metadata to one file, atomically (temporary file, fsync, rename)."""
        if self._index is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ids = np.array(list(self._keys), dtype=np.int64)
        keys = np.array([self._keys[i] for i in ids.tolist()], dtype=np.str_)
        meta = json.dumps({"dim": self.dim, "model": self.model, "kind": self.kind})
        buffer = io.BytesIO()
        np.savez(buffer, index=faiss.serialize_index(self._index), ids=ids, keys=keys, meta=np.array(meta))
        partial = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(partial, "wb") as handle:
                handle.write(buffer.getvalue())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, self.path)
        except OSError as error:
            partial.unlink(missing_ok=True)  # the index file itself is untouched: it is replaced only whole
            raise VectorIndexError(f"cannot save the vector index {self.path}: {error.strerror or error}") from None


def stored_vector_count(path: Path) -> int:
    """How many vectors the index file at `path` holds (0 if there is none), without loading FAISS."""
    if not path.exists():
        return 0
    with np.load(path, allow_pickle=False) as saved:
        return int(saved["ids"].shape[0])
