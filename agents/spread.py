"""HippoRAG's graph spread: personalised PageRank over the entity-chunk mention graph.

HippoRAG (Gutiérrez et al. 2024) ranks passages by a random walk that restarts at the question's entities
and spreads through the passages that mention them and the other entities those mention; a passage two
mentions away from the question (the second hop of a multi-hop question) gains mass that vector search
alone does not give it. Here the walk runs on the neighbourhood of the seeds (the question's linked
entities, and the entities of the best vector chunks weighted by their cosine), built from the store's
mention edges, with networkx's PageRank. The chunk ranking then joins the vector ranking by reciprocal
rank fusion (Cormack et al. 2009), which needs no weight between the two scores' scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx

from graph.store import GraphStore

DAMPING = 0.5  # HippoRAG's restart probability is 1 - damping; 0.5 keeps the walk near the seeds
FUSION_K = 60  # reciprocal rank fusion's constant, as its paper sets it
MENTION_ROWS = 2_000  # mention edges read per expansion step


def spread(store: GraphStore, seeds: dict[str, float], steps: int = 2) -> dict[str, float]:
    """PageRank mass per chunk id, restarting at `seeds` (entity id -> weight), over mention edges reached
    within `steps` entity->chunk->entity expansions."""
    seeds = {entity: weight for entity, weight in seeds.items() if weight > 0}
    if not seeds:
        return {}
    graph = nx.Graph()
    frontier = set(seeds)
    chunks: set[str] = set()
    for _ in range(steps):
        found = store.chunks_mentioning(sorted(frontier), limit=MENTION_ROWS)
        new_chunks = {chunk for _, chunk in found} - chunks
        graph.add_edges_from((("e", entity), ("c", chunk)) for entity, chunk in found)
        chunks |= new_chunks
        if not new_chunks:
            break
        mentioned = store.entities_mentioned(sorted(new_chunks))
        graph.add_edges_from((("c", chunk), ("e", entity)) for chunk, entity in mentioned)
        frontier = {entity for _, entity in mentioned} - frontier
    if not chunks:
        return {}
    # an entity mentioned by many chunks says little about any one: HippoRAG weighs a node by its
    # specificity, 1 / the number of passages that mention it
    for node in graph:
        if node[0] == "e":
            weight = 1.0 / graph.degree(node)
            for neighbour in graph[node]:
                graph[node][neighbour]["weight"] = weight
    personal = {("e", entity): weight for entity, weight in seeds.items() if weight > 0 and ("e", entity) in graph}
    if not personal:  # no seed with any weight in the graph: nothing to restart at
        return {}
    mass = nx.pagerank(graph, alpha=DAMPING, personalization=personal)
    return {node[1]: value for node, value in mass.items() if node[0] == "c"}


def fused(rankings: Sequence[Sequence[str]]) -> list[str]:
    """Reciprocal rank fusion of several rankings of ids, best first."""
    score: dict[str, float] = {}
    for ranking in rankings:
        for place, key in enumerate(ranking):
            score[key] = score.get(key, 0.0) + 1.0 / (FUSION_K + place + 1)
    return sorted(score, key=lambda key: -score[key])
