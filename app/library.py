"""Trellis inside a Python application: open a data directory, ingest into it, ask it questions.

    from app.library import Trellis

    with Trellis.open("my_data") as trellis:
        trellis.ingest(["notes/"])                          # documents: txt, md, html, pdf, json, jsonl
        trellis.ingest_triples("facts.tsv", schema="relations.json")
        result = trellis.ask("Who built the Kerrow Lighthouse?")
        print(result["answer"], result["citations"])
        for event in trellis.stream("who directed [Night Train]"):
            print(event)                                    # {"token": ...} ..., then {"result": {...}}
        docs = trellis.retriever(k=3).invoke("lighthouse engineer")   # LangChain Documents

A `Trellis` is the data directory's one writer (as `trellis serve` is): open it where no server or ingestion
runs on the same directory, or with `read_only=True` to ask beside one. It lives in `app` because it joins
the agent (`agents`) and ingestion (`ingest`), which do not import each other.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agents.graph import ask, build_graph, result_of
from agents.resources import Resources
from agents.retriever import TrellisRetriever
from agents.state import Turn
from app.service import install_schema, status_report
from config import Settings, load_settings
from graph.backends import open_store
from graph.store import SerialisedStore
from ingest.pipeline import Ingestor, IngestReport
from ingest.triples import TripleIngestReport, ingest_triples

T = TypeVar("T")


class Trellis:
    """One data directory: its store, models and agent, opened once and shared by every call."""

    def __init__(self, settings: Settings, read_only: bool = False) -> None:
        """Open the store (its writer unless `read_only`); models load at the first call that needs them."""
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.settings, self.read_only = settings, read_only
        if not read_only:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        # serialised: an app may call from several threads, and the embedded store runs one statement at a time
        self.store = SerialisedStore(open_store(settings, read_only=read_only))
        self._conversations: sqlite3.Connection | None = None
        self._extractor: Any = None
        self._closed = False
        try:
            if not read_only:
                self._with_ingestor(lambda ingestor: ingestor.recover())  # what an interrupted run left pending
            self.resources = Resources.open(settings, self.store)  # type: ignore[arg-type]
            self.agent = build_graph(self.resources)
            self._conversations = sqlite3.connect(settings.conversations_path, check_same_thread=False)
            self.chat_agent = build_graph(self.resources, SqliteSaver(self._conversations))
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, data_dir: Path | str | None = None, *, read_only: bool = False, **settings: Any) -> Trellis:
        """Trellis over `data_dir` (default: $TRELLIS_DATA_DIR, else ./trellis_data). Other keyword arguments
        are `config.Settings` fields (`model_cache`, `retrieve_k`, ...); TRELLIS_* variables fill the rest."""
        return cls(load_settings(data_dir=Path(data_dir) if data_dir is not None else None, **settings), read_only)

    # -- ingesting ---------------------------------------------------------------------------------------------

    def ingest(
        self, paths: Sequence[Path | str], include: Sequence[str] = (), exclude: Sequence[str] = ()
    ) -> IngestReport:
        """Ingest documents (files or directories), as `trellis ingest` does; the next question reads them.

        Unchanged documents are skipped and changed ones replaced; files that cannot be read are listed in the
        report's `skipped` rather than raised."""
        from app.service import make_extractor

        self._writable()
        if self._extractor is None:
            # the settings' extractor (ExtractorUnavailable if it cannot be built), in this process: forking
            # one that runs model threads is not safe
            self._extractor = make_extractor(self.settings, background=False)
        embedder, extractor = self.resources.embedder, self._extractor
        return self._with_ingestor(lambda ingestor: ingestor.ingest(paths, include, exclude), embedder, extractor)

    def ingest_triples(
        self,
        path: Path | str,
        source: str | None = None,
        skip_invalid: bool = False,
        schema: Path | str | None = None,
    ) -> TripleIngestReport:
        """Load a TSV, CSV or JSONL file of head, relation, tail, as `trellis ingest-triples` does.

        A bad line raises `ingest.triples.TripleFileError` and writes nothing, unless `skip_invalid`. `schema`
        is a relation schema JSON (cue words per relation), checked and then installed in the data directory."""
        self._writable()
        if schema is not None:
            install_schema(self.settings, Path(schema))  # ValueError naming what is wrong, before anything changes
            for name in ("schema", "lexicon"):  # cached from the old schema
                self.resources.__dict__.pop(name, None)
        try:
            return ingest_triples(self.store, path, source=source, skip_invalid=skip_invalid)  # type: ignore[arg-type]
        finally:
            self.resources.refresh_indexes()

    def delete(self, doc_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete documents with their chunks, vectors and the facts only they supported: (deleted, unknown)."""
        self._writable()
        return self._with_ingestor(lambda ingestor: ingestor.delete(doc_ids))

    # -- asking ------------------------------------------------------------------------------------------------

    def ask(
        self, question: str, thread_id: str | None = None, conversation: list[Turn] | None = None
    ) -> dict[str, Any]:
        """The answer with its evidence: the dict `trellis ask --json` prints (`answer`, `answers`, `paths`,
        `citations`, `source`, `confidence`, `trace`, ...).

        `thread_id` continues a conversation kept in the data directory (follow-ups such as "when was it
        released?" read the earlier turns); `conversation` hands in earlier turns instead."""
        return ask(self._agent_for(thread_id), question, thread_id, conversation)

    def stream(
        self, question: str, thread_id: str | None = None, conversation: list[Turn] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The answer as it is written: {"token": text} events, {"retract": True} where an unsupported answer is
        withdrawn for another try, and last {"result": <what `ask` returns>}."""
        config = {"configurable": {"thread_id": thread_id}} if thread_id else None
        inputs: dict[str, Any] = {"question": question}
        if conversation is not None:
            inputs["conversation"] = conversation
        started = time.perf_counter()
        state: dict[str, Any] = {}
        for mode, chunk in self._agent_for(thread_id).stream(inputs, config=config, stream_mode=["custom", "values"]):
            if mode == "custom":
                yield chunk
            else:
                state = chunk
        result = result_of(state)
        result["trace"]["total_s"] = round(time.perf_counter() - started, 4)
        yield {"result": result}

    def retriever(self, k: int = 4, hybrid: bool = True) -> TrellisRetriever:
        """A LangChain retriever over this data directory's chunks (vector search fused with the graph)."""
        return TrellisRetriever(resources=self.resources, k=k, hybrid=hybrid)

    def status(self) -> dict[str, Any]:
        """Backend, data directory, and counts of entities, relations, documents, chunks and vectors."""
        return status_report(self.settings, self.store)  # type: ignore[arg-type]

    # -- lifetime ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._extractor is not None:
            self._extractor.close()
            self._extractor = None
        if self._conversations is not None:
            self._conversations.close()
            self._conversations = None
        self.store.close()

    def __enter__(self) -> Trellis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _agent_for(self, thread_id: str | None) -> Any:
        return self.chat_agent if thread_id else self.agent

    def _writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"{self.settings.data_dir} is open read-only: open it without read_only to write")

    def _with_ingestor(self, work: Callable[[Ingestor], T], embedder: Any = None, extractor: Any = None) -> T:
        ingestor = Ingestor(self.settings, self.store, embedder, extractor)  # type: ignore[arg-type]
        try:
            return work(ingestor)
        finally:
            ingestor.close()
            if hasattr(self, "resources"):
                self.resources.refresh_indexes()  # the next question reads what was just written
