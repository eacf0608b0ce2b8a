"""Schema-guided extraction by the language model: structured output, then reflection.

For each chunk the model writes `{"triples": [[head, relation, tail], ...]}` under a grammar
(`ingest.structured`) that admits only the schema's relation names and the chunk's own word spans (or the
document's title) as names, so every reply parses and names nothing the text does not contain. The
reflection pass (`ingest.reflection`) then critiques each triple against its sentence and keeps it with
that sentence as evidence, corrects it, or drops it with a reason that reaches the ingestion report.

Results are remembered per chunk (text, title, model, schema) in `extractions.sqlite` under the data
directory, committed chunk by chunk: a run killed part-way re-extracts only what it had not finished, and
ingestion's pending/done protocol makes the store converge as it does for spaCy.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.model import Chunk
from ingest.extract import Dropped, Extraction, Extractor, Fact, Mention
from ingest.reflection import Judge, Judged, is_date, judge_for, reflect
from ingest.schema import ExtractionSchema
from ingest.structured import CLOSE_RESERVE, MAX_TRIPLES, GrammarProcessor, chunk_spans, extraction_grammar, parse_reply

VERSION = 1  # bump when prompt, grammar or reflection change: cached results of older versions are not reused
MAX_NEW_TOKENS = MAX_TRIPLES * 24 + CLOSE_RESERVE

EXAMPLE_TEXT = (
    "Marta Kowalska\nMarta Kowalska (born 1961 in Gdansk) is a Polish architect. In 1990 she founded the studio "
    "Atelier Nord, which is based in Oslo. Her book Quiet Rooms was published by Halden Press."
)
EXAMPLE_REPLY = (
    '{"triples":[["Marta Kowalska","born_in","1961"],["Marta Kowalska","born_in","Gdansk"],'
    '["Atelier Nord","founded_by","Marta Kowalska"],["Atelier Nord","founded_in","1990"],'
    '["Atelier Nord","headquartered_in","Oslo"],["Quiet Rooms","created_by","Marta Kowalska"],'
    '["Quiet Rooms","published_by","Halden Press"]]}'
)


def extraction_prompt(schema: ExtractionSchema, text: str, title: str) -> str:
    """The instruction: the schema's relations with their head and tail types, a worked example, the chunk."""
    lines = [
        f"- {r.name}: {'|'.join(r.head)} -> {'|'.join(r.tail)}" + (f" ({r.description})" if r.description else "")
        for r in schema.relations.values()
    ]
    body = f"{title}\n{text}" if title and not text.startswith(title) else text
    return (
        "Extract a knowledge graph from the text. Relations (head type -> tail type):\n"
        + "\n".join(lines)
        + "\n\nWrite every fact the text states as [head, relation, tail], copying names exactly as the text "
        "writes them. Reply with JSON only.\n\n"
        f"Text:\n{EXAMPLE_TEXT}\nReply: {EXAMPLE_REPLY}\n\nText:\n{body}\nReply:"
    )


@dataclass(slots=True)
class ExtractionStats:
    """What the model extractor did, for reports and the benchmark."""

    chunks: int = 0
    cached: int = 0
    parsed: int = 0  # replies that parsed as the grammar's JSON
    proposed: int = 0
    kept: int = 0
    tokens: int = 0
    seconds: float = 0.0
    mask_seconds: float = 0.0
    judge_seconds: float = 0.0
    unparsed: list[str] = field(default_factory=list)


