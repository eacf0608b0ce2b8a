"""The KG-Trie: verbalised graph paths as a token trie, for graph-constrained decoding (GCR).

Every entity name and arrowed relation is tokenized once, with a leading space, and paths are assembled from
those cached pieces: with a byte-level BPE, text split at spaces tokenizes piecewise exactly as it does whole
(tests check this), so assembling is both fast and faithful. The trie keeps each node's children in a dict,
so a decoding step is one lookup. `graph` knows no model: the caller passes the tokenizer's `encode`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from graph.paths import Path, backward_arrow, forward_arrow

PATH_START = "<PATH>"
PATH_END = " </PATH>"

Encode = Callable[[str], list[int]]
EncodeBatch = Callable[[list[str]], list[list[int]]]


class TokenTrie:
    """Token sequences sharing prefixes; node 0 is the root; `values[node]` marks a complete sequence."""

    def __init__(self) -> None:
        self._children: list[dict[int, int]] = [{}]
        self.values: dict[int, int] = {}

    root = 0

    def __len__(self) -> int:
        return len(self.values)

    def add(self, ids: Sequence[int], value: int) -> None:
        self.values.setdefault(self.extend(self.root, ids), value)

    def extend(self, node: int, ids: Sequence[int]) -> int:
        """Add `ids` below `node` (sharing what exists); returns the node reached."""
        for token in ids:
            child = self._children[node].get(token)
            if child is None:
                child = len(self._children)
                self._children[node][token] = child
                self._children.append({})
            node = child
        return node

    def children(self, node: int) -> Mapping[int, int]:
        return self._children[node]

    def walk(self, ids: Sequence[int], node: int = 0) -> int | None:
        """The node reached by following `ids` from `node`, or None if they leave the trie."""
        for token in ids:
            child = self._children[node].get(token)
            if child is None:
                return None
            node = child
        return node

    @property
    def depth(self) -> int:
        """Length of the longest sequence."""
        deepest, frontier = 0, [(0, 0)]
        while frontier:
            node, level = frontier.pop()
            deepest = max(deepest, level)
            frontier.extend((child, level + 1) for child in self._children[node].values())
        return deepest


class PathTokenizer:
    """Token ids of verbalised paths, assembled from per-name and per-relation pieces tokenized once."""

    def __init__(self, encode: Encode, encode_batch: EncodeBatch | None = None) -> None:
        self._encode, self._encode_batch = encode, encode_batch
        self._pieces: dict[str, tuple[int, ...]] = {}

    def prepare(self, texts: Sequence[str]) -> None:
        """Tokenize the pieces not seen yet in one batch call (a fast tokenizer batches in Rust)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._pieces]
        if not new:
            return
        if self._encode_batch is None:
            for text in new:
                self.piece(text)
            return
        for text, ids in zip(new, self._encode_batch([" " + t for t in new]), strict=True):
            self._pieces[text] = tuple(ids)

    def piece(self, text: str) -> tuple[int, ...]:
        ids = self._pieces.get(text)
        if ids is None:
            ids = self._pieces[text] = tuple(self._encode(" " + text))
        return ids

    @staticmethod
    def texts(path: Path) -> list[str]:
        """The pieces of `path.verbalise()`: names and arrowed relations, in order."""
        texts = [path.entity_names[0]]
        for relation, forward, name in zip(path.relations, path.forward, path.entity_names[1:], strict=True):
            texts += (forward_arrow(relation) if forward else backward_arrow(relation), name)
        return texts

    def tokens(self, path: Path) -> list[int]:
        """Tokens of `" " + path.verbalise()`."""
        return [token for text in self.texts(path) for token in self.piece(text)]


class KGTrie:
    """The trie of `paths`, each followed by the end delimiter; maps a generated segment back to its path."""

    def __init__(
        self, paths: Sequence[Path], encode: Encode, end: str = PATH_END, encode_batch: EncodeBatch | None = None
    ) -> None:
        self.paths = list(paths)
        self.tokenizer = PathTokenizer(encode, encode_batch)
        texts = [self.tokenizer.texts(p) for p in self.paths]
        self.tokenizer.prepare([t for pieces in texts for t in pieces])
        self.start_ids = tuple(encode(PATH_START))
        self.end_ids = tuple(encode(end))
        self.trie = TokenTrie()
        # Paths share leading pieces (the start entity, its relations, its neighbours): remember the node
        # each (node, piece) led to, so a path is inserted with one lookup per piece, not per token.
        after: dict[tuple[int, str], int] = {}
        for number, pieces in enumerate(texts):
            node = self.trie.root
            for text in pieces:
                reached = after.get((node, text))
                if reached is None:
                    reached = after[(node, text)] = self.trie.extend(node, self.tokenizer.piece(text))
                node = reached
            self.trie.values.setdefault(self.trie.extend(node, self.end_ids), number)

    def path_of(self, segment: Sequence[int]) -> Path | None:
        """The path a generated segment (from after the start delimiter, end delimiter included) spells."""
        node = self.trie.walk(segment)
        if node is None or node not in self.trie.values:
            return None
        return self.paths[self.trie.values[node]]
