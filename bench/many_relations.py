"""The graph route on a KG with hundreds of relation types named Freebase-style (`domain.type.property`).

A synthetic KG (seeded): 20 domains x 5 types x 3 properties = 300 relation types named from a fixed list of
ordinary English nouns, 150 triples each, between entities named `Item 0..N` and values; questions
"what is the <property words> of <entity>?" about random triples. Reports per-question latency (p50/p95,
model loaded) and Hits@1. Writes bench/results/many_relations.json.

    python bench/many_relations.py [--questions 100]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.graph import ask, build_graph
from agents.resources import Resources
from config import Settings
from graph.embedded import EmbeddedGraphStore
from ingest.triples import ingest_triples

DOMAINS = [
    "film",
    "music",
    "sports",
    "book",
    "location",
    "people",
    "business",
    "education",
    "medicine",
    "food",
    "travel",
    "science",
    "law",
    "art",
    "game",
    "television",
    "religion",
    "military",
    "language",
    "computer",
]
TYPES = ["work", "person", "place", "group", "event"]
PROPERTIES = [
    "owner",
    "color",
    "height",
    "founder",
    "budget",
    "capital",
    "author",
    "genre",
    "rival",
    "sponsor",
    "mascot",
    "editor",
    "weight",
    "motto",
    "designer",
    "architect",
    "coach",
    "successor",
    "language",
    "currency",
    "inventor",
    "producer",
    "anthem",
    "symbol",
]
ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, seed: int = 7, per_relation: int = 150) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    triples = []
    for domain in DOMAINS:
        for kind in TYPES:
            for prop in rng.sample(PROPERTIES, 3):
                relation = f"{domain}.{kind}.{prop}"
                for _ in range(per_relation):
                    triples.append((f"Item {rng.randrange(6000)}", relation, f"{prop.title()} {rng.randrange(900)}"))
    path.write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in triples), encoding="utf-8")
    return triples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "data"
        kb = Path(folder) / "kb.tsv"
        triples = build(kb)
        settings = Settings(data_dir=data_dir)
        with EmbeddedGraphStore(settings.graph_path) as store:
            ingest_triples(store, kb)
        rng = random.Random(11)
        heads: dict[str, list[tuple[str, str]]] = {}
        for head, relation, tail in triples:
            heads.setdefault(head, []).append((relation, tail))
        with Resources.open(settings) as resources:
            resources.load_models()
            agent = build_graph(resources)
            ask(agent, "what is the owner of Item 1?")  # the relations' descriptions are embedded once
            latencies, hits = [], 0
            for head, relation, _ in rng.sample(triples, args.questions):
                prop = relation.split(".")[-1]
                golds = {t for r, t in heads[head] if r.split(".")[-1] == prop}
                started = time.perf_counter()
                result = ask(agent, f"what is the {prop} of {head}?")
                latencies.append(time.perf_counter() - started)
                hits += bool(result["answers"]) and result["answers"][0] in golds
    report = {
        "relation_types": len({r for _, r, _ in triples}),
        "triples": len(triples),
        "questions": args.questions,
        "hits_at_1": round(hits / args.questions, 4),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 3),
    }
    out = ROOT / "bench" / "results" / "many_relations.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
