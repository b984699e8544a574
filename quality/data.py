"""The tables the models read, from files a user brings or from the twin's output.

Two kinds of history, each validated once at the door with errors that name the field, the
rule and the value:

- :class:`BatchHistory`: batch trajectories (long or wide form) plus one outcome row per batch
  (label, optional deviation class, CQAs and context known at batch start, e.g. raw-material
  lot attributes). Trajectories are reduced to bins of ``bin_h`` hours of *alignment time*
  (hours since the start of the step the tag belongs to; hours since batch start for user data
  without steps) carrying the mean, the within-bin standard deviation, the share of bad-quality
  samples and the batch time at which the bin's last sample was taken (what a prediction at a
  given progress is allowed to see).
- :class:`RunHistory`: run-to-failure histories (asset, time or cycle, sensor columns, failure
  or censoring), one run per asset life.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from quality.errors import InputError

__all__ = [
    "BatchHistory",
    "RunHistory",
    "batch_history",
    "batch_history_from_twin",
    "read_table",
    "run_history",
    "run_history_from_twin",
]

logger = logging.getLogger(__name__)

MIN_BATCHES = 20
MIN_RUNS = 3
BIN_COLUMNS = ["batch_id", "tag", "bin", "t_h", "value", "sd", "bad"]


def read_table(path: str | Path, what: str = "table") -> pd.DataFrame:
    """Read a CSV or Parquet file (a Parquet directory too).

    Raises
    ------
    InputError
        If the file does not exist or is neither CSV nor Parquet.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what}: file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if path.is_dir() or suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: cannot read {str(path)!r}: {exc}") from exc
    raise InputError(f"{what}: file must be .csv or .parquet; got {str(path)!r}")


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    for col in columns:
        if col not in df.columns:
            raise InputError(
                f"{what}: column {col!r} is missing (required); "
                f"columns present: {', '.join(map(str, df.columns[:20]))}"
            )


