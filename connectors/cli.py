"""Subcommands of ``biotwin`` that belong to the connectors: the historian (and OPC UA).

``register(app)`` adds them to the top-level typer app (see biotwin/cli.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

history = typer.Typer(
    help="The historian: what is stored, and getting it out.", no_args_is_help=True
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="The store (default: $BIOTWIN_DATA_DIR, else ./var).", file_okay=False
    ),
]


def data_dir(value: Path | None) -> Path:
    """--data-dir, else $BIOTWIN_DATA_DIR, else ./var."""
    return value if value is not None else Path(os.environ.get("BIOTWIN_DATA_DIR", "var"))


def _fail(exc: Exception) -> None:
    err_console.print("[bold red]error:[/] " + escape(str(exc)))
    raise typer.Exit(code=2)


def _text(value) -> str:
    """A table cell: empty for missing values (None, NaN, NaT)."""
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _historian(value: Path | None):
    from connectors.historian import Historian

    return Historian(data_dir(value) / "historian")


@history.command("tags")
def history_tags(data_dir_: DataDir = None) -> None:
    """List stored tags with units, first/last time and row counts."""
    try:
        h = _historian(data_dir_)
        frame = h.tags()
        quarantined = len(h.quarantined())
    except OSError as exc:
        _fail(exc)
    if quarantined:
        err_console.print(
            f"[yellow]{quarantined} damaged file(s) in quarantine, their rows not counted: "
            "see `biotwin history verify`"
        )
    table = Table(title=f"{len(frame)} tags")
    for col in ("tag", "unit", "eng_unit", "first_time", "last_time", "rows"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(
            _text(row.tag),
            _text(row.unit),
            _text(row.eng_unit),
            _text(row.first_time),
            _text(row.last_time),
            f"{row.rows:,}",
        )
    console.print(table)


@history.command("export")
def history_export(
    out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv.", dir_okay=False)],
    tags: Annotated[str | None, typer.Option(help="Comma-separated tags (default: all).")] = None,
    start: Annotated[str | None, typer.Option(help="From (ISO time, UTC if no zone).")] = None,
    end: Annotated[str | None, typer.Option(help="Until, exclusive (ISO time).")] = None,
    resample: Annotated[
        str | None, typer.Option(help="Bucket width, e.g. 1min (means per bucket).")
    ] = None,
    data_dir_: DataDir = None,
) -> None:
    """Export rows in long format (time, tag, value, status, quality, flags).

    Everything when --tags, --start and --end are omitted; the file is written by DuckDB
    as it reads, so a year of history does not need to fit in memory.
    """
    from connectors.historian import HistorianError

    names = [t.strip() for t in tags.split(",") if t.strip()] if tags is not None else None
    try:
        with console.status(f"exporting to {out}..."):
            rows = _historian(data_dir_).export(out, names, start, end, resample)
    except (HistorianError, OSError) as exc:
        _fail(exc)
    console.print(f"{rows:,} rows -> {out}")


@history.command("compact")
def history_compact(
    min_files: Annotated[int, typer.Option(help="Merge a day once it has this many files.")] = 2,
    data_dir_: DataDir = None,
) -> None:
    """Merge small segment files (past days into one file each); safe while others read."""
    from connectors.historian import HistorianError

    try:
        with console.status("compacting..."):
            days = _historian(data_dir_).compact(min_files=min_files)
    except (HistorianError, OSError) as exc:
        _fail(exc)
    console.print(f"{days:,} days compacted")


@history.command("verify")
def history_verify(data_dir_: DataDir = None) -> None:
    """Check every stored file against its checksum; quarantine what is damaged.

    Lists each file checked (rows, result, where a damaged one went) and the files
    already in quarantine. Exit code 0 when all is clean, 1 when damage was found now or
    earlier (files in quarantine/; remove or restore them and their notes to clear it).
    """
    try:
        with console.status("verifying checksums..."):
            h = _historian(data_dir_)
            findings = h.verify()
            notes = h.quarantined()
    except OSError as exc:
        _fail(exc)
    table = Table(title=f"{len(findings)} files checked")
    for col in ("file", "rows", "result", "moved to"):
        table.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
    for f in findings:
        rows = "" if f.rows_expected is None else f"{f.rows_expected:,}"
        result = "ok" if f.ok else "[red]" + escape(f.problem)
        moved = "" if f.ok else str(f.moved_to.relative_to(h.root) if f.moved_to else "missing")
        table.add_row(escape(str(f.path.relative_to(h.root))), rows, result, escape(moved))
    console.print(table)
    damaged = [f for f in findings if not f.ok]
    for note in notes:
        console.print(
            f"in quarantine: {escape(str(note.get('file')))} -> "
            f"{escape(str(note.get('quarantined_as') or 'missing'))} "
            f"({escape(str(note.get('problem')))}; detected {note.get('detected_at')}, "
            f"{note.get('rows_expected')} rows expected)"
        )
    if damaged or notes:
        err_console.print(
            f"[bold red]damage:[/] {len(damaged)} file(s) damaged now, "
            f"{len(notes)} in {escape(str(h.root / 'quarantine'))}"
        )
        raise typer.Exit(code=1)
    console.print("all files match their checksums; nothing in quarantine")


@history.command("import-sim")
def history_import_sim(
    sim_dir: Annotated[Path, typer.Argument(help="Output directory of `biotwin simulate`.")],
    data_dir_: DataDir = None,
) -> None:
    """Load a twin simulation's signals and batch context into the historian."""
    from connectors.historian import HistorianError
    from connectors.twin_import import import_simulation

    try:
        with console.status(f"importing {sim_dir}...") as status:
            counts = import_simulation(
                sim_dir,
                _historian(data_dir_),
                progress=lambda unit: status.update(f"importing {sim_dir}: {unit} done"),
            )
    except (HistorianError, OSError) as exc:
        _fail(exc)
    rows = sum(v for k, v in counts.items() if k != "batch_context")
    console.print(f"{rows:,} rows and {counts['batch_context']:,} batch context rows imported")


def register(app: typer.Typer) -> None:
    """Add this package's subcommands to *app*."""
    from connectors.opcua_cli import register_opcua
    from connectors.receive_cli import register_receive

    app.add_typer(history, name="history")
    register_opcua(app)
    register_receive(app)
