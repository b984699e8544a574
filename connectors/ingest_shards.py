"""The ingest sharded over several worker processes, each with its own OPC UA session.

One asyncua session keeps one publish request outstanding and decodes in one Python
thread, which caps it at 14-18 k values/s on this machine (docs/benchmarks.md). With
``biotwin ingest URL --sessions N`` the parent:

1. connects once, discovers the tags (browse or tag map), stores their metadata and
   disconnects (:meth:`connectors.ingest.Ingest.discover`);
2. splits them deterministically (:func:`split_tags`: sorted by tag name, round robin;
   all batch context variables of a unit go to one shard, units round robin too);
3. starts one worker process per shard (multiprocessing, ``spawn``: no state inherited
   from the parent's event loop). Each runs an :class:`~connectors.ingest.Ingest` on its
   tags, with its own session, subscription, de-duplication state, reconnection, backfill
   (also on its first start, from the last stored times: what the server produced while
   no ingest ran) and spool folder (``spool/shard-<i>``), and appends to the same
   historian (segment names carry the writer's pid and a counter, so writers never
   collide);
4. supervises them: a worker that dies is reported and restarted (exponential backoff);
   the restarted worker backfills from the last stored times where the server keeps
   history, as after a lost connection;
5. on :meth:`ShardedIngest.stop` (SIGINT / SIGTERM to the parent) sends SIGTERM to every
   worker, which flushes everything to the historian (or its spool) and exits, and waits
   for them. Workers ignore SIGINT (a Ctrl-C reaches the whole process group: the parent
   decides) and stop by themselves if the parent disappears.

Each worker reports its counters to the parent every ``stats_s`` seconds through a queue
(values received and stored, duplicates, values with a source clock gone back -- kept
flagged or refused --, reconnects, CPU time, connected or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from connectors.historian import Historian
from connectors.ingest import Ingest, IngestError, TagSpec

__all__ = ["ShardedIngest", "WorkerStats", "split_tags"]

logger = logging.getLogger(__name__)

#: Seconds a worker may take to flush and exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 60.0
_COUNTERS = ("received", "stored", "duplicates", "clock_back", "refused", "reconnects", "cpu_s")


def split_tags(
    specs: list[TagSpec], context: list[tuple[str, str, str]], n: int
) -> list[tuple[list[TagSpec], list[tuple[str, str, str]]]]:
    """Split tags over ``n`` shards: sorted by (tag, node id), dealt round robin.

    Batch context variables ``(node_id, unit, field)`` are grouped by unit (one unit's
    fields make one context row, so they must stay together); sorted units are dealt
    round robin as well. The split depends only on the tags, never on discovery order.
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1; got {n!r}")
    order = sorted(specs, key=lambda s: (s.tag, s.node_id))
    units = sorted({unit for _, unit, _ in context})
    shard_of_unit = {unit: i % n for i, unit in enumerate(units)}
    out = []
    for i in range(n):
        ctx = sorted(c for c in context if shard_of_unit[c[1]] == i)
        out.append((order[i::n], ctx))
    return out


@dataclass
class WorkerStats:
    """The last report of one worker."""

    shard: int
    pid: int = 0
    at: float = 0.0  # time.time() of the report
    cpu_s: float = 0.0  # the worker's process time
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    clock_back: int = 0  # values older than the stored ones, kept flagged
    refused: int = 0  # the same, refused (--on-clock-back refuse)
    reconnects: int = 0
    connected: bool = False
    error: str | None = None


@dataclass
class _Worker:
    shard: int
    specs: list[TagSpec]
    context: list[tuple[str, str, str]]
    process: Any = None
    started: int = 0  # how many times started
    restart_at: float | None = None
    stats: WorkerStats = field(default=None)  # type: ignore[assignment]
    # counters of earlier incarnations (a restarted worker counts from zero)
    done: dict[str, float] = field(default_factory=dict)


