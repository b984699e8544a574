"""Scoring from the historian: batches in progress and assets, as the plant runs.

The historian holds what OPC UA delivers: tag values with their StatusCodes and the batch
context (batch, unit, phase, state). This module turns it into the same tables the models
were trained on:

- batch trajectories: the tags of every unit a batch ran on, over its time there, named
  ``step.signal`` through the plant configuration (unit -> unit class -> recipe step; tag ->
  signal), aligned on hours since the batch entered the unit;
- equipment ages: the hour-meter tags (``KQI-...``) of the units of the batch's route, known
  from the batch's start for a unit that is the only one of its kind, from entry otherwise;
- asset observations: per asset and day, its hour meter and its unit's condition tags.

What OPC UA subscriptions do not carry (raw-material lot attributes, QC results from the
LIMS) comes from the lab results that OT systems push into ``biotwin receive``
(:func:`lab_results`): every attribute becomes a column of the batches' outcomes. The
twin history ``biotwin train`` learns from carries only what this module builds
(:func:`quality.data.batch_history_from_twin` with ``inputs="live"``: the tags of
:func:`quality.data.live_tags` and the context of :data:`quality.data.LIVE_CONTEXT`), so its
models score the plant with every input present; a model that was trained on lot attributes
gets those features from the lab results (missing for a batch without a report), and when
no result of such an attribute is stored at all, its score is flagged low-confidence, not
invented.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from biotwin.execution import resolve_scheduler
from connectors.batch_states import LIVE, batch_states
from quality.data import (
    BIN_COLUMNS,
    LIVE_CONTEXT,
    MIN_BATCHES,
    SKIP_SIGNALS,
    BatchHistory,
    RunHistory,
    _bin,
    _characteristic_ages,
    _finish_runs,
    _labels_allow_missing,
    _plant_maps,
    _require,
)
from quality.drift import PERFORMANCE_WINDOW, deviation_performance
from quality.errors import InputError
from quality.folds import fold_pool, run_folds
from quality.jobs import asset_score_frame, batch_score_frame, write_drift, write_parquet
from quality.registry import Registry

__all__ = [
    "batch_history_from_historian",
    "lab_results",
    "plant_clock",
    "read_by_partition",
    "risk_trend",
    "run_history_from_historian",
    "score_historian",
    "training_history_from_historian",
]

logger = logging.getLogger(__name__)

CONDITION_SIGNALS = (
    "vibration",
    "motor_current",
    "pressure_ripple",
    "pressure",
    "fill_weight_sd",
    "column_dp",
    "differential_pressure",
)


def plant_clock(historian, ctx: pd.DataFrame | None = None) -> pd.Timestamp:
    """The plant's 'now': the newest sample in the historian, else the newest batch-context
    start (the served twin's clock runs ahead of the wall clock)."""
    tags = historian.tags()
    if len(tags) and tags["last_time"].notna().any():
        return pd.Timestamp(tags["last_time"].max())
    ctx = historian.batch_context() if ctx is None else ctx
    return pd.Timestamp(ctx["start_time"].max()) if len(ctx) else pd.Timestamp.now(tz="UTC")


def batch_history_from_historian(
    historian,
    config,
    *,
    open_days: float | None = None,
    bin_h: float = 1.0,
    batch_ids=None,
    scheduler: str | None = None,
) -> BatchHistory:
    """Batches of the historian as a history, without labels.

    By default the live plant's batches: in progress or awaiting disposition, active within
    ``open_days`` (default: the live window, 2 days) of the plant's clock (the newest sample;
    :func:`connectors.batch_states.batch_states`); with ``batch_ids``, those of them the
    historian has context for. The history carries
    the tags of :func:`quality.data.live_tags` that the store holds and, as context,
    :data:`quality.data.LIVE_CONTEXT`: the production unit (missing until the batch entered
    one); the batch context records hold no lot attributes.

    ``scheduler`` (with ``batch_ids``): a Dask scheduler address (or
    ``$DASK_SCHEDULER_ADDRESS``) on whose workers the batches are read and binned by
    partitions of :data:`PARTITION_BATCHES` (:func:`read_by_partition`); the same history
    as in this process.

    Raises
    ------
    InputError
        No batch context or no tag data for the batches.
    """
    if batch_ids is not None and resolve_scheduler(scheduler) is not None:
        return read_by_partition(historian, config, list(batch_ids), bin_h, scheduler)
    stored = historian.batch_context()
    ctx = stored[stored["batch_id"].notna() & (stored["state"] == "running")]
    if ctx.empty:
        raise InputError("historian: no batch context stored yet (is the ingest running?)")
    first = ctx.groupby("batch_id")["start_time"].min()
    if batch_ids is None:
        states = batch_states(stored, config, plant_clock(historian, stored), open_days)
        open_ids = states.index[states["state"].isin(LIVE)]
        first = first[open_ids].sort_values()
        open_ids = first.index
    else:
        open_ids = first.index[first.index.isin(list(batch_ids))]
        first = first[open_ids].sort_values()
        open_ids = first.index
    unit_step, signal_of, meters = _plant_maps(config)
    pool = pd.Series(unit_step).dropna()
    pooled = set(pool[pool.map(pool.value_counts()) > 1].index)
    sole = [u for u in pool.index if u not in pooled]
    samples, ages = [], []
    series = historian.batches_series(open_ids, context=stored)
    if not series.empty:
        step = series["unit"].map(unit_step)
        sig = [signal_of.get((u, t)) for u, t in zip(series["unit"], series["tag"], strict=True)]
        origin = series["batch_id"].map(first)
        frame = pd.DataFrame(
            {
                "batch_id": series["batch_id"],
                "tag": step + "." + pd.Series(sig, index=series.index, dtype=object),
                "t_h": (series["time"] - origin).dt.total_seconds() / 3600,
                "align_h": series["batch_time_h"].astype(float),
                "value": series["value"].astype(float),
                "bad": (series["quality"].astype(int) != 0) | series["value"].isna(),
            }
        ).dropna(subset=["tag"])
        samples.append(frame[~frame["tag"].str.endswith(SKIP_SIGNALS)])
    # equipment ages: per unit, the hour meters of the route's units, read once per unit
    plan: dict[str, list] = {}
    mine_ctx = ctx[ctx["batch_id"].isin(open_ids)]
    for batch_id, mine in mine_ctx.groupby("batch_id", sort=False):
        start = first[batch_id]
        entered = mine.groupby("unit")["start_time"].min()
        # a finished batch: equipment ages up to its end, not to the end of the store
        until = mine["end_time"].max() if mine["end_time"].notna().all() else None
        route = {u: start for u in sole} | {u: t for u, t in entered.items() if u in pooled}
        for unit, since in route.items():
            if meters.get(unit):
                plan.setdefault(unit, []).append((batch_id, start, since, until))
    for unit, items in plan.items():
        tags = [t for _, t in meters[unit]]
        # whole hour buckets: a batch's ages must not depend on the other batches read
        # with it (a partial first or last bucket would average fewer samples)
        lo = (min(since for _, _, since, _ in items) - pd.Timedelta(hours=1)).floor("1h")
        ends = [until for *_, until in items]
        hi = None if any(u is None for u in ends) else max(ends).ceil("1h")
        rows = historian.query(tags, start=lo, end=hi, resample="1h")
        if rows.empty:
            continue
        name = {t: a for a, t in meters[unit]}
        asset_tag = "asset." + unit_step[unit] + "." + rows["tag"].map(name) + ".age_h"
        times = rows["time"]
        for batch_id, start, since, until in items:
            keep = times >= (since - pd.Timedelta(hours=1)).floor("1h")
            if until is not None:
                keep &= times < until
            if not keep.any():
                continue
            ages.append(
                pd.DataFrame(
                    {
                        "batch_id": batch_id,
                        "tag": asset_tag[keep],
                        "t_h": np.maximum(
                            (times[keep] - start).dt.total_seconds() / 3600,
                            (since - start).total_seconds() / 3600,
                        ),
                        "value": rows.loc[keep, "value"].astype(float),
                    }
                )
            )
    if not samples:
        raise InputError("historian: the open batches have no tag data yet")
    bins = _bin(pd.concat(samples, ignore_index=True), bin_h)
    if ages:
        a = pd.concat(ages, ignore_index=True)
        a["bin"] = (a["t_h"] // bin_h).astype(int)
        a = a.groupby(["batch_id", "tag", "bin"], as_index=False).agg(
            t_h=("t_h", "max"), value=("value", "last")
        )
        a["sd"], a["bad"] = 0.0, 0.0
        bins = pd.concat([bins, a[BIN_COLUMNS]], ignore_index=True)
    out = pd.DataFrame(index=pd.Index(open_ids, name="batch_id"))
    out["order"] = first.reindex(open_ids).map(lambda t: t.timestamp()).to_numpy()
    out["label"] = pd.Series(pd.NA, index=out.index, dtype="boolean")
    out["dev_class"] = None
    production = {u for u, s in unit_step.items() if s == "production"}
    prod = ctx[ctx["unit"].isin(production)].groupby("batch_id")["unit"].first()
    out["production_unit"] = prod.reindex(open_ids).to_numpy()
    lab = lab_results(historian, open_ids)
    for col in lab.columns:  # lot attributes pushed in: context of the models that use them
        out[col] = lab[col].reindex(out.index).to_numpy()
    return BatchHistory(bins=bins, outcomes=out, bin_h=bin_h, context_cols=list(LIVE_CONTEXT))


#: batches read and binned by one task when a training history is built on a cluster
PARTITION_BATCHES = 40


def _read_partition(payload: tuple) -> BatchHistory | None:
    """One partition's batches, read and binned on a worker (a task of
    :func:`read_by_partition`): the historian is opened there, from its path. None: none
    of them has data."""
    root, config, bin_h, batch_ids = payload
    from connectors.historian import Historian

    try:
        return batch_history_from_historian(
            Historian(root, compact_every=None), config, bin_h=bin_h, batch_ids=batch_ids
        )
    except InputError as exc:
        logger.info("partition from batch %s: %s", batch_ids[0], exc)
        return None


def read_by_partition(
    historian, config, batch_ids: list, bin_h: float = 1.0, scheduler: str | None = None
) -> BatchHistory:
    """The history of ``batch_ids``, read and binned by partitions of batches on a cluster.

    Each task opens the historian from its path (the workers must see the same store: one
    machine, or a shared file system, docs/cluster.md), reads the series of its
    :data:`PARTITION_BATCHES` batches with their equipment ages and bins them. A batch's
    bins depend on its own rows only, so the partitions are put together, in the order
    one read in this process gives (sample bins by batch, tag and bin, then the equipment
    ages), into the same history, bit for bit (tested against a real cluster).

    Raises
    ------
    InputError
        No batch context or no tag data for the batches.
    biotwin.execution.ExecutionError
        If the scheduler cannot be used.
    """
    ids = list(dict.fromkeys(str(b) for b in batch_ids))
    parts = [ids[i : i + PARTITION_BATCHES] for i in range(0, len(ids), PARTITION_BATCHES)]
    payloads = [(str(historian.root), config, bin_h, part) for part in parts]
    with fold_pool(scheduler) as pool:
        logger.info(
            "reading %d batches in %d partitions on the %s", len(ids), len(parts), pool.where
        )
        results = run_folds(pool, _read_partition, payloads)
    histories = [h for h in results if h is not None]  # None: a partition without data
    if not histories:
        raise InputError("historian: the batches have no tag data yet")
    bins = pd.concat([h.bins for h in histories], ignore_index=True)
    order = bins.assign(_age=bins["tag"].str.startswith("asset.")).sort_values(
        ["_age", "batch_id", "tag", "bin"], kind="stable"
    )
    bins = bins.loc[order.index].reset_index(drop=True)
    outcomes = pd.concat([h.outcomes for h in histories]).sort_values("order", kind="stable")
    return BatchHistory(
        bins=bins, outcomes=outcomes, bin_h=bin_h, context_cols=list(histories[0].context_cols)
    )


def lab_results(historian, batch_ids=None) -> pd.DataFrame:
    """The lab results and lot attributes stored for the batches (``biotwin receive``'s
    ReportResult, :class:`connectors.lab_results.LabResults`): one row per batch, one float
    column per attribute (empty when none are stored or the store has no such table)."""
    from connectors.lab_results import LabResults

    root = getattr(historian, "root", None)
    if root is None or not (root / "tables" / "lab_results").is_dir():
        return pd.DataFrame(index=pd.Index([], name="batch_id", dtype=str))
    try:
        return LabResults(root).wide(batch_ids)
    except OSError as exc:
        logger.warning("lab results unreadable (%s); batches scored without them", exc)
        return pd.DataFrame(index=pd.Index([], name="batch_id", dtype=str))


def training_history_from_historian(
    historian,
    config,
    outcomes: pd.DataFrame,
    *,
    batch_col: str,
    label_col: str,
    class_col: str | None = None,
    cqa_cols: list[str] | None = None,
    context_cols: list[str] | None = None,
    bin_h: float = 1.0,
    min_batches: int = MIN_BATCHES,
    require_both: bool = True,
    scheduler: str | None = None,
) -> BatchHistory:
    """Trajectories from the historian joined to outcomes from a file, for training (and,
    with ``min_batches=0, require_both=False``, for checking a model on them).

    The historian holds what OPC UA carries: no outcome. QA decisions and laboratory
    results (the LIMS) come as a table, one row per batch: ``batch_col``, ``label_col``
    (0/1 or true/false; empty for batches not yet decided), optionally the deviation class,
    CQA columns and context known at the start (lot attributes). CQA and context columns
    the table lacks are taken from the lab results pushed to ``biotwin receive``
    (:func:`lab_results`). Batches of the table that the historian does not know are
    reported and left out; batches of the historian without a row are not read.

    ``scheduler``: a Dask scheduler address (or ``$DASK_SCHEDULER_ADDRESS``) whose workers
    read and bin the batches by partition (:func:`read_by_partition`); the same history.

    Raises
    ------
    InputError
        Missing columns, bad labels or CQA types, duplicate batches, or fewer than
        ``min_batches`` labelled batches found in the historian.
    """
    cqa_cols, context_cols = list(cqa_cols or []), list(context_cols or [])
    _require(outcomes, [batch_col, label_col], "outcomes")
    pushed = [c for c in [*cqa_cols, *context_cols] if c not in outcomes.columns]
    if pushed:  # CQA results and lot attributes reported to `biotwin receive`
        lab = lab_results(historian)
        absent = [c for c in pushed if c not in lab.columns]
        if absent:
            raise InputError(
                f"outcomes: column {absent[0]!r} is missing (required), and no lab result of "
                "that name is stored (ReportResult of biotwin receive)"
            )
        found = lab[pushed].reindex(outcomes[batch_col].astype(str).to_numpy())
        outcomes = outcomes.assign(**{c: found[c].to_numpy() for c in pushed})
    _require(outcomes, [*cqa_cols, *context_cols], "outcomes")
    if class_col is not None:
        _require(outcomes, [class_col], "outcomes")
    out = outcomes.copy()
    out[batch_col] = out[batch_col].astype(str)
    dup = out[batch_col].duplicated()
    if dup.any():
        raise InputError(
            f"outcomes.{batch_col}: one row per batch; {out.loc[dup, batch_col].iloc[0]!r} repeats"
        )
    out = out.set_index(batch_col)
    known = historian.batch_context()["batch_id"].dropna().unique()
    absent = out.index.difference(pd.Index(known))
    if len(absent):
        logger.warning(
            "outcomes: %d of %d batches are not in the historian and are left out (e.g. %s)",
            len(absent),
            len(out),
            ", ".join(map(str, absent[:3])),
        )
    ids = out.index.difference(absent)
    if len(ids) == 0:
        raise InputError(f"outcomes.{batch_col}: none of the batches is in the historian")
    history = batch_history_from_historian(
        historian, config, bin_h=bin_h, batch_ids=ids, scheduler=scheduler
    )
    rows = out.reindex(history.outcomes.index)
    result = history.outcomes[["order", *LIVE_CONTEXT]].copy()
    result["label"] = _labels_allow_missing(rows[label_col], f"outcomes.{label_col}")
    result["dev_class"] = (
        None if class_col is None else rows[class_col].astype("string").where(result["label"])
    )
    for col in cqa_cols:
        if not pd.api.types.is_numeric_dtype(out[col]):
            raise InputError(f"outcomes.{col}: CQA must be numeric; got dtype {out[col].dtype}")
        result[col] = rows[col].astype(float)
    for col in context_cols:
        result[col] = rows[col]
    labelled = int(result["label"].notna().sum())
    if labelled < min_batches:
        raise InputError(
            f"outcomes.{label_col}: at least {min_batches} labelled batches with data in the "
            f"historian are needed to fit; got {labelled}"
        )
    if require_both and result["label"].dropna().nunique() < 2:
        raise InputError(f"outcomes.{label_col}: both outcomes (0 and 1) must occur to fit")
    return BatchHistory(
        bins=history.bins,
        outcomes=result,
        bin_h=bin_h,
        cqa_cols=cqa_cols,
        context_cols=[*LIVE_CONTEXT, *context_cols],
        tag_names=history.tag_names,
    )


def run_history_from_historian(historian, config, *, days: float = 14.0) -> RunHistory:
    """Daily observations of every asset over the last ``days`` (hour meter, condition tags)."""
    unit_step, signal_of, meters = _plant_maps(config)
    del unit_step
    meta = historian.tags()
    if meta.empty:
        raise InputError("historian: no tags stored yet")
    end = meta["last_time"].max()
    start = end - pd.Timedelta(days=days)
    cond = {t: s for (u, t), s in signal_of.items() if s in CONDITION_SIGNALS}
    meter_tags = {t: (u, a) for u, pairs in meters.items() for a, t in pairs}
    tags = [t for t in [*cond, *meter_tags] if t in set(meta["tag"])]
    if not tags:
        raise InputError("historian: no hour-meter or condition tags stored")
    rows = historian.query(tags, start=start, end=end + pd.Timedelta(seconds=1))
    rows = rows[rows["quality"].astype(int) == 0]
    unit_of = dict(zip(meta["tag"], meta["unit"], strict=False))
    rows["unit"] = rows["tag"].map(unit_of)
    rows["day"] = rows["time"].dt.floor("D") + pd.Timedelta(days=1)
    c = rows[rows["tag"].isin(cond)].assign(signal=lambda d: d["tag"].map(cond))
    daily = (
        c.groupby(["unit", "day", "signal"])["value"]
        .agg(mean="mean", p95=lambda v: v.quantile(0.95))
        .reset_index()
    )
    wide = daily.pivot_table(index=["unit", "day"], columns="signal", values=["mean", "p95"])
    wide.columns = [f"{sig}_{stat}" for stat, sig in wide.columns]
    wide = wide.reset_index()
    m = rows[rows["tag"].isin(meter_tags)]
    m = m.sort_values("time").groupby(["tag", "day"], as_index=False)["value"].last()
    m["unit"] = m["tag"].map(lambda t: meter_tags[t][0])
    m["asset_kind"] = m["tag"].map(lambda t: meter_tags[t][1])
    m["asset"] = m["unit"] + "/" + m["asset_kind"]
    m = m.rename(columns={"value": "age_h"}).merge(wide, on=["unit", "day"], how="left")
    m = m.sort_values(["asset", "day"])
    m["age_7d_h"] = m.groupby("asset")["age_h"].transform(
        lambda a: (a - a.shift(7)).fillna(a - a.iloc[0])
    )
    m["age_over_pm"] = m["age_h"] / m["asset_kind"].map(_characteristic_ages())
    m["t"] = m["day"].map(lambda x: x.timestamp() / 3600)
    m["run"] = m["asset"] + "#live"
    m["failure"] = False
    sensors = [
        "age_h",
        "age_7d_h",
        "age_over_pm",
        *[c for c in wide.columns if c not in ("unit", "day")],
        "asset_kind",
    ]
    keep = m[["run", "asset", "t", "failure", *sensors]]
    return _finish_runs(keep, sensors, True, categorical=["asset_kind"])


def score_historian(
    store: Path,
    registry: Registry,
    out_dir: Path,
    config=None,
    *,
    outcomes: pd.DataFrame | None = None,
    batch_col: str = "batch_id",
    label_col: str = "label",
):
    """Score the historian's open batches and assets; write the score files.

    With ``outcomes`` (QA / LIMS decisions, as for ``biotwin train --outcomes``), the
    deviation model's performance is checked on the latest decided batches that started
    after its training data (:func:`quality.drift.deviation_performance`) and written to
    drift.json with the PSI check.
    """
    from connectors.historian import Historian
    from twin.config import load_config

    config = config or load_config()
    historian = Historian(store / "historian")
    now = pd.Timestamp(datetime.now(UTC)).floor("ms")
    dev, dev_meta = registry.load_approved("deviation")
    mnt, mnt_meta = registry.load_approved("maintenance")
    ctx = historian.batch_context()
    clock = plant_clock(historian, ctx)
    history = batch_history_from_historian(historian, config)
    scores = dev.predict(history).reset_index()
    states = batch_states(ctx, config, clock)
    last_unit = ctx.sort_values("start_time").groupby("batch_id")["unit"].last()
    scores.insert(1, "unit", scores["batch_id"].map(last_unit))
    scores.insert(2, "state", scores["batch_id"].map(states["state"]))
    scores.insert(3, "last_seen", scores["batch_id"].map(states["last_seen"]))
    scores = batch_score_frame(scores, dev_meta, now).assign(plant_time=clock)
    trend = risk_trend(dev, history, scores).assign(
        model_version=dev_meta["version"], scored_at=now, plant_time=clock
    )
    write_parquet(trend, out_dir / "batch_risk_trend.parquet")
    runs = run_history_from_historian(historian, config)
    asset_scores = asset_score_frame(mnt.predict(runs), mnt_meta, now).assign(plant_time=clock)
    write_parquet(scores, out_dir / "batch_scores.parquet")
    write_parquet(asset_scores, out_dir / "asset_scores.parquet")
    # drift: the open batches past half-way, at 50 %, against the training reference
    half = scores.loc[scores["progress"] >= 0.5, "batch_id"]
    performance = None
    if outcomes is not None:
        performance = _performance(historian, config, dev, dev_meta, outcomes, batch_col, label_col)
    if len(half) or performance is not None:
        X = dev.features_at(history, half, 0.5) if len(half) else pd.DataFrame()
        write_drift(out_dir, now, X, dev_meta, performance)
    return scores, asset_scores


def risk_trend(model, history: BatchHistory, scores: pd.DataFrame, step: float = 0.05):
    """Each scored batch's risk over its run so far: the model at every ``step`` of progress
    up to the batch's own (each point sees only the data recorded by then).

    Returns
    -------
    pandas.DataFrame
        batch_id, progress, batch_time_h, p_deviation.
    """
    ids, points = [], []
    for batch_id, progress in zip(scores["batch_id"], scores["progress"], strict=True):
        if not progress > 0:
            continue
        grid = np.arange(step, progress, step)
        grid = np.append(grid[grid < progress - 1e-9], progress)
        ids += [batch_id] * len(grid)
        points.append(grid)
    if not ids:
        return pd.DataFrame(columns=["batch_id", "progress", "batch_time_h", "p_deviation"])
    progress = np.concatenate(points)
    p = model.score(history, ids, progress)
    return pd.DataFrame(
        {
            "batch_id": ids,
            "progress": progress,
            "batch_time_h": progress * model.featurizer.nominal_h,
            "p_deviation": p,
        }
    )


def _performance(historian, config, dev, meta, outcomes, batch_col, label_col) -> dict:
    """deviation_performance on the decided batches of ``outcomes`` after the training data.

    Only those batches (the latest :data:`PERFORMANCE_WINDOW` by their first context in the
    historian) are read, with the context columns the model uses that the table has.
    """
    _require(outcomes, [batch_col, label_col], "outcomes")
    decided = outcomes[outcomes[label_col].notna()]
    first = historian.batch_context().groupby("batch_id")["start_time"].min()
    same = str(meta.get("training_data", {}).get("source", "")).startswith("historian")
    cut = meta.get("training_data", {}).get("train_until_order") if same else -np.inf
    if cut is None:
        return deviation_performance(dev, meta, None)
    start = decided[batch_col].astype(str).map(first)
    after = decided[(start.map(lambda t: t.timestamp(), na_action="ignore") > float(cut))]
    after = after.assign(_start=start).sort_values("_start").tail(PERFORMANCE_WINDOW)
    context = [
        c
        for c in [*dev.featurizer.context_numeric, *dev.featurizer.context_categories]
        if c in outcomes.columns
    ]
    if after.empty:
        return deviation_performance(dev, meta, None, same_source=same)
    history = training_history_from_historian(
        historian,
        config,
        after.drop(columns="_start"),
        batch_col=batch_col,
        label_col=label_col,
        context_cols=context,
        min_batches=0,
        require_both=False,
    )
    return deviation_performance(dev, meta, history, same_source=same)
