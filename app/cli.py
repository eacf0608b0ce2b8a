"""The `trellis` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from config import Settings, load_settings
from graph.store import GraphStoreError, open_store
from ingest.triples import TripleFileError, ingest_triples

app = typer.Typer(help="Trellis: question answering that stays faithful to a knowledge graph.", no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: $TRELLIS_DATA_DIR or ./trellis_data)."),
]


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
    try:
        store = open_store(settings)
    except GraphStoreError as error:
        raise _fail(str(error)) from None
    progress = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    tasks: dict[str, int] = {}

    def advance(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

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


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
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
        # Vectors arrive with document ingestion; until an index exists there are none.
        "vectors": 0,
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
