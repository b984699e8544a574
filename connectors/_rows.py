"""What the historian stores: the row, tag and batch context schemas, and their validation.

Every refusal is a :class:`HistorianError` naming the column, the rule and the first
offending value with its row, and nothing is written then.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "BATCH_SCHEMA",
    "FLAG_BACKFILLED",
    "FLAG_BAD_STATUS",
    "FLAG_NAN",
    "FLAG_OUT_OF_RANGE",
    "FLAG_OVERFLOW",
    "QUALITY_CODES",
    "ROW_SCHEMA",
    "TAG_SCHEMA",
    "HistorianError",
    "as_frame",
    "as_time",
    "check_tags",
    "context_row",
    "empty",
    "quality_from_status",
    "require",
    "validate_batch_context",
    "validate_rows",
]

FLAG_NAN = 1
FLAG_OUT_OF_RANGE = 2
FLAG_BAD_STATUS = 4
FLAG_OVERFLOW = 8
FLAG_BACKFILLED = 16

#: The twin's quality categories and their codes in the historian's ``quality`` column.
QUALITY_CODES = {"good": 0, "uncertain": 1, "bad": 2}

ROW_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),
        ("tag", pa.string()),
        ("value", pa.float64()),
        ("status", pa.uint32()),
        ("quality", pa.uint8()),
        ("flags", pa.uint8()),
    ]
)
TAG_SCHEMA = pa.schema(
    [
        ("tag", pa.string()),
        ("node_id", pa.string()),
        ("unit", pa.string()),
        ("eng_unit", pa.string()),
        ("description", pa.string()),
        ("eu_low", pa.float64()),
        ("eu_high", pa.float64()),
    ]
)
BATCH_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("unit", pa.string()),
        ("recipe", pa.string()),
        ("phase", pa.string()),
        ("state", pa.string()),
        ("start_time", pa.timestamp("us", tz="UTC")),
        ("end_time", pa.timestamp("us", tz="UTC")),
    ]
)


class HistorianError(ValueError):
    """Rows, metadata or a query the historian refuses; the message names field, rule, value."""


def quality_from_status(status) -> np.ndarray:
    """OPC UA StatusCode severity (top two bits) to 0 good, 1 uncertain, 2 bad.

    Parameters
    ----------
    status : array-like of int
        StatusCode values (uint32).

    Returns
    -------
    numpy.ndarray of uint8
    """
    severity = np.asarray(status, dtype=np.uint32) >> np.uint32(30)
    return np.where(severity == 0, 0, np.where(severity == 1, 1, 2)).astype(np.uint8)


def as_time(value, field: str) -> pd.Timestamp | None:
    """A query bound as a UTC timestamp (a naive one is taken as UTC)."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise HistorianError(f"{field}: must be a timestamp; got {value!r}") from None
    if ts is pd.NaT:
        raise HistorianError(f"{field}: must be a timestamp; got {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def empty(schema: pa.Schema) -> pd.DataFrame:
    """A DataFrame with the schema's columns and dtypes, and no rows."""
    return schema.empty_table().to_pandas()


def as_frame(rows, what: str) -> pd.DataFrame:
    """``rows`` as a DataFrame (from a DataFrame or an Arrow table)."""
    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, pa.Table):
        return rows.to_pandas()
    raise HistorianError(f"{what}: must be a pandas DataFrame or an Arrow table; got {type(rows)}")


