"""Subcommands of ``biotwin`` that belong to the quality package.

``register(app)`` adds ``train``, ``score``, ``evaluate``, ``models ...``, and the
bring-your-own-data families ``deviation fit|predict`` and ``maintenance fit|predict``.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from biotwin.execution import ExecutionError
from quality.errors import QualityError

console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="The store (default: $BIOTWIN_DATA_DIR, else ./var).", file_okay=False
    ),
]
TwinDir = Annotated[
    Path | None,
    typer.Option(
        "--twin", help="Twin output directory (`biotwin simulate --out`).", file_okay=False
    ),
]
Seed = Annotated[int, typer.Option(help="Model seed (same data and seed, same model).")]

models = typer.Typer(
    help="The model registry: versions, approval, model cards.", no_args_is_help=True
)
deviation = typer.Typer(help="Batch deviation model on your own data.", no_args_is_help=True)
maintenance = typer.Typer(help="Asset failure / RUL model on your own data.", no_args_is_help=True)


OutcomesBatchCol = Annotated[str, typer.Option(help="With --outcomes: batch id column.")]
OutcomesLabelCol = Annotated[str, typer.Option(help="With --outcomes: label column (0/1).")]


def _data_dir(value: Path | None) -> Path:
    return value if value is not None else Path(os.environ.get("BIOTWIN_DATA_DIR", "var"))


def _fail(exc: Exception) -> None:
    err_console.print("[bold red]error:[/] " + escape(str(exc)), soft_wrap=True)  # one line
    raise typer.Exit(code=2)


def _registry(data_dir: Path):
    from quality.registry import Registry

    return Registry(data_dir / "models")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _metrics_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title)
    cols = list(rows[0]) if rows else []
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*[_fmt(r.get(c)) for c in cols])
    return table


def _metrics_column(title: str, metrics: dict) -> Table:
    """One metric per row (many metrics stay readable in a narrow terminal)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, _fmt(v))
    return table


# ---------------------------------------------------------------------- train / score


#: where the cross-validation folds run (quality.folds, docs/cluster.md)
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler (tcp://HOST:8786) for the cross-validation folds (and, for "
        "`train --outcomes`, reading the historian's batches by partition); default "
        "$DASK_SCHEDULER_ADDRESS, else this machine. The same model either way.",
    ),
]


