"""Batch question answering and evaluation: MetaQA, MuSiQue, NQ-Swap, or any JSONL in the batch format."""

from __future__ import annotations

import io
import json
import re
import resource
import statistics
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.graph import ask
from agents.resources import Resources
from agents.retrieval import link_entities, retrieve_chunks
from app.service import write_atomically
from graph.paths import relation_patterns

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = (
    "metaqa-1hop",
    "metaqa-2hop",
    "metaqa-3hop",
    "wc2014-1hop",
    "wc2014-2hop",
    "wc2014-conj",
    "musique",
    "nqswap",
    "nq-reading",
)


class BatchFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    question: str
    answers: list[str] | None = None
    extra: dict[str, Any] | None = None


def read_questions(path: Path) -> list[Question]:
    """Records `{"id", "question", "answers"?}`, one per line; a bad line is named with its number."""
    questions: list[Question] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BatchFileError(f"{path}:{number}: not JSON: {error.msg}") from None
            if not isinstance(record, dict) or not isinstance(record.get("question"), str):
                raise BatchFileError(f"{path}:{number}: a record needs a string field 'question'")
            answers = record.get("answers")
            if answers is not None and not (isinstance(answers, list) and all(isinstance(a, str) for a in answers)):
                raise BatchFileError(f"{path}:{number}: 'answers' must be a list of strings")
            questions.append(Question(str(record.get("id", number)), record["question"], answers))
    return questions


def done_ids(out_path: Path) -> set[str]:
    """Ids already answered in an output file (a torn last line from a crash is ignored)."""
    if not out_path.exists():
        return set()
    ids = set()
    for line in out_path.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: list[str]) -> bool:
    return any(normalise(prediction) == normalise(g) for g in golds)


def f1(prediction: str, golds: list[str]) -> float:
    best = 0.0
    predicted = normalise(prediction).split()
    for gold in golds:
        truth = normalise(gold).split()
        common = sum((Counter(predicted) & Counter(truth)).values())
        if common:
            precision, recall = common / len(predicted), common / len(truth)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_set_f1(predicted: list[str], golds: list[str]) -> float:
    """F1 of the listed answers against the gold answer set (names compared normalised)."""
    mine, truth = {normalise(a) for a in predicted}, {normalise(g) for g in golds}
    common = len(mine & truth)
    if not common:
        return 0.0
    precision, recall = common / len(mine), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def path_is_valid(resources: Resources, triples: list[list[str]]) -> bool:
    """Every (head, relation, tail) of a path is a stored relation."""
    store = resources.store
    for head, relation, tail in triples:
        heads = store.find_entities(head, "exact", limit=1)
        if not heads:
            return False
        if not any(e.type == relation and e.forward and e.neighbour_name == tail for e in store.edges([heads[0].id])):
            return False
    return True


def answer_all(
    graph: Any,
    questions: list[Question],
    out_path: Path,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Answer each question not yet in `out_path`, appending one JSON line per answer (resumable)."""
    done = done_ids(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("a", encoding="utf-8") as out:
        for question in questions:
            if question.id in done:
                if progress:
                    progress(1)
                continue
            result = ask(graph, question.question)
            record = {"id": question.id, **result}
            if question.answers is not None:
                record["gold"] = question.answers
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            if progress:
                progress(1)


def load_results(out_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarise(resources: Resources, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Hits@1 (first answer among the gold), EM/F1 of the answer text, path validity, latency."""
    scored = [r for r in results if r.get("gold")]
    latencies = [r["trace"].get("total_s", 0.0) for r in results]
    paths = [p for r in results for p in r.get("path_details", [])]
    valid = sum(path_is_valid(resources, p["triples"]) for p in paths)
    summary: dict[str, Any] = {"n": len(scored), "answered": len(results)}
    if scored:
        summary["hits_at_1"] = round(
            sum(bool(r["answers"]) and exact_match(r["answers"][0], r["gold"]) for r in scored) / len(scored), 4
        )
        summary["em"] = round(sum(exact_match(r["answer"], r["gold"]) for r in scored) / len(scored), 4)
        summary["f1"] = round(sum(f1(r["answer"], r["gold"]) for r in scored) / len(scored), 4)
        # many-answer questions (the films an actor starred in): the whole answer list against the gold set
        summary["answer_set_f1"] = round(sum(answer_set_f1(r["answers"], r["gold"]) for r in scored) / len(scored), 4)
    summary["path_valid_rate"] = round(valid / len(paths), 4) if paths else None
    summary["paths_checked"] = len(paths)
    summary["latency_p50_s"] = round(statistics.median(latencies), 3) if latencies else None
    summary["latency_p95_s"] = round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 3) if latencies else None
    # Sequential answering, model loaded: questions per second of answering time.
    summary["questions_per_s"] = round(len(latencies) / sum(latencies), 2) if latencies and sum(latencies) else None
    summary["sources"] = dict(Counter(r.get("source", "none") for r in results))
    return summary