def _hours(values: pd.Series, field_name: str) -> tuple[pd.Series, bool]:
    """Times as hours (float) and whether they were datetimes."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values, True
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float), False
    parsed = pd.to_datetime(values, errors="coerce", utc=True)
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise InputError(
            f"{field_name}: must be numbers (hours or cycles) or timestamps; "
            f"got {values[bad].iloc[0]!r}"
        )
    return parsed, True


def _plain(value):
    """A numpy scalar as the Python value it holds (for messages)."""
    return value.item() if hasattr(value, "item") else value


def _labels(values: pd.Series, field_name: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)
    if values.isna().any():
        raise InputError(f"{field_name}: labels must not be missing; {values.isna().sum()} are")
    if pd.api.types.is_numeric_dtype(values) and set(np.unique(values)) <= {0, 1}:
        return values.astype(bool)
    mapped = (
        values.astype(str).str.lower().map({"true": True, "false": False, "1": True, "0": False})
    )
    if mapped.isna().any():
        bad = values[mapped.isna()].iloc[0]
        raise InputError(f"{field_name}: labels must be 0/1 or true/false; got {_plain(bad)!r}")
    return mapped.astype(bool)


@dataclass
class BatchHistory:
    """Binned batch trajectories and batch outcomes.

    Attributes
    ----------
    bins : pandas.DataFrame
        batch_id, tag, bin (int, alignment hours // bin_h), t_h (batch hours of the bin's
        last sample), value (mean of good samples, NaN if none), sd, bad (share of samples
        with bad or uncertain quality or a NaN value).
    outcomes : pandas.DataFrame
        Indexed by batch_id: ``order`` (start time or position, for time splits), ``label``
        (bool, may be missing for batches in progress), ``dev_class`` (str or None), the CQA
        columns and the context columns.
    """

    bins: pd.DataFrame
    outcomes: pd.DataFrame
    bin_h: float = 1.0
    cqa_cols: list[str] = field(default_factory=list)
    context_cols: list[str] = field(default_factory=list)
    tag_names: dict[str, str] = field(default_factory=dict)
    duration_h: pd.Series | None = None

    def index(self) -> tuple[dict, np.ndarray, list, dict]:
        """Row positions of each batch, tag codes and names, and the columns as arrays.

        Computed once per ``bins`` table (recomputed if ``bins`` is replaced), so that
        cutting a few batches out of a long history costs look-ups, not string scans.
        """
        cached = getattr(self, "_index", None)
        if cached is not None and cached[0] is self.bins:
            return cached[1]
        bins = self.bins
        rows = pd.Series(np.arange(len(bins))).groupby(bins["batch_id"].to_numpy()).indices
        codes, names = pd.factorize(bins["tag"], sort=False)
        columns = {c: bins[c].to_numpy(dtype=float) for c in ("value", "t_h", "sd", "bad")}
        columns["bin"] = bins["bin"].to_numpy(dtype=np.int64)
        result = (rows, codes, list(names), columns)
        self._index = (bins, result)
        return result

    def subset(self, batch_ids) -> BatchHistory:
        """The same history restricted to ``batch_ids``."""
        ids = pd.Index(batch_ids)
        return BatchHistory(
            bins=self.bins[self.bins["batch_id"].isin(ids)],
            outcomes=self.outcomes.loc[self.outcomes.index.intersection(ids)],
            bin_h=self.bin_h,
            cqa_cols=self.cqa_cols,
            context_cols=self.context_cols,
            tag_names=self.tag_names,
            duration_h=None if self.duration_h is None else self.duration_h.reindex(ids),
        )

    def labelled(self) -> pd.Index:
        """Batches with a known outcome, in time order."""
        out = self.outcomes[self.outcomes["label"].notna()]
        return out.sort_values("order").index


def _bin_sql(bin_h: float) -> str:
    return f"""
        SELECT batch_id, tag,
               CAST(floor(align_h / {bin_h}) AS INTEGER) AS bin,
               max(t_h) AS t_h,
               avg(CASE WHEN bad THEN NULL ELSE value END) AS value,
               coalesce(stddev_samp(CASE WHEN bad THEN NULL ELSE value END), 0) AS sd,
               avg(CAST(bad AS DOUBLE)) AS bad
        FROM samples
        WHERE align_h >= 0
        GROUP BY ALL
        ORDER BY batch_id, tag, bin
    """


def _bin(samples: pd.DataFrame, bin_h: float) -> pd.DataFrame:
    con = duckdb.connect()
    con.register("samples", samples)
    return con.sql(_bin_sql(bin_h)).df()


def batch_history(
    series: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    batch_col: str,
    time_col: str,
    label_col: str | None = None,
    tag_col: str | None = None,
    value_col: str | None = None,
    quality_col: str | None = None,
    class_col: str | None = None,
    cqa_cols: list[str] | None = None,
    context_cols: list[str] | None = None,
    bin_h: float = 1.0,
    min_batches: int = MIN_BATCHES,
) -> BatchHistory:
    """Validate user batch tables and bin them.

    Parameters
    ----------
    series : pandas.DataFrame
        Long form (``tag_col`` and ``value_col`` given: one row per batch, time and tag) or
        wide form (one numeric column per tag).
    outcomes : pandas.DataFrame
        One row per batch: ``batch_col``, ``label_col`` (0/1 or true/false; missing rows are
        batches in progress), optional ``class_col``, CQA and context columns.
    time_col : str
        Timestamps or hours since an origin; batch time is measured from each batch's first
        sample.
    quality_col : str, optional
        Per-sample quality: OPC UA style text (``good`` is good) or a boolean ``good`` flag.
    min_batches : int
        Fewer labelled batches than this is an error (``label_col`` given).

    Raises
    ------
    InputError
        Missing columns, wrong types, duplicate batches, unknown batches or too little data.
    """
    _require(series, [batch_col, time_col], "series")
    _require(outcomes, [batch_col], "outcomes")
    if label_col is not None:
        _require(outcomes, [label_col], "outcomes")
    cqa_cols = list(cqa_cols or [])
    _require(outcomes, cqa_cols, "outcomes")
    if class_col is not None:
        _require(outcomes, [class_col], "outcomes")
    if len(series) == 0:
        raise InputError("series: the table has no rows")
    times, is_dt = _hours(series[time_col], f"series.{time_col}")
    batch = series[batch_col].astype(str)
    if tag_col is not None or value_col is not None:
        if tag_col is None or value_col is None:
            raise InputError("series: long form needs both a tag column and a value column")
        _require(series, [tag_col, value_col], "series")
        if not pd.api.types.is_numeric_dtype(series[value_col]):
            raise InputError(
                f"series.{value_col}: values must be numeric; got dtype {series[value_col].dtype}"
            )
        long = pd.DataFrame(
            {
                "batch_id": batch,
                "time": times,
                "tag": series[tag_col].astype(str),
                "value": series[value_col].astype(float),
            }
        )
        if quality_col is not None:
            _require(series, [quality_col], "series")
            long["quality"] = series[quality_col].to_numpy()
    else:
        skip = {batch_col, time_col, quality_col}
        tags = [c for c in series.columns if c not in skip]
        non_numeric = [c for c in tags if not pd.api.types.is_numeric_dtype(series[c])]
        if non_numeric:
            raise InputError(
                f"series.{non_numeric[0]}: wide form needs numeric tag columns; got dtype "
                f"{series[non_numeric[0]].dtype} (name a tag and value column for long form)"
            )
        if not tags:
            raise InputError("series: no tag columns besides the batch and time columns")
        wide = series[tags].astype(float)
        wide.insert(0, "time", times)
        wide.insert(0, "batch_id", batch)
        long = wide.melt(id_vars=["batch_id", "time"], var_name="tag", value_name="value")
    start = long.groupby("batch_id")["time"].transform("min")
    delta = long["time"] - start
    long["t_h"] = delta.dt.total_seconds() / 3600 if is_dt else delta.astype(float)
    long["align_h"] = long["t_h"]
    bad = long["value"].isna() | ~np.isfinite(long["value"].fillna(0.0))
    if "quality" in long:
        q = long["quality"]
        good = (
            q.astype(bool)
            if pd.api.types.is_bool_dtype(q)
            else q.astype(str).str.lower().eq("good")
        )
        bad |= ~good
    long["bad"] = bad
    samples = long[["batch_id", "tag", "t_h", "align_h", "value", "bad"]]

    out = outcomes.copy()
    out[batch_col] = out[batch_col].astype(str)
    dup = out[batch_col].duplicated()
    if dup.any():
        raise InputError(
            f"outcomes.{batch_col}: one row per batch; {out.loc[dup, batch_col].iloc[0]!r} repeats"
        )
    out = out.set_index(batch_col)
    out.index.name = "batch_id"
    unknown = sorted(set(samples["batch_id"]) - set(out.index))
    if unknown:
        logger.warning("series: %d batches have no outcome row (scored only)", len(unknown))
        out = pd.concat([out, pd.DataFrame(index=pd.Index(unknown, name="batch_id"))])
    first = long.groupby("batch_id")["time"].min()
    out["order"] = first.reindex(out.index)
    if is_dt:
        out["order"] = out["order"].map(lambda t: t.timestamp() if pd.notna(t) else np.nan)
    result = pd.DataFrame(index=out.index)
    result["order"] = out["order"].astype(float)
    result["label"] = (
        pd.Series(pd.NA, index=out.index, dtype="boolean")
        if label_col is None
        else _labels_allow_missing(out[label_col], f"outcomes.{label_col}")
    )
    result["dev_class"] = None if class_col is None else out[class_col].astype("string")
    for col in cqa_cols:
        if not pd.api.types.is_numeric_dtype(out[col]):
            raise InputError(f"outcomes.{col}: CQA must be numeric; got dtype {out[col].dtype}")
        result[col] = out[col].astype(float)
    used = {label_col, class_col, *cqa_cols, "order"}
    if context_cols is None:
        context_cols = [c for c in out.columns if c not in used]
    _require(out, list(context_cols), "outcomes")
    for col in context_cols:
        result[col] = out[col]
    labelled = result["label"].notna().sum()
    if label_col is not None and labelled < min_batches:
        raise InputError(
            f"outcomes.{label_col}: at least {min_batches} labelled batches are needed to fit; "
            f"got {labelled}"
        )
    if label_col is not None and result["label"].dropna().nunique() < 2:
        raise InputError(f"outcomes.{label_col}: both outcomes (0 and 1) must occur to fit")
    bins = _bin(samples, bin_h)
    duration = samples.groupby("batch_id")["t_h"].max()
    return BatchHistory(
        bins=bins,
        outcomes=result,
        bin_h=bin_h,
        cqa_cols=cqa_cols,
        context_cols=list(context_cols),
        tag_names={t: t for t in bins["tag"].unique()},
        duration_h=duration,
    )


def _labels_allow_missing(values: pd.Series, field_name: str) -> pd.Series:
    known = values.notna()
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    if known.any():
        out[known] = _labels(values[known], field_name).to_numpy()
    return out


# ----------------------------------------------------------------------------- the twin


def _first_class(classes: str | None) -> str | None:
    if not isinstance(classes, str) or not classes:
        return None
    names = [c for c in classes.split(",") if c]
    real = [c for c in names if c != "oos_result"]
    return (real or names)[0]


TWIN_CONTEXT = [
    "media_potency",
    "glucose_purity_pct",
    "squalene_peroxide_meq_per_kg",
    "production_unit",
]
TWIN_CQAS = ["titer_g_per_l", "droplet_z_avg_nm"]


def batch_history_from_twin(run_dir: str | Path, bin_h: float = 1.0) -> BatchHistory:
    """Batch history from ``biotwin simulate`` output (see docs/data-contracts.md).

    Each tag is named ``step.signal`` (``production.do``), aligned on hours since the batch
    entered that step; setpoints are left out. Equipment age (hours since the asset's last
    renewal, from the daily wear snapshots) enters as ``asset.<step>.<name>.age_h`` series
    on batch time, so a prediction sees the age known at its cut-off. Labels are
    ``any_oos or n_deviations > 0`` for dispositioned batches; lost batches count as
    deviations; batches in progress have no label.
    """
    run_dir = Path(run_dir)
    for name in ("batches.parquet", "phases.parquet", "tags.parquet", "signals"):
        if not (run_dir / name).exists():
            raise InputError(f"twin output: {name} is missing in {str(run_dir)!r}")
    bins = _twin_bins(run_dir, bin_h)
    tags = pd.read_parquet(run_dir / "tags.parquet")
    steps = pd.read_parquet(run_dir / "phases.parquet")[["step", "unit"]].drop_duplicates()
    unit_step = dict(zip(steps["unit"], steps["step"], strict=False))
    names = {}
    for row in tags.itertuples():
        step = unit_step.get(row.unit)
        if step:
            names[f"{step}.{row.signal}"] = f"{row.description} ({step.replace('_', ' ')})"
    batches = pd.read_parquet(run_dir / "batches.parquet").set_index("batch_id")
    batches = batches[batches["start_time"].notna()]
    age_bins = _twin_asset_ages(run_dir, batches, unit_step, bin_h)
    names.update(
        {
            t: t.split(".", 1)[1].replace(".", " ").replace("age_h", "age (h)")
            for t in age_bins["tag"].unique()
        }
    )
    bins = pd.concat([bins, age_bins], ignore_index=True)

    out = pd.DataFrame(index=batches.index)
    out["order"] = batches["start_time"].map(lambda t: t.timestamp())
    done = batches["status"].isin(["released", "rejected", "lost"])
    label = batches["any_oos"].fillna(False).astype(bool) | (batches["n_deviations"] > 0)
    label |= batches["status"].eq("lost")
    out["label"] = pd.Series(pd.NA, index=out.index, dtype="boolean")
    out.loc[done, "label"] = label[done].to_numpy()
    cls = batches["deviation_classes"].map(_first_class)
    cls[batches["status"].eq("lost") & cls.isna()] = "equipment_loss"
    out["dev_class"] = cls.where(label, None).astype("string")
    for col in TWIN_CQAS:
        out[col] = batches[col].astype(float)
    for col in TWIN_CONTEXT:
        out[col] = batches[col]
    out["onset_h"] = _first_onset_h(run_dir, batches)
    duration = (batches["filled_time"] - batches["start_time"]).dt.total_seconds() / 3600
    return BatchHistory(
        bins=bins,
        outcomes=out,
        bin_h=bin_h,
        cqa_cols=list(TWIN_CQAS),
        context_cols=list(TWIN_CONTEXT),
        tag_names=names,
        duration_h=duration,
    )


def _first_onset_h(run_dir: Path, batches: pd.DataFrame) -> pd.Series:
    """Hours from each batch's start to the onset of its first deviation (NaN: none).

    Ground truth only a simulator knows; evaluation uses it to say how many deviating
    batches had a deviation under way at each cut-off. It is never a feature.
    """
    path = run_dir / "deviations.parquet"
    if not path.exists():
        return pd.Series(np.nan, index=batches.index)
    devs = pd.read_parquet(path, columns=["batch_id", "onset_time"])
    first = devs.groupby("batch_id")["onset_time"].min().reindex(batches.index)
    start = batches["start_time"]
    if first.dt.tz is not None and start.dt.tz is None:
        start = start.dt.tz_localize(first.dt.tz)
    return (first - start).dt.total_seconds() / 3600


def _twin_asset_ages(
    run_dir: Path, batches: pd.DataFrame, unit_step: dict[str, str], bin_h: float
) -> pd.DataFrame:
    """Daily asset ages as series on each batch's clock, for the assets of its route.

    What a prediction may know: the age of a unit that is the only one of its kind (the
    homogenizer) is known from the batch's start, since the route will go through it; for
    units of a pool (three production bioreactors) only once the batch entered the unit.
    """
    phases = pd.read_parquet(run_dir / "phases.parquet")
    entered = phases.groupby(["batch_id", "unit"])["start_time"].min()
    entered_ms = dict(zip(entered.index, _ms(entered.reset_index()["start_time"]), strict=True))
    pool = phases.groupby("step")["unit"].nunique()
    pooled = set(phases.loc[phases["step"].map(pool) > 1, "unit"])
    events = pd.read_parquet(run_dir / "asset_events.parquet")
    wear = events[events["event"] == "wear"][["time", "asset", "unit", "age_h"]]
    wear = wear.assign(step=wear["unit"].map(unit_step)).dropna(subset=["step"])
    wear = wear.sort_values(["unit", "time"]).reset_index(drop=True)
    wear_ms = _ms(wear["time"])
    by_unit = {u: (g.index[0], g.index[-1] + 1) for u, g in wear.groupby("unit")}
    starts = _ms(batches["start_time"])
    ends = _ms(batches["filled_time"].fillna(batches["start_time"] + pd.Timedelta(days=7)))
    day = 86_400_000
    take, owner, origin = [], [], []
    for n, (batch_id, units) in enumerate(
        zip(batches.index, batches["units"].fillna("").str.split(","), strict=True)
    ):
        for unit in units:
            if unit not in by_unit:
                continue
            since = starts[n]
            if unit in pooled:
                since = entered_ms.get((batch_id, unit))
                if since is None:
                    continue
            lo, hi = by_unit[unit]
            a = lo + np.searchsorted(wear_ms[lo:hi], starts[n] - day, side="right")
            b = lo + np.searchsorted(wear_ms[lo:hi], ends[n], side="right")
            if b > a:
                take.append(np.arange(a, b))
                owner.append(np.full(b - a, n))
                origin.append(np.full(b - a, since))
    rows = []
    if take:
        take, owner = np.concatenate(take), np.concatenate(owner)
        origin = np.concatenate(origin)
        w = wear.iloc[take]
        t_h = (np.maximum(wear_ms[take], origin) - starts[owner]) / 3_600_000.0
        rows.append(
            pd.DataFrame(
                {
                    "batch_id": batches.index.to_numpy()[owner],
                    "tag": (
                        "asset." + w["step"] + "." + w["asset"].str.split("/").str[1] + ".age_h"
                    ).to_numpy(),
                    "t_h": t_h,
                    "value": w["age_h"].to_numpy(),
                }
            )
        )
    if not rows:
        return pd.DataFrame(columns=BIN_COLUMNS)
    ages = pd.concat(rows, ignore_index=True)
    ages["bin"] = (ages["t_h"] // bin_h).astype(int)
    ages = ages.groupby(["batch_id", "tag", "bin"], as_index=False).agg(
        t_h=("t_h", "max"), value=("value", "last")
    )
    ages["sd"] = 0.0
    ages["bad"] = 0.0
    return ages[BIN_COLUMNS]


def _twin_bins(run_dir: Path, bin_h: float) -> pd.DataFrame:
    """Bin each unit's signals by the batch and step the unit held (numpy, one unit at a time).

    A unit holds one batch at a time, so each sample is assigned to the step interval that
    started last before it (a sorted search), if the interval has not ended.
    """
    import pyarrow.parquet as pq

    batches = pd.read_parquet(run_dir / "batches.parquet", columns=["batch_id", "start_time"])
    batch_start = batches.dropna().set_index("batch_id")["start_time"]
    phases = pd.read_parquet(run_dir / "phases.parquet")
    steps = (
        phases.groupby(["batch_id", "step", "unit"], as_index=False)
        .agg(s=("start_time", "min"), e=("end_time", "max"))
        .merge(batch_start.rename("b0"), left_on="batch_id", right_index=True)
    )
    tags = pd.read_parquet(run_dir / "tags.parquet")
    signal = dict(zip(tags["tag"], tags["signal"], strict=True))
    ms = 3_600_000.0
    parts = []
    for unit, iv in steps.groupby("unit", sort=True):
        path = run_dir / "signals" / f"{unit}.parquet"
        if not path.exists():
            continue
        iv = iv.sort_values("s")
        s0, e0, b0 = _ms(iv["s"]), _ms(iv["e"]), _ms(iv["b0"])
        table = pq.read_table(path, columns=["time", "tag", "value", "quality"])
        time = table.column("time").cast("int64").to_numpy()
        idx = np.searchsorted(s0, time, side="right") - 1
        keep = (idx >= 0) & (time < e0[np.maximum(idx, 0)])
        if not keep.any():
            continue
        idx, time = idx[keep], time[keep]
        tag_codes, tag_names = _codes(table.column("tag"))
        q_codes, q_names = _codes(table.column("quality"))
        value = table.column("value").to_numpy()[keep]
        good_code = q_names.index("good") if "good" in q_names else -1
        bad = (q_codes[keep] != good_code) | np.isnan(value)
        # setpoints carry no information; hour meters enter as asset ages (asset.* series)
        setpoint = np.array(
            [signal.get(t, "").endswith(("_sp", "_hours")) for t in tag_names] + [True]
        )
        code = tag_codes[keep]
        use = ~setpoint[code]
        idx, time, code, value, bad = idx[use], time[use], code[use], value[use], bad[use]
        bins = np.floor((time - s0[idx]) / ms / bin_h).astype(np.int64)
        frame = pd.DataFrame(
            {
                "key": (idx.astype(np.int64) * len(tag_names) + code) * 100_000 + bins,
                "t_h": (time - b0[idx]) / ms,
                "value": np.where(bad, np.nan, value),
                "bad": bad.astype(float),
            }
        )
        out = frame.groupby("key", sort=True).agg(
            t_h=("t_h", "max"), value=("value", "mean"), sd=("value", "std"), bad=("bad", "mean")
        )
        key = out.index.to_numpy()
        out = out.reset_index(drop=True)
        out["bin"] = (key % 100_000).astype(np.int32)
        pair = key // 100_000
        i, c = pair // len(tag_names), pair % len(tag_names)
        out["sd"] = out["sd"].fillna(0.0)
        out["batch_id"] = iv["batch_id"].to_numpy()[i]
        step_names = iv["step"].to_numpy()[i]
        sig_names = np.array([signal.get(t, t) for t in tag_names], dtype=object)[c]
        out["tag"] = step_names + "." + sig_names
        parts.append(out[BIN_COLUMNS])
    if not parts:
        return pd.DataFrame(columns=BIN_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def _codes(column) -> tuple[np.ndarray, list[str]]:
    """Dictionary codes and names of a (possibly chunked) string column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    return array.indices.to_numpy(zero_copy_only=False).astype(
        np.int64
    ), array.dictionary.to_pylist()


