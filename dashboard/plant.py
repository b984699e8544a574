"""What the command center shows, computed without Streamlit (so tests reach it directly).

- :func:`unit_status`: every unit's current state, batch and phase, from the historian's
  batch context;
- :func:`live_state`: a :class:`~twin.state.PlantState` built from the historian's batch
  context (batches on units with their step and elapsed time, asset ages since their last
  maintenance), which is where "what happens from now on?" scenarios start;
- :func:`availability`: share of time not down per unit over a window.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from connectors.historian import Historian
from twin.config import PlantConfig
from twin.state import AssetState, BatchState, PlantState

__all__ = ["availability", "data_dir", "live_state", "plant_now", "unit_status"]

logger = logging.getLogger(__name__)


def data_dir() -> Path:
    """The store the app reads: $BIOTWIN_DATA_DIR, else ./var."""
    return Path(os.environ.get("BIOTWIN_DATA_DIR", "var"))


def _now(
    ctx: pd.DataFrame, historian: Historian | None = None, tags: pd.DataFrame | None = None
) -> pd.Timestamp:
    """The plant's 'now': the newest sample in the historian (live or replayed data),
    else the newest batch-context start. ``tags``: ``historian.tags()`` if already read."""
    if tags is None and historian is not None:
        tags = historian.tags()
    if tags is not None:
        last = tags["last_time"]
        if last.notna().any():
            return pd.Timestamp(last.max())
    return ctx["start_time"].max() if len(ctx) else pd.Timestamp.now(tz="UTC")


def plant_now(ctx: pd.DataFrame, tags: pd.DataFrame) -> pd.Timestamp:
    """The plant's 'now' from the historian's batch context and ``tags()``, already read
    (what :func:`unit_status` and :func:`availability` use by default)."""
    return _now(ctx, tags=tags)


def _since(records: pd.DataFrame, current) -> pd.Timestamp:
    """When the unit entered its current state: records of the same batch, phase and state
    that follow each other without a gap (a record split where biotwin was restarted) count
    as one."""
    since = current["start_time"]
    same = records[
        (records["state"] == current["state"])
        & (records["phase"].fillna("") == ("" if pd.isna(current["phase"]) else current["phase"]))
        & (
            records["batch_id"].fillna("")
            == ("" if pd.isna(current["batch_id"]) else current["batch_id"])
        )
    ]
    ends = dict(zip(same["end_time"], same["start_time"], strict=False))
    while since in ends and ends[since] < since:
        since = ends[since]
    return since


def unit_status(
    historian: Historian, config: PlantConfig, at=None, *, ctx: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per unit: state, batch_id, phase, since (at ``at``, default: the latest time).

    ``ctx``: the historian's batch context if already read (a page showing several of
    these reads it once).
    """
    ctx = historian.batch_context() if ctx is None else ctx
    now = pd.Timestamp(at) if at is not None else _now(ctx, historian)
    rows = []
    for unit in config.units:
        mine = ctx[(ctx["unit"] == unit.id) & (ctx["start_time"] <= now)]
        open_ = mine[mine["end_time"].isna() | (mine["end_time"] > now)]
        if len(open_):
            r = open_.sort_values("start_time").iloc[-1]
            rows.append(
                {
                    "unit": unit.id,
                    "state": r["state"],
                    "batch_id": r["batch_id"],
                    "phase": r["phase"],
                    "since": _since(mine, r),
                }
            )
        else:
            last = mine["end_time"].max() if len(mine) else pd.NaT
            rows.append(
                {"unit": unit.id, "state": "idle", "batch_id": None, "phase": None, "since": last}
            )
    return pd.DataFrame(rows)


def availability(
    historian: Historian,
    config: PlantConfig,
    days: float = 7.0,
    *,
    ctx: pd.DataFrame | None = None,
    now=None,
) -> pd.DataFrame:
    """Per unit over the last ``days`` (up to ``now``, default: the latest time): share
    running (utilization) and not down. ``ctx``: the batch context if already read."""
    ctx = historian.batch_context() if ctx is None else ctx
    end = pd.Timestamp(now) if now is not None else _now(ctx, historian)
    start = end - pd.Timedelta(days=days)
    span = (end - start).total_seconds()
    out = []
    for unit in config.units:
        mine = ctx[ctx["unit"] == unit.id]
        a = mine["start_time"].clip(lower=start, upper=end)
        b = mine["end_time"].fillna(end).clip(lower=start, upper=end)
        dur = (b - a).dt.total_seconds()
        running = dur[mine["state"] == "running"].sum()
        down = dur[mine["state"].isin(["repair", "down"])].sum()
        out.append(
            {"unit": unit.id, "utilization": running / span, "availability": 1 - down / span}
        )
    return pd.DataFrame(out)


def live_state(historian: Historian, config: PlantConfig, at=None) -> tuple[PlantState, list]:
    """The plant state at ``at`` (default: the latest time in the historian).

    Returns the state and a list of notes on what had to be assumed (shown to the user).
    """
    ctx = historian.batch_context()
    if ctx.empty:
        return PlantState.empty(), ["no batch context in the historian: empty plant assumed"]
    now = pd.Timestamp(at) if at is not None else _now(ctx, historian)
    start = pd.Timestamp(config.plant.start)
    notes = []
    steps_of_class: dict[str, list[str]] = {}
    for step in config.recipe.steps:
        steps_of_class.setdefault(step.unit_class, []).append(step.name)
    units = {u.id: u for u in config.units}
    batches = []
    status = unit_status(historian, config, now)
    for row in status.itertuples():
        if row.state != "running" or not row.batch_id:
            continue
        unit = units[row.unit]
        step = steps_of_class[unit.unit_class][0]
        began = ctx[(ctx["unit"] == row.unit) & (ctx["batch_id"] == row.batch_id)]
        elapsed = (now - began["start_time"].min()).total_seconds() / 3600.0
        seq = int("".join(ch for ch in str(row.batch_id) if ch.isdigit()) or 0)
        batches.append(
            BatchState(
                batch_id=row.batch_id,
                seq=max(seq - 1, 0),
                step=step,
                unit=row.unit,
                elapsed_h=max(elapsed, 0.0),
                due_h=config.demand.lead_time_h - elapsed,
            )
        )
    if batches:
        notes.append("due dates of batches in progress assumed at the standard lead time")
    assets = []
    for unit in config.units:
        last_maint = ctx[(ctx["unit"] == unit.id) & ctx["state"].isin(["pm", "repair"])]
        since = last_maint["end_time"].max() if len(last_maint) else start
        age = max((now - since).total_seconds() / 3600.0, 0.0) if pd.notna(since) else 0.0
        for spec in config.unit_classes[unit.unit_class].assets:
            assets.append(AssetState(asset=f"{unit.id}/{spec.name}", age_h=age))
    notes.append("asset ages: calendar hours since the unit's last PM or repair in the history")
    clock = max((now - start).total_seconds() / 3600.0, 0.0)
    seqs = [b.seq for b in batches]
    state = PlantState(
        clock_h=clock,
        start=start.isoformat(),
        next_seq=(max(seqs) + 1) if seqs else 0,
        batches=tuple(batches),
        assets=tuple(assets),
    )
    return state, notes