# -- datasets --------------------------------------------------------------------------------------------------


def metaqa_questions(resources: Resources, hops: int, limit: int, plain: bool = False) -> tuple[list[Question], int]:
    """The first `limit` dev questions whose gold answers are reachable in `hops` hops; and how many were not.

    `plain`: the questions as a user would type them, without the brackets around the topic entity.
    """
    path = SHARED_DATA / "metaqa" / f"qa_{hops}hop_dev.tsv"
    chosen: list[Question] = []
    skipped = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if len(chosen) >= limit:
            break
        question, answers = line.split("\t")
        gold = answers.split("|")
        topic = re.search(r"\[(.*?)\]", question)
        entities = resources.store.find_entities(topic.group(1)) if topic else []
        reachable = False
        if entities:
            reach = {e for ends in relation_patterns(resources.store, entities[0].id, hops).values() for e in ends}
            names = {e.name for e in resources.store.get_entities(sorted(reach))} if reach else set()
            reachable = any(g in names for g in gold)
        if reachable:
            text = question.replace("[", "").replace("]", "") if plain else question
            chosen.append(Question(f"{hops}hop-{number}", text, gold))
        else:
            skipped += 1
    return chosen, skipped


def wc2014_questions(kind: str, limit: int) -> list[Question]:
    """WorldCup2014's 1-hop, 2-hop or conjunctive questions (entities unbracketed, as users type them)."""
    return read_questions(SHARED_DATA / "wc2014" / f"{kind}.jsonl")[:limit]


def musique_questions(limit: int) -> list[Question]:
    items = json.loads((SHARED_DATA / "musique" / "questions.json").read_text(encoding="utf-8"))[:limit]
    questions = []
    for number, item in enumerate(items, start=1):
        golds = [item["answer"], *item.get("answer_aliases", [])]
        supporting = [p["title"] for p in item.get("paragraphs", []) if p.get("is_supporting")]
        questions.append(
            Question(str(item.get("id", number)), item["question"], golds, {"supporting_titles": supporting})
        )
    return questions


def recall_at_5(resources: Resources, questions: list[Question]) -> dict[str, float]:
    """Share of supporting passages among the top 5 chunks (by title), hybrid vs vector-only."""
    found = {"hybrid": 0.0, "vector": 0.0}
    counted = 0
    for question in questions:
        supporting = set((question.extra or {}).get("supporting_titles", []))
        if not supporting:
            continue
        counted += 1
        entities = link_entities(resources, question.question)
        for mode in found:
            top = retrieve_chunks(resources, question.question, entities, 5, hybrid=mode == "hybrid")
            titles = {citation["title"] for citation, _ in top}
            found[mode] += len(titles & supporting) / len(supporting)
    return {mode: round(total / max(counted, 1), 4) for mode, total in found.items()}


def nqswap_questions(limit: int) -> list[Question]:
    items = json.loads((SHARED_DATA / "conflicts" / "nqswap_dev.json").read_text(encoding="utf-8"))[:limit]
    return [
        Question(
            str(n),
            f"{item['question'].strip().rstrip('?')}?",
            item["answer"],
            {"context": item["context"], "original_answer": item.get("original_answer") or []},
        )
        for n, item in enumerate(items, start=1)
    ]


def nq_reading_questions(limit: int) -> list[Question]:
    """NQ items with their real Wikipedia passage: is the answer read from the passage given?"""
    items = json.loads((SHARED_DATA / "reading" / "nq_dev.json").read_text(encoding="utf-8"))[:limit]
    return [
        Question(str(n), item["question"], item["answer"], {"context": item["context"]})
        for n, item in enumerate(items, start=1)
    ]


