"""The `trellis` command line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup, TyperOption

from config import EXTRACTORS, Settings, load_settings
from graph.backends import open_store
from graph.errors import GraphStoreError
from graph.store import GraphStore
from graph.vectors import VectorIndexError
from ingest.triples import TripleFileError, ingest_triples


class _FlagsWithoutMetavar:
    """Help that shows a flag as a flag (`--json`), not as an option taking a value (`--json <bool>`): typer
    prints every option's type, flags included; an empty metavar is what it prints instead of `<bool>`."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
        return params


class FlagCommand(_FlagsWithoutMetavar, TyperCommand):
    """A command whose help shows flags as flags."""


class FlagGroup(_FlagsWithoutMetavar, TyperGroup):
    """A command group whose help shows flags as flags (its commands are FlagCommands: `_flags_as_flags`)."""


app = typer.Typer(
    help="Trellis: question answering that stays faithful to a knowledge graph.", no_args_is_help=True, cls=FlagGroup
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: $TRELLIS_DATA_DIR or ./trellis_data)."),
]

AsJson = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def _settings(data_dir: Path | None) -> Settings:
    return load_settings(data_dir=data_dir)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


@app.command("ingest-triples")
def ingest_triples_command(
    file: Annotated[Path, typer.Argument(help="TSV, CSV or JSONL of head, relation, tail.")],
    source: Annotated[
        str | None, typer.Option(help="Provenance name for these facts (default: the file name).")
    ] = None,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Skip and report bad lines instead of stopping.")
    ] = False,
    schema: Annotated[
        Path | None,
        typer.Option(help="Relation schema JSON (cue words per relation type) that helps questions find relations."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Load ready-made triples into the knowledge graph (idempotent; a bad line writes nothing)."""
    settings = _settings(data_dir)
    if schema is not None:
        _install_schema(schema, settings)
    store = _open_writer(settings)
    progress = _progress()
    advance = _progress_callback(progress)
    try:
        with progress:
            report = ingest_triples(store, file, source=source, skip_invalid=skip_invalid, progress=advance)
    except TripleFileError as error:
        raise _fail(str(error)) from None
    except GraphStoreError as error:
        raise _fail(f"{file}: {error}") from None
    finally:
        store.close()
    for problem in report.skipped:
        err.print(f"[yellow]skipped[/yellow] {problem}", highlight=False)
    out.print(
        f"{report.path}: {report.rows:,} rows, {report.entities_created:,} new entities, "
        f"{report.relations_created:,} new relations, {len(report.skipped):,} skipped "
        f"(source '{report.source}')",
        highlight=False,
    )


def _install_schema(schema: Path, settings: Settings) -> None:
    """Check the schema file, then copy it into the data directory atomically."""
    from app.service import install_schema

    try:
        install_schema(settings, schema)
    except ValueError as error:
        raise _fail(str(error)) from None


class RateColumn(ProgressColumn):
    """Items per second of a task (rows, chunks, documents, questions), from rich's recent-speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("", style="progress.data.speed")
        shown = f"{speed:,.0f}" if speed >= 10 else f"{speed:.1f}"
        return Text(f"{shown}/s", style="progress.data.speed")


def _progress(get_time: Callable[[], float] | None = None) -> Progress:
    """Progress bars on stderr with the count, the rate, the time so far and the time left (ETA)."""
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        get_time=get_time,
    )


def _progress_callback(progress: Progress) -> Callable[[str, int, int | None], None]:
    tasks: dict[str, TaskID] = {}

    def advance(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return advance


def _open_writer(settings: Settings) -> GraphStore:
    try:
        return open_store(settings)
    except GraphStoreError as error:
        raise _fail(str(error)) from None


@contextmanager
def _writing(settings: Settings) -> Iterator[GraphStore]:
    """The store open for writing; store and index errors become a one-line error and exit 1."""
    store = _open_writer(settings)
    try:
        yield store
    except (GraphStoreError, VectorIndexError) as error:
        raise _fail(str(error)) from None
    finally:
        store.close()


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (txt, md, html, pdf, json, jsonl).")],
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Only files matching this glob (repeatable).")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip files matching this glob.")] = None,
    extractor: Annotated[
        str | None,
        typer.Option(
            "--extractor",
            metavar="spacy|model",
            help="Who finds entities and relations: spaCy's patterns or the language model (default: "
            "$TRELLIS_EXTRACTOR, else spacy).",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Ingest documents: chunks and vectors for search, entities and relations for the graph.

    Unchanged documents are skipped; changed ones replace what they had written. Exits 1 if anything
    was skipped.
    """
    from app.service import ExtractorUnavailable, make_extractor
    from ingest.pipeline import Ingestor
    from lm.embeddings import get_embedder

    if extractor is not None and extractor not in EXTRACTORS:
        raise _fail(f"--extractor: expected {' or '.join(EXTRACTORS)}, got {extractor!r}", 2)
    settings = load_settings(data_dir=data_dir, extractor=extractor)
    try:
        chosen = make_extractor(settings)
    except ExtractorUnavailable as error:
        raise _fail(str(error)) from None
    try:
        with _writing(settings) as store, _progress() as progress:
            loading = progress.add_task("models", total=None)
            embedder = get_embedder(settings.embedding_model, settings.device, settings.cpu_threads)
            progress.update(loading, total=1, completed=1)
            ingestor = Ingestor(settings, store, embedder, chosen, progress=_progress_callback(progress))
            try:
                report = ingestor.ingest(paths, include or (), exclude or ())
            finally:
                ingestor.close()
    finally:
        chosen.close()
    for problem in report.skipped:
        err.print(f"[yellow]skipped[/yellow] {problem}", highlight=False)
    if report.recovered:
        err.print(f"cleaned up {len(report.recovered):,} document(s) left half-written by an interrupted run")
    out.print(
        f"{len(report.ingested):,} ingested, {len(report.unchanged):,} unchanged, {len(report.removed):,} removed, "
        f"{len(report.skipped):,} skipped; {report.chunks:,} chunks, {report.relations:,} facts",
        highlight=False,
    )
    if report.skipped:
        raise typer.Exit(1)


@app.command()
def delete(
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids (see `trellis documents`).")],
    data_dir: DataDir = None,
) -> None:
    """Delete documents: their chunks, vectors, and the facts no other source supports."""
    from ingest.pipeline import Ingestor

    settings = _settings(data_dir)
    with _writing(settings) as store:
        ingestor = Ingestor(settings, store)
        try:
            deleted, unknown = ingestor.delete(doc_ids)
        finally:
            ingestor.close()
    out.print(f"deleted {len(deleted):,} document(s)", highlight=False)
    if unknown:
        raise _fail(f"no such document: {', '.join(unknown)}")


@app.command()
def documents(
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """List ingested documents."""
    from app.service import document_rows

    rows = document_rows(_settings(data_dir))
    if as_json:
        for row in rows:
            out.print(json.dumps(row, ensure_ascii=False), highlight=False, soft_wrap=True)
        return
    table = Table(title=f"{len(rows):,} documents")
    # Ids are printed whole, never cut short, so they can be pasted into `trellis delete`; titles give way.
    widest_id = max((len(row["doc_id"]) for row in rows), default=6)
    table.add_column("doc_id", no_wrap=True, min_width=widest_id)
    table.add_column("title", overflow="ellipsis", max_width=40)
    table.add_column("source", overflow="fold")
    table.add_column("chunks", justify="right")
    table.add_column("state")
    for row in rows:
        table.add_row(row["doc_id"], row["title"], row["source"], str(row["chunks"]), row["state"])
    out.print(table)


@app.command()
def status(
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """What is stored: backend, data directory, and counts of entities, relations, documents, chunks, vectors."""
    from app.service import status_report

    try:
        report = status_report(_settings(data_dir))
    except GraphStoreError as error:
        raise _fail(str(error)) from None
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title="Trellis status", show_header=False)
    for key, value in report.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    out.print(table)


# -- asking ----------------------------------------------------------------------------------------------------


@contextmanager
def _agent(settings: Settings, checkpointer: object = None) -> Iterator[tuple[object, object]]:
    """(compiled agent graph, resources) over a read-only store."""
    from agents.graph import build_graph
    from agents.resources import Resources
    from lm.remote import RemoteModelError

    if settings.backend == "embedded" and not settings.graph_path.exists():
        raise _fail(f"nothing ingested in {settings.data_dir}: run `trellis ingest` or `trellis ingest-triples` first")
    try:
        resources = Resources.open(settings)
    except GraphStoreError as error:
        raise _fail(str(error)) from None
    try:
        yield build_graph(resources, checkpointer), resources
    except (GraphStoreError, VectorIndexError, RemoteModelError) as error:
        raise _fail(str(error)) from None
    finally:
        resources.close()


def _print_answer(result: dict) -> None:
    badge = {"graph": "green", "context": "cyan", "parameters": "yellow"}.get(result["source"], "white")
    out.print(f"[bold]{result['answer'] or '(no answer)'}[/bold]  [{badge}]\\[{result['source']}][/{badge}]")
    if len(result["answers"]) > 1:
        more = ", ".join(result["answers"][1:8]) + (" ..." if len(result["answers"]) > 8 else "")
        out.print(f"  also: {more}", highlight=False)
    for path in result["path_details"]:
        out.print(f"  path: {path['text']}", highlight=False)
    if result.get("free_text"):
        out.print("  (free text: an explanation written from the evidence, not a span of it)", highlight=False)
    shown: set[str] = set()
    for citation in result["citations"]:
        if citation.get("answer_here"):
            out.print(f'  from: "{citation["sentence"]}"', highlight=False)
        if citation["chunk_id"] in shown:
            continue
        shown.add(citation["chunk_id"])
        page = f", p. {citation['page']}" if citation["page"] else ""
        out.print(f"  cite: {citation['title'] or citation['doc_id']} ({citation['chunk_id']}{page})", highlight=False)
    conflict = result.get("conflict") or {}
    if conflict.get("conflict"):
        out.print(
            f'  conflict: the model alone says "{conflict["parametric_answer"]}"; '
            f"chose the {conflict['chosen']} ({conflict['reason']})",
            highlight=False,
        )


def answer_live(graph: object, question: str, thread_id: str | None = None, console: Console = err) -> dict:
    """Answer with a spinner on `console` while the agent works, showing the answer's text as it is decoded
    (tokens the agent streams; a retraction clears them), then clearing the line for the printed answer."""
    from agents.graph import ask

    pieces: list[str] = []
    spinner = Spinner("dots", text=Text("thinking ...", style="dim"))
    with Live(spinner, console=console, transient=True, refresh_per_second=12.5) as live:

        def on_event(event: dict) -> None:
            if event.get("retract"):
                pieces.clear()
                spinner.update(text=Text("retrieving more ...", style="dim"))
            elif event.get("token"):
                pieces.append(event["token"])
                spinner.update(text=Text("".join(pieces)[-500:]))
            live.refresh()

        return ask(graph, question, thread_id, on_event=on_event)


schema_app = typer.Typer(
    help="Relation schemas: cue words and types per relation (optional; drafted from the data).", cls=FlagGroup
)
app.add_typer(schema_app, name="schema")


@schema_app.command("suggest")
def schema_suggest(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the draft here (default: print it).")
    ] = None,
    sample: Annotated[int, typer.Option(help="Relations read per type to profile its ends.")] = 200,
    data_dir: DataDir = None,
) -> None:
    """Draft a relation schema from the loaded graph: words, head and tail types, examples. Edit it, then load
    it with `trellis ingest-triples FILE --schema DRAFT` (or copy it to <data_dir>/relation_schema.json)."""
    from app.service import write_atomically
    from graph.relations import draft_schema, profile_relations

    settings = _settings(data_dir)
    try:
        store = open_store(settings, read_only=True)
    except GraphStoreError as error:
        raise _fail(str(error)) from None
    with store:
        profiles = profile_relations(store, sample=sample)
    if not profiles:
        raise _fail(f"{settings.data_dir}: the graph has no relations to describe")
    text = json.dumps(draft_schema(profiles), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        out.print(text, highlight=False, markup=False, end="")
    else:
        write_atomically(output, text.encode("utf-8"))
        err.print(f"{len(profiles)} relations described in {output}")


graph_app = typer.Typer(
    help="Look at the knowledge graph: entities, relations, a chunk's text, an entity's neighbourhood.", cls=FlagGroup
)
app.add_typer(graph_app, name="graph")
Limit = Annotated[int, typer.Option(min=1, help="At most this many rows.")]


@contextmanager
def _reading(settings: Settings) -> Iterator[GraphStore]:
    """The store open read-only (beside a writer such as `trellis serve`); errors become one line and exit 1."""
    if settings.backend == "embedded" and not settings.graph_path.exists():
        raise _fail(f"nothing ingested in {settings.data_dir}")
    try:
        store = open_store(settings, read_only=True)
    except GraphStoreError as error:
        raise _fail(str(error)) from None
    try:
        yield store
    except GraphStoreError as error:
        raise _fail(str(error)) from None
    finally:
        store.close()


def _rows_out(rows: list[dict], columns: list[str], title: str, as_json: bool) -> None:
    if as_json:
        for row in rows:
            out.print(json.dumps(row, ensure_ascii=False), highlight=False, markup=False, soft_wrap=True)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row[column]) for column in columns))
    out.print(table)


def _cell(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


@graph_app.command("entities")
def graph_entities(
    name: Annotated[str, typer.Argument(help="A name (any case and punctuation by default).")],
    match: Annotated[
        str, typer.Option(help="exact (name or alias), normalised (case, punctuation forgiven) or fuzzy.")
    ] = "normalised",
    limit: Limit = 20,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Entities called NAME, with their ids, types, aliases and sources."""
    from app.service import entity_rows

    if match not in ("exact", "normalised", "fuzzy"):
        raise _fail(f"--match: expected exact, normalised or fuzzy, got {match!r}", 2)
    with _reading(_settings(data_dir)) as store:
        rows = entity_rows(store, name, match, limit)  # type: ignore[arg-type]
    _rows_out(rows, ["name", "id", "type", "aliases", "sources"], f"{len(rows)} entities", as_json)


@graph_app.command("relations")
def graph_relations(
    relation: Annotated[
        str | None, typer.Argument(help="A relation type: list its facts (default: list the types).")
    ] = None,
    limit: Limit = 20,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """The relation types with their counts, or the facts of one relation type."""
    from app.service import relation_rows

    with _reading(_settings(data_dir)) as store:
        rows = relation_rows(store, relation, limit)
    if relation is None:
        _rows_out(rows, ["relation", "count"], f"{len(rows)} relation types", as_json)
    else:
        _rows_out(rows, ["head", "relation", "tail", "head_type", "tail_type"], f"{len(rows)} facts", as_json)


@graph_app.command("chunk")
def graph_chunk(
    chunk_id: Annotated[str, typer.Argument(help="A chunk id (<doc_id>#<n>, as citations show).")],
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """A chunk's text, its document and page, and the entities it mentions."""
    from app.service import chunk_row

    with _reading(_settings(data_dir)) as store:
        row = chunk_row(store, chunk_id)
    if row is None:
        raise _fail(f"no such chunk: {chunk_id}")
    if as_json:
        out.print(json.dumps(row, ensure_ascii=False), highlight=False, markup=False, soft_wrap=True)
        return
    page = f", p. {row['page']}" if row["page"] else ""
    out.print(f"{row['chunk_id']}  ({row['title'] or row['doc_id']}{page})", highlight=False, markup=False)
    out.print(row["text"], highlight=False, markup=False)
    out.print(f"mentions: {', '.join(row['entities']) or '(none)'}", highlight=False, markup=False)


@graph_app.command("neighbours")
def graph_neighbours(
    entity: Annotated[str, typer.Argument(help="An entity's name, alias or id.")],
    limit: Limit = 50,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """An entity's neighbourhood: its relations in both directions and the chunks that mention it."""
    from app.service import neighbourhood

    with _reading(_settings(data_dir)) as store:
        found = neighbourhood(store, entity, limit)
    if found is None:
        raise _fail(f"no entity called {entity!r} (try `trellis graph entities {entity!r} --match fuzzy`)")
    if as_json:
        out.print(json.dumps(found, ensure_ascii=False), highlight=False, markup=False, soft_wrap=True)
        return
    me = found["entity"]
    out.print(f"{me['name']}  ({me['id']}{', ' + me['type'] if me['type'] else ''})", highlight=False, markup=False)
    for edge in found["relations"]:
        arrow = f"-{edge['relation']}->" if edge["direction"] == "out" else f"<-{edge['relation']}-"
        out.print(f"  {arrow} {edge['neighbour']}", highlight=False, markup=False)
    if found["relations_total"] > len(found["relations"]):
        out.print(f"  ... {found['relations_total'] - len(found['relations']):,} more (--limit)", highlight=False)
    for chunk_id in found["chunks"]:
        out.print(f"  mentioned in {chunk_id}", highlight=False, markup=False)


@app.command("ask")
def ask_command(
    question: Annotated[str, typer.Argument(help="The question.")],
    as_json: AsJson = False,
    timing: Annotated[
        bool,
        typer.Option(
            "--timing",
            help="Load the models and the data's indexes first, as a warm server holds them, then print the load "
            "and answer times to stderr.",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Answer one question with the paths and chunk citations it used."""
    import time

    from agents.graph import ask

    with _agent(_settings(data_dir)) as (graph, resources):
        if timing:
            # what a warm server has already loaded, so that the answer time compares with its answer time
            started = time.perf_counter()
            resources.warm_up()
            loaded = time.perf_counter() - started
        result = ask(graph, question)
    if timing:
        err.print(f"models loaded in {loaded:.2f} s; answered in {result['trace']['total_s']:.2f} s", highlight=False)
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    else:
        _print_answer(result)


@app.command()
def chat(
    thread: Annotated[str | None, typer.Option(help="Conversation id to resume (default: a new one).")] = None,
    data_dir: DataDir = None,
) -> None:
    """A multi-turn conversation; follow-up questions are read against earlier turns. Empty line or Ctrl-D ends."""
    import sqlite3
    import uuid

    from langgraph.checkpoint.sqlite import SqliteSaver

    settings = _settings(data_dir)
    thread_id = thread or uuid.uuid4().hex[:12]
    connection = sqlite3.connect(settings.conversations_path, check_same_thread=False)
    try:
        with _agent(settings, SqliteSaver(connection)) as (graph, _resources):
            err.print(f"thread {thread_id} (resume with --thread {thread_id})", highlight=False)
            while True:
                try:
                    question = input("you> ").strip()
                except EOFError:
                    break
                if not question:
                    break
                _print_answer(answer_live(graph, question, thread_id))
    finally:
        connection.close()


@app.command()
def batch(
    questions: Annotated[Path, typer.Argument(help='JSONL of {"id", "question", "answers"?}.')],
    output: Annotated[Path, typer.Option("-o", "--output", help="JSONL of answers (appended; resumable).")],
    data_dir: DataDir = None,
) -> None:
    """Answer many questions; re-running skips ids already in the output. Prints metrics when gold answers exist."""
    from app.evaluation import BatchFileError, answer_all, load_results, read_questions, summarise

    try:
        items = read_questions(questions)
    except (BatchFileError, OSError) as error:
        raise _fail(str(error)) from None
    with _agent(_settings(data_dir)) as (graph, resources), _progress() as progress:
        resources.load_models()  # before the clock starts: latency is measured with the models loaded
        task = progress.add_task("questions", total=len(items))
        answer_all(graph, items, output, lambda n: progress.advance(task, n))
        summary = summarise(resources, load_results(output))
    out.print_json(json.dumps(summary))


@app.command("eval")
def eval_command(
    dataset: Annotated[
        str,
        typer.Argument(
            help="metaqa-1hop/2hop/3hop, wc2014-1hop/2hop/conj, musique, nqswap, nq-reading, or a batch JSONL."
        ),
    ],
    limit: Annotated[int, typer.Option(help="Questions to score.")] = 300,
    plain: Annotated[
        bool, typer.Option("--plain", help="MetaQA: remove the brackets around topic entities, as users type.")
    ] = False,
    schema: Annotated[
        bool,
        typer.Option(
            "--schema/--no-schema", help="MetaQA: load the KG with its relation schema (--no-schema: names only)."
        ),
    ] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="Where metrics.json, report.md and plots go.")] = Path(
        "eval_out"
    ),
    data_dir: DataDir = None,
) -> None:
    """Score the agent on a benchmark; loads the benchmark's KG or passages into the data directory if missing."""
    from app import evaluation

    settings = _settings(data_dir)
    _prepare(dataset, settings, schema)
    name = Path(dataset).stem if dataset not in evaluation.DATASETS else dataset
    answers_path = out_dir / "answers.jsonl"
    if answers_path.exists():
        answers_path.unlink()  # an evaluation is a fresh run; `batch` is the resumable one
    with _agent(settings) as (graph, resources), _progress() as progress:
        extra: dict = {}
        skipped = 0
        if dataset.startswith("metaqa-"):
            items, skipped = evaluation.metaqa_questions(resources, int(dataset[7]), limit, plain)
            extra["plain_questions"] = plain
            extra["relation_schema"] = settings.relation_schema_path.exists()
        elif dataset.startswith("wc2014-"):
            items = evaluation.wc2014_questions(dataset.split("-")[1], limit)
            extra["relation_schema"] = settings.relation_schema_path.exists()
        elif dataset == "musique":
            items = evaluation.musique_questions(limit)
            extra["recall_at_5"] = evaluation.recall_at_5(resources, items)
        elif dataset == "nqswap":
            items = evaluation.nqswap_questions(limit)
        elif dataset == "nq-reading":
            items = evaluation.nq_reading_questions(limit)
        else:
            try:
                items = evaluation.read_questions(Path(dataset))[:limit]
            except (evaluation.BatchFileError, OSError) as error:
                raise _fail(str(error)) from None
        resources.load_models()  # before the clock starts: latency is measured with the models loaded
        task = progress.add_task(name, total=len(items))
        if dataset in ("nqswap", "nq-reading"):
            # the fact-level conflict check is NQ-Swap's point; NQ reading measures the reading alone
            evaluation.answer_with_given_context(
                resources, items, answers_path, lambda n: progress.advance(task, n), dataset == "nqswap"
            )
        else:
            evaluation.answer_all(graph, items, answers_path, lambda n: progress.advance(task, n))
        results = evaluation.load_results(answers_path)
        metrics = {"dataset": name, **evaluation.summarise(resources, results), "skipped": skipped, **extra}
        if dataset in ("nqswap", "nq-reading", "musique"):
            metrics["spans"] = evaluation.span_check(results)
        if dataset == "nqswap":
            metrics["conflict"] = evaluation.conflict_shares(results)
        metrics["peak_rss_mb"] = evaluation.peak_rss_mb()
    evaluation.write_report(out_dir, metrics, results)
    out.print_json(json.dumps(metrics))


def _prepare(dataset: str, settings: Settings, schema: bool = True) -> None:
    """Load what a named benchmark needs into the data directory, once."""
    from app.evaluation import SHARED_DATA

    if dataset.startswith("metaqa-"):
        if settings.relation_schema_path.exists() and not schema:
            raise _fail(f"{settings.data_dir} has a relation schema; use another --data-dir for --no-schema")
        if schema and not settings.relation_schema_path.exists():
            _install_schema(Path(__file__).resolve().parents[1] / "examples" / "metaqa" / "relations.json", settings)
        if not settings.graph_path.exists():
            _load_benchmark_kg(settings, SHARED_DATA / "metaqa" / "kb.tsv")
    elif dataset.startswith("wc2014-") and not settings.graph_path.exists():
        _load_benchmark_kg(settings, SHARED_DATA / "wc2014" / "kb.tsv")
    elif dataset == "musique" and not settings.vectors_path.exists():
        ingest([SHARED_DATA / "musique" / "corpus.json"], None, None, data_dir=settings.data_dir)  # the command


def _load_benchmark_kg(settings: Settings, path: Path) -> None:
    """A benchmark's KG into the data directory, with progress bars: MetaQA's 129k triples take a while."""
    err.print(f"loading {path} into {settings.data_dir} (once)", highlight=False)
    with _writing(settings) as store, _progress() as progress:
        report = ingest_triples(store, path, progress=_progress_callback(progress))
    err.print(f"{report.rows:,} rows, {report.relations_created:,} relations", highlight=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1: this machine only).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    warm: Annotated[bool, typer.Option(help="Load the models before accepting requests.")] = True,
    data_dir: DataDir = None,
) -> None:
    """The HTTP API and web chat page (OpenAPI docs at /docs). This process becomes the store's writer."""
    import uvicorn

    from app.server import create_app

    settings = load_settings(data_dir=data_dir, host=host, port=port)
    if settings.api_key is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            f"[yellow]note:[/yellow] listening on {settings.host} without TRELLIS_API_KEY: "
            "uploads and deletes are refused from other machines"
        )
    try:
        application = create_app(settings, warm=warm)
    except GraphStoreError as error:
        raise _fail(str(error)) from None
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="info")


def _flags_as_flags(*typers: typer.Typer) -> None:
    """Every command of these apps shows its flags as flags in `--help` (groups are made with cls=FlagGroup)."""
    for each in typers:
        # typer fills in its own classes when a command is registered; ours are those with flags as flags
        for command in each.registered_commands:
            if command.cls in (None, TyperCommand):
                command.cls = FlagCommand


_flags_as_flags(app, schema_app, graph_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