def _ms(values: pd.Series) -> np.ndarray:
    """Timestamps as int64 milliseconds since the epoch."""
    return values.astype("datetime64[ms, UTC]").astype("int64").to_numpy()


# ----------------------------------------------------------------------------- assets


@dataclass
class RunHistory:
    """Run-to-failure histories: one row per asset observation.

    Attributes
    ----------
    rows : pandas.DataFrame
        ``run`` (run id), ``asset``, ``t`` (float hours or cycles), ``failure`` (bool: the run
        ended in a failure at this row), ``failed_run`` (bool: the run ends in a failure), the
        sensor columns, ``rul`` (time to the run's end; for a censored run, a lower bound).
    sensors : list of str
    time_is_datetime : bool
        ``t`` came from timestamps (hours since the epoch) rather than cycles.
    """

    rows: pd.DataFrame
    sensors: list[str]
    time_is_datetime: bool
    categorical: list[str] = field(default_factory=list)


def _finish_runs(rows: pd.DataFrame, sensors: list[str], is_dt: bool, categorical=()) -> RunHistory:
    rows = rows.sort_values(["run", "t"]).reset_index(drop=True)
    end_t = rows.groupby("run")["t"].transform("max")
    rows["failed_run"] = rows.groupby("run")["failure"].transform("any")
    rows["rul"] = end_t - rows["t"]
    return RunHistory(
        rows=rows, sensors=sensors, time_is_datetime=is_dt, categorical=list(categorical)
    )