def train(
    twin: TwinDir = None,
    data_dir: DataDir = None,
    seed: Seed = 0,
    days: Annotated[
        float, typer.Option(help="Days of history to simulate when none exists.")
    ] = 730,
    outcomes: Annotated[
        Path | None,
        typer.Option(
            help="Batch outcomes (QA / LIMS, CSV or Parquet): train the deviation model on "
            "the historian's trajectories joined to them, instead of twin output.",
            dir_okay=False,
        ),
    ] = None,
    batch_col: OutcomesBatchCol = "batch_id",
    label_col: OutcomesLabelCol = "label",
    class_col: Annotated[
        str | None, typer.Option(help="With --outcomes: deviation class column.")
    ] = None,
    cqa_col: Annotated[
        list[str] | None, typer.Option(help="With --outcomes: CQA columns (repeat).")
    ] = None,
    context_col: Annotated[
        list[str] | None,
        typer.Option(help="With --outcomes: context known at start, e.g. lot attributes."),
    ] = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Train both model families on twin history and register them (not yet approved).

    With --outcomes, the deviation model is trained on the historian of the store instead
    (what the ingest collected), labelled by the outcomes table.
    """
    from quality.jobs import ensure_training_data, train_all

    store = _data_dir(data_dir)
    if outcomes is not None:
        if twin is not None:
            _fail(ValueError("--twin and --outcomes: choose one source (twin or historian)"))
        _train_from_historian(
            store,
            outcomes,
            seed,
            batch_col,
            label_col,
            class_col,
            cqa_col,
            context_col,
            scheduler=scheduler,
        )
        return
    try:
        with console.status("preparing training history...") as status:
            source = twin or ensure_training_data(store, days=days)
            done = train_all(
                source, _registry(store), seed=seed, progress=status.update, scheduler=scheduler
            )
    except (QualityError, OSError, ExecutionError) as exc:
        _fail(exc)
    dev_version, dev_metrics = done["deviation"]
    rows = [
        {
            k: r[k]
            for k in (
                "progress",
                "n",
                "positives",
                "roc_auc",
                "envelope_rule_auc",
                "pr_auc",
                "brier",
            )
        }
        for r in dev_metrics["by_progress"]
    ]
    console.print(_metrics_table(f"{dev_version}: held-out batches", rows))
    mnt_version, mnt_metrics = done["maintenance"]
    flat = {k: v for k, v in mnt_metrics.items() if not k.startswith("_") and k != "headline"}
    console.print(
        _metrics_column(f"{mnt_version}: held-out runs", {**mnt_metrics["headline"], **flat})
    )
    console.print(
        f"registered in {store / 'models'}; approve with "
        f"`biotwin models approve VERSION --user QA_USER --reason ...`"
    )


def _train_from_historian(
    store: Path,
    outcomes,
    seed,
    batch_col,
    label_col,
    class_col,
    cqa_col,
    context_col,
    *,
    scheduler=None,
) -> None:
    from connectors.historian import Historian, HistorianError
    from quality.data import read_table
    from quality.live import training_history_from_historian
    from quality.service import train_deviation
    from twin.config import load_config

    if not (store / "historian").exists():
        _fail(FileNotFoundError(f"historian: nothing stored under {store / 'historian'}"))
    try:
        with console.status("reading batch trajectories from the historian...") as status:
            history = training_history_from_historian(
                Historian(store / "historian"),
                load_config(),
                read_table(outcomes, "outcomes"),
                batch_col=batch_col,
                label_col=label_col,
                class_col=class_col,
                cqa_cols=cqa_col,
                context_cols=context_col,
                scheduler=scheduler,
            )
            status.update("training the deviation model")
            model, meta, metrics = train_deviation(
                history,
                seed=seed,
                source=f"historian {store / 'historian'} + {outcomes}",
                scheduler=scheduler,
            )
            version = _registry(store).register(model, meta)
    except (QualityError, HistorianError, OSError, ExecutionError) as exc:
        _fail(exc)
    rows = [
        {k: r.get(k) for k in ("progress", "n", "positives", "roc_auc", "envelope_rule_auc")}
        for r in metrics["by_progress"]
    ]
    console.print(_metrics_table(f"{version}: held-out (later) batches", rows))
    console.print(
        f"registered in {store / 'models'} (the maintenance model is not retrained: "
        "fit it on run-to-failure data with `biotwin maintenance fit`); approve with "
        "`biotwin models approve VERSION --user QA_USER --reason ...`"
    )


def score(
    twin: TwinDir = None,
    data_dir: DataDir = None,
    every: Annotated[
        float | None, typer.Option(help="Score again every SECONDS until stopped (a service).")
    ] = None,
    outcomes: Annotated[
        Path | None,
        typer.Option(
            help="Batch outcomes decided so far (QA / LIMS, CSV or Parquet; read each round): "
            "from the historian, check the deviation model's AUC on them.",
            dir_okay=False,
        ),
    ] = None,
    batch_col: OutcomesBatchCol = "batch_id",
    label_col: OutcomesLabelCol = "label",
) -> None:
    """Score open batches and assets with the approved models into DATA_DIR/scores.

    Also writes scores/drift.json: PSI of recent batches against the training reference and,
    once outcomes are known (twin output has them; for the historian give --outcomes), the
    deviation model's ROC AUC on batches it never trained on.
    """
    if outcomes is not None and twin is not None:
        _fail(ValueError("--outcomes: twin output carries its outcomes; give one or the other"))
    job = _ScoreJob(twin, _data_dir(data_dir), outcomes, batch_col, label_col)
    if every is not None:
        _score_loop(job, every)
        return
    try:
        batches, assets = job()
    except (QualityError, OSError) as exc:
        _fail(exc)
    store = job.store
    table = Table(title=f"{len(batches)} open batches, riskiest first")
    for c in ("batch_id", "progress", "p_deviation", "likely_class", "low_confidence", "reasons"):
        table.add_column(c)
    for r in batches.sort_values("p_deviation", ascending=False).head(10).itertuples():
        table.add_row(
            r.batch_id,
            f"{r.progress:.0%}",
            f"{r.p_deviation:.2f}",
            str(r.likely_class),
            "yes" if r.low_confidence else "",
            escape(r.reasons[:90]),
        )
    console.print(table)
    console.print(f"{len(assets)} assets scored; written to {store / 'scores'}")


class _ScoreJob:
    """One scoring round: the twin output, or the historian (with outcomes if given)."""

    def __init__(self, twin, store, outcomes, batch_col, label_col):
        self.twin, self.store, self.outcomes = twin, store, outcomes
        self.batch_col, self.label_col = batch_col, label_col

    def __call__(self):
        from quality.jobs import score_twin

        out = self.store / "scores"
        if self.twin is not None:
            return score_twin(self.twin, _registry(self.store), out)
        from quality.data import read_table
        from quality.live import score_historian

        table = None if self.outcomes is None else read_table(self.outcomes, "outcomes")
        return score_historian(
            self.store,
            _registry(self.store),
            out,
            outcomes=table,
            batch_col=self.batch_col,
            label_col=self.label_col,
        )


def _score_loop(job: _ScoreJob, every: float) -> None:
    """Score, sleep, repeat; a failed round is reported and the next one tried."""
    import signal
    import time

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        started = time.monotonic()
        try:
            batches, _ = job()
            console.print(f"{time.strftime('%H:%M:%S')} scored {len(batches)} open batches")
        except (QualityError, OSError) as exc:
            err_console.print(f"{time.strftime('%H:%M:%S')} scoring failed: {escape(str(exc))}")
        while not stopping and time.monotonic() - started < every:
            time.sleep(0.5)


def evaluate(
    out: Annotated[Path, typer.Option(help="Report directory (replaced).")] = Path("report"),
    twin: TwinDir = None,
    data_dir: DataDir = None,
    version: Annotated[
        list[str] | None, typer.Option(help="Versions to evaluate (default: the approved ones).")
    ] = None,
) -> None:
    """Report held-out metrics, ROC/PR, calibration, lead time, importance (Markdown + PNG).

    Without --twin the models are evaluated on the held-out part of their training source;
    with --twin, on every labelled batch / run of that (independent) history.
    """
    from quality.data import batch_history_from_twin, run_history_from_twin
    from quality.maintenance import split_runs
    from quality.report import write_report
    from quality.service import evaluate_deviation, evaluate_maintenance, split_batches

    store = _data_dir(data_dir)
    reg = _registry(store)
    try:
        chosen = version or [v for f in ("deviation", "maintenance") if (v := reg.approved(f))]
        if not chosen:
            raise QualityError("version: no approved model and no --version given")
        parts = {}
        for v in chosen:
            model, meta = reg.load(v)
            source = Path(twin or meta["training_data"]["source"])
            independent = twin is not None and str(twin) != meta["training_data"]["source"]
            if meta["family"] == "deviation":
                history = batch_history_from_twin(source)
                test = history.labelled() if independent else split_batches(history)[1]
                parts["deviation"] = (v, evaluate_deviation(model, history, test))
            else:
                runs = run_history_from_twin(source)
                test = runs.rows["run"].unique() if independent else split_runs(runs)[1]
                parts["maintenance"] = (v, evaluate_maintenance(model, runs, test))
        path = write_report(out, **parts)
    except (QualityError, OSError, KeyError) as exc:
        _fail(exc)
    console.print(f"report written to {path}")


# ---------------------------------------------------------------------- registry


@models.command("list")
def models_list(data_dir: DataDir = None) -> None:
    """Versions in the registry with status and headline metrics."""
    reg = _registry(_data_dir(data_dir))
    ok, problem = reg.verify()
    if not ok:
        err_console.print("[bold red]the registry does not verify:[/] " + escape(problem))
    table = reg.versions()
    if table.empty:
        console.print("no models registered; run `biotwin train`")
        return
    out = Table(title="model registry")
    fixed = ["family", "version", "status", "approved_by"]
    table = table.drop(columns=["created"])
    for c in [*fixed, "validation (held out)"]:
        out.add_column(c)
    for _, row in table.iterrows():
        metrics = ", ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.drop(labels=fixed).items()
            if _fmt(v) != ""
        )
        out.add_row(*[_fmt(row[c]) for c in fixed], metrics)
    console.print(out)


@models.command("verify")
def models_verify(data_dir: DataDir = None) -> None:
    """Verify the registry: event log (chain, signatures, anchor) and every version's files
    against their registered fingerprints. Exit 0 intact, 1 not, 2 no signing key."""
    from connectors.records_cli import print_verification, require_key

    require_key()
    reg = _registry(_data_dir(data_dir))
    state = reg.state()
    good = print_verification("model registry", reg.log, state.verification)
    for version in dict.fromkeys(
        e["version"] for e in state.verified if e["event"] == "registered"
    ):
        try:
            reg.checked_files(version, state.verified)
            console.print(f"  {version}: model.skops and meta.json match their fingerprints")
        except QualityError as exc:
            good = False
            console.print(f"  [red]{escape(version)}:[/] {escape(str(exc))}")
    if not good:
        raise typer.Exit(code=1)


@models.command("approve")
def models_approve(
    version: Annotated[str, typer.Argument(help="Version to approve.")],
    user: Annotated[str, typer.Option(help="Approver (a user with the qa role).")],
    reason: Annotated[str, typer.Option(help="Why this model is fit for its intended use.")],
    data_dir: DataDir = None,
) -> None:
    """Approve a version for scoring (e-signature: the password is asked again)."""
    store = _data_dir(data_dir)
    password = os.environ.get("BIOTWIN_PASSWORD") or getpass.getpass(f"password for {user}: ")
    try:
        record = _registry(store).approve(
            version, user=user, password=password, reason=reason, users_file=store / "users.toml"
        )
    except QualityError as exc:
        _fail(exc)
    console.print(f"{version} approved by {user} at {record['time']}")


@models.command("card")
def models_card(
    version: Annotated[str, typer.Argument(help="Version.")], data_dir: DataDir = None
) -> None:
    """Print a version's model card."""
    path = _data_dir(data_dir) / "models" / version / "card.md"
    if not path.exists():
        _fail(QualityError(f"version: {version!r} has no model card at {path}"))
    console.print(path.read_text(), markup=False, highlight=False)


# ---------------------------------------------------------------------- bring your own data


@deviation.command("fit")
def deviation_fit(
    series: Annotated[Path, typer.Option(help="Batch time series (CSV or Parquet).")],
    outcomes: Annotated[Path, typer.Option(help="One row per batch with the label.")],
    batch_col: Annotated[str, typer.Option(help="Batch id column (both files).")],
    time_col: Annotated[str, typer.Option(help="Time column of the series.")],
    label_col: Annotated[str, typer.Option(help="Outcome label column (0/1, true/false).")],
    model: Annotated[Path, typer.Option(help="Directory to write the model to.")],
    tag_col: Annotated[str | None, typer.Option(help="Long form: tag column.")] = None,
    value_col: Annotated[str | None, typer.Option(help="Long form: value column.")] = None,
    quality_col: Annotated[str | None, typer.Option(help="Per-sample quality column.")] = None,
    class_col: Annotated[str | None, typer.Option(help="Deviation class column.")] = None,
    cqa_col: Annotated[list[str] | None, typer.Option(help="CQA columns (repeat).")] = None,
    context_col: Annotated[
        list[str] | None, typer.Option(help="Context columns known at start (repeat).")
    ] = None,
    bin_h: Annotated[float, typer.Option(help="Bin width in time units.")] = 1.0,
    holdout: Annotated[
        float,
        typer.Option(
            help="Share of the latest batches held out for a test (0: none).", min=0, max=0.5
        ),
    ] = 0.0,
    seed: Seed = 0,
    scheduler: SchedulerOption = None,
) -> None:
    """Fit the deviation model on your batches: pipeline and calibration chosen by grouped
    cross-validation, then refitted on all of them (or on all but a held-out share)."""
    from quality.data import batch_history, read_table
    from quality.registry import save_model
    from quality.service import train_deviation

    try:
        history = batch_history(
            read_table(series, "series"),
            read_table(outcomes, "outcomes"),
            batch_col=batch_col,
            time_col=time_col,
            label_col=label_col,
            tag_col=tag_col,
            value_col=value_col,
            quality_col=quality_col,
            class_col=class_col,
            cqa_cols=cqa_col,
            context_cols=context_col if context_col else [],
            bin_h=bin_h,
        )
        fitted, meta, metrics = train_deviation(
            history, seed=seed, source=str(series), test_share=holdout, scheduler=scheduler
        )
        meta["version"] = f"deviation-{meta['model_sha256'][:12]}"
        meta["columns"] = {
            "batch": batch_col,
            "time": time_col,
            "tag": tag_col,
            "value": value_col,
            "quality": quality_col,
            "bin_h": bin_h,
        }
        save_model(model, fitted, meta)
    except (QualityError, OSError, ExecutionError) as exc:
        _fail(exc)
    _print_selection(fitted.selection, fitted.calibration)
    if holdout > 0:
        rows = [
            {k: r[k] for k in ("progress", "n", "positives", "roc_auc", "brier")}
            for r in metrics["by_progress"]
        ]
        console.print(_metrics_table(f"{meta['version']}: held-out (later) batches", rows))
    console.print(f"model {meta['version']} written to {model}")


def _print_selection(selection: dict, calibration: dict) -> None:
    from quality.selection import Selection

    for line in Selection.lines_of(selection):
        console.print(line, markup=False, highlight=False)
    if calibration:
        methods = ", ".join(
            f"{m} {v['cv_log_loss']:.4f}" + (" (refused)" if v["refused"] else "")
            for m, v in calibration["methods"].items()
        )
        console.print(
            f"calibration: {calibration['chosen']} (grouped CV log loss: {methods})",
            markup=False,
            highlight=False,
        )


@deviation.command("predict")
def deviation_predict(
    model: Annotated[Path, typer.Option(help="Model directory from `deviation fit`.")],
    series: Annotated[Path, typer.Option(help="Batch time series, same columns as in fit.")],
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv).")],
    progress: Annotated[
        float | None, typer.Option(help="Score every batch at this progress (0-1).", min=0, max=1)
    ] = None,
) -> None:
    """Score batches: probability, class, CQA intervals, reasons, sensor flags."""
    from quality.data import batch_history, read_table
    from quality.registry import load_model

    try:
        fitted, meta = load_model(model)
        if meta.get("family") != "deviation":
            raise QualityError(
                f"model: {model} holds a {meta.get('family')!r} model, not deviation"
            )
        cols = meta["columns"]
        table = read_table(series, "series")
        ids = table[cols["batch"]].astype(str).unique()
        history = batch_history(
            table,
            pd.DataFrame({cols["batch"]: ids}),
            batch_col=cols["batch"],
            time_col=cols["time"],
            tag_col=cols["tag"],
            value_col=cols["value"],
            quality_col=cols["quality"] if cols["quality"] in table.columns else None,
            context_cols=[],
            bin_h=cols["bin_h"],
            min_batches=0,
        )
        result = fitted.predict(history, ids, progress).reset_index()
        result["model_version"] = meta["version"]
        _write(result, out)
    except (QualityError, OSError) as exc:
        _fail(exc)
    console.print(f"{len(result)} batches scored into {out}")