class ExtractionCache:
    """Extraction results per chunk key, in SQLite, committed one chunk at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS extractions (key TEXT PRIMARY KEY, result TEXT NOT NULL)")

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT result FROM extractions WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, result: dict) -> None:
        self._db.execute("INSERT OR REPLACE INTO extractions (key, result) VALUES (?, ?)", (key, json.dumps(result)))

    def close(self) -> None:
        self._db.close()


class ModelExtractor:
    """The language model as extractor, behind the same seam as `SpacyExtractor`.

    `model` is a loaded `lm.model.LanguageModel` or a function that loads one (called at first use, so an
    ingestion that finds nothing new never loads a model). `judge`: `auto` (the model judges triples when
    it is large enough, see `ingest.reflection.judge_for`), `model` or `check` (cheap checks only).
    `tagger`: an extractor whose mentions, not its relations, join the model's (spaCy's named entities): the
    mention graph that retrieval spreads over and links questions through keeps the tagger's coverage, where
    a small model names few entities (on 394 MuSiQue passages SmolLM2's graph alone held 1,026 entities
    against spaCy's 3,275, and hybrid recall@5 fell below vector search alone).
    """

    name = "model"

    def __init__(
        self,
        model: Any | Callable[[], Any],
        schema: ExtractionSchema,
        cache_path: Path | None = None,
        judge: str = "auto",
        max_new_tokens: int = MAX_NEW_TOKENS,
        model_name: str | None = None,
        tagger: Extractor | None = None,
    ) -> None:
        self._model, self.schema, self.judge_mode, self.max_new_tokens = model, schema, judge, max_new_tokens
        # Part of each cached result's key, known without loading the model.
        self.model_name = model_name or getattr(model, "name", "") or "model"
        self.cache = ExtractionCache(cache_path) if cache_path else None
        self.stats = ExtractionStats()
        self._judge: Judge | None = None
        self._judge_chosen = False
        self.tagger = tagger

    @property
    def lm(self) -> Any:
        if callable(self._model) and not hasattr(self._model, "model"):
            self._model = self._model()
        return self._model

    def _key(self, chunk: Chunk) -> str:
        settings = [VERSION, self.model_name, self.schema.digest, self.judge_mode, self.max_new_tokens]
        body = json.dumps([*settings, chunk.title, chunk.text])
        return hashlib.sha256(body.encode()).hexdigest()

    def extract(self, chunks: Sequence[Chunk]) -> Extraction:
        result = Extraction()
        tagged = self.tagger.extract(chunks).mentions if self.tagger is not None else {}
        for chunk in chunks:
            one = self.extract_chunk(chunk)
            named = [Mention(m["text"], m["label"]) for m in one["mentions"]]
            known = {m.text.casefold() for m in named}
            result.mentions[chunk.id] = named + [m for m in tagged.get(chunk.id, []) if m.text.casefold() not in known]
            result.facts.extend(
                Fact(f["head"], f["relation"], f["tail"], chunk.id, f["start"], f["end"]) for f in one["kept"]
            )
            result.dropped.extend(Dropped(chunk.id, **d) for d in one["dropped"])
        return result

    def submit(self, chunks: Sequence[Chunk]) -> Future[Extraction]:
        # In this process: the model holds both cores while it decodes, so a worker would gain nothing on a CPU,
        # and on a GPU the model is the caller's to share.
        done: Future[Extraction] = Future()
        try:
            done.set_result(self.extract(chunks))
        except Exception as error:  # handed to the caller through the future, as a pool would
            done.set_exception(error)
        return done

    def close(self) -> None:
        if self.tagger is not None:
            self.tagger.close()
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def extract_chunk(self, chunk: Chunk) -> dict:
        """One chunk's mentions, kept triples (with sentence spans) and dropped ones (with reasons), as a dict."""
        self.stats.chunks += 1
        key = self._key(chunk) if self.cache is not None else ""
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cached += 1
            return hit
        started = time.perf_counter()
        proposed, parsed = self._propose(chunk)
        judge_started = time.perf_counter()
        verdicts = reflect(proposed, chunk.text, chunk.title, self.schema, self._get_judge())
        self.stats.judge_seconds += time.perf_counter() - judge_started
        result = _as_result(verdicts, self.schema, parsed)
        self.stats.proposed += len(proposed)
        self.stats.kept += len(result["kept"])
        self.stats.seconds += time.perf_counter() - started
        if self.cache is not None:
            self.cache.put(key, result)
        return result

    def _get_judge(self) -> Judge | None:
        if not self._judge_chosen:
            self._judge, self._judge_chosen = judge_for(self.lm, self.schema, self.judge_mode), True
        return self._judge

    def _propose(self, chunk: Chunk) -> tuple[list[tuple[str, str, str]], bool]:
        """The model's triples for `chunk` (decoded under the grammar) and whether its reply parsed."""
        lm = self.lm
        names = chunk_spans(chunk.text, [chunk.title] if chunk.title else [])
        grammar = extraction_grammar(self.schema, names)
        prompt = lm.encode(lm.chat_prompt(extraction_prompt(self.schema, chunk.text, chunk.title)))
        processor = GrammarProcessor(lm, [grammar], len(prompt), self.max_new_tokens)
        reply = lm.greedy(prompt, self.max_new_tokens, processors=[processor])
        self.stats.tokens += processor.steps
        self.stats.mask_seconds += processor.mask_seconds
        try:
            triples = parse_reply(reply).triples
        except ValueError:
            self.stats.unparsed.append(reply)
            return [], False
        self.stats.parsed += 1
        return triples, True


def _as_result(verdicts: Sequence[Judged], schema: ExtractionSchema, parsed: bool) -> dict:
    kept = [v for v in verdicts if v.kept]
    labels: dict[str, str] = {}
    for v in kept:
        kind = schema.relations[v.relation]
        labels.setdefault(v.head, kind.head[0])
        labels.setdefault(v.tail, kind.tail[0] if not _is_date_type(v.tail, kind.tail) else "date")
    return {
        "parsed": parsed,
        "mentions": [{"text": name, "label": label.upper()} for name, label in labels.items()],
        "kept": [
            {"head": v.head, "relation": v.relation, "tail": v.tail, "start": v.start, "end": v.end, "note": v.reason}
            for v in kept
        ],
        "dropped": [
            {"head": v.head, "relation": v.relation, "tail": v.tail, "reason": v.reason} for v in verdicts if not v.kept
        ],
    }


def _is_date_type(name: str, types: tuple[str, ...]) -> bool:
    return "date" in types and is_date(name)
