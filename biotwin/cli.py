"""The ``biotwin`` command: one entry point, a subcommand per job.

Only this module prints (with rich); library code logs.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twin.errors import TwinError

app = typer.Typer(
    help="biotwin: digital twin and predictive quality for a bioreactor / adjuvant line.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Plant TOML file (default: the shipped line).", dir_okay=False),
]


def data_dir_default() -> Path:
    """The store: --data-dir, else $BIOTWIN_DATA_DIR, else ./var."""
    return Path(os.environ.get("BIOTWIN_DATA_DIR", "var"))


def _fail(exc: Exception) -> None:
    # escaped (a message's [bioreactor] or [[tag]] is text, not markup) and never wrapped
    err_console.print("[bold red]error:[/] " + escape(str(exc)), soft_wrap=True)
    raise typer.Exit(code=2)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """biotwin command line."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from biotwin.children import stop_with_parent

    stop_with_parent()  # a service of `biotwin up` stops when its supervisor dies


@app.command()
def simulate(
    days: Annotated[float, typer.Option(help="Horizon in days.", min=0.01, max=36500)] = 365.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same output).")] = 7,
    out: Annotated[Path, typer.Option(help="Output directory (replaced atomically).")] = Path(
        "out"
    ),
    config: ConfigOption = None,
    no_signals: Annotated[
        bool, typer.Option("--no-signals", help="Skip the 1-minute signals.")
    ] = False,
    sample_interval_min: Annotated[
        int | None,
        typer.Option(help="Override the plant's signal sample interval (minutes).", min=1, max=60),
    ] = None,
) -> None:
    """Simulate the line and write signals, batch records, asset events and schedule."""
    from twin.config import load_config
    from twin.output import simulate_to

    try:
        plant = load_config(config)
        if sample_interval_min is not None:
            info = plant.plant.model_copy(update={"sample_interval_min": sample_interval_min})
            plant = plant.model_copy(update={"plant": info})
        t0 = time.perf_counter()
        with console.status(f"simulating {days:g} days (seed {seed}) into {out}..."):
            sim, manifest = simulate_to(plant, out, days=days, seed=seed, signals=not no_signals)
        t1 = time.perf_counter()
    except (TwinError, ValueError, OSError) as exc:
        _fail(exc)
    _print_summary(sim, manifest, out, t1 - t0)


def _print_summary(sim, manifest: dict, out: Path, seconds: float) -> None:
    import pandas as pd

    from twin.output import batch_tables

    tables = batch_tables(sim)
    batches = tables["batches"]
    table = Table(title=f"biotwin: {sim.horizon_h / 24:g} days, seed {sim.seed}")
    table.add_column("what")
    table.add_column("value", justify="right")
    counts = batches["status"].value_counts()
    for status in ("released", "rejected", "lost", "qc", "in_progress", "queued"):
        table.add_row(f"batches {status}", str(int(counts.get(status, 0))))
    table.add_row("batches late", str(int(batches["late"].sum())))
    dev = tables["deviations"]["deviation_class"].value_counts()
    table.add_row("deviations", ", ".join(f"{k} {v}" for k, v in dev.items()) or "none")
    events = tables["asset_events"]["event"].value_counts()
    table.add_row(
        "asset failures / PMs", f"{int(events.get('failure', 0))} / {int(events.get('pm_end', 0))}"
    )
    signal_rows = sum(v for k, v in manifest["rows"].items() if k.startswith("signals/"))
    table.add_row("signal rows", f"{signal_rows:,}")
    table.add_row("tags", str(len(tables["tags"])))
    table.add_row("simulate + write (s)", f"{seconds:.1f}")
    table.add_row("output", str(out))
    console.print(table)
    del pd


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate a plant file and print what it describes."""
    from twin.config import load_config

    try:
        plant = load_config(config)
    except TwinError as exc:
        _fail(exc)
    table = Table(title=f"{plant.plant.site} / {plant.plant.area} / {plant.plant.line}")
    for col in ("unit", "class", "kind", "tags", "assets"):
        table.add_column(col)
    for unit in plant.units:
        spec = plant.unit_classes[unit.unit_class]
        table.add_row(
            unit.id,
            unit.unit_class,
            spec.kind,
            str(len(spec.signals)),
            ", ".join(a.name for a in spec.assets),
        )
    console.print(table)
    console.print(f"recipe: {plant.recipe.name}: " + " > ".join(s.name for s in plant.recipe.steps))


def _register_plugins() -> None:
    """Subcommands owned by the other packages (kept there, next to their code)."""
    from connectors.cli import register as register_connectors
    from connectors.records_cli import register as register_records
    from dashboard.cli import register as register_dashboard
    from dashboard.scenario_cli import register as register_scenario
    from dashboard.users_cli import register as register_users
    from quality.cli import register as register_quality

    register_connectors(app)
    register_quality(app)
    register_dashboard(app)
    register_scenario(app)
    register_users(app)
    register_records(app)


_register_plugins()