@maintenance.command("fit")
def maintenance_fit(
    runs: Annotated[Path, typer.Option(help="Run-to-failure table (CSV or Parquet).")],
    asset_col: Annotated[str, typer.Option(help="Asset id column.")],
    time_col: Annotated[str, typer.Option(help="Time (timestamps or hours) or cycle column.")],
    model: Annotated[Path, typer.Option(help="Directory to write the model to.")],
    failure_col: Annotated[
        str | None, typer.Option(help="Failure flag column (default: last row = failure).")
    ] = None,
    horizon: Annotated[
        float | None,
        typer.Option(
            help="Horizon in the data's time unit (default: a tenth of the median failed "
            "run's length)."
        ),
    ] = None,
    rul_cap: Annotated[
        float | None, typer.Option(help="Cap of the RUL target (default: chosen by CV).")
    ] = None,
    setting_cols: Annotated[
        str | None,
        typer.Option(help="Operating-setting columns, comma-separated (regime normalisation)."),
    ] = None,
    n_seeds: Annotated[int, typer.Option(help="Average the RUL model over N seeds.", min=1)] = 3,
    holdout: Annotated[
        float,
        typer.Option(
            help="Share held out for a test (0: none; cross-validated figures).", min=0, max=0.5
        ),
    ] = 0.0,
    seed: Seed = 0,
    scheduler: SchedulerOption = None,
) -> None:
    """Fit the asset model on your run-to-failure data: features, cap and loss chosen by
    grouped cross-validation, then refitted on all runs."""
    from quality.data import read_table, run_history
    from quality.registry import save_model
    from quality.service import train_maintenance

    try:
        settings = [c.strip() for c in (setting_cols or "").split(",") if c.strip()]
        table = read_table(runs, "runs")
        for c in settings:
            if c not in table.columns:
                raise QualityError(f"setting-cols: column {c!r} is not in the runs table")
        history = run_history(
            table,
            asset_col=asset_col,
            time_col=time_col,
            failure_col=failure_col,
        )
        fitted, meta, metrics = train_maintenance(
            history,
            seed=seed,
            horizon=horizon,
            rul_cap=rul_cap,
            setting_cols=settings,
            n_seeds=n_seeds,
            source=str(runs),
            test_share=holdout,
            scheduler=scheduler,
        )
        meta["version"] = f"maintenance-{meta['model_sha256'][:12]}"
        meta["columns"] = {"asset": asset_col, "time": time_col, "failure": failure_col}
        save_model(model, fitted, meta)
    except (QualityError, OSError, ExecutionError) as exc:
        _fail(exc)
    _print_selection(fitted.selection, fitted.calibration)
    flat = {
        k: v
        for k, v in metrics.items()
        if not k.startswith("_") and k not in ("headline", "selection", "calibration")
    }
    title = f"{meta['version']}: " + ("held-out" if holdout > 0 else "cross-validated")
    console.print(_metrics_column(title, {**metrics["headline"], **flat}))
    console.print(f"model written to {model}")