def run_history(
    table: pd.DataFrame,
    *,
    asset_col: str,
    time_col: str,
    failure_col: str | None = None,
    sensor_cols: list[str] | None = None,
    min_runs: int = MIN_RUNS,
    require_failure: bool = True,
) -> RunHistory:
    """Validate a user run-to-failure table.

    Without ``failure_col`` every asset runs to failure: its last row is its failure. With it,
    a true value marks the failure row; an asset's rows after a failure start a new run; an
    asset whose last run has no failure is censored (still running, or taken out of service).

    Raises
    ------
    InputError
        Missing columns, non-numeric sensors, duplicated (asset, time) rows or too few runs.
    """
    _require(table, [asset_col, time_col], "runs")
    if failure_col is not None:
        _require(table, [failure_col], "runs")
    if len(table) == 0:
        raise InputError("runs: the table has no rows")
    times, is_dt = _hours(table[time_col], f"runs.{time_col}")
    t = times.map(lambda x: x.timestamp() / 3600) if is_dt else times
    skip = {asset_col, time_col, failure_col}
    if sensor_cols is None:
        sensor_cols = [c for c in table.columns if c not in skip]
    _require(table, list(sensor_cols), "runs")
    for col in sensor_cols:
        if not pd.api.types.is_numeric_dtype(table[col]):
            raise InputError(
                f"runs.{col}: sensor columns must be numeric; got dtype {table[col].dtype} "
                f"(e.g. {table[col].dropna().iloc[0]!r})"
            )
    rows = pd.DataFrame({"asset": table[asset_col].astype(str), "t": t.astype(float)})
    dup = rows.duplicated(["asset", "t"])
    if dup.any():
        first = rows[dup].iloc[0]
        raise InputError(
            f"runs.{time_col}: one row per asset and time; asset {first['asset']!r} repeats "
            f"time {_plain(table.loc[dup, time_col].iloc[0])!r}"
        )
    for col in sensor_cols:
        rows[col] = table[col].astype(float).to_numpy()
    if failure_col is None:
        rows["failure"] = rows["t"].eq(rows.groupby("asset")["t"].transform("max"))
    else:
        rows["failure"] = _labels(table[failure_col], f"runs.{failure_col}").to_numpy()
    rows = rows.sort_values(["asset", "t"]).reset_index(drop=True)
    prior = rows.groupby("asset")["failure"].transform(lambda f: f.shift(fill_value=False).cumsum())
    rows["run"] = rows["asset"] + "#" + prior.astype(int).astype(str)
    n_runs = rows["run"].nunique()
    if n_runs < min_runs:
        raise InputError(
            f"runs.{asset_col}: at least {min_runs} runs are needed to fit; got {n_runs}"
        )
    if require_failure and not rows["failure"].any():
        raise InputError(f"runs.{failure_col}: no failure in the data; nothing to learn from")
    return _finish_runs(rows, list(sensor_cols), is_dt)


