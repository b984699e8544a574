"""Where each batch stands, from the historian's batch context: in progress, awaiting
disposition, or out of the live plant.

One rule for everything that shows or scores "the live plant" (the scoring service, QA
triage, the overview), so that they agree:

- a batch is **finished** when its last phase of the recipe's last step (filling:
  reconciliation) has ended;
- **in progress**: not finished, and active (a running record overlapping) within the live
  window (default 2 days) before the plant's clock;
- **awaiting disposition**: finished within the live window (QA decides; the audit trail
  holds the decision, see dashboard/audit.py);
- **finished earlier**: finished before the live window;
- **incomplete**: never finished in the stored history and not active in the live window
  (a batch cut off at the end of loaded history or by a stop): closed, never shown as open.

The plant's clock is the newest sample in the historian (live or loaded), not the wall
clock: the served twin runs faster than the wall clock.
"""

from __future__ import annotations

import os

import pandas as pd

from twin.config import PlantConfig

__all__ = [
    "AWAITING",
    "FINISHED",
    "INCOMPLETE",
    "IN_PROGRESS",
    "LIVE",
    "batch_states",
    "live_window_days",
]

IN_PROGRESS = "in progress"
AWAITING = "awaiting disposition"
FINISHED = "finished earlier"
INCOMPLETE = "incomplete"
#: the states of the live plant's batches (scored, and shown in triage)
LIVE = (IN_PROGRESS, AWAITING)
LIVE_WINDOW_DAYS = 2.0


def live_window_days() -> float:
    """The live window in days: $BIOTWIN_LIVE_DAYS, else 2.

    Raises
    ------
    ValueError
        If $BIOTWIN_LIVE_DAYS is not a positive number (names the variable and the value).
    """
    raw = os.environ.get("BIOTWIN_LIVE_DAYS")
    if raw is None:
        return LIVE_WINDOW_DAYS
    try:
        days = float(raw)
    except ValueError:
        days = float("nan")
    if not days > 0:
        raise ValueError(f"BIOTWIN_LIVE_DAYS: must be a positive number of days; got {raw!r}")
    return days


def batch_states(
    ctx: pd.DataFrame,
    config: PlantConfig,
    now,
    window_days: float | None = None,
) -> pd.DataFrame:
    """One row per batch of the batch context: where it stands at ``now``.

    Parameters
    ----------
    ctx : pandas.DataFrame
        ``Historian.batch_context()``.
    config : PlantConfig
        The plant (its recipe's last step and units).
    now : timestamp-like
        The plant's clock.
    window_days : float, optional
        The live window (default :func:`live_window_days`).

    Returns
    -------
    pandas.DataFrame
        Index batch_id; columns first_seen, last_seen (end of its latest running record,
        ``now`` while one is open), unit and phase (of its latest running record),
        finished_time (NaT unless finished) and state (one of the module's states).
    """
    now = pd.Timestamp(now)
    window = pd.Timedelta(days=live_window_days() if window_days is None else window_days)
    running = ctx[ctx["batch_id"].notna() & (ctx["state"] == "running")]
    running = running[running["start_time"] <= now]
    columns = ["first_seen", "last_seen", "unit", "phase", "finished_time", "state"]
    if running.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="batch_id"))
    last_step = config.recipe.steps[-1]
    final_units = {u.id for u in config.units if u.unit_class == last_step.unit_class}
    final_phase = last_step.phases[-1].name if last_step.phases else None
    end = running["end_time"].where(running["end_time"].notna() & (running["end_time"] <= now))
    rows = running.assign(_end=end.fillna(now)).sort_values(["start_time", "_end"])
    done = rows["end_time"].notna() & (rows["end_time"] <= now) & rows["unit"].isin(final_units)
    if final_phase is not None:
        done &= rows["phase"] == final_phase
    by = rows.groupby("batch_id", sort=False)
    out = pd.DataFrame(
        {
            "first_seen": by["start_time"].min(),
            "last_seen": by["_end"].max(),
            "unit": by["unit"].last(),
            "phase": by["phase"].last(),
        }
    )
    out["finished_time"] = rows[done].groupby("batch_id")["end_time"].max().reindex(out.index)
    recent = out["last_seen"] >= now - window
    finished = out["finished_time"].notna()
    out["state"] = INCOMPLETE
    out.loc[~finished & recent, "state"] = IN_PROGRESS
    out.loc[finished & recent, "state"] = AWAITING
    out.loc[finished & ~recent, "state"] = FINISHED
    out.index.name = "batch_id"
    return out.sort_values("first_seen")[columns]