@maintenance.command("predict")
def maintenance_predict(
    model: Annotated[Path, typer.Option(help="Model directory from `maintenance fit`.")],
    runs: Annotated[Path, typer.Option(help="Observations, same columns as in fit.")],
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv).")],
) -> None:
    """One row per asset at its last time: RUL, interval, failure probability, reasons."""
    from quality.data import read_table, run_history
    from quality.registry import load_model

    try:
        fitted, meta = load_model(model)
        if meta.get("family") != "maintenance":
            raise QualityError(
                f"model: {model} holds a {meta.get('family')!r} model, not maintenance"
            )
        cols = meta["columns"]
        table = read_table(runs, "runs")
        history = run_history(
            table,
            asset_col=cols["asset"],
            time_col=cols["time"],
            failure_col=None,
            sensor_cols=[s for s in fitted.sensors if s in table.columns] or None,
            min_runs=1,
            require_failure=False,
        )
        result = fitted.predict(history)
        result["model_version"] = meta["version"]
        _write(result.drop(columns=["run"]), out)
    except (QualityError, OSError) as exc:
        _fail(exc)
    console.print(f"{len(result)} assets scored into {out}")


def _write(frame: pd.DataFrame, out: Path) -> None:
    from quality.jobs import write_parquet

    if out.suffix.lower() == ".csv":
        tmp = out.with_name(f".{out.name}.tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, out)
    elif out.suffix.lower() in (".parquet", ".pq"):
        write_parquet(frame, out)
    else:
        raise QualityError(f"out: must end in .parquet or .csv; got {str(out)!r}")


def register(app: typer.Typer) -> None:
    """Add this package's subcommands to *app*."""
    app.command()(train)
    app.command()(score)
    app.command()(evaluate)
    app.add_typer(models, name="models")
    app.add_typer(deviation, name="deviation")
    app.add_typer(maintenance, name="maintenance")