def answer_with_given_context(
    resources: Resources,
    questions: list[Question],
    out_path: Path,
    progress: Callable[[int], None] | None = None,
    check_conflict: bool = True,
) -> None:
    """Each item brings its own passage (NQ reading, NQ-Swap's counterfactual one): the document route's
    evidence selection and answer drawing run on it as on retrieved chunks."""
    from agents.documents import answer_from_evidence, span_confidence
    from agents.evidence import select_evidence, split_sentences

    out_path.parent.mkdir(parents=True, exist_ok=True)
    embed = lambda texts: resources.embedder.embed(texts, batch_size=64)  # noqa: E731
    with out_path.open("a", encoding="utf-8") as out:
        for question in questions:
            started = time.perf_counter()
            citation = {"doc_id": f"item-{question.id}", "chunk_id": f"item-{question.id}#0", "title": "", "page": 0}
            sentences = split_sentences(resources.nlp, {**citation, "score": 1.0}, 0, (question.extra or {})["context"])
            evidence = select_evidence(question.question, sentences, embed, [], resources.settings.evidence_sentences)
            drawn = answer_from_evidence(resources, question.question, evidence, check_conflict=check_conflict)
            text = drawn.get("answer", "")
            record = {
                "id": question.id,
                "question": question.question,
                "answer": text,
                "answers": [text] if text else [],
                "gold": question.answers,
                "original_answer": (question.extra or {}).get("original_answer"),
                "source": "context",
                "free_text": drawn.get("free_text", False),
                "conflict": drawn.get("conflict"),
                "confidence": span_confidence(drawn["span"]) if drawn.get("span") else 0.0,
                "paths": [],
                "path_details": [],
                "citations": drawn.get("citations", []),
                "trace": {"total_s": round(time.perf_counter() - started, 4)},
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            if progress:
                progress(1)


def span_check(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Of the short (not free-text) document answers: the share that is a span of the sentence cited for it."""
    short = [r for r in results if r.get("source") == "context" and r.get("answer") and not r.get("free_text")]
    inside = 0
    for result in short:
        cited = [c for c in result.get("citations", []) if c.get("answer_here")]
        inside += any(result["answer"] in c.get("sentence", "") for c in cited)
    return {
        "short_answers": len(short),
        "short_answers_in_cited_sentence": round(inside / len(short), 4) if short else None,
        "free_text_answers": sum(1 for r in results if r.get("free_text")),
    }


def conflict_shares(results: list[dict[str, Any]]) -> dict[str, Any]:
    """NQ-Swap: answers that follow the (counterfactual) context, answers that fall back on the original
    fact, and how often the fact-level check flagged a conflict."""
    scored = [r for r in results if r.get("gold")]
    with_original = [r for r in scored if r.get("original_answer")]
    flagged = [r for r in scored if (r.get("conflict") or {}).get("conflict")]
    return {
        "context_faithful": round(sum(exact_match(r["answer"], r["gold"]) for r in scored) / len(scored), 4)
        if scored
        else None,
        "original_answer_share": round(
            sum(exact_match(r["answer"], r["original_answer"]) for r in with_original) / len(with_original), 4
        )
        if with_original
        else None,
        "conflicts_flagged": round(len(flagged) / len(scored), 4) if scored else None,
    }


def write_report(out_dir: Path, metrics: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """metrics.json, a latency histogram (PNG) and a markdown report, each written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_atomically(out_dir / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode("utf-8"))
    latencies = [r["trace"].get("total_s", 0.0) for r in results]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(latencies, bins=30)
    axis.set_xlabel("seconds per question")
    axis.set_ylabel("questions")
    axis.set_title(f"{metrics['dataset']}: latency")
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png")
    plt.close(figure)
    write_atomically(out_dir / "latency.png", image.getvalue())
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, dict | list))
    misses = [r for r in results if r.get("gold") and not (r["answers"] and exact_match(r["answers"][0], r["gold"]))]
    examples = "\n".join(
        f"- {r['question']} -> {r['answer']!r} (gold {r['gold'][:3]}); path {r['paths'][:1]}" for r in misses[:10]
    )
    report = (
        f"# Evaluation: {metrics['dataset']}\n\n| metric | value |\n|---|---|\n{rows}\n\n"
        f"![latency](latency.png)\n\n## First misses\n\n{examples or 'none'}\n"
    )
    write_atomically(out_dir / "report.md", report.encode("utf-8"))
