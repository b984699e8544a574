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

Rules at the door (each broken rule is an :class:`~quality.errors.InputError` naming the
field, the rule and the bad value):

- times are timestamps within the years 1970-2200, or finite numbers (hours or cycles) below
  1e9 in magnitude spanning at most 1e7 units; no time may be missing;
- one value per batch, time and tag (wide form: one row per batch and time); exact repeats
  are dropped with a warning, conflicting ones refused; one row per asset and time in run
  tables;
- NaN, inf and values of absurd magnitude (beyond 1e15) are counted, logged and stored in
  ``input_report``: in batch series they are bad-quality samples, in run tables missing.
  One warning line gives the table's totals, then one line per column (per tag in long
  form) names its counts and its first inf or huge value with its row (rows count from 1,
  the header not counted);
- a column that must hold numbers and does not is refused naming its first value that is
  not a number and its row.

A twin history meant for the live path (``inputs="live"``, the default of
:func:`batch_history_from_twin`) carries only what the historian path of
:mod:`quality.live` also builds: the tags of the plant configuration and the production unit,
no lot attributes (OPC UA does not carry them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from biotwin.execution import resolve_scheduler
from quality.errors import InputError
from quality.folds import fold_pool, run_folds

__all__ = [
    "LIVE_CONTEXT",
    "BatchHistory",
    "RunHistory",
    "batch_history",
    "batch_history_from_twin",
    "live_tags",
    "read_table",
    "run_history",
    "run_history_from_twin",
]

logger = logging.getLogger(__name__)

MIN_BATCHES = 20
MIN_RUNS = 3
BIN_COLUMNS = ["batch_id", "tag", "bin", "t_h", "value", "sd", "bad"]
#: numeric times (hours or cycles): largest magnitude and largest span over a table
MAX_ABS_TIME = 1e9
MAX_TIME_SPAN = 1e7
#: timestamps: first and last accepted year
FIRST_YEAR, LAST_YEAR = 1970, 2200
#: a value beyond this magnitude is a sensor or export fault, not a measurement
HUGE_VALUE = 1e15
#: columns (or tags) named one by one in the NaN / inf / huge warnings, at most
MAX_COLUMN_WARNINGS = 20
#: signals that are not trajectories: setpoints, and hour meters (they enter as asset ages)
SKIP_SIGNALS = ("_sp", "_hours")
#: context columns the historian path (quality.live) gives every batch: the batch context
#: records name the units, not the raw-material lots
LIVE_CONTEXT = ["production_unit"]


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


def _plain(value):
    """A numpy scalar as the Python value it holds (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _show(value) -> str:
    """A value as a message shows it: ``12.5``, ``1e+18``, ``7``, a timestamp, ``'abc'``."""
    if isinstance(value, pd.Timestamp | np.datetime64):
        return str(pd.Timestamp(value))
    value = _plain(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value) if abs(value) < HUGE_VALUE else repr(float(value))
    return repr(value)


def _hours(
    values: pd.Series, field_name: str, owner: pd.Series, owner_kind: str
) -> tuple[pd.Series, bool]:
    """Times as datetimes or as float hours / cycles, and whether they were datetimes.

    Parameters
    ----------
    values : pandas.Series
        The time column as read.
    field_name : str
        ``table.column``, for messages.
    owner : pandas.Series
        Batch or asset of each row (same length), named in messages.
    owner_kind : str
        ``"batch"`` or ``"asset"``.

    Raises
    ------
    InputError
        A missing time, text that is no timestamp, a timestamp outside the years
        1970-2200, a number that is not finite or beyond 1e9 in magnitude, or numeric times
        spanning more than 1e7 units (seconds or milliseconds since the epoch, not hours).
    """

    def at(mask) -> tuple[int, str]:
        i = int(np.flatnonzero(np.asarray(mask))[0])
        return i, f"{owner_kind} {str(owner.iloc[i])!r}"

    missing = values.isna().to_numpy()
    if missing.any():
        _, who = at(missing)
        raise InputError(
            f"{field_name}: times must not be missing; got {int(missing.sum()):,} missing "
            f"of {len(values):,} (first at {who})"
        )
    if pd.api.types.is_datetime64_any_dtype(values):
        times, is_dt = values, True
    elif pd.api.types.is_numeric_dtype(values):
        times, is_dt = values.astype(float), False
    else:
        parsed = pd.to_datetime(values, errors="coerce", utc=True)
        bad = parsed.isna().to_numpy()
        if bad.any():
            i, who = at(bad)
            raise InputError(
                f"{field_name}: must be numbers (hours or cycles) or timestamps; "
                f"got {_show(values.iloc[i])} ({who})"
            )
        times, is_dt = parsed, True
    if is_dt:
        years = times.dt.year.to_numpy()
        outside = (years < FIRST_YEAR) | (years > LAST_YEAR)
        if outside.any():
            i, who = at(outside)
            raise InputError(
                f"{field_name}: timestamps must be within the years {FIRST_YEAR}-{LAST_YEAR}; "
                f"got {_show(values.iloc[i])} ({who})"
            )
        return times, True
    t = times.to_numpy()
    infinite = ~np.isfinite(t)
    if infinite.any():
        i, who = at(infinite)
        raise InputError(f"{field_name}: time must be finite; got {_show(values.iloc[i])} ({who})")
    huge = np.abs(t) > MAX_ABS_TIME
    if huge.any():
        i, who = at(huge)
        raise InputError(
            f"{field_name}: time must be hours or cycles below 1e9; "
            f"got {_show(values.iloc[i])} ({who})"
        )
    lo, hi = int(np.argmin(t)), int(np.argmax(t))
    if t[hi] - t[lo] > MAX_TIME_SPAN:
        raise InputError(
            f"{field_name}: times must span at most 1e7 hours or cycles; got a span of "
            f"{t[hi] - t[lo]:g}, from {_show(values.iloc[lo])} ({owner_kind} "
            f"{str(owner.iloc[lo])!r}) to {_show(values.iloc[hi])} ({owner_kind} "
            f"{str(owner.iloc[hi])!r})"
        )
    return times, False


def _show_time(values: pd.Series, times: pd.Series, i: int, is_dt: bool) -> str:
    """Row ``i``'s time as the user gave it (numbers) or as parsed (timestamps)."""
    return str(times.iloc[i]) if is_dt else _show(values.iloc[i])


def _bad_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks of the NaN, the infinite and the huge (finite, beyond 1e15) values."""
    nan = np.isnan(values)
    inf = np.isinf(values)
    with np.errstate(invalid="ignore"):
        huge = ~nan & ~inf & (np.abs(values) > HUGE_VALUE)
    return nan, inf, huge


def _log_bad_values(what: str, report: dict, fate: str) -> None:
    """One warning line for an input, counting its NaN, inf and huge values (if it has any)."""
    counts = [(report["nan"], "NaN"), (report["inf"], "inf"), (report["huge"], "huge (abs > 1e15)")]
    parts = [f"{n:,} {name}" for n, name in counts if n]
    if not parts:
        return
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    share = 100.0 * sum(n for n, _ in counts) / max(report["values"], 1)
    shown = f"{share:.2f}" if share >= 0.01 else f"{share:.1g}"
    logger.warning(
        "%s: %s values of %s (%s %%), %s", what, text, f"{report['values']:,}", shown, fate
    )


def _log_bad_by_column(
    what: str, names: np.ndarray, values: np.ndarray, rows: np.ndarray, fate: str
) -> None:
    """One warning line per column (or tag) holding NaN, inf or huge values.

    Parameters
    ----------
    what : str
        ``series tag``, ``series column`` or ``runs column``, for messages.
    names : numpy.ndarray
        The column or tag of each value.
    values : numpy.ndarray
        The values (float).
    rows : numpy.ndarray
        The table row of each value (0-based; shown from 1, the header not counted).
    fate : str
        What happens to them (``kept as bad-quality samples``...).
    """
    nan, inf, huge = _bad_values(values)
    if not (nan.any() or inf.any() or huge.any()):
        return
    codes, uniques = pd.factorize(pd.Series(names), sort=False)
    n = len(uniques)
    counts = [
        (np.bincount(codes[mask], minlength=n), label)
        for mask, label in ((nan, "NaN"), (inf, "inf"), (huge, "huge (abs > 1e15)"))
    ]
    totals = np.bincount(codes, minlength=n)
    flagged = np.flatnonzero(sum(c for c, _ in counts))
    for code in flagged[:MAX_COLUMN_WARNINGS]:
        parts = ", ".join(f"{c[code]:,} {label}" for c, label in counts if c[code])
        firsts = []
        for mask in (inf, huge):
            hit = np.flatnonzero(mask & (codes == code))
            if len(hit):
                i = int(hit[0])
                firsts.append(f"first {_show(values[i])} at row {int(rows[i]) + 1}")
        logger.warning(
            "%s %r: %s of %s values, %s%s",
            what,
            str(uniques[code]),
            parts,
            f"{totals[code]:,}",
            fate,
            f" ({'; '.join(firsts)})" if firsts else "",
        )
    if len(flagged) > MAX_COLUMN_WARNINGS:
        logger.warning(
            "%s: %d more hold NaN, inf or huge values (not listed)",
            what,
            len(flagged) - MAX_COLUMN_WARNINGS,
        )


def _first_not_number(values: pd.Series) -> tuple[int, object] | None:
    """Position and value of the first entry that is present but not a number."""
    coerced = pd.to_numeric(values, errors="coerce")
    bad = (coerced.isna() & values.notna()).to_numpy()
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    return i, values.iloc[i]


def _must_be_numbers(values: pd.Series, field_name: str, rule: str, owner=None) -> None:
    """Refuse a column that is not numeric, naming its first value that is not a number."""
    if pd.api.types.is_numeric_dtype(values):
        return
    first = _first_not_number(values)
    if first is None:  # text that all reads as numbers (or is missing): not the dtype asked for
        raise InputError(f"{field_name}: {rule}; got dtype {values.dtype}")
    i, bad = first
    who = "" if owner is None else f", {owner[0]} {str(owner[1].iloc[i])!r}"
    raise InputError(f"{field_name}: {rule}; got {_show(bad)} (row {i + 1}{who})")


def _duplicates(
    frame: pd.DataFrame, keys: list[str], payload: list[str], describe
) -> tuple[pd.DataFrame, int]:
    """``frame`` without exact repeats of its rows; refuse rows that share ``keys`` only.

    ``describe(group)`` words the refusal from the conflicting rows of the first clashing key.
    """
    if not frame.duplicated(keys, keep=False).any():
        return frame, 0
    exact = frame.duplicated([*keys, *payload], keep="first")
    rest = frame[~exact]
    clash = rest.duplicated(keys, keep=False).to_numpy()
    if clash.any():
        first = rest[clash].iloc[0]
        same = np.ones(len(rest), dtype=bool)
        for k in keys:
            same &= (rest[k] == first[k]).to_numpy()
        raise InputError(describe(rest[same]))
    return rest, int(exact.sum())


def _labels(values: pd.Series, field_name: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)
    missing = values.isna().to_numpy()
    if missing.any():
        raise InputError(
            f"{field_name}: labels must not be missing; got {int(missing.sum()):,} missing "
            f"(first at row {int(np.flatnonzero(missing)[0]) + 1})"
        )
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
        Indexed by batch_id: ``order`` (start time in seconds since the epoch or in the
        user's time unit; the outcomes table's row position when ``time_ordered`` is false),
        ``label`` (bool, may be missing for batches in progress), ``dev_class`` (str or
        None), the CQA columns and the context columns.
    bin_h : float
        Bin width, in hours (or the user's time unit).
    cqa_cols, context_cols : list of str
        Outcome columns that are CQAs (targets) and context known at batch start (inputs).
    tag_names : dict
        Tag -> words for explanations.
    duration_h : pandas.Series, optional
        Each batch's duration (its nominal duration is their median).
    time_ordered : bool
        Whether ``order`` follows time. False when the series' times are numbers and every
        batch starts at the same value (hours since each batch's own start): nothing then
        says which batch came first, ``order`` is the row order of the outcomes table (the
        user's file order), and a consumer should prefer shuffled grouped folds to a time
        split.
    input_report : dict
        What the door found in the input (empty for histories not read from user tables):
        ``rows`` (rows of the series table), ``values`` (samples after exact duplicates were
        dropped), ``nan``, ``inf``, ``huge`` (beyond 1e15 in magnitude; all three kept as
        bad-quality samples) and ``exact_duplicates_dropped``.
    """

    bins: pd.DataFrame
    outcomes: pd.DataFrame
    bin_h: float = 1.0
    cqa_cols: list[str] = field(default_factory=list)
    context_cols: list[str] = field(default_factory=list)
    tag_names: dict[str, str] = field(default_factory=dict)
    duration_h: pd.Series | None = None
    time_ordered: bool = True
    input_report: dict = field(default_factory=dict)

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
            time_ordered=self.time_ordered,
            input_report=self.input_report,
        )

    def labelled(self) -> pd.Index:
        """Batches with a known outcome, in time order."""
        out = self.outcomes[self.outcomes["label"].notna()]
        return out.sort_values("order", kind="stable").index


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
    """Bins of ``samples`` (:func:`_bin_sql`), the same floating-point sums for the same
    rows: one DuckDB thread, so each bin's mean and sd add its samples in their order (a
    parallel aggregation adds them in whatever order its threads finish, which changed
    the last bits of 5 % of the bins from one read to the next)."""
    con = duckdb.connect(config={"threads": 1})
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
        Timestamps (years 1970-2200) or numbers: hours since an origin (negative allowed),
        below 1e9 in magnitude and spanning at most 1e7. Batch time is measured from each
        batch's first sample. When the numbers start every batch at the same value (hours
        since the batch's own start), nothing orders the batches in time: the result has
        ``time_ordered=False`` and ``outcomes["order"]`` is the row position in
        ``outcomes`` (the user's file order), not a time, so that a consumer can choose
        shuffled grouped folds over a time split.
    quality_col : str, optional
        Per-sample quality (long or wide form): OPC UA style text (``good`` is good) or a
        boolean ``good`` flag.
    min_batches : int
        Fewer labelled batches than this is an error (``label_col`` given).

    Returns
    -------
    BatchHistory
        With ``input_report`` counting rows, values, NaN, inf and huge values (kept as
        bad-quality samples, never dropped) and the exact duplicates dropped, each also
        logged as a warning.

    Raises
    ------
    InputError
        Missing columns, wrong types, missing or implausible times (see ``time_col``), two
        different values for one batch, time and tag (wide form: two different rows for one
        batch and time), duplicate outcome rows, bad labels or too little data.
    """
    _require(series, [batch_col, time_col], "series")
    _require(outcomes, [batch_col], "outcomes")
    if label_col is not None:
        _require(outcomes, [label_col], "outcomes")
    cqa_cols = list(cqa_cols or [])
    _require(outcomes, cqa_cols, "outcomes")
    if class_col is not None:
        _require(outcomes, [class_col], "outcomes")
    if quality_col is not None:
        _require(series, [quality_col], "series")
    if len(series) == 0:
        raise InputError("series: the table has no rows")
    series = series.reset_index(drop=True)
    batch = series[batch_col].astype(str)
    times, is_dt = _hours(series[time_col], f"series.{time_col}", batch, "batch")

    def when(group: pd.DataFrame) -> str:
        return _show_time(series[time_col], times, int(group["_row"].iloc[0]), is_dt)

    def listed(values) -> tuple[str, str]:
        values = pd.unique(pd.Series(values))
        return f"{len(values)} different", ", ".join(_show(v) for v in values[:5])

    quality = ["_quality"] if quality_col is not None else []
    if tag_col is not None or value_col is not None:
        if tag_col is None or value_col is None:
            raise InputError("series: long form needs both a tag column and a value column")
        _require(series, [tag_col, value_col], "series")
        _must_be_numbers(
            series[value_col], f"series.{value_col}", "values must be numbers", ("batch", batch)
        )
        long = pd.DataFrame(
            {
                "batch_id": batch,
                "time": times,
                "tag": series[tag_col].astype(str),
                "value": series[value_col].astype(float),
                "_row": np.arange(len(series)),
            }
        )
        if quality_col is not None:
            long["_quality"] = series[quality_col].to_numpy()

        def clash(group: pd.DataFrame) -> str:
            where = (
                f"series: one value per batch, time and tag; batch {group['batch_id'].iloc[0]!r} "
                f"tag {group['tag'].iloc[0]!r} at time {when(group)}"
            )
            n, shown = listed(group["value"])
            if not n.startswith("1 "):
                return f"{where} has {n} values ({shown})"
            nq, qualities = listed(group["_quality"])
            return f"{where} has the value {shown} with {nq} qualities ({qualities})"

        long, dropped = _duplicates(long, ["batch_id", "time", "tag"], ["value", *quality], clash)
        if dropped:
            logger.warning(
                "series: %d exact duplicate row(s) (same batch, time, tag and value) dropped",
                dropped,
            )
    else:
        skip = {batch_col, time_col, quality_col}
        tags = [c for c in series.columns if c not in skip]
        for col in tags:
            _must_be_numbers(
                series[col],
                f"series.{col}",
                "wide form needs numeric tag columns (name a tag and a value column for long form)",
                ("batch", batch),
            )
        if not tags:
            raise InputError("series: no tag columns besides the batch and time columns")
        wide = series[tags].astype(float)
        wide.insert(0, "time", times)
        wide.insert(0, "batch_id", batch)
        wide["_row"] = np.arange(len(series))
        if quality_col is not None:
            wide["_quality"] = series[quality_col].to_numpy()

        def clash(group: pd.DataFrame) -> str:
            where = (
                f"series: one row per batch and time; batch {group['batch_id'].iloc[0]!r} at "
                f"time {when(group)} has {len(group)} different rows"
            )
            differ = [c for c in tags if group[c].nunique(dropna=False) > 1]
            if differ:
                return f"{where} (column {differ[0]!r}: {listed(group[differ[0]])[1]})"
            return f"{where} (quality: {listed(group['_quality'])[1]})"

        wide, dropped = _duplicates(wide, ["batch_id", "time"], [*tags, *quality], clash)
        if dropped:
            logger.warning(
                "series: %d exact duplicate row(s) (same batch, time and values) dropped", dropped
            )
        long = wide.melt(
            id_vars=["batch_id", "time", "_row", *quality],
            value_vars=tags,
            var_name="tag",
            value_name="value",
        )
    value = long["value"].to_numpy(dtype=float)
    nan, inf, huge = _bad_values(value)
    report = {
        "rows": len(series),
        "values": len(long),
        "nan": int(nan.sum()),
        "inf": int(inf.sum()),
        "huge": int(huge.sum()),
        "exact_duplicates_dropped": dropped,
    }
    _log_bad_values("series", report, "kept as bad-quality samples")
    _log_bad_by_column(
        "series tag" if tag_col is not None else "series column",
        long["tag"].to_numpy(),
        value,
        long["_row"].to_numpy(),
        "kept as bad-quality samples",
    )
    long["value"] = np.where(inf | huge, np.nan, value)
    start = long.groupby("batch_id")["time"].transform("min")
    delta = long["time"] - start
    long["t_h"] = delta.dt.total_seconds() / 3600 if is_dt else delta.astype(float)
    long["align_h"] = long["t_h"]
    bad = nan | inf | huge
    if quality_col is not None:
        q = long["_quality"]
        good = (
            q.astype(bool)
            if pd.api.types.is_bool_dtype(q)
            else q.astype(str).str.lower().eq("good")
        )
        bad |= ~good.to_numpy()
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
    known = set(out.index)
    unknown = [b for b in pd.unique(samples["batch_id"]) if b not in known]
    if unknown:
        logger.warning("series: %d batches have no outcome row (scored only)", len(unknown))
        out = pd.concat([out, pd.DataFrame(index=pd.Index(unknown, name="batch_id"))])
    first = long.groupby("batch_id")["time"].min()
    # numbers that start every batch at the same value are hours since each batch's start:
    # they order samples within a batch, not batches
    time_ordered = is_dt or len(first) < 2 or first.nunique() > 1
    if time_ordered:
        out["order"] = first.reindex(out.index)
        if is_dt:
            out["order"] = out["order"].map(lambda t: t.timestamp() if pd.notna(t) else np.nan)
    else:
        logger.info(
            "series.%s: every batch starts at time %s (time since each batch's own start), so "
            "nothing orders the batches in time; 'order' is the outcomes table's row order "
            "(time_ordered=False)",
            time_col,
            _show(first.iloc[0]),
        )
        out["order"] = np.arange(len(out), dtype=float)
    result = pd.DataFrame(index=out.index)
    result["order"] = out["order"].astype(float)
    result["label"] = (
        pd.Series(pd.NA, index=out.index, dtype="boolean")
        if label_col is None
        else _labels_allow_missing(out[label_col], f"outcomes.{label_col}")
    )
    result["dev_class"] = None if class_col is None else out[class_col].astype("string")
    for col in cqa_cols:
        _must_be_numbers(
            out[col].reset_index(drop=True),
            f"outcomes.{col}",
            "CQA values must be numbers",
            ("batch", out.index.to_series().reset_index(drop=True)),
        )
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
        time_ordered=time_ordered,
        input_report=report,
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
TWIN_INPUTS = ("live", "all")


def _plant_maps(config):
    """(unit -> step, (unit, tag) -> signal, unit -> [(asset, hour-meter tag)]).

    How the historian path names what it reads (:mod:`quality.live`): a unit's tags are
    ``<step>.<signal>``, its hour meters ``asset.<step>.<asset>.age_h``.
    """
    step_of_class = {s.unit_class: s.name for s in config.recipe.steps}
    unit_step, signal_of, meters = {}, {}, {}
    for unit in config.units:
        spec = config.unit_classes[unit.unit_class]
        unit_step[unit.id] = step_of_class.get(unit.unit_class)
        for s in spec.signals:
            signal_of[(unit.id, s.tag.format(n=unit.loop_number))] = s.name
        meters[unit.id] = [
            (
                a.name,
                next(s.tag for s in spec.signals if s.name == f"{a.name}_hours").format(
                    n=unit.loop_number
                ),
            )
            for a in spec.assets
        ]
    return unit_step, signal_of, meters


def live_tags(config=None) -> set[str]:
    """The trajectories the historian path (:mod:`quality.live`) can build for a batch.

    ``<step>.<signal>`` of every signal of every unit of the plant configuration that
    belongs to a recipe step (setpoints and hour meters aside), and
    ``asset.<step>.<asset>.age_h`` of every asset with an hour meter.

    Parameters
    ----------
    config : twin.config.PlantConfig, optional
        The plant whose OPC UA tags the historian stores (default: the shipped plant, as
        ``biotwin score`` uses).
    """
    if config is None:
        from twin.config import load_config

        config = load_config()
    unit_step, signal_of, meters = _plant_maps(config)
    tags = {
        f"{unit_step[unit]}.{signal}"
        for (unit, _), signal in signal_of.items()
        if unit_step.get(unit) and not signal.endswith(SKIP_SIGNALS)
    }
    tags |= {
        f"asset.{unit_step[unit]}.{asset}.age_h"
        for unit, pairs in meters.items()
        if unit_step.get(unit)
        for asset, _ in pairs
    }
    return tags


def batch_history_from_twin(
    run_dir: str | Path,
    bin_h: float = 1.0,
    *,
    inputs: str = "live",
    config=None,
    scheduler: str | None = None,
) -> BatchHistory:
    """Batch history from ``biotwin simulate`` output (see docs/data-contracts.md).

    Each tag is named ``step.signal`` (``production.do``), aligned on hours since the batch
    entered that step; setpoints are left out. Equipment age (hours since the asset's last
    renewal, from the daily wear snapshots) enters as ``asset.<step>.<name>.age_h`` series
    on batch time, so a prediction sees the age known at its cut-off. Labels are
    ``any_oos or n_deviations > 0`` for dispositioned batches; lost batches count as
    deviations; batches in progress have no label.

    Parameters
    ----------
    run_dir : str or Path
        Twin output directory.
    bin_h : float
        Bin width in hours.
    inputs : {"live", "all"}
        ``"live"`` (default): only the inputs the historian path of :mod:`quality.live`
        gives a batch at scoring time, so that a model trained on this history scores the
        plant without missing inputs: the tags of :func:`live_tags` and the context of
        :data:`LIVE_CONTEXT` (the production unit; the historian holds no raw-material lot
        attributes, OPC UA does not carry them). ``"all"``: also the twin's lot attributes
        (media potency, glucose purity, squalene peroxide) as context, for benchmarks and
        for scoring twin output with a model that was trained on them.
    config : twin.config.PlantConfig, optional
        With ``inputs="live"``: the plant whose tags the historian stores (default: the
        shipped plant).
    scheduler : str, optional
        A Dask scheduler address (or ``$DASK_SCHEDULER_ADDRESS``) on whose workers each
        unit's signal file is binned, one task per unit (the workers must see
        ``run_dir``); the same history as in this process.

    Raises
    ------
    InputError
        A file of the twin output is missing, or ``inputs`` is neither ``"live"`` nor
        ``"all"``.
    """
    if inputs not in TWIN_INPUTS:
        raise InputError(f"inputs: must be 'live' or 'all'; got {inputs!r}")
    run_dir = Path(run_dir)
    for name in ("batches.parquet", "phases.parquet", "tags.parquet", "signals"):
        if not (run_dir / name).exists():
            raise InputError(f"twin output: {name} is missing in {str(run_dir)!r}")
    if resolve_scheduler(scheduler) is None:
        bins = _twin_bins(run_dir, bin_h)
    else:
        with fold_pool(scheduler) as pool:
            logger.info("binning the twin's unit files on the %s", pool.where)
            bins = _twin_bins(run_dir, bin_h, pool)
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
    context = list(TWIN_CONTEXT)
    if inputs == "live":
        served = live_tags(config)
        absent = sorted(set(bins["tag"].unique()) - served)
        if absent:
            logger.info(
                "twin history for live scoring: %d tags the historian does not hold are left "
                "out (%s)",
                len(absent),
                ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else ""),
            )
            bins = bins[bins["tag"].isin(served)].reset_index(drop=True)
        names = {t: n for t, n in names.items() if t in served}
        context = [c for c in TWIN_CONTEXT if c in LIVE_CONTEXT]

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
    for col in context:
        out[col] = batches[col]
    out["onset_h"] = _first_onset_h(run_dir, batches)
    duration = (batches["filled_time"] - batches["start_time"]).dt.total_seconds() / 3600
    return BatchHistory(
        bins=bins,
        outcomes=out,
        bin_h=bin_h,
        cqa_cols=list(TWIN_CQAS),
        context_cols=context,
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


def _twin_bins(run_dir: Path, bin_h: float, pool=None) -> pd.DataFrame:
    """Bin each unit's signals by the batch and step the unit held (numpy, one unit at a time).

    A unit holds one batch at a time, so each sample is assigned to the step interval that
    started last before it (a sorted search), if the interval has not ended. Each unit's
    file is one task (:func:`_unit_bins`): in this process, or on the cluster of ``pool``
    (:mod:`quality.folds`), the parts put together in unit order either way.
    """
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
    payloads = [
        (str(run_dir / "signals" / f"{unit}.parquet"), iv.sort_values("s"), signal, bin_h)
        for unit, iv in steps.groupby("unit", sort=True)
        if (run_dir / "signals" / f"{unit}.parquet").exists()
    ]
    parts = [p for p in run_folds(pool, _unit_bins, payloads) if p is not None]
    if not parts:
        return pd.DataFrame(columns=BIN_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def _unit_bins(payload: tuple) -> pd.DataFrame | None:
    """One unit's signal file binned by the step intervals ``iv`` it held (None: no sample
    falls in one). A task of :func:`_twin_bins`."""
    import pyarrow.parquet as pq

    path, iv, signal, bin_h = payload
    ms = 3_600_000.0
    s0, e0, b0 = _ms(iv["s"]), _ms(iv["e"]), _ms(iv["b0"])
    table = pq.read_table(path, columns=["time", "tag", "value", "quality"])
    time = table.column("time").cast("int64").to_numpy()
    idx = np.searchsorted(s0, time, side="right") - 1
    keep = (idx >= 0) & (time < e0[np.maximum(idx, 0)])
    if not keep.any():
        return None
    idx, time = idx[keep], time[keep]
    tag_codes, tag_names = _codes(table.column("tag"))
    q_codes, q_names = _codes(table.column("quality"))
    value = table.column("value").to_numpy()[keep]
    good_code = q_names.index("good") if "good" in q_names else -1
    bad = (q_codes[keep] != good_code) | np.isnan(value)
    # setpoints carry no information; hour meters enter as asset ages (asset.* series)
    setpoint = np.array([signal.get(t, "").endswith(SKIP_SIGNALS) for t in tag_names] + [True])
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
    return out[BIN_COLUMNS]


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
    categorical : list of str
        Sensor columns that are categories.
    input_report : dict
        What the door found in a user table (empty otherwise): ``rows``, ``values`` (sensor
        values checked), ``nan`` (kept missing), ``inf`` and ``huge`` (beyond 1e15 in
        magnitude; both set to missing) and ``exact_duplicates_dropped`` (always 0: a
        repeated asset and time is refused).
    """

    rows: pd.DataFrame
    sensors: list[str]
    time_is_datetime: bool
    categorical: list[str] = field(default_factory=list)
    input_report: dict = field(default_factory=dict)


