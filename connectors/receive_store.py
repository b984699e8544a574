"""The receiver's durable path: pushed values are answered Good only once they are on disk.

Every value an OT writer pushes -- by Write, HistoryUpdate or PubSub -- reaches the store
as part of a :class:`Job` (the values of one request, checked already by
:mod:`connectors.receive_writes`), and the request is answered only when its job is
committed. One committer task takes every job queued meanwhile (group commit: several
requests, one commit, :data:`MAX_GROUP_ROWS` at most) and, in a thread:

1. looks up what is stored for the keys that may exist already: values of a Write no newer
   than the newest stored of their tag (late, out of order, or retried), every value of a
   HistoryUpdate; the historian's query (one row per (tag, time)) and the text table;
2. decides each value's StatusCode: a Write of a new key is stored (Good); of a key
   stored with the same value and StatusCode, Good and not stored again (a retry); of a key
   stored with another value, BadEntryExists (a correction is a HistoryUpdate Replace).
   HistoryUpdate as OPC UA Part 11 says: Insert of a new key GoodEntryInserted, of an
   existing one BadEntryExists; Replace of an existing key GoodEntryReplaced, of a missing
   one BadNoEntryExists; Update inserts or replaces;
3. commits, each step an atomic, fsynced commit of the historian: the record of corrected
   values (``tables/corrections``: old and new value, user, time; before the replacement,
   so that no correction goes unrecorded), new values (:meth:`Historian.append`),
   replacements (``append(..., replace=True)``: they win their key in every query), text
   values of String tags (``tables/text``), batch context (``append_batch_context``) and
   lab results (:class:`~connectors.lab_results.LabResults`).

Only then are the jobs answered. ``Historian.append`` fsyncs the file and its folder before
it returns, so a value answered Good survives a ``kill -9`` of the receiver or a power cut
(no write-ahead spool is needed: the commit is the durable write). If a commit fails (disk
full), every value of the group is answered BadResourceUnavailable and nothing is
acknowledged; a retry of the writer is harmless (step 2).

Compaction is not done in the commit path (it would stall the answers): a thread compacts
the historian every :data:`COMPACT_EVERY_S` seconds (tiers of 32 files, as the ingest's
historian does).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from asyncua import ua

from connectors._rows import context_row
from connectors._tables import SideTable
from connectors.historian import Historian, quality_from_status
from connectors.lab_results import LabResults

__all__ = [
    "COMPACT_EVERY_S",
    "CORRECTION_SCHEMA",
    "MAX_GROUP_ROWS",
    "MODES",
    "TEXT_SCHEMA",
    "ContextTracker",
    "Job",
    "ReceiveStore",
    "TextValues",
]

logger = logging.getLogger(__name__)

#: What a job does with its values: a Write, or a HistoryUpdate's PerformUpdateType.
MODES = ("write", "insert", "replace", "update")
#: At most this many values are committed together.
MAX_GROUP_ROWS = 50_000
#: Seconds between two compactions of the historian by the receiver.
COMPACT_EVERY_S = 30.0
_SC = ua.StatusCodes
_TS = pa.timestamp("us", tz="UTC")

TEXT_SCHEMA = pa.schema(
    [
        ("time", _TS),
        ("tag", pa.string()),
        ("text", pa.string()),
        ("status", pa.uint32()),
        ("quality", pa.uint8()),
        ("flags", pa.uint8()),
        ("revision", pa.int64()),
    ]
)
CORRECTION_SCHEMA = pa.schema(
    [
        ("time", _TS),
        ("tag", pa.string()),
        ("old_value", pa.float64()),
        ("old_text", pa.string()),
        ("old_status", pa.uint32()),
        ("new_value", pa.float64()),
        ("new_text", pa.string()),
        ("new_status", pa.uint32()),
        ("corrected_at", _TS),
        ("user", pa.string()),
        ("mode", pa.string()),
    ]
)


class TextValues:
    """Values of String tags: ``tables/text`` (time, tag, text, status, quality, flags,
    revision). Per (tag, time) the row with the highest revision wins (0: first written; a
    replacement's revision is its commit time in ns), then the first committed."""

    def __init__(self, root) -> None:
        self.table = SideTable(root, "text", TEXT_SCHEMA)

    def query(self, tags=None, start=None, end=None) -> pd.DataFrame:
        """One row per (tag, time) with ``start <= time < end``, sorted by tag and time."""
        where = ["TRUE"]
        if tags is not None:
            listed = ", ".join("'" + str(t).replace("'", "''") + "'" for t in tags)
            where.append(f"tag IN ({listed or 'NULL'})")
        if start is not None:
            where.append(f"time >= TIMESTAMPTZ '{pd.Timestamp(start).isoformat()}'")
        if end is not None:
            where.append(f"time < TIMESTAMPTZ '{pd.Timestamp(end).isoformat()}'")
        return self.table.read(
            f"""SELECT time, tag, text, status, quality, flags FROM (
                    SELECT *, row_number() OVER (PARTITION BY tag, time
                        ORDER BY revision DESC, filename, file_row_number) AS k
                    FROM t WHERE {" AND ".join(where)})
                WHERE k = 1 ORDER BY tag, time"""
        )

    def last_times(self) -> dict[str, pd.Timestamp]:
        frame = self.table.read("SELECT tag, max(time) AS last FROM t GROUP BY tag")
        if "last" not in frame:  # nothing stored
            return {}
        return {t: pd.Timestamp(v) for t, v in zip(frame["tag"], frame["last"], strict=True)}


class ContextTracker:
    """Batch context of the units from pushed BatchId / Recipe / Phase / State values.

    The rule of the ingest (:meth:`connectors.ingest.Ingest._context_change`): a change of
    a unit's field closes its open record (end_time = the change's time) and opens a new one
    with the fields then current; changes at one time make one record; a change stamped
    before the open record began takes effect at its start (stored records are never
    rewritten). A receiver that starts again continues the unit's open record.
    """

    def __init__(self, historian: Historian) -> None:
        self.current: dict[str, dict] = {}
        ctx = historian.batch_context()
        for unit, rows in ctx.groupby("unit"):
            last = rows.sort_values("start_time").iloc[-1]
            if pd.isna(last["end_time"]):
                self.current[unit] = {
                    "BatchId": last["batch_id"] or "",
                    "Recipe": last["recipe"] or "",
                    "Phase": last["phase"] or "",
                    "State": "" if last["state"] == "unknown" else last["state"],
                    "start_time": pd.Timestamp(last["start_time"]),
                }

    def changes(self, items: list[tuple[str, str, int, str]]) -> tuple[list[dict], dict]:
        """The records to append for ``(unit, field, time_us, value)`` changes, and the
        state after them (applied with :meth:`apply` once they are committed)."""
        state = {unit: dict(cur) for unit, cur in self.current.items()}
        rows: list[dict] = []
        for unit, name, t_us, value in sorted(items, key=lambda c: c[2]):
            ts = pd.Timestamp(t_us, unit="us", tz="UTC")
            cur = state.setdefault(unit, {"start_time": None})
            if cur.get(name, "") == value:
                continue
            if cur["start_time"] is not None and ts < cur["start_time"]:
                logger.warning(
                    "receive: %s.%s changed at %s, before the context stored from %s; "
                    "stored from %s",
                    unit,
                    name,
                    ts,
                    cur["start_time"],
                    cur["start_time"],
                )
                ts = cur["start_time"]
            if cur["start_time"] is not None and cur["start_time"] != ts:
                rows.append({**context_row(unit, cur), "end_time": ts})
            cur[name] = value
            cur["start_time"] = ts
            rows.append({**context_row(unit, cur), "end_time": None})
        return rows, state

    def apply(self, state: dict) -> None:
        self.current = state


@dataclass
class Job:
    """The checked values of one request, to be committed together.

    ``tags``, ``times`` (µs since 1970, UTC), ``values``, ``texts`` (String tags, else
    None), ``status`` and ``flags`` are parallel lists, one entry per value; ``context``
    holds ``(unit, field, time_us, value)`` batch context changes; ``lab`` lab result rows
    (:data:`connectors.lab_results.LAB_SCHEMA`).
    """

    mode: str
    user: str
    tags: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    context: list[tuple[str, str, int, str]] = field(default_factory=list)
    lab: pd.DataFrame | None = None

    def add(self, tag: str, t_us: int, value: float, text, status: int, flags: int) -> None:
        self.tags.append(tag)
        self.times.append(t_us)
        self.values.append(value)
        self.texts.append(text)
        self.status.append(status)
        self.flags.append(flags)

    def __len__(self) -> int:
        return len(self.tags) + len(self.context) + (0 if self.lab is None else len(self.lab))


@dataclass
class Outcome:
    """What became of a job: one StatusCode per value (in order), and one for its batch
    context changes and lab results (Good, or the code of a failed commit)."""

    codes: list[int]
    other: int = _SC.Good
    stored: int = 0
    newest_us: int | None = None
    #: per value: written now (new or replaced), not already stored as it is
    fresh: list[bool] = field(default_factory=list)


def _same(a: tuple, b: tuple) -> bool:
    """Equal values (NaN equals NaN), texts and StatusCodes."""
    va, vb = a[0], b[0]
    same_value = va == vb or (va != va and vb != vb)
    return same_value and a[1] == b[1] and a[2] == b[2]


def _rows(tags, times, values, status, flags) -> pd.DataFrame:
    status = np.asarray(status, dtype=np.uint32)
    return pd.DataFrame(
        {
            "time": pd.to_datetime(np.asarray(times, dtype="int64"), unit="us", utc=True),
            "tag": tags,
            "value": np.asarray(values, dtype=float),
            "status": status,
            "quality": quality_from_status(status),
            "flags": np.asarray(flags, dtype=np.uint8),
        }
    )


class ReceiveStore:
    """Group commits of pushed values into the historian (see the module docstring).

    Parameters
    ----------
    historian : Historian
        Where values go; opened with ``compact_every=None`` by the caller is best (the
        store compacts in its own thread).
    text_tags : set of str
        Tags whose values are text (String), stored in the text table.
    compact_every_s : float or None
        Seconds between compactions (None: never).
    """

    def __init__(
        self,
        historian: Historian,
        *,
        text_tags: set[str] = frozenset(),
        compact_every_s: float | None = COMPACT_EVERY_S,
    ) -> None:
        self.historian = historian
        self.text_tags = set(text_tags)
        self.text = TextValues(historian.root)
        self.corrections = SideTable(historian.root, "corrections", CORRECTION_SCHEMA)
        self.lab = LabResults(historian.root)
        self.compact_every_s = compact_every_s
        self.last: dict[str, int] = {}
        self.context: ContextTracker | None = None
        self.commits = 0
        self.stored = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="receive-commit")
        self._stop = threading.Event()
        self._compactor: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"ReceiveStore({self.historian!r}, commits={self.commits}, stored={self.stored})"

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Read what is stored (last time per tag, open batch context); start committing."""
        await asyncio.to_thread(self._load)
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._committer())
        if self.compact_every_s:
            self._compactor = threading.Thread(
                target=self._compact_loop, name="receive-compact", daemon=True
            )
            self._compactor.start()

    def _load(self) -> None:
        last = {**self.historian.last_times(), **self.text.last_times()}
        self.last = {tag: int(pd.Timestamp(t).value // 1000) for tag, t in last.items()}
        self.context = ContextTracker(self.historian)

    async def close(self) -> None:
        """Commit what is queued, answer it, stop."""
        if self._queue is not None and self._task is not None:
            await self._queue.put(None)
            await self._task
        self._stop.set()
        if self._compactor is not None:
            await asyncio.to_thread(self._compactor.join, 60)
        self._pool.shutdown(wait=True)

    def _compact_loop(self) -> None:
        while not self._stop.wait(self.compact_every_s):
            try:
                self.historian.compact(min_files=32)
            except Exception:  # retried next time; readers are unaffected
                logger.exception("receive: compaction failed")

    # ------------------------------------------------------------------ committing
    async def submit(self, job: Job) -> Outcome:
        """Queue ``job`` and wait until it is committed (or its commit failed)."""
        if self._queue is None or self._task is None or self._task.done():
            return Outcome([_SC.BadServerHalted] * len(job.tags), _SC.BadServerHalted)
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((job, future))
        return await future

    async def _committer(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            group = [item]
            rows = len(item[0])
            while rows < MAX_GROUP_ROWS and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
                rows += len(nxt[0])
            jobs = [job for job, _ in group]
            try:
                outcomes = await loop.run_in_executor(self._pool, self._commit, jobs)
            except Exception:
                logger.exception("receive: commit of %d values failed; answered Bad", rows)
                code = _SC.BadResourceUnavailable
                outcomes = [Outcome([code] * len(job.tags), code) for job in jobs]
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    def _stored(self, wanted: dict[str, list[int]]) -> dict[tuple[str, int], tuple]:
        """``{(tag, time_us): (value, text, status)}`` of the wanted keys that are stored."""
        out: dict[tuple[str, int], tuple] = {}
        numeric = [t for t in wanted if t not in self.text_tags]
        texts = [t for t in wanted if t in self.text_tags]
        for tags, read in ((numeric, self.historian.query), (texts, self.text.query)):
            if not tags:
                continue
            lo = min(min(wanted[t]) for t in tags)
            hi = max(max(wanted[t]) for t in tags)
            frame = read(
                tags,
                pd.Timestamp(lo, unit="us", tz="UTC"),
                pd.Timestamp(hi + 1, unit="us", tz="UTC"),
            )
            if frame.empty:
                continue
            keys = set()
            for t in tags:
                keys.update((t, u) for u in wanted[t])
            times = frame["time"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
            values = frame["value"].to_numpy() if "value" in frame else [math.nan] * len(frame)
            text = frame["text"].tolist() if "text" in frame else [None] * len(frame)
            for tag, t, v, x, s in zip(
                frame["tag"], times.tolist(), values, text, frame["status"].tolist(), strict=True
            ):
                if (tag, t) in keys:
                    out[(tag, t)] = (float(v), x, int(s))
        return out

    def _commit(self, jobs: list[Job]) -> list[Outcome]:
        """Decide and commit a group of jobs (in the commit thread); see the module docstring."""
        last = self.last
        wanted: dict[str, list[int]] = {}
        for job in jobs:
            check_all = job.mode != "write"
            for tag, t in zip(job.tags, job.times, strict=True):
                if check_all or t <= last.get(tag, -1):
                    wanted.setdefault(tag, []).append(t)
        stored = self._stored(wanted) if wanted else {}
        current: dict[tuple[str, int], tuple] = {}
        new: dict[tuple[str, int], tuple] = {}  # key -> (value, text, status, flags)
        replaced: dict[tuple[str, int], tuple] = {}
        corrections = []
        now = pd.Timestamp.now(tz="UTC")
        outcomes = []
        for job in jobs:
            codes: list[int] = []
            fresh: list[bool] = []
            mode = job.mode
            for tag, t, v, x, s, f in zip(
                job.tags, job.times, job.values, job.texts, job.status, job.flags, strict=True
            ):
                key = (tag, t)
                mine = (v, x, s)
                fresh.append(False)
                known = current.get(key)
                if known is None:
                    known = stored.get(key)
                if known is None:
                    if mode == "replace":
                        codes.append(_SC.BadNoEntryExists)
                        continue
                    new[key] = (v, x, s, f)
                    current[key] = mine
                    codes.append(_SC.Good if mode == "write" else _SC.GoodEntryInserted)
                    fresh[-1] = True
                    continue
                if mode in ("write", "insert"):
                    same = mode == "write" and _same(known, mine)
                    codes.append(_SC.Good if same else _SC.BadEntryExists)
                    continue
                codes.append(_SC.GoodEntryReplaced)  # replace, or update of a stored key
                if _same(known, mine):
                    continue
                fresh[-1] = True
                current[key] = mine
                if key in new:  # inserted in this group: nothing stored to correct yet
                    new[key] = (v, x, s, f)
                    continue
                replaced[key] = (v, x, s, f)
                corrections.append((tag, t, known, mine, job.user, mode))
            outcomes.append(Outcome(codes, fresh=fresh))
        context_rows, context_state = self.context.changes(
            [item for job in jobs for item in job.context]
        )
        if corrections:
            self.corrections.append(_corrections(corrections, now))
        n = self._write(new, replace=False)
        newest = None
        for tag, t in new:  # committed: a retry after a later failure finds them stored
            if t > last.get(tag, -1):
                last[tag] = t
            newest = t if newest is None or t > newest else newest
        n += self._write(replaced, replace=True)
        if context_rows:
            self.historian.append_batch_context(pd.DataFrame(context_rows))
        self.context.apply(context_state)
        lab = [job.lab for job in jobs if job.lab is not None and len(job.lab)]
        if lab:
            self.lab.append(pd.concat(lab, ignore_index=True))
        self.commits += 1
        self.stored += n
        for outcome in outcomes:
            outcome.stored = n
            outcome.newest_us = newest
        return outcomes

    def _write(self, rows: dict[tuple[str, int], tuple], *, replace: bool) -> int:
        """Commit new or replacement values, numbers to the historian, texts to the text
        table; returns how many."""
        if not rows:
            return 0
        numbers = [(k, r) for k, r in rows.items() if k[0] not in self.text_tags]
        texts = [(k, r) for k, r in rows.items() if k[0] in self.text_tags]
        if numbers:
            frame = _rows(
                [k[0] for k, _ in numbers],
                [k[1] for k, _ in numbers],
                [r[0] for _, r in numbers],
                [r[2] for _, r in numbers],
                [r[3] for _, r in numbers],
            )
            self.historian.append(frame, replace=replace)
        if texts:
            frame = _rows(
                [k[0] for k, _ in texts],
                [k[1] for k, _ in texts],
                [math.nan] * len(texts),
                [r[2] for _, r in texts],
                [r[3] for _, r in texts],
            )
            frame["text"] = [r[1] for _, r in texts]
            flags = frame["flags"].to_numpy() | np.where(frame["quality"] > 0, 4, 0)
            frame["flags"] = flags.astype(np.uint8)
            frame["revision"] = time.time_ns() if replace else 0
            self.text.table.append(frame)
        return len(rows)


def _corrections(items: list[tuple], now: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.to_datetime([t for _, t, *_ in items], unit="us", utc=True),
            "tag": [tag for tag, *_ in items],
            "old_value": [old[0] for _, _, old, *_ in items],
            "old_text": [old[1] for _, _, old, *_ in items],
            "old_status": [old[2] for _, _, old, *_ in items],
            "new_value": [new[0] for _, _, _, new, *_ in items],
            "new_text": [new[1] for _, _, _, new, *_ in items],
            "new_status": [new[2] for _, _, _, new, *_ in items],
            "corrected_at": now,
            "user": [user for *_, user, _ in items],
            "mode": [mode for *_, mode in items],
        }
    )
