"""Finding what a question is about: entity linking, relation chains and paths, and chunks (vector + graph)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.patterns import ScoredPattern, rank_patterns
from agents.resources import Resources
from agents.state import Citation, LinkedEntity, PathRecord
from graph.paths import Path, pattern_paths

_BRACKETED = re.compile(r"\[([^\]]+)\]")
_WORD = re.compile(r"[\w'\u2019.-]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "with",
        "you",
    ]
)
MAX_NGRAM = 6
VECTOR_LINK_MIN = 0.75  # cosine of question span and entity name for a link by the name index


def link_entities(resources: Resources, question: str, limit: int = 3) -> list[LinkedEntity]:
    """Entities the question names: bracketed names first, else the longest word spans that name an entity
    (exact, then case/punctuation-insensitive), else fuzzy and name-vector matches of the whole question."""
    store = resources.store
    linked: list[LinkedEntity] = []
    for mention in _BRACKETED.findall(question):
        for how in ("exact", "normalised", "fuzzy"):
            found = store.find_entities(mention.strip(), how, limit=1)  # type: ignore[arg-type]
            if found:
                linked.append(_linked(found[0].id, found[0].name, mention, how, 1.0 if how != "fuzzy" else 0.8))
                break
    if linked:
        return linked[:limit]
    words = _WORD.findall(question)
    taken = [False] * len(words)
    for size in range(min(MAX_NGRAM, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            span = words[start : start + size]
            if any(taken[start : start + size]) or all(w.lower() in _STOPWORDS for w in span):
                continue
            # A name is written with a capital somewhere (not counting the question's first word): this
            # keeps "the state" or "a composer" from linking to entities named State or Composer.
            if not any(w[:1].isupper() or w[:1].isdigit() for i, w in enumerate(span, start) if i > 0):
                continue
            text = " ".join(span).strip(".")
            for how in ("exact", "normalised"):
                found = store.find_entities(text, how, limit=1)  # type: ignore[arg-type]
                if found:
                    linked.append(_linked(found[0].id, found[0].name, text, how, 1.0))
                    taken[start : start + size] = [True] * size
                    break
    if linked:
        # Longer spans first: "The Godfather Part II" before "Part"
        return sorted(linked, key=lambda e: -len(e["mention"]))[:limit]
    index = resources.entity_index
    if index is not None and len(index):
        [hits] = index.search(resources.embedder.embed([question]), k=limit)
        ids = [key for key, score in hits if score >= VECTOR_LINK_MIN]
        scores = dict(hits)
        for entity in store.get_entities(ids):
            linked.append(_linked(entity.id, entity.name, entity.name, "vector", scores[entity.id]))
    return linked[:limit]


def _linked(entity_id: str, name: str, mention: str, how: str, score: float) -> LinkedEntity:
    return {"id": entity_id, "name": name, "mention": mention, "how": how, "score": round(float(score), 3)}


@dataclass
class GraphCandidates:
    patterns: list[ScoredPattern]
    paths: list[Path]
    start: LinkedEntity


def graph_candidates(resources: Resources, question: str, entities: list[LinkedEntity]) -> GraphCandidates | None:
    """The best relation chains from the linked entities, and paths along the best one(s) for the trie.

    Paths of every chain that ties for the best score go into the trie (the constrained decoder chooses
    among them); the number of paths is capped so that the trie stays small.
    """
    settings = resources.settings
    best: GraphCandidates | None = None
    for entity in entities:
        ranked = rank_patterns(
            resources.store, entity["id"], question, entity["mention"], resources.schema, settings.max_hops
        )
        if ranked and (best is None or ranked[0].score > best.patterns[0].score):
            best = GraphCandidates(ranked, [], entity)
    if best is None:
        return None
    top = [p for p in best.patterns if p.score >= best.patterns[0].score - 1e-9][:3]
    per_pattern = max(1, settings.trie_paths // len(top))
    for scored in top:
        best.paths += pattern_paths(resources.store, best.start["id"], scored.pattern, per_pattern)
    return best


def path_record(path: Path, score: float) -> PathRecord:
    return {
        "path": path.as_list(),
        "text": path.verbalise(),
        "score": round(score, 4),
        "triples": [list(t) for t in path.triples()],
    }


def retrieve_chunks(
    resources: Resources, question: str, entities: list[LinkedEntity], k: int, hybrid: bool = True
) -> list[tuple[Citation, str]]:
    """(citation, text) of the FAISS top-k chunks; when `hybrid`, the last place goes to the best chunk one
    graph hop away.

    The hop: the entities of the question and of the two best chunks lead to the chunks that mention them;
    a multi-hop question's second passage names the bridge entity rather than the question's words. The
    most similar of those (by cosine with the question) takes the k-th place.
    """
    index = resources.chunk_index
    if index is None or not len(index):
        return []
    query = resources.embedder.embed([question])
    [by_vector] = index.search(query, k=k)
    scores = dict(by_vector)
    top = [chunk_id for chunk_id, _ in by_vector]
    if hybrid and k > 1:
        store = resources.store
        seeds = [e["id"] for e in entities]
        seeds += [entity for _, entity in store.entities_mentioned(top[:2])]
        mentioned = {c for _, c in store.chunks_mentioning(seeds, limit=400)} - set(top[: k - 1])
        scored = index.score(query[0], sorted(mentioned))
        if scored:
            top = [*top[: k - 1], scored[0][0]]
            scores[scored[0][0]] = scored[0][1]
    return [
        (
            {
                "doc_id": chunk.doc_id,
                "chunk_id": chunk.id,
                "title": chunk.title,
                "page": chunk.page,
                "score": round(scores[chunk.id], 4),
            },
            chunk.text,
        )
        for chunk in resources.store.get_chunks(top)
    ]