def _worker_main(
    shard: int,
    endpoint: str,
    historian: Historian,
    spool_dir: str,
    specs: list[TagSpec],
    context: list[tuple[str, str, str]],
    options: dict,
    last: dict[str, pd.Timestamp] | None,
    resume: bool,
    reports: Any,
    stats_s: float,
    parent: int,
) -> None:
    """One shard, in its own process: an Ingest on ``specs`` until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides on Ctrl-C
    logging.basicConfig(
        level=options.pop("log_level", logging.WARNING),
        format=f"%(asctime)s shard {shard} %(levelname)s %(name)s: %(message)s",
    )
    if last is None:  # a restarted worker: what its predecessor stored counts
        last = historian.last_times()
    mine = {s.tag for s in specs}
    job = Ingest(
        endpoint,
        historian,
        Path(spool_dir),
        tag_map=specs,
        context_map=context,
        resolved=True,
        last_times={t: v for t, v in last.items() if t in mine},
        resume=resume,
        **options,
    )

    def report(error: str | None = None) -> None:
        with contextlib.suppress(Exception):
            reports.put_nowait(
                WorkerStats(
                    shard=shard,
                    pid=os.getpid(),
                    at=time.time(),
                    cpu_s=time.process_time(),
                    received=job.state.received,
                    stored=job.state.stored,
                    duplicates=job.state.duplicates,
                    clock_back=job.state.clock_back,
                    refused=job.state.refused,
                    reconnects=job.reconnects,
                    connected=job.connected.is_set(),
                    error=error,
                )
            )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, job.stop)
        run = asyncio.create_task(job.run())
        while not run.done():
            await asyncio.wait({run}, timeout=stats_s)
            if os.getppid() != parent:  # orphaned: the parent was killed
                logger.warning("ingest shard %d: parent %d gone, stopping", shard, parent)
                job.stop()
            report()
        await run

    try:
        asyncio.run(main())
    except IngestError as exc:
        report(str(exc))
        raise SystemExit(2) from None
    report()
    reports.close()
    reports.join_thread()


class ShardedIngest:
    """Ingest over ``sessions`` worker processes (see the module docstring).

    Parameters
    ----------
    endpoint, historian, spool_dir, tag_map, browse_root
        As for :class:`~connectors.ingest.Ingest`; every other keyword argument of
        :class:`~connectors.ingest.Ingest` (sampling, security, credentials, flush_s...)
        is passed to each worker.
    sessions : int
        Number of worker processes (one OPC UA session each).
    stats_s : float
        How often workers report their counters.
    restart_backoff_s : (first, max)
        Delay before restarting a dead worker, doubling per restart of that worker.
    """

    def __init__(
        self,
        endpoint: str,
        historian: Historian,
        spool_dir: Path,
        *,
        sessions: int = 2,
        tag_map: list[TagSpec] | None = None,
        browse_root: str | None = None,
        stats_s: float = 0.5,
        restart_backoff_s: tuple[float, float] = (0.5, 30.0),
        log_level: int = logging.WARNING,
        **options: Any,
    ) -> None:
        if sessions < 1:
            raise IngestError(f"sessions: must be >= 1; got {sessions!r}")
        # validates the endpoint and options the same way the workers will
        self._probe = Ingest(
            endpoint,
            historian,
            spool_dir,
            tag_map=tag_map,
            browse_root=browse_root,
            last_times={},
            **options,
        )
        self.endpoint = endpoint
        self.historian = historian
        self.spool_dir = Path(spool_dir)
        self.sessions = sessions
        self.options = {**options, "log_level": log_level}
        self.stats_s = stats_s
        self.restart_backoff_s = restart_backoff_s
        self.workers: list[_Worker] = []
        self.restarts = 0
        self.connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._ctx = mp.get_context("spawn")
        self._reports = None
        self.on_event = lambda message: logger.warning("%s", message)

    # ------------------------------------------------------------------ counters
    def totals(self) -> dict[str, float]:
        """Counters summed over all workers and their earlier incarnations."""
        keys = _COUNTERS
        out = dict.fromkeys(keys, 0.0)
        for w in self.workers:
            for k in keys:
                out[k] += w.done.get(k, 0.0) + (getattr(w.stats, k) if w.stats else 0.0)
        return out

    def stats(self) -> list[WorkerStats]:
        """The last report of each worker."""
        return [w.stats for w in self.workers]

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None]

    # ------------------------------------------------------------------ life cycle
    def stop(self) -> None:
        """Stop every worker (each flushes), then return from :meth:`run`."""
        self._stop.set()

    async def run(self) -> None:
        """Discover, split, start the workers and supervise them until :meth:`stop`.

        Raises
        ------
        IngestError
            If discovery fails (endpoint, security, credentials, tag map).
        """
        specs, context = await self._probe.discover()
        await asyncio.to_thread(self._drain_old_spool)
        shards = split_tags(specs, context, self.sessions)
        self.workers = [
            _Worker(i, s, c, stats=WorkerStats(shard=i)) for i, (s, c) in enumerate(shards)
        ]
        self._last_times = await asyncio.to_thread(self.historian.last_times)
        self._reports = self._ctx.Queue()
        try:
            for w in self.workers:
                self._start(w)
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.2)
                self._read_reports()
                self._supervise()
        finally:
            await asyncio.to_thread(self._shutdown)

    def _start(self, w: _Worker) -> None:
        spool = self.spool_dir / f"shard-{w.shard}"
        spool.mkdir(parents=True, exist_ok=True)
        w.process = self._ctx.Process(
            target=_worker_main,
            name=f"biotwin-ingest-{w.shard}",
            args=(
                w.shard,
                self.endpoint,
                self.historian,
                str(spool),
                w.specs,
                w.context,
                dict(self.options),
                None if w.started else self._last_times,
                w.started > 0,
                self._reports,
                self.stats_s,
                os.getpid(),
            ),
        )
        w.process.start()
        w.started += 1
        w.restart_at = None
        logger.info("ingest shard %d: %d tags, pid %d", w.shard, len(w.specs), w.process.pid)

    def _read_reports(self) -> None:
        while True:
            try:
                report: WorkerStats = self._reports.get_nowait()
            except (queue.Empty, OSError, ValueError):
                break
            w = self.workers[report.shard]
            if w.process is None or report.pid != w.process.pid:
                continue  # a late report of an earlier incarnation
            w.stats = report
            if report.error:
                self.on_event(f"ingest shard {report.shard}: {report.error}")
        if not self.connected.is_set() and all(
            w.stats.connected and w.process is not None and w.stats.pid == w.process.pid
            for w in self.workers
        ):
            self.connected.set()

    def _supervise(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.restart_at is not None:
                if now >= w.restart_at and not self._stop.is_set():
                    self._start(w)
                continue
            if w.process is None or w.process.is_alive():
                continue
            code = w.process.exitcode
            for k in _COUNTERS:
                w.done[k] = w.done.get(k, 0.0) + getattr(w.stats, k)
            w.stats = WorkerStats(shard=w.shard)
            self.connected.clear()
            delay = min(self.restart_backoff_s[0] * 2 ** (w.started - 1), self.restart_backoff_s[1])
            self.restarts += 1
            w.restart_at = now + delay
            self.on_event(
                f"ingest shard {w.shard} (pid {w.process.pid}) died with exit code {code}; "
                f"restarting it in {delay:.1f} s"
            )
            w.process.close()
            w.process = None

    def _shutdown(self) -> None:
        """SIGTERM every worker, wait for them to flush and exit (kill after a timeout)."""
        live = [w for w in self.workers if w.process is not None]
        for w in live:
            if w.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for w in live:
            # keep reading: a worker exits only once its reports are in the pipe
            while w.process.is_alive() and time.monotonic() < deadline:
                w.process.join(0.1)
                self._read_reports()
            if w.process.is_alive():
                self.on_event(f"ingest shard {w.shard} did not stop in time; killed")
                w.process.kill()
                w.process.join(5)
        if self._reports is not None:
            self._read_reports()
            self._reports.close()
            self._reports.join_thread()
            self._reports = None

    def _drain_old_spool(self) -> None:
        """Rows left in a spool by an earlier run (any number of shards) go in first."""
        for path in sorted(self.spool_dir.rglob("*.parquet")):
            try:
                self.historian.append(pd.read_parquet(path))
            except Exception:
                logger.warning("ingest: historian unavailable; %s stays in the spool", path)
                return
            path.unlink()
