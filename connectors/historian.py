"""The embedded historian: append-only Parquet segments, queried with DuckDB.

Layout under the historian's root (``DATA_DIR/historian``)::

    segments/date=YYYY-MM-DD/seg-<ns>-<pid>-<n>.parquet   time series rows, one day each
    batches/seg-<ns>-<pid>-<n>.parquet                     batch context rows
    tags.parquet                                           tag metadata

Why this design (see docs/historian.md):

- **Readers in other processes while one writes.** A DuckDB database file takes a lock that
  a second process cannot share; Parquet files can be read by any number of processes.
  Each reader opens its own in-memory DuckDB connection over the segment files.
- **Crash safety.** A segment is written to ``<name>.tmp``, flushed with ``fsync`` and
  renamed into place (``os.replace`` is atomic on POSIX). A reader lists only ``*.parquet``,
  so it never sees a partial file; a ``kill -9`` mid-write leaves a ``.tmp`` file that the
  next writer removes once its process is gone. Committed segments are never modified.
- **No duplicates.** The key is (tag, time). Queries keep the first committed row of a key,
  so a retried append (store-and-forward), a backfill that overlaps, or a compaction caught
  half-way never shows a row twice.
- **Fast ranges.** Segments are partitioned by UTC day, so a 24-hour query opens two days
  of files, whatever the size of the history. :meth:`Historian.compact` merges a day's
  small segments into one sorted file (written and renamed first, small ones deleted
  after: in between, de-duplication hides the overlap).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import threading
import time as _time
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "BATCH_SCHEMA",
    "FLAG_BACKFILLED",
    "FLAG_BAD_STATUS",
    "FLAG_NAN",
    "FLAG_OUT_OF_RANGE",
    "FLAG_OVERFLOW",
    "ROW_SCHEMA",
    "TAG_SCHEMA",
    "Historian",
    "HistorianError",
    "quality_from_status",
]

logger = logging.getLogger(__name__)

FLAG_NAN = 1
FLAG_OUT_OF_RANGE = 2
FLAG_BAD_STATUS = 4
FLAG_OVERFLOW = 8
FLAG_BACKFILLED = 16

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
_OPTIONAL_ROW = {"status": 0, "quality": 0, "flags": 0}
_COUNTER = itertools.count()
_LOCK = threading.Lock()


class HistorianError(ValueError):
    """Rows or a query the historian refuses; the message names field, rule and value."""


def quality_from_status(status) -> np.ndarray:
    """OPC UA StatusCode severity (top two bits) to 0 good, 1 uncertain, 2 bad."""
    s = np.asarray(status, dtype=np.uint32) >> np.uint32(30)
    return np.where(s == 0, 0, np.where(s == 1, 1, 2)).astype(np.uint8)


def _segment_name(prefix: str = "seg") -> str:
    with _LOCK:
        n = next(_COUNTER)
    return f"{prefix}-{_time.time_ns():020d}-{os.getpid()}-{n:06d}.parquet"


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` via ``path.tmp``, fsync, rename (atomic on POSIX)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd", row_group_size=1 << 20)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _as_time(value, field: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise HistorianError(f"{field}: must be a timestamp; got {value!r}") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


class Historian:
    """The store of time series and batch context (see the module docstring).

    Parameters
    ----------
    root : path
        Directory of the historian (created if missing).

    Examples
    --------
    >>> h = Historian(tmp_path / "historian")                        # doctest: +SKIP
    >>> h.append(pd.DataFrame({"time": [pd.Timestamp.now(tz="UTC")],
    ...                        "tag": ["TIC-201.PV"], "value": [37.0]}))  # doctest: +SKIP
    1
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.segments = self.root / "segments"
        self.batches_dir = self.root / "batches"
        self.segments.mkdir(parents=True, exist_ok=True)
        self.batches_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()

    # ------------------------------------------------------------------ writing
    def append(self, rows: pd.DataFrame | pa.Table) -> int:
        """Commit ``rows`` (the row schema of docs/store.md); returns the number stored.

        ``status``, ``quality`` and ``flags`` may be omitted (good, no flags); ``quality``
        is derived from ``status`` when only the latter is given. NaN values are stored and
        flagged. Rows of one call are committed per UTC day, each day atomically.

        Raises
        ------
        HistorianError
            If a column is missing or has the wrong type, or times are not timezone-aware;
            nothing is written then.
        """
        table = self._validate_rows(rows)
        if table.num_rows == 0:
            return 0
        days = pc.strftime(table["time"], format="%Y-%m-%d")
        for day in pc.unique(days).to_pylist():
            part = table.filter(pc.equal(days, day))
            folder = self.segments / f"date={day}"
            folder.mkdir(exist_ok=True)
            _write_atomic(part, folder / _segment_name())
        return table.num_rows

    def _validate_rows(self, rows) -> pa.Table:
        if isinstance(rows, pd.DataFrame):
            frame = rows
        elif isinstance(rows, pa.Table):
            frame = rows.to_pandas()
        else:
            raise HistorianError(f"rows: must be a DataFrame or Arrow table; got {type(rows)}")
        for col in ("time", "tag", "value"):
            if col not in frame.columns:
                raise HistorianError(
                    f"rows.{col}: required column is missing; got columns {list(frame.columns)}"
                )
        frame = frame.copy()
        time = frame["time"]
        if not pd.api.types.is_datetime64_any_dtype(time):
            try:
                time = pd.to_datetime(time)
            except (TypeError, ValueError):
                raise HistorianError(
                    f"rows.time: must be timestamps; got {time.iloc[0]!r}"
                ) from None
        if getattr(time.dt, "tz", None) is None:
            raise HistorianError(
                f"rows.time: must be timezone-aware (UTC source timestamps); got naive "
                f"{time.iloc[0] if len(time) else time.dtype}"
            )
        frame["time"] = time.dt.tz_convert("UTC")
        if frame["tag"].isna().any() or (frame["tag"].astype(str) == "").any():
            raise HistorianError("rows.tag: must be a non-empty name; got an empty tag")
        try:
            frame["value"] = pd.to_numeric(frame["value"], errors="raise").astype("float64")
        except (TypeError, ValueError):
            bad = next(v for v in frame["value"] if not _is_number(v))
            raise HistorianError(f"rows.value: must be a number; got {bad!r}") from None
        if "status" not in frame.columns:
            frame["status"] = 0
        if "quality" not in frame.columns:
            frame["quality"] = quality_from_status(frame["status"].to_numpy())
        if "flags" not in frame.columns:
            frame["flags"] = 0
        flags = frame["flags"].to_numpy().astype(np.uint8)
        flags |= np.where(np.isnan(frame["value"].to_numpy()), FLAG_NAN, 0).astype(np.uint8)
        flags |= np.where(frame["quality"].to_numpy() > 0, FLAG_BAD_STATUS, 0).astype(np.uint8)
        frame["flags"] = flags
        frame["tag"] = frame["tag"].astype(str)
        return pa.Table.from_pandas(
            frame[ROW_SCHEMA.names], schema=ROW_SCHEMA, preserve_index=False
        )

    def upsert_tags(self, meta: pd.DataFrame) -> None:
        """Add or replace tag metadata (by tag), under a file lock, atomically."""
        if "tag" not in meta.columns:
            raise HistorianError(f"meta.tag: required column is missing; got {list(meta.columns)}")
        frame = meta.copy()
        for name in TAG_SCHEMA.names:
            if name not in frame.columns:
                frame[name] = None
        frame = frame[TAG_SCHEMA.names]
        with self._lock("tags"):
            old = self._read_tags()
            merged = pd.concat([old[~old["tag"].isin(frame["tag"])], frame], ignore_index=True)
            table = pa.Table.from_pandas(merged, schema=TAG_SCHEMA, preserve_index=False)
            _write_atomic(table, self.root / "tags.parquet")

    def append_batch_context(self, rows: pd.DataFrame) -> int:
        """Commit batch context rows (an open row has no end_time; close it by appending it
        again with one)."""
        missing = [c for c in ("unit", "state", "start_time") if c not in rows.columns]
        if missing:
            raise HistorianError(f"batch context.{missing[0]}: required column is missing")
        frame = rows.copy()
        for name in BATCH_SCHEMA.names:
            if name not in frame.columns:
                frame[name] = None
        for col in ("start_time", "end_time"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
        table = pa.Table.from_pandas(
            frame[BATCH_SCHEMA.names], schema=BATCH_SCHEMA, preserve_index=False
        )
        if table.num_rows:
            _write_atomic(table, self.batches_dir / _segment_name())
        return table.num_rows

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        with open(self.root / f".{name}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _remove_stale_temporaries(self) -> None:
        for tmp in self.root.rglob("*.parquet.tmp"):
            parts = tmp.name.split("-")
            pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
            if pid is None or not _pid_alive(pid) or pid == os.getpid():
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    logger.warning("removed an unfinished write: %s", tmp)

    # ------------------------------------------------------------------ maintenance
    def compact(self, *, min_files: int = 4, before: pd.Timestamp | None = None) -> int:
        """Merge each day's small segments into one sorted, de-duplicated file.

        Days with fewer than ``min_files`` segments, and (when given) days from ``before``
        on, are left alone. Returns the number of days compacted.
        """
        done = 0
        for folder in sorted(self.segments.glob("date=*")):
            day = folder.name.split("=", 1)[1]
            if before is not None and pd.Timestamp(day, tz="UTC") >= before.floor("D"):
                continue
            files = sorted(folder.glob("*.parquet"))
            if len(files) < min_files:
                continue
            with self._lock(f"compact-{day}"):
                files = sorted(folder.glob("*.parquet"))
                con = duckdb.connect()
                table = con.sql(
                    f"""
                    SELECT time, tag, value, status, quality, flags FROM (
                        SELECT *, row_number() OVER (
                            PARTITION BY tag, time ORDER BY filename) AS k
                        FROM read_parquet({_list(files)}, filename = true,
                                          hive_partitioning = false))
                    WHERE k = 1 ORDER BY tag, time
                    """
                ).to_arrow_table()
                con.close()
                table = table.cast(ROW_SCHEMA)
                # "cmp-0..." sorts before "seg-...": its rows win the de-duplication.
                _write_atomic(table, folder / _segment_name("cmp"))
                for f in files:
                    f.unlink()
            done += 1
        return done

    # ------------------------------------------------------------------ reading
    def _files(self, start: pd.Timestamp | None, end: pd.Timestamp | None) -> list[Path]:
        out = []
        lo = start.strftime("%Y-%m-%d") if start is not None else None
        hi = end.strftime("%Y-%m-%d") if end is not None else None
        for folder in self.segments.glob("date=*"):
            day = folder.name.split("=", 1)[1]
            if (lo is None or day >= lo) and (hi is None or day <= hi):
                out.extend(folder.glob("*.parquet"))
        return sorted(out)

    def _run(self, sql_for_files, start=None, end=None, params=()) -> pd.DataFrame:
        """Run a query over the segment files, retrying if a compaction removed one."""
        for attempt in range(5):
            files = self._files(start, end)
            if not files:
                return pd.DataFrame(
                    {
                        n: pd.Series(dtype=t)
                        for n, t in zip(
                            ROW_SCHEMA.names,
                            [
                                "datetime64[us, UTC]",
                                "object",
                                "float64",
                                "uint32",
                                "uint8",
                                "uint8",
                            ],
                            strict=True,
                        )
                    }
                )
            con = duckdb.connect()
            try:
                con.execute("SET TimeZone = 'UTC'")
                return con.execute(sql_for_files(_list(files)), params).df()
            except duckdb.IOException:
                if attempt == 4:
                    raise
                _time.sleep(0.05)
            finally:
                con.close()
        raise AssertionError("unreachable")

    def query(
        self,
        tags: Iterable[str] | None = None,
        start=None,
        end=None,
        resample: str | None = None,
    ) -> pd.DataFrame:
        """Rows of ``tags`` (all by default) with ``start <= time < end``, de-duplicated.

        Parameters
        ----------
        resample : str, optional
            A bucket width such as ``"1min"`` or ``"15min"``: per-bucket mean of the values
            (NaN ignored), worst quality, OR of the flags, first status.

        Returns
        -------
        pandas.DataFrame
            Long format: time, tag, value, status, quality, flags, sorted by tag and time.
        """
        start, end = _as_time(start, "start"), _as_time(end, "end")
        if start is not None and end is not None and end <= start:
            raise HistorianError(f"end: must be after start ({start}); got {end}")
        where, params = ["TRUE"], []
        if tags is not None:
            tags = list(tags)
            if not tags:
                raise HistorianError("tags: must name at least one tag; got an empty list")
            where.append("tag IN (SELECT unnest(?))")
            params.append(tags)
        if start is not None:
            where.append("time >= ?")
            params.append(start.to_pydatetime())
        if end is not None:
            where.append("time < ?")
            params.append(end.to_pydatetime())
        cond = " AND ".join(where)
        dedup = f"""
            SELECT * EXCLUDE (k) FROM (
                SELECT time, tag, value, status, quality, flags,
                       row_number() OVER (PARTITION BY tag, time ORDER BY filename) AS k
                FROM read_parquet({{files}}, filename = true, hive_partitioning = false)
                WHERE {cond})
            WHERE k = 1"""
        if resample is None:
            sql = dedup + " ORDER BY tag, time"
        else:
            width = pd.Timedelta(resample)
            if width <= pd.Timedelta(0):
                raise HistorianError(f"resample: must be a positive width; got {resample!r}")
            seconds = int(width.total_seconds())
            sql = f"""
                SELECT time_bucket(INTERVAL '{seconds} seconds', time) AS time, tag,
                       avg(value) FILTER (WHERE NOT isnan(value)) AS value,
                       first(status ORDER BY time) AS status,
                       max(quality) AS quality, bit_or(flags) AS flags
                FROM ({dedup}) GROUP BY ALL ORDER BY tag, time"""
        out = self._run(lambda files: sql.replace("{files}", files), start, end, params)
        if len(out):
            out["time"] = pd.to_datetime(out["time"], utc=True)
            out["value"] = out["value"].astype("float64")
        return out.reset_index(drop=True)

    def _read_tags(self) -> pd.DataFrame:
        path = self.root / "tags.parquet"
        if path.exists():
            return pq.read_table(path).to_pandas()
        return TAG_SCHEMA.empty_table().to_pandas()

    def tags(self) -> pd.DataFrame:
        """What is stored: tag metadata with first_time, last_time and rows per tag."""
        meta = self._read_tags()
        stats = self._run(
            lambda files: (
                f"""
            SELECT tag, min(time) AS first_time, max(time) AS last_time,
                   count(DISTINCT time) AS rows
            FROM read_parquet({files}, hive_partitioning = false) GROUP BY tag ORDER BY tag"""
            )
        )
        if not len(stats):
            stats = pd.DataFrame(columns=["tag", "first_time", "last_time", "rows"])
        out = meta.merge(stats, on="tag", how="outer")
        out["rows"] = out["rows"].fillna(0).astype("int64")
        return out.sort_values("tag").reset_index(drop=True)

    def last_times(self) -> dict[str, pd.Timestamp]:
        """The last stored source time of every tag."""
        stats = self._run(
            lambda files: (
                f"""
            SELECT tag, max(time) AS last_time
            FROM read_parquet({files}, hive_partitioning = false) GROUP BY tag"""
            )
        )
        if not len(stats):
            return {}
        return {t: pd.Timestamp(v).tz_convert("UTC") for t, v in stats.itertuples(index=False)}

    def count(self) -> int:
        """Distinct (tag, time) rows stored."""
        out = self._run(
            lambda files: (
                f"""SELECT count(*) AS n FROM (SELECT DISTINCT tag, time
            FROM read_parquet({files}, hive_partitioning = false))"""
            )
        )
        return int(out["n"].iloc[0]) if "n" in out and len(out) else 0

    def batch_context(self, unit: str | None = None, start=None, end=None) -> pd.DataFrame:
        """Batch context rows, the latest version of each (unit, start_time), by time."""
        files = sorted(self.batches_dir.glob("*.parquet"))
        if not files:
            return BATCH_SCHEMA.empty_table().to_pandas()
        con = duckdb.connect()
        try:
            frame = con.execute(
                f"""
                SELECT * EXCLUDE (k, filename) FROM (
                    SELECT *, row_number() OVER (
                        PARTITION BY unit, start_time
                        ORDER BY (end_time IS NULL), filename DESC) AS k
                    FROM read_parquet({_list(files)}, filename = true))
                WHERE k = 1 ORDER BY start_time, unit"""
            ).df()
        finally:
            con.close()
        for col in ("start_time", "end_time"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
        if unit is not None:
            frame = frame[frame["unit"] == unit]
        start, end = _as_time(start, "start"), _as_time(end, "end")
        if start is not None:
            frame = frame[frame["end_time"].isna() | (frame["end_time"] > start)]
        if end is not None:
            frame = frame[frame["start_time"] < end]
        return frame.reset_index(drop=True)

    def batch_series(self, batch_id: str, tags: Iterable[str] | None = None) -> pd.DataFrame:
        """All tags of the units a batch went through, over its time there.

        Returns the :meth:`query` columns plus ``unit``, ``phase`` and ``batch_time_h``
        (hours since the batch started on that unit), so batches align by batch time.

        Raises
        ------
        HistorianError
            If the batch has no context rows.
        """
        ctx = self.batch_context()
        ctx = ctx[ctx["batch_id"] == batch_id]
        if ctx.empty:
            raise HistorianError(f"batch_id: no batch context stored for {batch_id!r}")
        meta = self._read_tags()
        parts = []
        now = pd.Timestamp.now(tz="UTC")
        for unit, rows in ctx.groupby("unit", sort=False):
            begin = rows["start_time"].min()
            finish = rows["end_time"].max() if rows["end_time"].notna().all() else now
            unit_tags = meta.loc[meta["unit"] == unit, "tag"].tolist()
            if tags is not None:
                unit_tags = [t for t in unit_tags if t in set(tags)]
            if not unit_tags:
                continue
            data = self.query(unit_tags, begin, finish + pd.Timedelta(microseconds=1))
            data["unit"] = unit
            data["batch_time_h"] = (data["time"] - begin).dt.total_seconds() / 3600.0
            idx = np.searchsorted(rows["start_time"].to_numpy(), data["time"].to_numpy(), "right")
            data["phase"] = rows["phase"].to_numpy()[np.maximum(idx - 1, 0)]
            parts.append(data)
        if not parts:
            return pd.DataFrame(columns=[*ROW_SCHEMA.names, "unit", "batch_time_h", "phase"])
        return pd.concat(parts, ignore_index=True)


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _list(files: list[Path]) -> str:
    return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
