"""Trends of historian tags, as a PI Vision user reads them, computed without Streamlit.

- :func:`local_tz`: the plant's time zone ($BIOTWIN_TZ, else the machine's);
- :func:`tag_catalog` and :func:`find_tags`: tags with human labels, found by unit or by a
  piece of their name or description;
- :func:`time_window`: a preset ("Last 24 h") or a custom local range as UTC bounds;
- :func:`trend_data`: the samples of a few tags over a range, downsampled in DuckDB to the
  minimum and maximum of each time bucket (at their own times, so spikes survive), with
  uncertain and bad samples apart (shown, never dropped) and the gaps in the data;
- :func:`data_gaps`: where a tag's samples stop for longer than its usual interval (DuckDB);
- :func:`freshness`: "live, 4 s ago" or "stale since ...", from the historian's last commit;
- :func:`envelope_tags`, :func:`envelope_batches`, :func:`overlay_trajectory`,
  :func:`overlay_envelope`: one tag of a batch in batch hours against the golden envelope
  (through :mod:`dashboard.envelope`).

Times leave this module tz-aware in the plant's zone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from connectors.historian import Historian
from dashboard.envelope import golden_envelope, production_tags, trajectory
from dashboard.localtime import plant_tz, tz_name
from dashboard.whatif import batch_outcomes
from twin.config import PlantConfig

__all__ = [
    "BUCKETS",
    "DASH",
    "GAP_FACTOR",
    "MAX_TAGS",
    "QUALITY_NAMES",
    "TIME_RANGES",
    "Freshness",
    "Trend",
    "data_gaps",
    "duration_text",
    "eng_unit_label",
    "envelope_batches",
    "envelope_tags",
    "find_tags",
    "freshness",
    "local_text",
    "local_tz",
    "overlay_envelope",
    "overlay_trajectory",
    "tag_catalog",
    "time_window",
    "trend_data",
    "tz_name",
]

logger = logging.getLogger(__name__)

MAX_TAGS = 10  # tags on one trend
BUCKETS = 600  # time buckets per trend (about one per two pixels of a wide chart)
GAP_FACTOR = 3.0  # a gap: no sample for more than this many usual intervals
STALE_AFTER_S = 60.0  # no commit for longer: the data are stale (the ingest commits each 0.5 s)
DASH = "—"
TIME_RANGES = {
    "Last 8 h": pd.Timedelta(hours=8),
    "Last 24 h": pd.Timedelta(hours=24),
    "Last 7 days": pd.Timedelta(days=7),
    "Last 30 days": pd.Timedelta(days=30),
}
QUALITY_NAMES = {0: "good", 1: "uncertain", 2: "bad"}
# UNECE Rec. 20 codes of the plant's tags (twin/plant.toml) as engineers write them
ENG_UNITS = {
    "AMP": "A",
    "BAR": "bar",
    "C16": "mm/s",
    "C62": "",  # dimensionless ("one"): pH and ratios
    "CEL": "°C",
    "E32": "L/h",
    "GL": "g/L",
    "GRM": "g",
    "H61": "mS/cm",
    "HUR": "h",
    "KGM": "kg",
    "L2": "L/min",
    "LMH": "L/(m²·h)",
    "LTR": "L",
    "NTU": "NTU",
    "P1": "%",
    "RPM": "rpm",
}


# ---------------------------------------------------------------------- time zone
def local_tz() -> tzinfo:
    """The plant's time zone: $BIOTWIN_TZ (an IANA name), else the machine's
    (:func:`dashboard.localtime.plant_tz`; an unknown name is logged, the machine's used)."""
    return plant_tz()


def local_text(ts, tz: tzinfo | None = None) -> str:
    """``ts`` as "2026-02-12 09:10:20" in the plant's zone; "—" for a missing time."""
    if ts is None or pd.isna(ts):
        return DASH
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
    return ts.tz_convert(tz or local_tz()).strftime("%Y-%m-%d %H:%M:%S")


def duration_text(delta: pd.Timedelta) -> str:
    """A duration in words: "45 s", "12 min", "3.5 h", "2.1 days"."""
    s = delta.total_seconds()
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


# ---------------------------------------------------------------------- tags
def eng_unit_label(code, description: str = "") -> str:
    """The engineering unit as written on an axis: "°C" for CEL, "pH" for a pH tag."""
    if code is None or (isinstance(code, float) and np.isnan(code)) or not str(code).strip():
        return ""
    label = ENG_UNITS.get(str(code), str(code))
    if not label and re.search(r"\bph\b", str(description), re.IGNORECASE):
        return "pH"
    return label


def tag_catalog(tags: pd.DataFrame) -> pd.DataFrame:
    """``Historian.tags()`` with human labels.

    Returns
    -------
    pandas.DataFrame
        tag, unit, description, eng_unit (as shown: "°C"), eu_low, eu_high, first_time,
        last_time, rows and label ("TIC-201.PV · Broth temperature (°C)"), sorted by unit
        and tag; missing texts are "—".
    """
    out = tags.copy()
    for col in ("unit", "description", "eng_unit", "eu_low", "eu_high"):
        if col not in out:
            out[col] = None
    out["description"] = out["description"].fillna(DASH).astype(str)
    out["unit"] = out["unit"].fillna(DASH).astype(str)
    out["eng_unit"] = [
        eng_unit_label(c, d) for c, d in zip(out["eng_unit"], out["description"], strict=True)
    ]
    suffix = out["eng_unit"].map(lambda u: f" ({u})" if u else "")
    out["label"] = out["tag"] + " · " + out["description"] + suffix
    cols = ["tag", "unit", "description", "eng_unit", "eu_low", "eu_high"]
    cols += [c for c in ("first_time", "last_time", "rows") if c in out]
    return out.sort_values(["unit", "tag"]).reset_index(drop=True)[[*cols, "label"]]


def find_tags(catalog: pd.DataFrame, *, unit: str | None = None, text: str = "") -> pd.DataFrame:
    """Tags of ``unit`` (None: every unit) whose name or description contains ``text``
    (case ignored; words in any order)."""
    keep = np.ones(len(catalog), dtype=bool)
    if unit:
        keep &= (catalog["unit"] == unit).to_numpy()
    hay = (catalog["tag"] + " " + catalog["description"]).str.lower()
    for word in text.lower().split():
        keep &= hay.str.contains(word, regex=False).to_numpy()
    return catalog[keep].reset_index(drop=True)


# ---------------------------------------------------------------------- time range
def time_window(
    preset: str | None = None, *, end=None, start_local=None, end_local=None, tz=None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """UTC (start, end) of a preset of :data:`TIME_RANGES` ending at ``end``, or of a custom
    range given as naive local date-times.

    Raises
    ------
    ValueError
        For an unknown preset, or a custom end not after its start.
    """
    tz = tz or local_tz()
    if preset is not None:
        if preset not in TIME_RANGES:
            raise ValueError(f"preset: must be one of {list(TIME_RANGES)}; got {preset!r}")
        stop = pd.Timestamp(end) if end is not None else pd.Timestamp.now(tz="UTC")
        stop = stop.tz_localize("UTC") if stop.tzinfo is None else stop.tz_convert("UTC")
        return stop - TIME_RANGES[preset], stop
    lo, hi = (
        pd.Timestamp(t).tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
        if pd.Timestamp(t).tzinfo is None
        else pd.Timestamp(t)
        for t in (start_local, end_local)
    )
    if hi <= lo:
        raise ValueError(f"end: must be after the start ({lo}); got {hi}")
    return lo.tz_convert("UTC"), hi.tz_convert("UTC")


# ---------------------------------------------------------------------- trend data
@dataclass
class Trend:
    """What a trend chart draws, times in the plant's zone.

    Attributes
    ----------
    lines : pandas.DataFrame
        tag, time, value: good and uncertain samples, per bucket its minimum and maximum at
        their own times; a row with a NaN value where the line must break (a gap, a run of
        bad samples).
    flagged : pandas.DataFrame
        tag, time, value, quality ("uncertain" or "bad"), samples: the samples that are not
        good, per bucket and quality their minimum and maximum; value NaN where a bad sample
        carried none.
    gaps : pandas.DataFrame
        tag, start, end: no sample at all in between (see :func:`data_gaps`).
    bucket : pandas.Timedelta
        The bucket width.
    samples : int
        Samples read.
    """

    lines: pd.DataFrame
    flagged: pd.DataFrame
    gaps: pd.DataFrame
    bucket: pd.Timedelta
    samples: int = 0
    tz: tzinfo = field(default_factory=local_tz)


_GAPS_SQL = """
    WITH s AS (
        SELECT tag, time,
               epoch_us(time) - epoch_us(lag(time) OVER (PARTITION BY tag ORDER BY time)) AS dt
        FROM rows),
    step AS (SELECT tag, median(dt) AS step FROM s WHERE dt IS NOT NULL GROUP BY tag)
    SELECT s.tag, s.time - to_microseconds(s.dt) AS start, s.time AS "end",
           step.step AS step_us
    FROM s JOIN step USING (tag)
    WHERE s.dt > {factor} * step.step AND s.dt >= {min_us}
    ORDER BY s.tag, start"""

_BUCKETS_SQL = """
    WITH d AS (
        SELECT tag, time, value, quality,
               time_bucket(INTERVAL '{us} microseconds', time,
                           TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b
        FROM rows)
    SELECT 'line' AS part, tag, b, count(*) AS n,
           min(value) AS lo, arg_min(time, value) AS t_lo,
           max(value) AS hi, arg_max(time, value) AS t_hi
    FROM d WHERE quality <= 1 AND NOT isnan(value) GROUP BY tag, b
    UNION ALL
    SELECT CASE WHEN quality = 1 THEN 'uncertain' ELSE 'bad' END AS part, tag, b, count(*) AS n,
           coalesce(min(value) FILTER (WHERE NOT isnan(value)), 'NaN'::DOUBLE) AS lo,
           coalesce(arg_min(time, value) FILTER (WHERE NOT isnan(value)), min(time)) AS t_lo,
           coalesce(max(value) FILTER (WHERE NOT isnan(value)), 'NaN'::DOUBLE) AS hi,
           coalesce(arg_max(time, value) FILTER (WHERE NOT isnan(value)), min(time)) AS t_hi
    FROM d WHERE quality >= 1 GROUP BY ALL"""


def _duck(rows: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("rows", rows)
    return con


def data_gaps(
    rows: pd.DataFrame,
    *,
    factor: float = GAP_FACTOR,
    min_gap: pd.Timedelta | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Gaps in each tag's samples (any quality): consecutive samples further apart than
    ``factor`` times the tag's median interval and at least ``min_gap``.

    Parameters
    ----------
    rows : pandas.DataFrame
        Historian rows (time, tag, ...), e.g. from :meth:`Historian.query`.

    Returns
    -------
    pandas.DataFrame
        tag, start (last sample before), end (first sample after), step (the usual
        interval, a Timedelta); times in UTC.
    """
    own = con is None
    con = _duck(rows[["time", "tag"]]) if own else con
    try:
        min_us = 0 if min_gap is None else int(min_gap / pd.Timedelta(microseconds=1))
        out = con.execute(_GAPS_SQL.format(factor=float(factor), min_us=min_us)).df()
    finally:
        if own:
            con.close()
    out["step"] = pd.to_timedelta(out.pop("step_us"), unit="us")
    for col in ("start", "end"):
        out[col] = pd.to_datetime(out[col], utc=True)
    return out


def _points(parts: pd.DataFrame) -> pd.DataFrame:
    """Bucket rows (t_lo, lo, t_hi, hi) as points in time order, one where lo is hi."""
    lo = parts[["tag", "t_lo", "lo", "n"]].set_axis(["tag", "time", "value", "n"], axis=1)
    hi = parts[["tag", "t_hi", "hi", "n"]].set_axis(["tag", "time", "value", "n"], axis=1)
    pts = pd.concat([lo, hi], ignore_index=True).drop_duplicates(["tag", "time"])
    return pts.sort_values(["tag", "time"], kind="stable").reset_index(drop=True)


def _with_breaks(lines: pd.DataFrame, gaps: pd.DataFrame, bucket: pd.Timedelta) -> pd.DataFrame:
    """A NaN row inside every gap and wherever the line's points are further apart than a
    gap of their tag (e.g. a run of bad samples), so plotly breaks the line there."""
    breaks = [gaps.assign(time=gaps["start"] + (gaps["end"] - gaps["start"]) / 2)[["tag", "time"]]]
    steps = gaps.groupby("tag")["step"].first()
    for tag, pts in lines.groupby("tag", sort=False):
        if len(pts) < 2:
            continue
        times = pts["time"].reset_index(drop=True)
        dt = times.diff().iloc[1:]
        step = steps.get(tag, dt.median())
        limit = max(GAP_FACTOR * step, 2.5 * bucket)
        wide = dt[dt > limit].index
        if len(wide):
            mid = (
                times[wide - 1].to_numpy()
                + (times[wide].to_numpy() - times[wide - 1].to_numpy()) / 2
            )
            breaks.append(pd.DataFrame({"tag": tag, "time": mid}))
    extra = pd.concat(breaks, ignore_index=True)
    if extra.empty:
        return lines
    extra["time"] = pd.to_datetime(extra["time"], utc=True)
    extra["value"] = np.nan
    extra["n"] = 0
    out = pd.concat([lines, extra], ignore_index=True).drop_duplicates(["tag", "time"])
    return out.sort_values(["tag", "time"], kind="stable").reset_index(drop=True)


def trend_data(
    historian: Historian,
    tags,
    start,
    end,
    *,
    buckets: int = BUCKETS,
    tz: tzinfo | None = None,
) -> Trend:
    """The samples of ``tags`` in [start, end), downsampled in DuckDB for a chart.

    The range is cut into ``buckets`` equal time buckets (aligned on the epoch); per tag
    and bucket the good and uncertain samples give two points, the minimum and the maximum
    at the times they occurred, so a spike or a dip is never averaged away. Uncertain and
    bad samples are returned apart (:attr:`Trend.flagged`, downsampled the same way) to be
    drawn as markers; gaps in the samples break the line.

    Raises
    ------
    ValueError
        If more than :data:`MAX_TAGS` tags are asked for, or ``buckets`` < 1.
    connectors.historian.HistorianError
        For an empty tag list or end <= start.
    """
    tags = [tags] if isinstance(tags, str) else list(tags)
    if len(tags) > MAX_TAGS:
        raise ValueError(f"tags: at most {MAX_TAGS} on one trend; got {len(tags)}")
    if buckets < 1:
        raise ValueError(f"buckets: must be >= 1; got {buckets}")
    tz = tz or local_tz()
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    rows = historian.query(tags, start, end)
    bucket = max((end - start) / buckets, pd.Timedelta(seconds=1)).ceil("s")
    us = int(bucket / pd.Timedelta(microseconds=1))
    con = _duck(rows[["time", "tag", "value", "quality"]])
    try:
        parts = con.execute(_BUCKETS_SQL.format(us=us)).df()
        gaps = data_gaps(rows, con=con)
    finally:
        con.close()
    for col in ("t_lo", "t_hi"):
        parts[col] = pd.to_datetime(parts[col], utc=True)
    lines = _points(parts[parts["part"] == "line"])
    lines = _with_breaks(lines, gaps, bucket)[["tag", "time", "value"]]
    flagged = parts[parts["part"] != "line"]
    flagged = pd.concat(
        [_points(flagged[flagged["part"] == q]).assign(quality=q) for q in ("uncertain", "bad")],
        ignore_index=True,
    ).rename(columns={"n": "samples"})
    for frame in (lines, flagged):
        frame["time"] = frame["time"].dt.tz_convert(tz)
    for col in ("start", "end"):
        gaps[col] = gaps[col].dt.tz_convert(tz)
    return Trend(
        lines=lines.reset_index(drop=True),
        flagged=flagged[["tag", "time", "value", "quality", "samples"]].reset_index(drop=True),
        gaps=gaps[["tag", "start", "end", "step"]],
        bucket=bucket,
        samples=len(rows),
        tz=tz,
    )


# ---------------------------------------------------------------------- freshness
@dataclass(frozen=True)
class Freshness:
    """How recent the historian's data are (:func:`freshness`)."""

    live: bool
    text: str
    last_write: pd.Timestamp | None = None
    newest_sample: pd.Timestamp | None = None


def freshness(
    historian: Historian,
    tags: pd.DataFrame | None = None,
    *,
    now=None,
    stale_after_s: float = STALE_AFTER_S,
    tz: tzinfo | None = None,
) -> Freshness:
    """ "live, 4 s ago" when the historian committed rows within ``stale_after_s`` of
    ``now`` (default: the wall clock), else "stale since <local date-time of the last
    commit>"; "no data" for an empty historian.

    The age is that of the newest committed segment file, not of the newest source
    timestamp: a replayed or accelerated twin stamps samples with its own clock.
    ``tags``: ``historian.tags()`` if already read (for the newest sample's time).
    """
    tz = tz or local_tz()
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    files = list(Path(historian.segments).glob("date=*/*.parquet"))
    if not files:
        return Freshness(False, "no data in the historian yet")
    mtimes = []
    for f in files:
        try:
            mtimes.append(f.stat().st_mtime)
        except FileNotFoundError:  # compacted away meanwhile
            continue
    last_write = pd.Timestamp(max(mtimes), unit="s", tz="UTC") if mtimes else None
    tags = historian.tags() if tags is None else tags
    newest = tags["last_time"].max() if len(tags) else None
    newest = None if newest is None or pd.isna(newest) else pd.Timestamp(newest)
    if last_write is None:
        return Freshness(False, "no data in the historian yet", None, newest)
    age = (now - last_write).total_seconds()
    if age <= stale_after_s:
        return Freshness(True, f"live, {max(age, 0):.0f} s ago", last_write, newest)
    return Freshness(False, f"stale since {local_text(last_write, tz)}", last_write, newest)


# ---------------------------------------------------------------------- batch overlay
def envelope_tags(config: PlantConfig) -> dict[str, tuple[str, str]]:
    """{tag: (unit, signal)} of the production bioreactors: the tags with a golden
    envelope (batches line up there by batch time)."""
    signals = {s.name for spec in config.unit_classes.values() for s in spec.signals}
    return {
        tag: (unit, signal)
        for unit, tags in production_tags(config, tuple(signals)).items()
        for tag, signal in tags.items()
    }


def envelope_batches(store: Path, ctx: pd.DataFrame, pick: str) -> tuple[tuple[str, ...], str]:
    """The batches the envelope is drawn from, and how to say it: those that ended good
    (outcomes of the store), else every other batch (said so)."""
    outcomes = batch_outcomes(store)
    good = outcomes.loc[outcomes["good"].astype(bool), "batch_id"]
    good = tuple(sorted(set(good) - {pick}))
    if good:
        return good, f"{len(good)} batches that ended good"
    others = tuple(sorted(set(ctx["batch_id"].dropna()) - {pick}))
    return others, f"{len(others)} other batches (no outcomes known, so not only good ones)"


def _envelope_signal(config: PlantConfig, tag: str) -> tuple[str, str]:
    known = envelope_tags(config)
    if tag not in known:
        raise ValueError(
            f"tag: must be a tag of a production bioreactor (the envelope is by batch time "
            f"there); got {tag!r}"
        )
    return known[tag]


def overlay_trajectory(
    historian: Historian, config: PlantConfig, batch_id: str, tag: str
) -> pd.DataFrame:
    """One production bioreactor tag of a batch in batch hours
    (:func:`dashboard.envelope.trajectory`).

    Returns
    -------
    pandas.DataFrame
        unit, tag, phase, batch_time_h, time, value, quality; empty if the batch did not
        run on the tag's unit.

    Raises
    ------
    ValueError
        If ``tag`` is not a production bioreactor tag (no envelope exists for it).
    """
    _, signal = _envelope_signal(config, tag)
    traj = trajectory(historian, config, batch_id, signals=(signal,))
    return traj[traj["tag"] == tag].drop(columns="signal").reset_index(drop=True)


def overlay_envelope(
    historian: Historian, config: PlantConfig, tag: str, batch_ids
) -> pd.DataFrame:
    """The golden envelope of ``tag``'s signal over ``batch_ids``
    (:func:`dashboard.envelope.golden_envelope`): batch_time_h, lo, median, hi, n.

    Raises
    ------
    ValueError
        If ``tag`` is not a production bioreactor tag.
    """
    _, signal = _envelope_signal(config, tag)
    band = golden_envelope(historian, config, batch_ids, signals=(signal,))
    return band.drop(columns="signal").reset_index(drop=True)
