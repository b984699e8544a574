"""The embedded historian: append-only Parquet segments, queried with DuckDB.

Layout under the historian's root (``DATA_DIR/historian``)::

    segments/date=YYYY-MM-DD/seg-<ns>-<pid>-<n>.parquet   rows of one UTC day, one commit each
    segments/date=YYYY-MM-DD/cmp-<ns>-<pid>-<n>.parquet   compacted rows of that day
    batches/seg-<ns>-<pid>-<n>.parquet                     batch context rows
    tags.parquet                                           tag metadata
    manifest.jsonl (in each of those folders)              sha256, size, rows of each file
    quarantine/                                            damaged files, with JSON notes
    alarms/                                                alarms of the ingest (clock back)
    .files.lock                                            listing vs. commits, deletions

Why this design (the full argument is in docs/historian.md):

- **Readers in other processes while one writes.** A DuckDB database file takes a lock that
  a second process cannot share; Parquet files can be read by any number of processes.
  Each query opens its own in-memory DuckDB connection over the committed segment files.
- **Crash safety.** A segment is written to ``<name>.<pid>-<n>.tmp``, flushed with
  ``fsync`` and renamed into place (``os.replace`` is atomic on POSIX), then the directory
  is fsynced. Readers list only ``*.parquet``, so they never see a partial file; a
  ``kill -9`` mid-write leaves a ``.tmp`` file that the next open removes once its writer
  is gone. A committed segment is never modified, only deleted by a compaction after its
  rows are committed elsewhere.
- **No duplicates.** The key is (tag, time). Queries keep one row per key, the one of the
  file that sorts first (compacted files, then segments by name), so a retried append, an
  overlapping backfill or a compaction caught half-way never shows a row twice.
- **Damage is found, not served.** Every committed file has a sha256 in its folder's
  manifest; every read checks the files it is about to open (hashing each once per
  process) and moves a damaged one to ``quarantine/`` with an alarm, then reads the rest
  (:mod:`connectors.manifest`).
- **Fast ranges.** Segments are partitioned by UTC day, so a 24-hour query opens two days
  of files, whatever the size of the history. Compaction (every ``compact_every`` commits
  of a writer, or :meth:`Historian.compact`) keeps the number of files per day small.

Exceptions::

    ValueError
     └── HistorianError    rows, metadata or a query refused (field, rule and value named)
"""

from __future__ import annotations

import fcntl
import logging
import os
import time as _time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from connectors import _segments, manifest
from connectors._rows import (
    BATCH_SCHEMA,
    FLAG_BACKFILLED,
    FLAG_BAD_STATUS,
    FLAG_NAN,
    FLAG_OUT_OF_RANGE,
    FLAG_OVERFLOW,
    QUALITY_CODES,
    ROW_SCHEMA,
    TAG_SCHEMA,
    HistorianError,
    as_frame,
    as_time,
    check_tags,
    empty,
    quality_from_status,
    require,
    validate_batch_context,
    validate_rows,
)
from connectors.alarms import historian_alarms

__all__ = [
    "BATCH_SCHEMA",
    "FLAG_BACKFILLED",
    "FLAG_BAD_STATUS",
    "FLAG_CLOCK_BACK",
    "FLAG_NAN",
    "FLAG_OUT_OF_RANGE",
    "FLAG_OVERFLOW",
    "QUALITY_CODES",
    "ROW_SCHEMA",
    "TAG_SCHEMA",
    "Historian",
    "HistorianError",
    "quality_from_status",
    "validate_rows",
]

logger = logging.getLogger(__name__)

#: A value whose source time is older than the newest stored of its tag (a server whose
#: clock went back, e.g. restarted without its epoch); stored with quality uncertain.
FLAG_CLOCK_BACK = 32
_READ_ATTEMPTS = 20


def _sql_list(items: Iterable) -> str:
    return "[" + ", ".join(_sql_str(str(i)) for i in items) + "]"


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_time(ts: pd.Timestamp) -> str:
    return f"TIMESTAMPTZ '{ts.isoformat()}'"