def _characteristic_ages() -> dict[str, float]:
    """Asset name -> PM interval or Weibull scale (the smaller), from the shipped plant."""
    from twin.config import load_config

    out: dict[str, float] = {}
    for spec in load_config().unit_classes.values():
        for a in spec.assets:
            scale = getattr(a.life_h, "scale", None) or a.life_h.mean
            out[a.name] = min(a.pm_interval_h or np.inf, scale)
    return out


def run_history_from_twin(run_dir: str | Path) -> RunHistory:
    """Asset runs from twin output: a row per asset and day, cut at renewals.

    Each row carries the asset's operating hours since renewal (its hour meter), the hours
    it operated over the last 7 days, and the daily mean and 95th percentile of its unit's
    condition tags (vibration, motor current, pressure ripple...). A run ends at a failure
    (``failure`` true) or at a preventive renewal (censored). The hidden life and health of
    the twin are not used.
    """
    run_dir = Path(run_dir)
    for name in ("asset_events.parquet", "tags.parquet", "signals"):
        if not (run_dir / name).exists():
            raise InputError(f"twin output: {name} is missing in {str(run_dir)!r}")
    events = pd.read_parquet(run_dir / "asset_events.parquet").sort_values(["asset", "time"])
    tags = pd.read_parquet(run_dir / "tags.parquet")
    condition_signals = [
        "vibration",
        "motor_current",
        "pressure_ripple",
        "pressure",
        "fill_weight_sd",
        "column_dp",
        "bowl_vibration",
        "differential_pressure",
        "flow_error",
    ]
    cond = tags[tags["signal"].isin(condition_signals)]
    con = duckdb.connect()
    con.register("cond", cond[["tag", "unit", "signal"]])
    daily = con.sql(
        f"""
        SELECT s.unit, date_trunc('day', s.time) + INTERVAL 1 DAY AS day, c.signal,
               avg(s.value) AS mean, quantile_cont(s.value, 0.95) AS p95
        FROM read_parquet('{run_dir}/signals/*.parquet') s JOIN cond c ON s.tag = c.tag
        WHERE s.quality = 'good'
        GROUP BY ALL
        """
    ).df()
    wide = daily.pivot_table(index=["unit", "day"], columns="signal", values=["mean", "p95"])
    wide.columns = [f"{sig}_{stat}" for stat, sig in wide.columns]
    wide = wide.reset_index()
    sensors = [
        "age_h",
        "age_7d_h",
        "age_over_pm",
        *[c for c in wide.columns if c not in ("unit", "day")],
    ]

    frame = events[events["event"].isin(["wear", "failure", "pm_start", "in_service"])]
    frame = frame[["asset", "unit", "time", "event", "age_h"]].copy()
    # a new run begins after each failure or preventive renewal
    frame["run_no"] = frame.groupby("asset")["event"].transform(
        lambda ev: ev.isin(["failure", "pm_start"]).shift(fill_value=False).cumsum()
    )
    frame = frame[frame["event"] != "in_service"]
    frame["failure"] = frame["event"].eq("failure")
    frame["run"] = frame["asset"] + "#" + frame["run_no"].astype(str)
    frame["day"] = frame["time"].dt.floor("D")
    frame = frame.merge(wide, on=["unit", "day"], how="left").sort_values(["run", "time"])
    # hours operated over the last 7 daily snapshots, from the hour meter
    frame["age_7d_h"] = frame.groupby("run")["age_h"].transform(
        lambda a: (a - a.shift(7)).fillna(a - a.iloc[0])
    )
    frame["t"] = frame["time"].map(lambda x: x.timestamp() / 3600)
    frame["asset_kind"] = frame["asset"].str.split("/").str[1]
    # the planner's design data: each asset's PM interval (or its characteristic life)
    frame["age_over_pm"] = frame["age_h"] / frame["asset_kind"].map(_characteristic_ages())
    keep = frame.drop(columns=["run_no", "day", "event"])
    history = _finish_runs(keep, [*sensors, "asset_kind"], True, categorical=["asset_kind"])
    return history
