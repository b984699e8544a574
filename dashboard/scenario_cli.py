"""``biotwin scenario run FILE --out DIR``: a what-if sweep outside the command center.

For planners' scripts and clusters: the scenario file (TOML, the page's levers,
:mod:`twin.scenario_file`) and its paired baseline run from the live plant state in the
store, as the scenarios page starts (:func:`dashboard.plant.live_state`, with the batches'
predicted risk), or from an empty plant (``--from-empty``); on the local pool or a Dask
cluster (``--scheduler``, docs/cluster.md). Writes ``DIR/kpis.csv`` (replication, arm,
kpi, value) and ``DIR/summary.json`` (means, spread, paired differences with 95 %
intervals), each atomically; ``summary.json`` is written last, so its presence means a
complete run. Nothing is written when the file, the store or the cluster is refused.

``register(app)`` adds the command to the top-level typer app (see biotwin/cli.py).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from biotwin.execution import ExecutionError
from connectors.cli import DataDir, data_dir

__all__ = ["FallbackLocal", "Scheduler", "register", "scenario_run", "write_results"]

console = Console()
err_console = Console(stderr=True)

#: ``--scheduler``: where sweeps run (also for ``up`` and ``dashboard``)
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler address (tcp://HOST:8786) to run the replications on; default: "
        "$DASK_SCHEDULER_ADDRESS, else the local process pool; 'local' forces the local pool.",
    ),
]
#: ``--fallback-local``: a warning and the local pool when the scheduler cannot be reached
FallbackLocal = Annotated[
    bool,
    typer.Option(
        "--fallback-local",
        help="If the scheduler cannot be reached, warn and run on the local pool instead of "
        "stopping.",
    ),
]

ARMS = ("baseline", "scenario")


def _fail(exc: Exception | str) -> None:
    err_console.print("[bold red]error:[/] " + escape(str(exc)), soft_wrap=True)
    raise typer.Exit(code=2)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def kpi_rows(base, what) -> pd.DataFrame:
    """``kpis.csv``: one row per replication x arm x KPI (replication, arm, kpi, value)."""
    from twin.scenarios import KPI_NAMES

    parts = []
    for arm, result in zip(ARMS, (base, what), strict=True):
        frame = result.kpis[list(KPI_NAMES)].copy()
        frame.insert(0, "replication", range(len(frame)))
        long = frame.melt(id_vars="replication", var_name="kpi", value_name="value")
        long.insert(1, "arm", arm)
        order = {k: i for i, k in enumerate(KPI_NAMES)}
        long = long.sort_values(
            ["replication", "kpi"], key=lambda c: c.map(order) if c.name == "kpi" else c
        )
        parts.append(long)
    return pd.concat(parts, ignore_index=True)[["replication", "arm", "kpi", "value"]]


def summary(base, what, **about) -> dict:
    """``summary.json``: the run (``about``), then per KPI each arm's mean, std, p05, p50,
    p95 and the paired difference (scenario - baseline) with its 95 % interval."""
    from twin.scenarios import compare

    arms = {arm: r.summary() for arm, r in zip(ARMS, (base, what), strict=True)}
    paired = compare(base, what)
    kpis = {}
    for kpi in paired.index:
        kpis[kpi] = {
            **{arm: {k: float(v) for k, v in arms[arm].loc[kpi].items()} for arm in ARMS},
            "difference": {
                "mean": float(paired.loc[kpi, "difference"]),
                "ci95_low": float(paired.loc[kpi, "ci95_low"]),
                "ci95_high": float(paired.loc[kpi, "ci95_high"]),
            },
        }
    return _json_safe({**about, "kpis": kpis})


def _commit(path: Path, write) -> Path:
    """Write ``path`` through a temporary file in its folder, fsynced; returns the temporary
    name (renamed by the caller, so both files land together)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def write_results(out: Path, kpis: pd.DataFrame, info: dict) -> None:
    """Write ``out/kpis.csv`` and then ``out/summary.json``, each by temporary file and
    rename: a reader sees whole files or none, and summary.json only once kpis.csv is there.

    Raises
    ------
    OSError
        If ``out`` cannot be made or written; no temporary file is left behind.
    """
    out.mkdir(parents=True, exist_ok=True)
    tmps = []
    try:
        tmps.append(_commit(out / "kpis.csv", lambda fh: kpis.to_csv(fh, index=False)))
        tmps.append(
            _commit(
                out / "summary.json",
                lambda fh: fh.write(json.dumps(info, indent=2, allow_nan=False) + "\n"),
            )
        )
        os.replace(tmps[0], out / "kpis.csv")
        os.replace(tmps[1], out / "summary.json")
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _start(store: Path, plant, from_empty: bool):
    """The starting point: (state, notes, description)."""
    from dashboard.whatif import read_scores, with_batch_risk
    from twin.state import PlantState

    if from_empty:
        return PlantState.empty(), ["--from-empty: a new, empty plant"], "an empty plant"
    root = store / "historian"
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data-dir {store}: no historian at {root}: give the store of a running plant "
            "(biotwin up) or pass --from-empty"
        )
    from connectors.historian import Historian
    from dashboard.plant import live_state

    state, notes = live_state(Historian(root), plant)
    scores, why = read_scores(store, "batch")
    if scores is None:
        notes.append(f"batches in progress without predicted risk: {why}")
    return with_batch_risk(state, scores), notes, f"the live plant state in {store}"


