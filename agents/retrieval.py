"""Finding what a question is about: entity linking, relation chains and paths, and chunks (vector + graph)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from rapidfuzz import fuzz

from agents.chain_choice import MODEL_WEIGHT, chain_log_probs, model_chooses
from agents.patterns import QuestionCues, ScoredPattern, joint_score, rank_chains
from agents.resources import Resources
from agents.spread import fused, spread
from agents.state import Citation, LinkedEntity, PathRecord
from agents.text import STOPWORDS, WH_WORDS
from graph.model import normalised_key
from graph.paths import EdgeMemo, Path, pattern_paths

_BRACKETED = re.compile(r"\[([^\]]+)\]")
_TYPED_WORD = re.compile(r"\w+(?:['\u2019.&-]\w+)*(?:['\u2019]s?)?")
_POSSESSIVE = re.compile(r"['\u2019]s?$")
MAX_NGRAM = 8
VECTOR_LINK_MIN = 0.75  # cosine of question span and entity name for a link by the name index
FUZZY_LINK_MIN = 88.0  # rapidfuzz token-sort ratio for a misspelt name ("Joel Zwik")
MAX_CANDIDATES = 4
FUZZY_SPANS = 8  # longest spans tried when no name matches exactly (each is a scan of every name)


def link_entities(resources: Resources, question: str, limit: int = MAX_CANDIDATES) -> list[LinkedEntity]:
    """Entities the question names, best first: bracketed names; else every word span that is a name or
    alias by its normalised key (any case, punctuation and possessives forgiven: "frederick v of denmark's
    father"), longer spans first and never overlapping; else fuzzy matches of the longer runs of words
    (misspellings); else the entity-name vector index over the whole question.

    A span of function words only is never a name. Which of several linked names the question is about
    is left to the relation chains (`graph_candidates`): a common word that is also a name ("Up") keeps a
    lower prior than a longer or capitalised span.
    """
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
    linked = _spans_linked(resources, question) or _fuzzy_linked(resources, question)
    if linked:
        return linked[:limit]
    index = resources.entity_index
    if index is not None and len(index):
        [hits] = index.search(resources.embedder.embed([question]), k=limit)
        ids = [key for key, score in hits if score >= VECTOR_LINK_MIN]
        scores = dict(hits)
        for entity in store.get_entities(ids):
            linked.append(_linked(entity.id, entity.name, entity.name, "vector", scores[entity.id]))
    return linked[:limit]


def _question_words(question: str) -> list[tuple[str, str, int]]:
    """(normalised key word, the word as typed, the typed word's position) for each word of the question,
    possessive endings dropped."""
    triples = []
    for at, word in enumerate(_TYPED_WORD.findall(question)):
        for part in normalised_key(_POSSESSIVE.sub("", word)).split():
            triples.append((part, word, at))
    return triples


def _span_keys(triples: list[tuple[str, str, int]], start: int, stop: int) -> list[str]:
    """Keys a span of key words may be a name by: possessives dropped ("denmark's father" -> "denmark"), and,
    where a word before the last is possessive, kept as typed inside the name ("Some Mother's Son")."""
    keys = [" ".join(k for k, _, _ in triples[start:stop])]
    first, last = triples[start][2], triples[stop - 1][2]
    whole = start == 0 or triples[start - 1][2] != first
    inner = list(dict.fromkeys((at, typed) for _, typed, at in triples[start:stop] if at != last))
    if whole and any(_POSSESSIVE.search(typed) for _, typed in inner):
        tail = [k for k, _, at in triples[start:stop] if at == last]
        keys.append(" ".join([normalised_key(typed) for _, typed in inner] + tail))
    return keys


def _prior(typed: list[str], all_lower: bool) -> float:
    """How much a span looks like a name: more words, capitals (unless the user types in lower case),
    digits; a single short common word ("up", "her") the least."""
    score = 0.5 * (len(typed) - 1) + 0.05 * sum(len(w) for w in typed)
    if not all_lower:  # the user writes names with capitals: a span typed in lower case is likely a common word
        score += 1.0 if any(w[:1].isupper() for w in typed) else -1.0
    if any(w[:1].isdigit() for w in typed):
        score += 0.3
    return round(score, 3)


def _spans_linked(resources: Resources, question: str) -> list[LinkedEntity]:
    index = resources.name_index
    pairs = _question_words(question)
    keys = [k for k, _, _ in pairs]
    all_lower = question[1:] == question[1:].lower()  # the first letter is capitalised by habit, not as a name
    spans: list[tuple[float, int, int, dict[str, str]]] = []
    for size in range(min(MAX_NGRAM, index.longest, len(keys)), 0, -1):
        for start in range(len(keys) - size + 1):
            span = keys[start : start + size]
            if all(w in STOPWORDS or w in WH_WORDS for w in span):
                continue
            found = {}
            for key in _span_keys(pairs, start, start + size):
                found |= index.get(key) or {}
            if found:
                typed = [w for _, w in dict.fromkeys((at, w) for _, w, at in pairs[start : start + size])]
                spans.append((_prior(typed, all_lower), start, start + size, found))
    taken = [False] * len(keys)
    linked: list[LinkedEntity] = []
    for prior, start, stop, found in sorted(spans, key=lambda s: (-(s[2] - s[1]), -s[0], s[1])):
        if any(taken[start:stop]):
            continue
        taken[start:stop] = [True] * (stop - start)
        mention = " ".join(w for _, w in dict.fromkeys((at, w) for _, w, at in pairs[start:stop]))
        # one key may name several entities (`Wolves` the film, `wolves` the tag): the one written as typed first
        ranked = sorted(found.items(), key=lambda item: (item[1] not in question, item[1]))
        for entity_id, name in ranked[:2]:
            how = "exact" if name in question else "normalised"
            # written otherwise than typed (`lily tomlin` the tag for "Lily Tomlin"): a weaker link, unless
            # the user types everything in lower case
            linked.append(
                _linked(entity_id, name, mention, how, prior - (0.5 if how != "exact" and not all_lower else 0))
            )
    linked.sort(key=lambda e: -e["score"])
    return _with_store_names(resources, linked)


def _fuzzy_linked(resources: Resources, question: str) -> list[LinkedEntity]:
    """Misspelt names: the longest spans of non-function words (up to four), fuzzily against every name."""
    runs: list[list[str]] = [[]]
    for key, typed, _ in _question_words(question):
        if key in STOPWORDS or key in WH_WORDS:
            runs.append([])
        elif not runs[-1] or runs[-1][-1] != typed:
            runs[-1].append(typed)
    spans = {" ".join(run[i : i + n]) for run in runs for n in range(1, 5) for i in range(len(run) - n + 1)}
    linked: list[LinkedEntity] = []
    for text in sorted((t for t in spans if len(t) >= 4), key=len, reverse=True)[:FUZZY_SPANS]:
        for entity in resources.store.find_entities(text, "fuzzy", limit=1):
            score = fuzz.token_sort_ratio(normalised_key(text), entity.key)
            if score >= FUZZY_LINK_MIN:
                linked.append(_linked(entity.id, entity.name, text, "fuzzy", score / 100))
    linked.sort(key=lambda e: -e["score"])
    return _with_store_names(resources, linked)[:1]


def _with_store_names(resources: Resources, linked: list[LinkedEntity]) -> list[LinkedEntity]:
    """Linked entities named as stored (an alias may have matched), one entry per entity."""
    names = {e.id: e.name for e in resources.store.get_entities([e["id"] for e in linked])}
    unique: dict[str, LinkedEntity] = {}
    for entity in linked:
        if entity["id"] in names and entity["id"] not in unique:
            unique[entity["id"]] = {**entity, "name": names[entity["id"]]}
    return list(unique.values())


def _linked(entity_id: str, name: str, mention: str, how: str, score: float) -> LinkedEntity:
    return {"id": entity_id, "name": name, "mention": mention, "how": how, "score": round(float(score), 3)}


# A linked name that the chosen reading leaves unused costs this much (a question names its entities for
# a reason). Chain posteriors are a softmax of chain scores at this temperature, over the best few.
UNUSED_ENTITY = 0.5
LINK_PRIOR = 0.5  # weight of a link's prior (`_prior`) against the chain scores
TEMPERATURE = 0.5
ALTERNATIVES = 4
PAIRED = 8  # chains of each entity tried together in a constraint reading
READINGS = 8  # readings the answers' posterior is summed over
MODEL_CANDIDATES = 5  # readings the language model rescores where it chooses chains
VECTOR_POOL = 20  # vector neighbours fused with the graph spread's ranking
SPREAD_SEED_CHUNKS = 2  # best vector chunks whose entities seed the spread


@dataclass(frozen=True)
class Reading:
    """One way to read the question over the graph: a chain from one entity, or two chains from two entities
    whose answers meet (a constraint reading)."""

    score: float
    entity: LinkedEntity
    chain: ScoredPattern
    answers: frozenset[str]
    other: LinkedEntity | None = None
    constraint: ScoredPattern | None = None


@dataclass
class GraphCandidates:
    patterns: list[ScoredPattern]  # the reading's chain first, then the entity's other chains
    paths: list[Path]
    start: LinkedEntity
    score: float = 0.0  # the reading's score (chains, link prior, unused names)
    answer_scores: dict[str, float] = field(default_factory=dict)  # entity id -> posterior mass
    constraint: tuple[LinkedEntity, ScoredPattern] | None = None  # a second entity the answers must meet


def _namelike(entity: LinkedEntity, question: str) -> bool:
    """A mention written as a name: bracketed, several words, digits, or capitalised where the user writes
    names with capitals. A lone lower-case word that happens to be a name ("fall", "writers") is more
    likely a word of the question."""
    mention = entity["mention"]
    if f"[{mention}]" in question or len(mention.split()) > 1 or any(c.isdigit() for c in mention):
        return True
    return question[1:] == question[1:].lower() or mention[:1].isupper()


def _readings(
    question: str, entities: list[LinkedEntity], ranked_of: dict[str, tuple[list[ScoredPattern], QuestionCues]]
) -> list[Reading]:
    """Every reading of the question: each entity's best chains alone, and pairs of two entities' chains
    whose answers meet."""
    used = [e for e in entities if e["id"] in ranked_of]
    names = {e["mention"] for e in used if _namelike(e, question)}
    named_ids = {e["id"] for e in used}
    prior = max((e["score"] for e in used), default=0.0)
    readings: list[Reading] = []
    for entity in used:
        ranked, cues = ranked_of[entity["id"]]
        unused = UNUSED_ENTITY * len(names - {entity["mention"]})
        base = LINK_PRIOR * (entity["score"] - prior) - unused
        # A chain that reaches another name of the question connects the two: its answer lies between
        # them, which a constraint reading (a chain from each, meeting) says; alone it is no reading.
        ranked = [p for p in ranked if not p.passes] or ranked
        for chain in ranked[:ALTERNATIVES]:
            readings.append(Reading(chain.score + base, entity, chain, chain.reach - named_ids))
        for other in used:
            if other["mention"] == entity["mention"] or other["mention"] not in names:
                continue
            extra = UNUSED_ENTITY + LINK_PRIOR * (other["score"] - prior)
            for chain in ranked[:PAIRED]:
                for constraint in [p for p in ranked_of[other["id"]][0] if not p.passes][:PAIRED]:
                    meet = chain.reach & constraint.reach - named_ids
                    # chains that end on the same step met one hop earlier already: that meeting is the reading
                    if meet and chain.pattern[-1] != constraint.pattern[-1]:
                        score = joint_score(chain, constraint.pattern, cues) + base + extra
                        readings.append(Reading(score, entity, chain, frozenset(meet), other, constraint))
    return [r for r in readings if r.answers]


def graph_candidates(resources: Resources, question: str, entities: list[LinkedEntity]) -> GraphCandidates | None:
    """The best reading of the question over the graph, and paths along its chain for the trie.

    A reading is a relation chain from one linked entity, or chains from two whose answers must meet (a
    constraint question: "a player who plays at Midfielder from Switzerland"). Each entity's chains are
    ranked with the other linked names taken out of the question's words; a constraint reading explains
    the words by both chains' relations together. A reading scores its chains and link prior, minus
    `UNUSED_ENTITY` for each linked name it ignores; an answer that is itself a linked name is none.
    Answers are ranked by their posterior mass over the best readings (a softmax of reading scores), so
    among the best reading's answers those that other plausible readings agree on come first. Paths of
    the best chain (and of the entity's chains that tie with it) go into the trie, capped in number.
    """
    settings = resources.settings
    store = EdgeMemo(resources.store)
    mentions = list(dict.fromkeys(e["mention"] for e in entities))
    namelike = {e["mention"] for e in entities if _namelike(e, question)}
    ranked_of: dict[str, tuple[list[ScoredPattern], QuestionCues]] = {}
    for entity in entities:
        # other names are not relation words; a lone lower-case word linked as a name may still be one
        others = [m for m in mentions if m != entity["mention"] and m in namelike]
        ranked, cues = rank_chains(
            store,
            entity["id"],
            question,
            entity["mention"],
            resources.lexicon,
            settings.max_hops,
            others=others,
            exclude={e["id"] for e in entities if e["mention"] != entity["mention"]},
        )
        if ranked:
            ranked_of[entity["id"]] = (ranked, cues)
    readings = sorted(_readings(question, entities, ranked_of), key=lambda r: -r.score)
    if not readings:
        return None
    if model_chooses(resources.model, settings.chain_scorer):
        readings = _model_rescored(resources, question, readings)
    best = readings[0]
    weights = [math.exp((r.score - best.score) / TEMPERATURE) for r in readings[:READINGS]]
    mass: dict[str, float] = {}
    for reading, weight in zip(readings, weights, strict=False):
        for answer in reading.answers:
            mass[answer] = mass.get(answer, 0.0) + weight / sum(weights)
    ranked = ranked_of[best.entity["id"]][0]
    candidates = GraphCandidates([best.chain, *[p for p in ranked if p is not best.chain]], [], best.entity, best.score)
    candidates.answer_scores = {a: mass[a] for a in best.answers}
    top_mass = max(candidates.answer_scores.values())
    ends = {a for a, m in candidates.answer_scores.items() if m >= top_mass - 1e-9}
    chains = [best.chain]
    if best.constraint is None:  # chains of the same entity that read the question equally well
        chains += [p for p in ranked if p is not best.chain and p.score >= best.chain.score - 1e-9][:2]
        ends = {e for c in chains for e in c.reach} - {e["id"] for e in entities}
    else:
        candidates.constraint = (best.other, best.constraint)  # type: ignore[assignment]
    per_chain = max(1, settings.trie_paths // len(chains))
    for chain in chains:
        candidates.paths += pattern_paths(store, best.entity["id"], chain.pattern, per_chain, ends=ends)
    if best.constraint is None:
        candidates.answer_scores = {a: m for a, m in mass.items() if a in {e for c in chains for e in c.reach}}
    return candidates


def _model_rescored(resources: Resources, question: str, readings: list[Reading]) -> list[Reading]:
    """The best entity's top single-chain readings rescored with the model's say (`agents.chain_choice`)."""
    entity = readings[0].entity
    mine = [r for r in readings if r.entity is entity and r.constraint is None][:MODEL_CANDIDATES]
    if len(mine) < 2:
        return readings
    scores = chain_log_probs(resources.model, question, entity["mention"], [r.chain.pattern for r in mine])
    top = max(scores)
    rescored = {id(r): replace(r, score=r.score + MODEL_WEIGHT * (s - top)) for r, s in zip(mine, scores, strict=True)}
    return sorted((rescored.get(id(r), r) for r in readings), key=lambda r: -r.score)


def constraint_path(resources: Resources, graph: GraphCandidates, answer_id: str) -> Path | None:
    """The path by which a constraint reading's second entity reaches the answer, for the citation."""
    if graph.constraint is None:
        return None
    entity, chain = graph.constraint
    found = pattern_paths(resources.store, entity["id"], chain.pattern, 1, ends={answer_id})
    return found[0] if found else None


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
    """(citation, text) of the top-k chunks: FAISS alone, or, when `hybrid`, its ranking fused with the
    graph spread (`agents.spread`: personalised PageRank from the question's entities and those of the
    best vector chunks, over the mention graph), so that a multi-hop question's second passage, which names
    the bridge entity rather than the question's words, can rise into the top k."""
    index = resources.chunk_index
    if index is None or not len(index):
        return []
    query = resources.embedder.embed([question])
    [by_vector] = index.search(query, k=max(k, VECTOR_POOL) if hybrid else k)
    scores = dict(by_vector)
    top = [chunk_id for chunk_id, _ in by_vector]
    if hybrid and k > 1:
        store = resources.store
        seeds = {e["id"]: 1.0 for e in entities}
        best = top[:SPREAD_SEED_CHUNKS]
        for chunk_id, entity in store.entities_mentioned(best):
            seeds.setdefault(entity, max(0.0, scores[chunk_id]))
        mass = spread(store, seeds)
        by_graph = sorted(mass, key=lambda chunk_id: -mass[chunk_id])[:VECTOR_POOL]
        top = fused([top, by_graph])[:k]
        missing = [chunk_id for chunk_id in top if chunk_id not in scores]
        scores.update(index.score(query[0], missing))
        top = [chunk_id for chunk_id in top if chunk_id in scores]
    return chunk_citations(resources, top[:k], scores)


def chunk_citations(resources: Resources, ids: list[str], scores: dict[str, float]) -> list[tuple[Citation, str]]:
    """(citation, text) of the chunks `ids`, in that order."""
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
        for chunk in resources.store.get_chunks(ids)
    ]


def chunks_from(
    resources: Resources, query: str, entity_ids: list[str], seen: set[str], k: int
) -> list[tuple[Citation, str]]:
    """The `k` chunks not in `seen` nearest `query`, among its vector neighbours and the chunks that mention
    the given entities (a later retrieval round, from a bridge entity)."""
    index = resources.chunk_index
    if index is None or not len(index):
        return []
    vector = resources.embedder.embed([query])
    [hits] = index.search(vector, k=k + len(seen))
    pool = {chunk_id for chunk_id, _ in hits} | {c for _, c in resources.store.chunks_mentioning(entity_ids, limit=400)}
    scored = index.score(vector[0], sorted(pool - seen))[:k]
    return chunk_citations(resources, [chunk_id for chunk_id, _ in scored], dict(scored))