# ---------------------------------------------------------------------- SQL
def _row_filter(tags: list[str] | None, start, end) -> str:
    where = ["TRUE"]
    if tags is not None:
        where.append(f"tag IN ({', '.join(_sql_str(t) for t in tags)})")
    if start is not None:
        where.append(f"time >= {_sql_time(start)}")
    if end is not None:
        where.append(f"time < {_sql_time(end)}")
    return " AND ".join(where)


def _deduplicated(files: list[Path], where: str = "TRUE") -> str:
    """One row per (tag, time): the first of the file that sorts first."""
    return f"""
        SELECT time, tag, value, status, quality, flags FROM (
            SELECT *, row_number() OVER (
                PARTITION BY tag, time ORDER BY filename, file_row_number) AS k
            FROM read_parquet({_sql_list(files)}, filename = true, file_row_number = true,
                              hive_partitioning = false)
            WHERE {where})
        WHERE k = 1"""


def _tag_stats(files: list[Path]) -> str:
    """First time, last time and distinct rows per tag.

    A day held in one compacted file has no duplicates, so its rows are counted straight
    from the file; only the other days are de-duplicated (the costly part).
    """
    by_day: dict[Path, list[Path]] = {}
    for f in files:
        by_day.setdefault(f.parent, []).append(f)
    clean = [f for day in by_day.values() if len(day) == 1 for f in day if f.name[:4] == "cmp-"]
    other = sorted(set(files) - set(clean))
    sources = []
    if clean:
        sources.append(f"read_parquet({_sql_list(clean)}, hive_partitioning = false)")
    if other:
        sources.append(
            f"(SELECT DISTINCT tag, time FROM read_parquet({_sql_list(other)}, "
            "hive_partitioning = false))"
        )
    parts = " UNION ALL ".join(
        f"SELECT tag, min(time) AS lo, max(time) AS hi, count(*) AS n FROM {src} GROUP BY tag"
        for src in sources
    )
    return f"""
        SELECT tag, min(lo) AS first_time, max(hi) AS last_time, sum(n)::BIGINT AS rows
        FROM ({parts}) GROUP BY tag ORDER BY tag"""


def _resampled(inner: str, width: pd.Timedelta) -> str:
    """Buckets aligned on the epoch: mean (NaN ignored), worst quality, OR of flags.

    The mean adds a bucket's values in time order: DuckDB's parallel scan hands them to the
    aggregate in whatever order its threads finish, and a floating-point sum in another
    order differs in the last bits, so the same query gave other bits from one call to the
    next (and a model trained on them other bytes)."""
    us = int(width / pd.Timedelta(microseconds=1))
    return f"""
        SELECT time_bucket(INTERVAL '{us} microseconds', time,
                           TIMESTAMPTZ '1970-01-01 00:00:00+00') AS time,
               tag,
               avg(value ORDER BY time) FILTER (WHERE NOT isnan(value)) AS value,
               first(status ORDER BY quality DESC, time) AS status,
               max(quality) AS quality,
               bit_or(flags) AS flags
        FROM ({inner}) GROUP BY ALL"""


def _split_by_day(table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    """``("YYYY-MM-DD", rows of that UTC day)``, in day order, rows in their given order."""
    days = table["time"].to_numpy().astype("datetime64[D]")
    if len(days) and days.min() == days.max():
        yield str(days[0]), table
        return
    order = np.argsort(days, kind="stable")
    days = days[order]
    table = table.take(order)
    edges = np.flatnonzero(days[1:] != days[:-1]) + 1
    for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(days)], strict=True):
        yield str(days[lo]), table.slice(lo, hi - lo)


def _bucket_width(resample: str) -> pd.Timedelta:
    try:
        width = pd.Timedelta(resample)
    except (TypeError, ValueError):
        raise HistorianError(
            f"resample: must be a fixed width such as '1min' or '1h'; got {resample!r}"
        ) from None
    if width < pd.Timedelta(microseconds=1):
        raise HistorianError(f"resample: must be a positive width; got {resample!r}")
    return width