def require(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise :class:`HistorianError` naming the first of ``columns`` missing from ``frame``."""
    for col in columns:
        if col not in frame.columns:
            raise HistorianError(
                f"{what}.{col}: required column is missing; got columns {list(frame.columns)}"
            )


def _first_bad(series: pd.Series, bad: np.ndarray) -> str:
    i = int(np.flatnonzero(bad)[0])
    value = series.iloc[i]
    return f"{value.item() if isinstance(value, np.generic) else value!r} (row {i})"


def _check_times(series: pd.Series, field: str) -> pd.Series:
    """Timezone-aware timestamps, returned in UTC at microsecond precision."""
    if not pd.api.types.is_datetime64_any_dtype(series):
        series = _parse_times(series, field)
    if getattr(series.dt, "tz", None) is None:
        raise HistorianError(
            f"{field}: must be timezone-aware (UTC source timestamps); got naive "
            f"{series.iloc[0] if len(series) else series.dtype}"
        )
    missing = series.isna().to_numpy()
    if missing.any():
        raise HistorianError(f"{field}: must not be missing; got {_first_bad(series, missing)}")
    return series.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def _parse_times(series: pd.Series, field: str) -> pd.Series:
    """Timestamps from objects or ISO strings; naive and aware ones may not mix."""
    for i, v in enumerate(series):
        if isinstance(v, str) or v is None or v is pd.NaT:
            continue
        if not hasattr(v, "year"):
            raise HistorianError(f"{field}: must be timestamps; got {v!r} (row {i})")
        if v.tzinfo is None:
            raise HistorianError(
                f"{field}: must be timezone-aware (UTC source timestamps); got naive {v} (row {i})"
            )
    try:
        return pd.to_datetime(series, utc=True) if len(series) else series.astype("M8[us, UTC]")
    except (TypeError, ValueError) as exc:
        raise HistorianError(
            f"{field}: must be timestamps; got {series.iloc[0]!r} ({exc})"
        ) from None


def check_tags(series: pd.Series, field: str) -> pa.Array:
    """Non-empty strings, as an Arrow string array (vectorised unless the dtype is object)."""
    if series.dtype == object or not pd.api.types.is_string_dtype(series):
        not_text = ~series.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if not_text.any():
            raise HistorianError(f"{field}: must be a string; got {_first_bad(series, not_text)}")
        array = pa.array(series.to_numpy(dtype=object), pa.string())
    else:
        array = pa.array(series).cast(pa.string())
        if array.null_count:
            missing = series.isna().to_numpy()
            raise HistorianError(f"{field}: must be a string; got {_first_bad(series, missing)}")
    empty = pc.equal(pc.utf8_trim_whitespace(array), "").to_numpy(zero_copy_only=False)
    if empty.any():
        raise HistorianError(f"{field}: must be a non-empty name; got {_first_bad(series, empty)}")
    return array


def _check_values(series: pd.Series, field: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype="float64", na_value=np.nan)
    text = series.map(lambda v: isinstance(v, str | bytes)).to_numpy(dtype=bool)
    if text.any():
        raise HistorianError(f"{field}: must be a number; got {_first_bad(series, text)}")
    try:
        return pd.to_numeric(series, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        bad = series.map(lambda v: not _is_number(v)).to_numpy(dtype=bool)
        raise HistorianError(f"{field}: must be a number; got {_first_bad(series, bad)}") from None


def _check_codes(series: pd.Series, field: str, high: int, dtype) -> np.ndarray:
    """Integers in [0, high] (a code, a bitmask)."""
    if not (pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series)):
        values = pd.to_numeric(series, errors="coerce")
        bad = (values.isna() | (values != values.round())).to_numpy(dtype=bool)
        if bad.any():
            raise HistorianError(f"{field}: must be an integer; got {_first_bad(series, bad)}")
        series = values.astype("int64")
    values = series.to_numpy(dtype="int64")
    bad = (values < 0) | (values > high)
    if bad.any():
        raise HistorianError(f"{field}: must be within [0, {high}]; got {_first_bad(series, bad)}")
    return values.astype(dtype)


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def validate_rows(rows: pd.DataFrame | pa.Table) -> pa.Table:
    """Check historian rows and complete them to :data:`ROW_SCHEMA`.

    ``status``, ``quality`` and ``flags`` may be omitted (Good, no flags); ``quality`` is
    derived from ``status`` when only the latter is given. NaN values get ``FLAG_NAN``,
    non-good qualities ``FLAG_BAD_STATUS``.

    Raises
    ------
    HistorianError
        Naming the column, the rule and the first offending value.
    """
    frame = as_frame(rows, "rows")
    require(frame, ("time", "tag", "value"), "rows")
    time = _check_times(frame["time"], "rows.time")
    tag = check_tags(frame["tag"], "rows.tag")
    value = _check_values(frame["value"], "rows.value")
    n = len(frame)
    status = (
        _check_codes(frame["status"], "rows.status", 0xFFFFFFFF, np.uint32)
        if "status" in frame.columns
        else np.zeros(n, np.uint32)
    )
    quality = (
        _check_codes(frame["quality"], "rows.quality", 2, np.uint8)
        if "quality" in frame.columns
        else quality_from_status(status)
    )
    flags = (
        _check_codes(frame["flags"], "rows.flags", 255, np.uint8)
        if "flags" in frame.columns
        else np.zeros(n, np.uint8)
    )
    flags = flags | np.where(np.isnan(value), FLAG_NAN, 0).astype(np.uint8)
    flags |= np.where(quality > 0, FLAG_BAD_STATUS, 0).astype(np.uint8)
    return pa.table(
        [
            pa.array(time.array, type=ROW_SCHEMA.field("time").type),
            tag,
            pa.array(value, type=pa.float64()),
            pa.array(status, type=pa.uint32()),
            pa.array(quality, type=pa.uint8()),
            pa.array(flags, type=pa.uint8()),
        ],
        schema=ROW_SCHEMA,
    )


def validate_batch_context(rows) -> pa.Table:
    frame = as_frame(rows, "batch context").copy()
    require(frame, ("unit", "state", "start_time"), "batch context")
    for name in BATCH_SCHEMA.names:
        if name not in frame.columns:
            frame[name] = None
    check_tags(frame["unit"], "batch context.unit")
    check_tags(frame["state"], "batch context.state")
    frame["start_time"] = _check_times(frame["start_time"], "batch context.start_time")
    end = frame["end_time"]
    if end.notna().any():
        closed = _check_times(end[end.notna()], "batch context.end_time")
        early = (closed < frame.loc[closed.index, "start_time"]).to_numpy()
        if early.any():
            raise HistorianError(
                "batch context.end_time: must not be before start_time; got "
                + _first_bad(closed, early)
            )
    frame["end_time"] = pd.to_datetime(end, utc=True).astype("datetime64[us, UTC]")
    return pa.Table.from_pandas(
        frame[BATCH_SCHEMA.names], schema=BATCH_SCHEMA, preserve_index=False
    )


def context_row(unit: str, cur: dict) -> dict:
    """A batch context row (:data:`BATCH_SCHEMA`, without ``end_time``) of ``unit`` from its
    current context values (``BatchId``, ``Recipe``, ``Phase``, ``State``, ``start_time``)."""
    return {
        "batch_id": cur.get("BatchId") or None,
        "unit": unit,
        "recipe": cur.get("Recipe") or None,
        "phase": cur.get("Phase") or None,
        "state": cur.get("State") or "unknown",
        "start_time": cur["start_time"],
    }
