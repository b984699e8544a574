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
        frame = _historian(data_dir_).tags()
    except OSError as exc:
        _fail(exc)
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

    app.add_typer(history, name="history")
    register_opcua(app)