def _ns(times: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds (for sorted searches)."""
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.to_numpy(dtype="datetime64[ns]").view("int64")


class Historian:
    """The store of time series and batch context (see the module docstring).

    Parameters
    ----------
    root : path
        Directory of the historian (created if missing). Any number of processes may open
        it, to read or to append.
    compact_every : int or None, default 32
        After this many commits to one day by this instance, compact that day's small files
        (``None``: never, leave it to :meth:`compact`).

    Examples
    --------
    >>> h = Historian(tmp_path / "historian")  # doctest: +SKIP
    >>> h.append(pd.DataFrame({"time": [pd.Timestamp.now(tz="UTC")],
    ...                        "tag": ["TIC-201.PV"], "value": [37.0]}))  # doctest: +SKIP
    1
    >>> h.query(["TIC-201.PV"], start="2026-01-01", resample="1min")  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike, *, compact_every: int | None = 32) -> None:
        if compact_every is not None and compact_every < 2:
            raise HistorianError(f"compact_every: must be >= 2 or None; got {compact_every!r}")
        self.root = Path(root)
        self.compact_every = compact_every
        self.segments = self.root / "segments"
        self.batches_dir = self.root / "batches"
        self.segments.mkdir(parents=True, exist_ok=True)
        self.batches_dir.mkdir(parents=True, exist_ok=True)
        self._commits: dict[str, int] = {}
        _segments.remove_abandoned(self.root)

    def __repr__(self) -> str:
        return f"Historian({str(self.root)!r})"

    # ------------------------------------------------------------------ writing
    def append(self, rows: pd.DataFrame | pa.Table, *, replace: bool = False) -> int:
        """Commit rows (the row schema of docs/store.md).

        Parameters
        ----------
        rows : pandas.DataFrame or pyarrow.Table
            Columns time (timezone-aware), tag, value, and optionally status, quality,
            flags (see :func:`validate_rows`).
        replace : bool, default False
            Replacement rows (an OPC UA HistoryUpdate Replace, docs/receive.md): committed
            as ``arp-`` segments, whose names sort before every other file of the day and
            newest first, so that their rows win their (tag, time) key over what was stored
            before (and over earlier replacements). Ordinary appends (False): the first
            committed row of a key wins, as always.

        Returns
        -------
        int
            The number of rows committed. Rows of one UTC day are one atomic commit; a call
            spanning several days makes one commit per day.

        Raises
        ------
        HistorianError
            If a column is missing or has the wrong type, or times are not timezone-aware;
            nothing is written then.
        """
        table = validate_rows(rows)
        if table.num_rows == 0:
            return 0
        for day, part in _split_by_day(table):
            folder = self.segments / f"date={day}"
            folder.mkdir(exist_ok=True)
            name = _segments.replacement_name() if replace else _segments.segment_name()
            manifest.commit_table(self.root, part, folder / name)
            self._after_commit(day)
        return table.num_rows

    def _after_commit(self, day: str) -> None:
        """Compact ``day`` every ``compact_every`` commits; the commit stands if that fails."""
        n = self._commits[day] = self._commits.get(day, 0) + 1
        if self.compact_every is None or n % self.compact_every:
            return
        try:
            if day == "batches":
                self._compact_batches(self.compact_every)
            else:
                self._compact_day(self.segments / f"date={day}", self.compact_every, full=False)
        except (OSError, duckdb.Error):  # retried at the next multiple; readers are unaffected
            logger.exception("historian: compaction of %s failed", day)

    def upsert_tags(self, meta: pd.DataFrame) -> None:
        """Add or replace tag metadata (by tag), under a file lock, atomically.

        Raises
        ------
        HistorianError
            If ``meta`` has no ``tag`` column or a tag is not a non-empty string.
        """
        frame = as_frame(meta, "meta").copy()
        require(frame, ("tag",), "meta")
        check_tags(frame["tag"], "meta.tag")
        for name in TAG_SCHEMA.names:
            if name not in frame.columns:
                frame[name] = None
        frame = frame[TAG_SCHEMA.names].drop_duplicates("tag", keep="last")
        new = pa.Table.from_pandas(frame, schema=TAG_SCHEMA, preserve_index=False)
        with _segments.flock(self.root / ".tags.lock", fcntl.LOCK_EX):
            old = self._read_tags()
            merged = pd.concat(
                [old[~old["tag"].isin(frame["tag"])], new.to_pandas()], ignore_index=True
            )
            merged = merged.sort_values("tag", kind="stable")
            table = pa.Table.from_pandas(merged, schema=TAG_SCHEMA, preserve_index=False)
            manifest.commit_table(self.root, table, self.root / "tags.parquet")

    def append_batch_context(self, rows: pd.DataFrame) -> int:
        """Commit batch context rows.

        An open record has no ``end_time``; close it by appending the same (unit,
        start_time) again with one. The latest closed version of a record wins.

        Returns
        -------
        int
            The number of rows committed (one atomic commit).

        Raises
        ------
        HistorianError
            If unit, state or start_time is missing or invalid, or end_time < start_time.
        """
        table = validate_batch_context(rows)
        if table.num_rows:
            manifest.commit_table(self.root, table, self.batches_dir / _segments.segment_name())
            self._after_commit("batches")
        return table.num_rows

    # ------------------------------------------------------------------ compaction
    def compact(self, *, min_files: int = 2, before=None) -> int:
        """Merge small files into fewer, sorted, de-duplicated ones.

        Days before ``before`` (default: today, UTC) with at least ``min_files`` files
        become one file. Later days, still being written, are compacted in tiers: their
        segments become one file when there are ``min_files`` of them, and so do the
        compacted files. Batch context segments are merged too.

        Readers never see a row twice or miss one meanwhile (see docs/historian.md).

        Returns
        -------
        int
            The number of days compacted.
        """
        if min_files < 2:
            raise HistorianError(f"min_files: must be >= 2; got {min_files!r}")
        cutoff = as_time(before, "before") or pd.Timestamp.now(tz="UTC")
        cutoff_day = cutoff.strftime("%Y-%m-%d")
        done = 0
        for folder in sorted(self.segments.glob("date=*")):
            full = folder.name.split("=", 1)[1] < cutoff_day
            done += self._compact_day(folder, min_files, full=full)
        self._compact_batches(min_files)
        return done

    def _compact_day(self, folder: Path, min_files: int, *, full: bool) -> bool:
        """Compact one day's folder; False if there was nothing to do or it was busy."""
        lock = folder / ".compact.lock"  # not *.parquet: readers ignore it
        with _segments.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB) as ok:
            if not ok:
                return False  # another process is compacting this day
            files, vanished = manifest.check(self.root, sorted(folder.glob("*.parquet")))
            if vanished:
                return False  # another writer compacted meanwhile
            if full:
                if len(files) < min_files:
                    return False
                self._merge(files, folder)
                return True
            segments = [f for f in files if f.name.startswith("seg-")]
            compacted = [f for f in files if f.name.startswith("cmp-")]
            if len(segments) >= min_files:
                compacted.append(self._merge(segments, folder))
            if len(compacted) >= min_files:
                self._merge(compacted, folder)
            return len(segments) >= min_files or len(compacted) >= min_files

    def _merge(self, files: list[Path], folder: Path) -> Path:
        """Write ``files`` as one (sorted by tag, time; first file wins a key), then delete them.

        The new file is committed before any input is deleted: in between, a reader sees the
        rows twice and its de-duplication shows them once. Its ``cmp-`` name sorts before
        every ``seg-`` name and after earlier ``cmp-`` names, so the winner of a key stays
        the same.
        """
        target = folder / _segments.segment_name("cmp")
        sql = _deduplicated(files) + " ORDER BY tag, time"
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            manifest.commit(
                self.root,
                target,
                lambda tmp: con.execute(
                    f"COPY ({sql}) TO {_sql_str(str(tmp))} "
                    f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {_segments.ROW_GROUP})"
                ),
            )
        finally:
            con.close()
        manifest.remove(self.root, files)
        logger.info("historian: compacted %d files into %s", len(files), target.name)
        return target

    def _compact_batches(self, min_files: int) -> None:
        """Merge the batch context files into one holding the latest version of each record."""
        lock = self.batches_dir / ".compact.lock"
        with _segments.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB) as ok:
            files = sorted(self.batches_dir.glob("*.parquet")) if ok else []
            files, vanished = manifest.check(self.root, files)
            if vanished or len(files) < min_files:
                return
            # "cmp-" sorts before "seg-": newer records (seg-) still win over the merged file.
            manifest.commit_table(
                self.root,
                self._batch_table(files),
                self.batches_dir / _segments.segment_name("cmp"),
            )
            manifest.remove(self.root, files)

    # ------------------------------------------------------------------ reading
    def _files(self, start: pd.Timestamp | None, end: pd.Timestamp | None) -> list[Path]:
        """Committed segment files of the days in [start, end], listed as one snapshot."""
        lo = start.strftime("%Y-%m-%d") if start is not None else ""
        hi = end.strftime("%Y-%m-%d") if end is not None else "9999"
        out = []
        with _segments.flock(self.root / ".files.lock", fcntl.LOCK_SH):
            for folder in self.segments.glob("date=*"):
                if lo <= folder.name.split("=", 1)[1] <= hi:
                    out.extend(folder.glob("*.parquet"))
        return sorted(out)

    def _checked(self, list_files: Callable[[], list[Path]]) -> list[Path]:
        """The listed files that pass their checksum check (bad ones are quarantined);
        listed again if one vanished meanwhile (compacted: its rows are in a newer file)."""
        for _ in range(_READ_ATTEMPTS):
            files, vanished = manifest.check(self.root, list_files())
            if not vanished:
                break
        return files

    def _retry(self, files: list[Path], exc: duckdb.Error, attempt: int) -> None:
        """After DuckDB failed on checked files: pause and let the caller list again, or
        raise. A file deleted by a compaction (an IO error) is found missing next time;
        for any other error the files are hashed again, and the error stands if none of
        them is damaged."""
        if attempt == _READ_ATTEMPTS - 1:
            raise exc
        if not isinstance(exc, duckdb.IOException):
            manifest.forget(files)
            good, _ = manifest.check(self.root, files)
            if len(good) == len(files):
                raise exc
        _time.sleep(0.01 * (attempt + 1))

    def _read(self, sql_for: Callable[[list[Path]], str], start=None, end=None) -> pd.DataFrame:
        """Run ``sql_for(files)`` over the checked files; None if there are none. Retries
        if a compaction deleted a listed file before DuckDB opened it, or a file proved
        damaged only when read (see :meth:`_retry`)."""
        for attempt in range(_READ_ATTEMPTS):
            files = self._checked(lambda: self._files(start, end))
            if not files:
                return None
            con = duckdb.connect()
            try:
                con.execute("SET TimeZone = 'UTC'")
                return con.execute(sql_for(files)).df()
            except duckdb.Error as exc:
                self._retry(files, exc, attempt)
            finally:
                con.close()
        raise AssertionError("unreachable")

    def query(
        self,
        tags: Iterable[str] | None = None,
        start=None,
        end=None,
        resample: str | None = None,
        *,
        limit: int | None = None,
        descending: bool = False,
    ) -> pd.DataFrame:
        """Rows of ``tags`` with ``start <= time < end``, one per (tag, time).

        Parameters
        ----------
        tags : iterable of str, optional
            Tag names (default: all).
        start, end : timestamp-like, optional
            Bounds (default: open); naive values are taken as UTC.
        resample : str, optional
            A fixed bucket width such as ``"1min"`` or ``"15min"``; buckets are aligned on
            the epoch and labelled by their start: mean of the values (NaN ignored; NaN if
            all are), worst quality, OR of the flags, status of the worst row.
        limit : int, optional
            At most this many rows (the first in the order of the result).
        descending : bool, default False
            Times in descending order within each tag (with ``limit``: the newest rows).

        Returns
        -------
        pandas.DataFrame
            Long format: time, tag, value, status, quality, flags, sorted by tag and time.

        Raises
        ------
        HistorianError
            For an empty tag list, unreadable bounds, end <= start or a bad width.
        """
        tags, start, end, width = self._query_args(tags, start, end, resample)
        where = _row_filter(tags, start, end)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise HistorianError(f"limit: must be an integer >= 0; got {limit!r}")
        if limit is not None and limit < 0:
            raise HistorianError(f"limit: must be an integer >= 0; got {limit!r}")
        order = " ORDER BY tag, time" + (" DESC" if descending else "")
        order += "" if limit is None else f" LIMIT {int(limit)}"

        def sql(files: list[Path]) -> str:
            inner = _deduplicated(files, where)
            return (inner if width is None else _resampled(inner, width)) + order

        out = self._read(sql, start, end)
        if out is None:
            return empty(ROW_SCHEMA)
        out["time"] = out["time"].astype("datetime64[us, UTC]")
        out["value"] = out["value"].astype("float64")
        return out.reset_index(drop=True)

    def export(
        self,
        out: str | os.PathLike,
        tags: Iterable[str] | None = None,
        start=None,
        end=None,
        resample: str | None = None,
    ) -> int:
        """Write :meth:`query`'s rows to ``out`` (``.parquet`` or ``.csv``), streaming.

        DuckDB writes the file directly, so a year of history is exported without holding it
        in memory. The file appears atomically (temporary file, rename).

        Returns
        -------
        int
            The number of rows written.
        """
        out = Path(out)
        if out.suffix not in (".parquet", ".csv"):
            raise HistorianError(f"out: must end in .parquet or .csv; got {out.name!r}")
        tags, start, end, width = self._query_args(tags, start, end, resample)
        where = _row_filter(tags, start, end)
        fmt = "FORMAT parquet, COMPRESSION zstd" if out.suffix == ".parquet" else "FORMAT csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        written = 0

        def write(tmp: Path) -> None:
            nonlocal written

            def copy(files: list[Path]) -> str:
                inner = _deduplicated(files, where)
                body = inner if width is None else _resampled(inner, width)
                return f"COPY ({body} ORDER BY tag, time) TO {_sql_str(str(tmp))} ({fmt})"

            result = self._read(copy, start, end)
            if result is None:  # nothing stored: a file with the columns and no rows
                nothing = empty(ROW_SCHEMA)
                if out.suffix == ".parquet":
                    nothing.to_parquet(tmp, index=False)
                else:
                    nothing.to_csv(tmp, index=False)
            else:
                written = int(result.iloc[0, 0])

        _segments.write_atomic(out, write)
        logger.info("historian: exported %d rows to %s", written, out)
        return written

    def _query_args(self, tags, start, end, resample):
        if tags is not None:
            tags = [tags] if isinstance(tags, str) else list(tags)
            if not tags:
                raise HistorianError("tags: must name at least one tag; got an empty list")
        start, end = as_time(start, "start"), as_time(end, "end")
        if start is not None and end is not None and end <= start:
            raise HistorianError(f"end: must be after start ({start}); got {end}")
        width = None if resample is None else _bucket_width(resample)
        return tags, start, end, width

    def _read_tags(self) -> pd.DataFrame:
        """Tag metadata (none if ``tags.parquet`` is missing or was quarantined)."""
        path = self.root / "tags.parquet"
        for _ in range(_READ_ATTEMPTS):
            if not path.exists():
                break
            good, _vanished = manifest.check(self.root, [path])
            if not good:
                continue  # quarantined, or replaced by upsert_tags meanwhile
            try:
                return pq.read_table(path).to_pandas()
            except FileNotFoundError:
                continue
            except (OSError, pa.ArrowException):
                manifest.forget([path])  # damaged under a cached verdict: check it again
        return empty(TAG_SCHEMA)

    def tags(self) -> pd.DataFrame:
        """What is stored: tag metadata with first_time, last_time and rows per tag.

        Tags with metadata but no rows have 0 rows; tags with rows but no metadata have
        empty metadata.
        """
        stats = self._read(_tag_stats)
        if stats is None:
            stats = pd.DataFrame(
                {
                    "tag": pd.Series(dtype=str),
                    "first_time": pd.Series(dtype="datetime64[us, UTC]"),
                    "last_time": pd.Series(dtype="datetime64[us, UTC]"),
                    "rows": pd.Series(dtype="int64"),
                }
            )
        out = self._read_tags().merge(stats, on="tag", how="outer")
        out["rows"] = out["rows"].fillna(0).astype("int64")
        return out.sort_values("tag").reset_index(drop=True)

    def last_times(self) -> dict[str, pd.Timestamp]:
        """The last stored source time of every tag (for de-duplication and backfill)."""
        stats = self._read(
            lambda files: (
                f"""
                SELECT tag, max(time) AS last_time
                FROM read_parquet({_sql_list(files)}, hive_partitioning = false) GROUP BY tag"""
            )
        )
        if stats is None:
            return {}
        return {t: pd.Timestamp(v).tz_convert("UTC") for t, v in stats.itertuples(index=False)}

    def count(self) -> int:
        """The number of distinct (tag, time) rows stored."""
        out = self._read(lambda files: f"SELECT sum(rows) AS n FROM ({_tag_stats(files)})")
        return 0 if out is None else int(out["n"].iloc[0])

    # ------------------------------------------------------------------ integrity
    def verify(self) -> list[manifest.Finding]:
        """Check every stored file against its manifest entry, hashing each one again.

        Damaged files are quarantined and entries of missing files dropped (each with a
        note in ``quarantine/``); see :mod:`connectors.manifest`.

        Returns
        -------
        list of connectors.manifest.Finding
            One per file checked or missing, in path order.
        """
        return manifest.verify(self.root)

    def quarantined(self) -> list[dict]:
        """The notes of the files in quarantine (what, why, when, rows expected)."""
        return manifest.quarantined(self.root)

    def alarms(self) -> pd.DataFrame:
        """The historian's alarms as event rows (see :mod:`connectors.alarms`)."""
        return historian_alarms(self.root)

    # ------------------------------------------------------------------ batch context
    def _batch_table(self, files: list[Path]) -> pa.Table:
        """One record per (unit, start_time): a closed version before an open one, then the
        last written (newest file, last row)."""
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            sql = f"""
                SELECT * EXCLUDE (k, filename, file_row_number) FROM (
                    SELECT *, row_number() OVER (
                        PARTITION BY unit, start_time
                        ORDER BY (end_time IS NULL), filename DESC, file_row_number DESC) AS k
                    FROM read_parquet({_sql_list(files)}, filename = true,
                                      file_row_number = true))
                WHERE k = 1 ORDER BY start_time, unit"""
            return con.sql(sql).to_arrow_table().cast(BATCH_SCHEMA)
        finally:
            con.close()

    def batch_context(self, unit: str | None = None, start=None, end=None) -> pd.DataFrame:
        """Batch context records overlapping [start, end), by start time.

        Parameters
        ----------
        unit : str, optional
            Only this unit's records.
        start, end : timestamp-like, optional
            Keep records that overlap the interval (an open record extends to now).

        Returns
        -------
        pandas.DataFrame
            batch_id, unit, recipe, phase, state, start_time, end_time (NaT while open).
        """
        start, end = as_time(start, "start"), as_time(end, "end")

        def listing() -> list[Path]:
            with _segments.flock(self.root / ".files.lock", fcntl.LOCK_SH):
                return sorted(self.batches_dir.glob("*.parquet"))

        for attempt in range(_READ_ATTEMPTS):
            files = self._checked(listing)
            if not files:
                return empty(BATCH_SCHEMA)
            try:
                frame = self._batch_table(files).to_pandas()
                break
            except duckdb.Error as exc:
                self._retry(files, exc, attempt)
        if unit is not None:
            frame = frame[frame["unit"] == unit]
        if start is not None:
            frame = frame[frame["end_time"].isna() | (frame["end_time"] > start)]
        if end is not None:
            frame = frame[frame["start_time"] < end]
        return frame.reset_index(drop=True)

    def batch_series(self, batch_id: str, tags: Iterable[str] | None = None) -> pd.DataFrame:
        """All tags of the units a batch ran on, over its time there, aligned by batch time.

        The batch's ``running`` records (all its records if it has none) give, per unit,
        the interval from its first start to its last end (now while open); the tags whose
        metadata names that unit are read over it.

        Parameters
        ----------
        batch_id : str
        tags : iterable of str, optional
            Only these tags (default: all of the units' tags).

        Returns
        -------
        pandas.DataFrame
            The :meth:`query` columns plus ``unit``, ``phase`` (of the record the row falls
            in) and ``batch_time_h`` (hours since the batch started on that unit), sorted by
            unit, tag and time.

        Raises
        ------
        HistorianError
            If the batch has no context records.
        """
        ctx = self.batch_context()
        if not (ctx["batch_id"] == batch_id).any():
            raise HistorianError(f"batch_id: no batch context stored for {batch_id!r}")
        out = self.batches_series([batch_id], tags, context=ctx)
        return out.drop(columns="batch_id").reset_index(drop=True)

    def batches_series(
        self,
        batch_ids: Iterable[str],
        tags: Iterable[str] | None = None,
        *,
        context: pd.DataFrame | None = None,
        window_days: float = 14.0,
    ) -> pd.DataFrame:
        """:meth:`batch_series` of many batches at once, with a ``batch_id`` column.

        The batch context is read once and each unit's tags are read once per ``window``
        of batch intervals (not once per batch), so a year of batches takes a few queries
        per unit. Batches without context records are absent from the result.

        Parameters
        ----------
        batch_ids : iterable of str
        tags : iterable of str, optional
            Only these tags (default: all of the units' tags).
        context : pandas.DataFrame, optional
            :meth:`batch_context` already read by the caller.
        window_days : float
            Longest span of batch intervals read by one query.
        """
        ctx = self.batch_context() if context is None else context
        ctx = ctx[ctx["batch_id"].isin(set(batch_ids))]
        running = ctx.groupby("batch_id")["state"].transform(lambda s: (s == "running").any())
        ctx = ctx[~running | (ctx["state"] == "running")]
        meta = self._read_tags()
        wanted = None if tags is None else set([tags] if isinstance(tags, str) else tags)
        now = pd.Timestamp.now(tz="UTC")
        columns = ["batch_id", *ROW_SCHEMA.names, "unit", "phase", "batch_time_h"]
        window = pd.Timedelta(days=window_days)
        parts = []
        for unit, records in ctx.groupby("unit", sort=True):
            unit_tags = sorted(meta.loc[meta["unit"] == unit, "tag"])
            if wanted is not None:
                unit_tags = [t for t in unit_tags if t in wanted]
            if not unit_tags:
                continue
            spans = []  # (begin, finish, records) per batch on this unit, by begin
            for _, recs in records.groupby("batch_id", sort=False):
                recs = recs.sort_values("start_time")
                finish = recs["end_time"].max() if recs["end_time"].notna().all() else now
                spans.append((recs["start_time"].iloc[0], finish, recs))
            spans.sort(key=lambda item: item[0])
            i = 0
            while i < len(spans):
                j, lo, hi = i, spans[i][0], spans[i][1]
                while j + 1 < len(spans) and max(hi, spans[j + 1][1]) - lo <= window:
                    j += 1
                    hi = max(hi, spans[j][1])
                data = self.query(unit_tags, lo, hi + pd.Timedelta(microseconds=1))
                times = _ns(data["time"])
                for begin, finish, recs in spans[i : j + 1]:
                    inside = (times >= begin.value) & (times <= finish.value)
                    if not inside.any():
                        continue
                    rows = data[inside].copy()
                    idx = np.searchsorted(_ns(recs["start_time"]), times[inside], side="right") - 1
                    rows.insert(0, "batch_id", recs["batch_id"].iloc[0])
                    rows["unit"] = unit
                    rows["phase"] = recs["phase"].to_numpy()[np.maximum(idx, 0)]
                    rows["batch_time_h"] = (rows["time"] - begin) / pd.Timedelta(hours=1)
                    parts.append(rows)
                i = j + 1
        if not parts:
            frame = empty(ROW_SCHEMA).assign(
                unit=pd.Series(dtype=str),
                phase=pd.Series(dtype=str),
                batch_time_h=pd.Series(dtype="float64"),
            )
            frame.insert(0, "batch_id", pd.Series(dtype=str))
            return frame[columns]
        out = pd.concat(parts, ignore_index=True)
        return out.sort_values(["batch_id", "unit", "tag", "time"], kind="stable")[
            columns
        ].reset_index(drop=True)
