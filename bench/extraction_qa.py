"""Benchmark: the effect of the extractor on MuSiQue retrieval and answers, spaCy's graph against the model's.

The passages of the first N MuSiQue questions (20 by default: 394 passages) are ingested three times, each
into its own data directory under --work: by spaCy (the default extractor); by the language model with
spaCy's entity mentions kept beside its relations (what `--extractor model` does); and by the model alone
(its relations and only the entities they name, as `bench/extraction.py` measures it). Then `trellis eval
musique --limit N` runs on each: recall@5 of the supporting passages (hybrid and vector-only) and EM/F1.
The corpus is the N questions' own passages, not all 1,890, so recall is higher than on the full set;
compare the rows with each other.

Model extraction is slow on a CPU (SmolLM2-135M ~6 s a passage on one core): every run reuses the work
directory's extraction cache, so a second run, or one resumed after a kill, redoes only what is missing.
Writes bench/results/extraction_qa.json.

    python bench/extraction_qa.py [--questions 20] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_io import machine, now, write_result  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "musique"
TRELLIS = [sys.executable, "-c", "from app.cli import main; main()"]
KEPT = ("n", "em", "f1", "recall_at_5", "sources", "latency_p50_s", "peak_rss_mb")


def trellis(*args: str, log: Path) -> None:
    with log.open("a", encoding="utf-8") as out:
        subprocess.run([*TRELLIS, *args], check=True, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def counts(data_dir: Path) -> dict[str, int]:
    from config import Settings
    from graph.backends import open_store

    store = open_store(Settings(data_dir=data_dir))
    try:
        found = store.counts()
        return {"entities": found.entities, "relations": found.relations, "chunks": found.chunks}
    finally:
        store.close()


def model_alone(work: Path, corpus: Path) -> float:
    """Ingest with the model's own entities only (no spaCy mentions), from a copy of the model run's
    extraction cache (the same model, schema and chunks: nothing is extracted again)."""
    from config import Settings
    from graph.backends import open_store
    from ingest.extract import make_extractor
    from ingest.pipeline import Ingestor
    from lm.embeddings import get_embedder

    settings = Settings(data_dir=work / "model_alone", extractor="model")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (
        closing(sqlite3.connect(work / "model" / "extractions.sqlite")) as source,
        closing(sqlite3.connect(settings.data_dir / "extractions.sqlite")) as copy,
    ):
        source.backup(copy)
    store = open_store(settings)
    extractor = make_extractor(settings, spacy_mentions=False)
    started = time.perf_counter()
    try:
        Ingestor(settings, store, get_embedder(settings.embedding_model, settings.device), extractor).ingest([corpus])
    finally:
        extractor.close()
        store.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "extraction_qa")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    questions = json.loads((DATA / "questions.json").read_text(encoding="utf-8"))[: args.questions]
    wanted = {(p["title"], p["paragraph_text"]) for q in questions for p in q["paragraphs"]}
    passages = [
        p for p in json.loads((DATA / "corpus.json").read_text(encoding="utf-8")) if (p["title"], p["text"]) in wanted
    ]
    corpus = work / "corpus.json"
    corpus.write_text(json.dumps(passages), encoding="utf-8")

    runs: dict[str, dict] = {}
    for name, extractor in (("spacy", "spacy"), ("model", "model")):
        started = time.perf_counter()
        trellis("ingest", str(corpus), "--extractor", extractor, "--data-dir", str(work / name), log=log)
        runs[name] = {"ingest_seconds_this_run": round(time.perf_counter() - started, 1)}
    runs["model_alone"] = {"ingest_seconds_this_run": round(model_alone(work, corpus), 1)}
    for name, run in runs.items():
        out = work / f"eval-{name}"
        trellis(
            "eval",
            "musique",
            "--limit",
            str(args.questions),
            "--out",
            str(out),
            "--data-dir",
            str(work / name),
            log=log,
        )
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        run.update({key: metrics.get(key) for key in KEPT}, graph=counts(work / name))

    from config import Settings

    write_result(
        "extraction_qa.json",
        {
            "date": now(),
            "machine": machine(),
            "questions": args.questions,
            "passages": len(passages),
            "model": Path(Settings().llm_model).name,
            "runs": {
                "spacy": runs["spacy"],
                "model_with_spacy_mentions": runs["model"],
                "model_alone": runs["model_alone"],
            },
            "note": "ingest_seconds_this_run counts only what this run extracted: cached model extractions are reused",
        },
    )


if __name__ == "__main__":
    main()