def scenario_run(
    file: Annotated[
        Path, typer.Argument(help="Scenario file (TOML, docs/scenarios.md).", dir_okay=False)
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for kpis.csv and summary.json.", file_okay=False)
    ],
    data_dir_: DataDir = None,
    scheduler: Scheduler = None,
    from_empty: Annotated[
        bool, typer.Option("--from-empty", help="Start from an empty plant, not the store's.")
    ] = False,
    fallback_local: FallbackLocal = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Local processes (default: all cores); ignored on a cluster.", min=1),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Plant TOML file (default: the shipped line).", dir_okay=False
        ),
    ] = None,
) -> None:
    """Run a scenario file and its paired baseline; write kpis.csv and summary.json."""
    from dashboard.whatif import (
        plant_now,
        plant_tz,
        predicted_failure_events,
        read_scores,
        run_pair,
    )
    from twin.config import load_config
    from twin.errors import TwinError
    from twin.scenario_file import load_scenario_file
    from twin.scenarios import FailureRisk

    store = data_dir(data_dir_)
    try:
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"--out {out}: must be a folder; got a file")
        plant = load_config(config)
        spec = load_scenario_file(file)
        state, notes, origin = _start(store, plant, from_empty)
        now = plant_now(state, plant)
        tz, tz_problem = plant_tz()
        if tz_problem:
            notes.append(tz_problem)
        events = spec.to_events(plant, now.to_pydatetime(), tz, where=str(file))
        if spec.predicted_risk is not None:
            scores, why = read_scores(store, "asset") if not from_empty else (None, "--from-empty")
            if scores is None:
                line = f"run without predicted failure risk: {why}"
                err_console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
                notes.append(line)
            else:
                predicted, risk_notes = predicted_failure_events(
                    scores, plant, spec.predicted_risk.threshold
                )
                by_hand = {e.asset for e in events if isinstance(e, FailureRisk)}
                events += [e for e in predicted if e.asset not in by_hand]
                notes += risk_notes
    except (TwinError, ValueError, OSError) as exc:
        _fail(exc)
    for note in notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)
    total = 2 * spec.replications
    t0 = time.perf_counter()
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task(f"{spec.name}: replications", total=total)
            base, what = run_pair(
                plant,
                state,
                events,
                horizon_h=spec.horizon_h,
                replications=spec.replications,
                seed=spec.seed,
                name=spec.name,
                workers=workers,
                scheduler=scheduler,
                fallback_local=fallback_local,
                progress=lambda done, n: bar.update(task, completed=done, total=n),
            )
    except (TwinError, ExecutionError) as exc:
        _fail(exc)
    info = summary(
        base,
        what,
        name=spec.name,
        scenario_file=str(file),
        started_from=origin,
        plant_now=now.isoformat(),
        horizon_days=spec.horizon_days,
        replications=spec.replications,
        seed=spec.seed,
        ran_on=what.meta.get("ran_on"),
        seconds=round(time.perf_counter() - t0, 3),
        events=[e.model_dump() for e in events],
        notes=notes,
    )
    try:
        write_results(out, kpi_rows(base, what), info)
    except OSError as exc:
        _fail(f"--out {out}: cannot be written ({exc.strerror or exc})")
    _print(info, out)


def _print(info: dict, out: Path) -> None:
    table = Table(
        title=f"{info['name']}: {info['replications']} paired replications, "
        f"{info['horizon_days']:g} days",
        title_justify="left",
    )
    for col in ("kpi", "baseline", "scenario", "difference", "95 % interval"):
        table.add_column(col, justify="left" if col == "kpi" else "right")

    def show(x) -> str:
        return "—" if x is None else f"{x:,.2f}"

    for kpi, row in info["kpis"].items():
        d = row["difference"]
        table.add_row(
            kpi,
            show(row["baseline"]["mean"]),
            show(row["scenario"]["mean"]),
            show(d["mean"]),
            f"{show(d['ci95_low'])} to {show(d['ci95_high'])}",
        )
    console.print(table)
    console.print(
        f"ran on the {info['ran_on']} in {info['seconds']:.1f} s; wrote {out / 'kpis.csv'} "
        f"and {out / 'summary.json'}",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``biotwin scenario run`` to *app*."""
    group = typer.Typer(
        help="What-if scenarios outside the command center (files, scripts, clusters).",
        no_args_is_help=True,
    )
    group.command("run")(scenario_run)
    app.add_typer(group, name="scenario")
