"""Batch trajectories against the golden-batch envelope (for QA triage), from the historian.

A batch's time on the production bioreactor starts at its first ``running`` record there
(``batch_time_h`` = 0). The envelope of a tag is, per bin of batch time, the 5-95 %
percentile band (and median) over the good batches of their bin means: batches line up by
batch time, not by clock time.

- :func:`trajectory`: one batch, through :meth:`Historian.batch_series` (raw samples);
- :func:`golden_envelope`: many batches at once, through :meth:`Historian.batch_context`
  and one resampled :meth:`Historian.query` per unit (a query per batch would cost
  ~0.1 s each).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from connectors.historian import Historian
from twin.config import PlantConfig

__all__ = ["KEY_SIGNALS", "golden_envelope", "production_tags", "trajectory"]

KEY_SIGNALS = ("do", "temperature", "ph")  # the production bioreactor tags shown
LABELS = {"do": "DO (% sat)", "temperature": "temperature (degC)", "ph": "pH"}


def production_tags(
    config: PlantConfig, signals=KEY_SIGNALS, step: str = "production"
) -> dict[str, dict[str, str]]:
    """{unit: {tag: signal}} for the units of a recipe step (default: production)."""
    step = next((s for s in config.recipe.steps if s.name == step), config.recipe.steps[0])
    out = {}
    for unit in config.units:
        if unit.unit_class != step.unit_class:
            continue
        spec = config.unit_classes[unit.unit_class]
        out[unit.id] = {
            s.tag.format(n=unit.loop_number): s.name for s in spec.signals if s.name in signals
        }
    return out


def _production_records(ctx: pd.DataFrame, units) -> pd.DataFrame:
    """Per (batch, unit): first start and last end of its running records there."""
    run = ctx[ctx["batch_id"].notna() & ctx["unit"].isin(list(units))]
    if (run["state"] == "running").any():
        run = run[run["state"] == "running"]
    return run.groupby(["batch_id", "unit"], as_index=False).agg(
        start=("start_time", "min"), end=("end_time", "max")
    )


def trajectory(
    historian: Historian,
    config: PlantConfig,
    batch_id: str,
    signals=KEY_SIGNALS,
    step: str = "production",
) -> pd.DataFrame:
    """The batch's key tags on the production bioreactor: unit, tag, signal, phase,
    batch_time_h, value, quality (empty if it has not reached one)."""
    tags = production_tags(config, signals, step)
    wanted = {t: s for m in tags.values() for t, s in m.items()}
    data = historian.batch_series(batch_id, list(wanted))
    data = data[data["unit"].isin(list(tags))].copy()
    data["signal"] = data["tag"].map(wanted)
    cols = ["unit", "tag", "signal", "phase", "batch_time_h", "time", "value", "quality"]
    return data[cols].reset_index(drop=True)


def golden_envelope(
    historian: Historian,
    config: PlantConfig,
    batch_ids,
    *,
    signals=KEY_SIGNALS,
    bin_h: float = 1.0,
    resample: str = "10min",
    quantiles=(5, 95),
    min_batches: int = 3,
    step: str = "production",
) -> pd.DataFrame:
    """Percentile band per signal and batch-time bin over ``batch_ids``.

    Returns
    -------
    pandas.DataFrame
        signal, batch_time_h (bin centre), lo, median, hi, n (batches in the bin); bins
        with fewer than ``min_batches`` batches are left out.
    """
    tags = production_tags(config, signals, step)
    records = _production_records(historian.batch_context(), tags)
    records = records[records["batch_id"].isin(set(batch_ids)) & records["end"].notna()]
    parts = []
    for unit, recs in records.groupby("unit"):
        unit_tags = tags[unit]
        if not unit_tags:
            continue
        data = historian.query(
            list(unit_tags),
            recs["start"].min(),
            recs["end"].max() + pd.Timedelta(minutes=1),
            resample=resample,
        )
        if data.empty:
            continue
        data = data.sort_values("time")
        recs = recs.sort_values("start")
        # the record (batch) each sample falls in: the last start before it, if not ended
        joined = pd.merge_asof(data, recs, left_on="time", right_on="start")
        joined = joined[joined["batch_id"].notna() & (joined["time"] < joined["end"])]
        joined["signal"] = joined["tag"].map(unit_tags)
        joined["batch_time_h"] = (joined["time"] - joined["start"]) / pd.Timedelta(hours=1)
        parts.append(joined[["batch_id", "signal", "batch_time_h", "value"]])
    cols = ["signal", "batch_time_h", "lo", "median", "hi", "n"]
    if not parts:
        return pd.DataFrame(columns=cols)
    rows = pd.concat(parts, ignore_index=True).dropna(subset=["value"])
    rows["bin"] = np.floor(rows["batch_time_h"] / bin_h).astype(int)
    per_batch = rows.groupby(["signal", "bin", "batch_id"], as_index=False)["value"].mean()
    grouped = per_batch.groupby(["signal", "bin"])["value"]
    out = pd.DataFrame(
        {
            "lo": grouped.quantile(quantiles[0] / 100),
            "median": grouped.median(),
            "hi": grouped.quantile(quantiles[1] / 100),
            "n": grouped.size(),
        }
    ).reset_index()
    out = out[out["n"] >= min_batches]
    out["batch_time_h"] = (out["bin"] + 0.5) * bin_h
    return out[cols].reset_index(drop=True)
