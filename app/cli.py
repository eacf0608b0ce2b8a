"""The `trellis` command line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from config import Settings, load_settings
from graph.store import GraphStore, GraphStoreError, open_store
from graph.vectors import VectorIndexError, stored_vector_count
from ingest.triples import TripleFileError, ingest_triples

app = typer.Typer(help="Trellis: question answering that stays faithful to a knowledge graph.", no_args_is_help=True)
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
    data_dir: DataDir = None,
) -> None:
    """Load ready-made triples into the knowledge graph (idempotent; a bad line writes nothing)."""
    settings = _settings(data_dir)
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


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
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
    data_dir: DataDir = None,
) -> None:
    """Ingest documents: chunks and vectors for search, entities and relations for the graph.

    Unchanged documents are skipped; changed ones replace what they had written. Exits 1 if anything
    was skipped.
    """
    from ingest.extract import SpacyExtractor
    from ingest.pipeline import Ingestor
    from lm.embeddings import get_embedder

    settings = _settings(data_dir)
    with _writing(settings) as store, _progress() as progress:
        loading = progress.add_task("models", total=None)
        embedder = get_embedder(settings.embedding_model, settings.device)
        extractor = SpacyExtractor()
        progress.update(loading, total=1, completed=1)
        ingestor = Ingestor(settings, store, embedder, extractor, progress=_progress_callback(progress))
        try:
            report = ingestor.ingest(paths, include or (), exclude or ())
        finally:
            ingestor.close()
            extractor.close()
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
    from ingest.manifest import Manifest

    settings = _settings(data_dir)
    records = []
    if settings.manifest_path.exists():
        manifest = Manifest(settings.manifest_path)
        records = manifest.documents()
        manifest.close()
    if as_json:
        for r in records:
            row = {
                "doc_id": r.doc_id,
                "title": r.title,
                "source": r.source_path,
                "chunks": len(r.chunk_ids),
                "state": r.state,
            }
            out.print(json.dumps(row, ensure_ascii=False), highlight=False, soft_wrap=True)
        return
    table = Table("doc_id", "title", "source", "chunks", "state", title=f"{len(records):,} documents")
    for r in records:
        table.add_row(r.doc_id, r.title, r.source_path, str(len(r.chunk_ids)), r.state)
    out.print(table)


@app.command()
def status(
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """What is stored: backend, data directory, and counts of entities, relations, documents, chunks, vectors."""
    settings = _settings(data_dir)
    counts = {"entities": 0, "relations": 0, "documents": 0, "chunks": 0}
    # A status check must not take the embedded store's single writer slot, nor create a store.
    if settings.backend != "embedded" or settings.graph_path.exists():
        try:
            store = open_store(settings, read_only=True)
        except GraphStoreError as error:
            raise _fail(str(error)) from None
        try:
            c = store.counts()
            counts = {"entities": c.entities, "relations": c.relations, "documents": c.documents, "chunks": c.chunks}
        finally:
            store.close()
    report = {
        "backend": settings.backend,
        "data_dir": str(settings.data_dir.resolve()),
        **counts,
        "vectors": stored_vector_count(settings.vectors_path),
    }
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title="Trellis status", show_header=False)
    for key, value in report.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