def _finish_runs(
    rows: pd.DataFrame,
    sensors: list[str],
    is_dt: bool,
    categorical=(),
    input_report: dict | None = None,
) -> RunHistory:
    rows = rows.sort_values(["run", "t"]).reset_index(drop=True)
    end_t = rows.groupby("run")["t"].transform("max")
    rows["failed_run"] = rows.groupby("run")["failure"].transform("any")
    rows["rul"] = end_t - rows["t"]
    return RunHistory(
        rows=rows,
        sensors=sensors,
        time_is_datetime=is_dt,
        categorical=list(categorical),
        input_report=dict(input_report or {}),
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

    Time is timestamps (years 1970-2200) or numbers (hours or cycles; negative allowed)
    below 1e9 in magnitude and spanning at most 1e7. Missing sensor values stay missing (the
    models handle them); infinite values and values beyond 1e15 in magnitude are set to
    missing. Both are counted in ``input_report`` and logged as a warning.

    Raises
    ------
    InputError
        Missing columns, non-numeric sensors, missing or implausible times, duplicated
        (asset, time) rows or too few runs.
    """
    _require(table, [asset_col, time_col], "runs")
    if failure_col is not None:
        _require(table, [failure_col], "runs")
    if len(table) == 0:
        raise InputError("runs: the table has no rows")
    table = table.reset_index(drop=True)
    asset = table[asset_col].astype(str)
    times, is_dt = _hours(table[time_col], f"runs.{time_col}", asset, "asset")
    t = times.map(lambda x: x.timestamp() / 3600) if is_dt else times
    skip = {asset_col, time_col, failure_col}
    if sensor_cols is None:
        sensor_cols = [c for c in table.columns if c not in skip]
    _require(table, list(sensor_cols), "runs")
    for col in sensor_cols:
        _must_be_numbers(
            table[col], f"runs.{col}", "sensor columns must be numeric", ("asset", asset)
        )
    rows = pd.DataFrame({"asset": asset, "t": t.astype(float)})
    dup = rows.duplicated(["asset", "t"]).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise InputError(
            f"runs.{time_col}: one row per asset and time; asset {rows['asset'].iloc[i]!r} "
            f"repeats time {_show_time(table[time_col], times, i, is_dt)}"
        )
    report = {"rows": len(table), "values": 0, "nan": 0, "inf": 0, "huge": 0}
    for col in sensor_cols:
        values = table[col].astype(float).to_numpy()
        nan, inf, huge = _bad_values(values)
        report["values"] += len(values)
        report["nan"] += int(nan.sum())
        report["inf"] += int(inf.sum())
        report["huge"] += int(huge.sum())
        rows[col] = np.where(inf | huge, np.nan, values)
    report["exact_duplicates_dropped"] = 0
    fate = "NaN kept missing, inf and huge set to missing"
    _log_bad_values("runs", report, fate)
    if report["nan"] or report["inf"] or report["huge"]:
        n = len(table)
        _log_bad_by_column(
            "runs column",
            np.repeat(np.asarray(sensor_cols, dtype=object), n),
            np.concatenate([table[c].astype(float).to_numpy() for c in sensor_cols]),
            np.tile(np.arange(n), len(sensor_cols)),
            fate,
        )
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
    return _finish_runs(rows, list(sensor_cols), is_dt, input_report=report)


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
