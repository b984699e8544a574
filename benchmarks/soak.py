"""Soak test: `biotwin up` for a twin day under faults: nothing lost or doubled, flat memory.

Starts a real ``biotwin up --demo`` on a new data dir (free ports; the first start loads 21
days of history and trains the models) and runs it for ``--hours`` twin hours at ``--speed``
twin seconds per wall second. During the run, at fixed fractions of the twin hours:

- the ingest is killed with SIGKILL (10 % and 30 %) and the OPC UA server gets SIGTERM
  (20 % and 40 %); ``up`` restarts both;
- one closed Parquet file of an earlier UTC day, written by the ingest during the run, gets
  64 bytes flipped in its middle (at the first served midnight + 1 twin hour, not before
  50 %; if that is past 90 % of the run, a file of the loaded history instead, at 50 %).

Resident memory (VmRSS of every process of each service's process group) is sampled every
10 s; a restarted service starts a new series. At the end ``up`` gets SIGTERM, and every
process it started must be gone. Then ``biotwin history verify`` runs, and the historian is
checked against two independent sources of truth:

- the twin itself: the epoch's run re-simulated as the server does it (horizon k of 3 days
  cut from a run to the end of horizon k + 1), every (tag, sample) from the first served
  sample to the last one the server published: value (NaN equals NaN) and StatusCode;
- the server's own history (``DATA_DIR/opcua-history.sqlite``, read only, after the stop):
  what the server actually published, so that "lost by the ingest" and "never published"
  are told apart.

Prints PASS / FAIL per criterion with its figures, writes every figure to a JSON file, and
exits 1 if any criterion fails. Contract and the measured figures: docs/benchmarks.md,
section "Soak test".

Usage: ``python benchmarks/soak.py [--hours 24] [--speed 100] [--data-dir DIR] [--keep]
[--json PATH]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import machine

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

#: twin-hour fractions of the run at which a fault is injected (the corruption: see below)
SCHEDULE = (
    (0.10, "kill-ingest"),
    (0.20, "restart-server"),
    (0.30, "kill-ingest"),
    (0.40, "restart-server"),
)
CORRUPT_EARLIEST = 0.50  # fraction of the run
CORRUPT_LATEST = 0.90
CORRUPT_AFTER_MIDNIGHT_H = 1.0  # twin hours after the first served midnight
FLIP_BYTES = 64
RSS_EVERY_S = 10.0
WARMUP_FRACTION = 0.20  # of the expected wall duration of the run, per series
LEVEL_WINDOW_S = 60.0  # RSS level = median of the samples in such a window
GROWTH_LIMIT_PCT = 10.0
READY_TIMEOUT_S = 2400.0  # first start: 21 days of history, two years simulated, training
STOP_TIMEOUT_S = 90.0
HORIZON_DAYS = 3.0  # serve-opcua's --days, as `biotwin up` starts it
CONTINUOUS_DAYS = 90.0  # serve-opcua's --continuous-days
INITIAL_STATUS = 0x80320000  # BadWaitingForInitialData: a variable before its first sample
SERVICES = ("twin-opcua", "ingest", "scoring", "dashboard")
_COMMANDS = {"serve-opcua": "twin-opcua", "ingest": "ingest", "score": "scoring"}


# ---------------------------------------------------------------------- processes
@dataclass
class Proc:
    """One process of /proc: its parent, process group and command line."""

    pid: int
    ppid: int
    pgid: int
    argv: list[str]


def processes() -> dict[int, Proc]:
    """Every process now (those that vanish while read are left out)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().decode("utf-8", "replace").split("\0")[:-1]
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":  # a zombie is gone but not reaped yet
            continue
        pid = int(entry.name)
        out[pid] = Proc(pid, int(fields[1]), int(fields[2]), argv)
    return out


def rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in kB (None if gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return 0  # a kernel thread or a process exiting


def service_of(argv: list[str]) -> str | None:
    """Which service of `biotwin up` a child's command line is."""
    if "dashboard.serve" in argv:
        return "dashboard"
    if len(argv) > 3 and argv[1:3] == ["-m", "biotwin"]:
        return _COMMANDS.get(argv[3])
    return None


@dataclass
class Monitor:
    """The services of one `biotwin up` (children of ``up_pid``): their pids over time and
    the resident memory of their process groups."""

    up_pid: int
    t0: float
    current: dict[str, int] = field(default_factory=dict)  # service -> leader pid
    starts: list[dict] = field(default_factory=list)  # {"service", "pid", "t"}
    samples: list[dict] = field(default_factory=list)  # {"t", "service", "pid", ...}
    pids: set[int] = field(default_factory=set)  # every pid seen in a service's group
    pgids: set[int] = field(default_factory=set)

    def poll(self) -> dict[int, Proc]:
        """Find the services now; a new leader pid of a service is a (re)start."""
        procs = processes()
        now = time.monotonic() - self.t0
        for p in procs.values():
            name = service_of(p.argv) if p.ppid == self.up_pid else None
            if name and self.current.get(name) != p.pid:
                self.current[name] = p.pid
                self.starts.append({"service": name, "pid": p.pid, "t": round(now, 1)})
                self.pgids.add(p.pgid)
        for name, pid in list(self.current.items()):
            if pid not in procs:
                del self.current[name]
        self.pids.update(p.pid for p in procs.values() if p.pgid in self.pgids)
        return procs

    def sample_rss(self, procs: dict[int, Proc]) -> None:
        """VmRSS of each service's leader and of its whole process group."""
        now = time.monotonic() - self.t0
        for name, pid in self.current.items():
            group = [p.pid for p in procs.values() if p.pgid == pid]
            sizes = [rss_kb(g) or 0 for g in group]
            leader = rss_kb(pid)
            if leader is None:
                continue
            self.samples.append(
                {
                    "t": round(now, 1),
                    "service": name,
                    "pid": pid,
                    "rss_kb": leader,
                    "group_rss_kb": sum(sizes),
                    "processes": len(group),
                }
            )

    def starts_of(self, name: str) -> list[dict]:
        return [s for s in self.starts if s["service"] == name]


# ---------------------------------------------------------------------- the twin's clock
class ServerHistory:
    """The OPC UA server's own history (SQLite, WAL), read only: what it published."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)

    def newest(self) -> pd.Timestamp | None:
        """Source time of the newest published sample (of one tag), or None."""
        if not self.path.exists():
            return None
        try:
            with contextlib.closing(self._connect()) as db:
                (us,) = db.execute(
                    "SELECT max(ts) FROM datachange WHERE node = "
                    "(SELECT min(node) FROM datachange) AND status != ?",
                    (INITIAL_STATUS,),
                ).fetchone()
        except sqlite3.Error:
            return None
        return None if us is None else pd.Timestamp(us, unit="us", tz="UTC")

    def oldest(self) -> pd.Timestamp | None:
        """Source time of the first published sample (not an initial value), or None."""
        with contextlib.closing(self._connect()) as db:
            (us,) = db.execute(
                "SELECT min(ts) FROM datachange WHERE status != ?", (INITIAL_STATUS,)
            ).fetchone()
        return None if us is None else pd.Timestamp(us, unit="us", tz="UTC")

    def span(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last source time of every published sample (initial values left out)."""
        with contextlib.closing(self._connect()) as db:
            lo, hi = db.execute(
                "SELECT min(ts), max(ts) FROM datachange WHERE status != ?", (INITIAL_STATUS,)
            ).fetchone()
        return pd.Timestamp(lo, unit="us", tz="UTC"), pd.Timestamp(hi, unit="us", tz="UTC")

    def all_values(self, since: pd.Timestamp) -> pd.DataFrame:
        """Every published row from ``since`` on: node, us (source time), status, value
        (NaN where SQLite holds NULL, as the server answers HistoryRead)."""
        with contextlib.closing(self._connect()) as db:
            frame = pd.read_sql_query(
                "SELECT node, ts AS us, status, num AS value FROM datachange "
                "WHERE ts >= ? AND status != ?",
                db,
                params=(since.value // 1000, INITIAL_STATUS),
            )
        frame["value"] = frame["value"].astype(float)
        return frame


# ---------------------------------------------------------------------- the run
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` (connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_up(root: Path, speed: float, port: int, opcua_port: int) -> subprocess.Popen:
    """`biotwin up --demo` in its own session, its output in ``root/soak-up.log``."""
    root.mkdir(parents=True, exist_ok=True)
    argv = [
        PYTHON, "-m", "biotwin", "up", "--demo", "--data-dir", str(root),
        "--speed", f"{speed:g}", "--port", str(port), "--opcua-port", str(opcua_port),
    ]  # fmt: skip
    env = {**os.environ, "BIOTWIN_DATA_DIR": str(root), "PYTHONUNBUFFERED": "1"}
    env.pop("BIOTWIN_PARENT_PID", None)
    with open(root / "soak-up.log", "ab") as log:
        return subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(up: subprocess.Popen, mon: Monitor, history: ServerHistory) -> pd.Timestamp:
    """Wait for the first start (history, training) and the first served sample; the time
    of that sample (the seam) is returned.

    Raises
    ------
    RuntimeError
        If `up` exits or nothing is served within ``READY_TIMEOUT_S``.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_note = 0.0
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise RuntimeError(f"biotwin up exited with {up.returncode} before serving")
        mon.poll()
        if set(SERVICES) <= set(mon.current) and history.newest() is not None:
            return history.oldest()
        if time.monotonic() - last_note > 60:
            last_note = time.monotonic()
            print(f"  waiting for the first start ({time.monotonic() - mon.t0:.0f} s)", flush=True)
        time.sleep(2.0)
    raise RuntimeError(f"nothing served within {READY_TIMEOUT_S:.0f} s of starting biotwin up")


def corruption_plan(seam: pd.Timestamp, hours: float) -> tuple[float, str]:
    """When to corrupt (fraction of the run) and which day: ``served`` (the first served
    day, once the twin is an hour past its midnight) or ``loaded`` (history)."""
    midnight = seam.normalize() + pd.Timedelta(days=1)
    due = (midnight - seam) / pd.Timedelta(hours=hours)
    due += CORRUPT_AFTER_MIDNIGHT_H / hours
    if due <= CORRUPT_LATEST:
        return max(due, CORRUPT_EARLIEST), "served"
    return CORRUPT_EARLIEST, "loaded"


def _file_ns(path: Path) -> int:
    """Creation time (ns) in a historian file name ``seg-<ns>-<pid>-<n>.parquet``."""
    try:
        return int(path.name.split("-")[1])
    except (IndexError, ValueError):
        return 0


def corrupt_segment(root: Path, day: pd.Timestamp, written_after_ns: int | None) -> dict:
    """Flip ``FLIP_BYTES`` bytes in the middle of the largest Parquet file of ``day``
    (written by the run when ``written_after_ns`` is given); its keys are kept for the
    final check. Returns what was done."""
    import pyarrow.parquet as pq

    folder = root / "historian" / "segments" / f"date={day:%Y-%m-%d}"
    for _ in range(5):  # a compaction may delete a file between listing and reading
        files = sorted(folder.glob("*.parquet"))
        if written_after_ns is not None:
            files = [f for f in files if _file_ns(f) > written_after_ns]
        if not files:
            return {"error": f"no file to corrupt in {folder}"}
        try:
            target = max(files, key=lambda f: (pq.read_metadata(f).num_rows, f.name))
            keys = pq.read_table(target, columns=["tag", "time", "value"]).to_pandas()
            size = target.stat().st_size
            offset = size // 2 - FLIP_BYTES // 2
            with open(target, "r+b") as f:
                f.seek(offset)
                data = f.read(FLIP_BYTES)
                f.seek(offset)
                f.write(bytes(b ^ 0xFF for b in data))
                f.flush()
                os.fsync(f.fileno())
        except FileNotFoundError:
            continue
        return {
            "file": str(target.relative_to(root / "historian")),
            "size": size,
            "offset": offset,
            "bytes_flipped": len(data),
            "rows": len(keys),
            "tags": int(keys["tag"].nunique()),
            "first_time": str(keys["time"].min()),
            "last_time": str(keys["time"].max()),
            "_keys": keys,
        }
    return {"error": f"every file of {folder} went away while chosen"}


def quarantine_notes(root: Path) -> list[dict]:
    """The quarantine notes (JSON beside each quarantined file)."""
    notes = []
    for path in sorted((root / "historian" / "quarantine").glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            notes.append(json.loads(path.read_text()))
    return notes


def who(mon: Monitor, pid: int | None) -> str:
    """The service a pid belonged to (by the leaders seen), else the pid."""
    for s in mon.starts:
        if s["pid"] == pid:
            return s["service"]
    return f"pid {pid}"


def inject(kind: str, mon: Monitor, t: float) -> dict:
    """Kill the ingest (SIGKILL) or stop the OPC UA server (SIGTERM), as the schedule says;
    waits up to 30 s for the service to be up, if it is being restarted."""
    service, sig = (
        ("ingest", signal.SIGKILL) if kind == "kill-ingest" else ("twin-opcua", signal.SIGTERM)
    )
    deadline = time.monotonic() + 30
    while service not in mon.current and time.monotonic() < deadline:
        time.sleep(1.0)
        mon.poll()
    pid = mon.current.get(service)
    if pid is None:
        return {"what": kind, "t": t, "error": f"{service} not running"}
    os.kill(pid, sig)
    return {"what": kind, "t": t, "service": service, "pid": pid, "signal": sig.name}


def watch_corruption(event: dict, root: Path, mon: Monitor) -> None:
    """Note when (and by which service) the corrupted file was quarantined."""
    if "file" not in event or "quarantined_after_s" in event:
        return
    name = Path(event["file"]).name
    for note in quarantine_notes(root):
        if name in str(note.get("file", "")):
            event["quarantined_after_s"] = round(time.monotonic() - mon.t0 - event["t"], 1)
            event["quarantined_by"] = who(mon, note.get("detected_by_pid"))
            event["problem"] = note.get("problem")
            return


@dataclass
class Run:
    """Everything recorded during the run."""

    seam: pd.Timestamp
    hours: float
    speed: float
    t_ready: float
    events: list[dict] = field(default_factory=list)
    twin_end: pd.Timestamp | None = None
    wall_run_s: float = 0.0
    corruption: dict = field(default_factory=dict)


def soak(up: subprocess.Popen, mon: Monitor, root: Path, run: Run) -> None:
    """Run until the twin is ``run.hours`` past the seam, injecting the faults."""
    history = ServerHistory(root / "opcua-history.sqlite")
    due, day_kind = corruption_plan(run.seam, run.hours)
    plan = sorted([*SCHEDULE, (due, "corrupt")])
    print(f"faults: {', '.join(f'{w} at {f:.0%}' for f, w in plan)} ({day_kind} day)")
    soak_ns = time.time_ns()
    last_rss = last_note = -1e9
    while True:
        if up.poll() is not None:
            raise RuntimeError(f"biotwin up exited with {up.returncode} during the run")
        procs = mon.poll()
        t = time.monotonic() - mon.t0
        if t - last_rss >= RSS_EVERY_S:
            mon.sample_rss(procs)
            last_rss = t
        newest = history.newest() or run.seam
        progress = (newest - run.seam) / pd.Timedelta(hours=run.hours)
        while plan and progress >= plan[0][0]:
            _, kind = plan.pop(0)
            if kind == "corrupt":
                run.corruption = _corrupt(root, run, day_kind, soak_ns, t)
                run.events.append(run.corruption)
            else:
                run.events.append(inject(kind, mon, t))
            run.events[-1]["progress"] = round(progress, 3)
            run.events[-1]["twin_time"] = str(newest)
            print(f"  {t:7.0f} s  twin {newest:%Y-%m-%d %H:%M}  {_event_text(run.events[-1])}")
        watch_corruption(run.corruption, root, mon)
        if t - last_note >= 60:
            last_note = t
            rss = ", ".join(
                f"{s['service']} {s['group_rss_kb'] / 1024:.0f}"
                for s in mon.samples[-len(mon.current) :]
            )
            print(f"  {t:7.0f} s  twin {newest:%Y-%m-%d %H:%M}  {progress:6.1%}  RSS MB: {rss}")
        if progress >= 1.0:
            run.twin_end, run.wall_run_s = newest, t - run.t_ready
            return
        time.sleep(1.0)


def _corrupt(root: Path, run: Run, day_kind: str, soak_ns: int, t: float) -> dict:
    if day_kind == "served":
        event = corrupt_segment(root, run.seam.normalize(), soak_ns)
    else:
        event = corrupt_segment(root, run.seam.normalize() - pd.Timedelta(days=1), None)
    return {"what": "corrupt", "t": t, "day_kind": day_kind, **event}


def _event_text(event: dict) -> str:
    if "error" in event:
        return f"{event['what']}: FAILED to inject: {event['error']}"
    if event["what"] == "corrupt":
        return (
            f"corrupt: {event['bytes_flipped']} bytes flipped at offset {event['offset']:,} of "
            f"{event['file']} ({event['rows']:,} rows)"
        )
    return f"{event['what']}: {event['signal']} to {event['service']} pid {event['pid']}"


def stop_up(up: subprocess.Popen, mon: Monitor, root: Path, ports: list[int]) -> dict:
    """SIGTERM to `up`; then every process it started must be gone and the ports free."""
    mon.poll()
    t = time.monotonic()
    up.send_signal(signal.SIGTERM)
    try:
        code = up.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - t
    time.sleep(1.0)
    left = []
    mine = f"BIOTWIN_DATA_DIR={root}".encode()
    for p in processes().values():
        if p.pid == os.getpid():
            continue
        env = b""
        with contextlib.suppress(OSError):
            env = Path(f"/proc/{p.pid}/environ").read_bytes()
        if p.pid in mon.pids or p.pgid in mon.pgids or mine in env.split(b"\0"):
            left.append({"pid": p.pid, "argv": " ".join(p.argv)[:200]})
    if code is None:  # do not leave it running: its whole session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    return {
        "exit_code": code,
        "stop_s": round(took, 1),
        "left_running": left,
        "ports_busy": [p for p in ports if not port_free(p)],
        "service_pids_seen": len(mon.pids),
    }


# ---------------------------------------------------------------------- the truth
def twin_truth(root: Path, n0: int, n1: int) -> dict[str, dict]:
    """What the server publishes for samples [n0, n1] of the epoch's run, tag by tag,
    computed as serve-opcua does it: horizon k (``HORIZON_DAYS``) is cut from a run of the
    line simulated to the end of horizon k + 1.

    Returns ``{node: {"tag", "unit", "values", "status"}}`` (arrays over n0..n1).
    """
    from connectors.server import STATUS
    from connectors.warm import load_epoch, plant_config
    from twin.config import load_config
    from twin.simulate import simulate

    epoch = load_epoch(root / "twin" / "epoch.json")
    config = plant_config(load_config(), epoch)
    per = round(HORIZON_DAYS * 86400 / (config.plant.sample_interval_min * 60))
    per_plant = max(1, int(CONTINUOUS_DAYS // HORIZON_DAYS))
    status = np.array([STATUS[q] for q in range(3)], dtype=np.int64)
    out: dict[str, dict] = {}
    for k in range(n0 // per, n1 // per + 1):
        plant, j = divmod(k, per_plant)
        sim = simulate(config, days=(j + 2) * HORIZON_DAYS, seed=epoch.seed + plant)
        lo, hi = max(k * per, n0), min((k + 1) * per, n1 + 1)
        for unit in config.units:
            r = sim.read_unit(unit.id)
            for i, tag in enumerate(r.tags):
                node = f"{unit.id}.{tag}"
                slot = out.setdefault(
                    node,
                    {
                        "tag": tag,
                        "unit": unit.id,
                        "values": np.full(n1 - n0 + 1, np.nan),
                        "status": np.zeros(n1 - n0 + 1, dtype=np.int64),
                    },
                )
                shift = (k - j) * per  # sample n is column n - shift of this run
                a, b = lo - shift, hi - shift
                slot["values"][lo - n0 : hi - n0] = r.values[i, a:b]
                slot["status"][lo - n0 : hi - n0] = status[r.quality[i, a:b]]
    return out


def _grid(frame: pd.DataFrame, epoch_us: int, step_us: int, n0: int, n1: int) -> pd.DataFrame:
    """``frame`` (with ``us``) plus ``n``, the sample number, -1 when off the served grid."""
    offset = frame["us"].to_numpy(dtype=np.int64) - epoch_us
    n = offset // step_us
    on = (offset % step_us == 0) & (n >= n0) & (n <= n1)
    return frame.assign(n=np.where(on, n, -1))


def historian_disk(root: Path, seam: pd.Timestamp) -> pd.DataFrame:
    """Every row on disk from ``seam`` on, as stored (no de-duplication): tag, us, value,
    status, flags, file. Read with DuckDB, not through the Historian (no checks)."""
    import duckdb

    glob = root / "historian" / "segments" / "*" / "*.parquet"
    with contextlib.closing(duckdb.connect()) as con:
        return con.execute(
            f"SELECT tag, epoch_us(time) AS us, value, status, flags, filename AS file "
            f"FROM read_parquet('{glob}', filename = true, hive_partitioning = false) "
            f"WHERE time >= '{seam.isoformat()}'::TIMESTAMPTZ"
        ).df()


def rows_before(root: Path, seam: pd.Timestamp) -> dict:
    """Rows on disk before the seam (the loaded history): count, and flagged clock-back."""
    import duckdb

    glob = root / "historian" / "segments" / "*" / "*.parquet"
    for attempt in range(5):  # a compaction may delete a listed file
        try:
            with contextlib.closing(duckdb.connect()) as con:
                rows, back = con.execute(
                    f"SELECT count(*), count(*) FILTER (WHERE flags & 32 != 0) "
                    f"FROM read_parquet('{glob}', hive_partitioning = false) "
                    f"WHERE time < '{seam.isoformat()}'::TIMESTAMPTZ"
                ).fetchone()
            return {"rows": int(rows), "clock_back": int(back)}
        except duckdb.Error:
            time.sleep(1.0 + attempt)
    return {"rows": -1, "clock_back": -1}


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise equality, NaN equal to NaN."""
    return (a == b) | (np.isnan(a) & np.isnan(b))


def runs_of(n: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs ``(first, last)`` of sorted sample numbers."""
    if len(n) == 0:
        return []
    cut = np.flatnonzero(np.diff(n) != 1)
    firsts = np.r_[n[0], n[cut + 1]]
    lasts = np.r_[n[cut], n[-1]]
    return list(zip(firsts.tolist(), lasts.tolist(), strict=True))


def missing_ranges(missing: pd.DataFrame, when) -> list[dict]:
    """Missing (tag, n) as time ranges: consecutive samples missing for the same tag set."""
    out = []
    by_n = missing.groupby("n")["tag"].apply(lambda s: tuple(sorted(s)))
    for first, last in runs_of(by_n.index.to_numpy()):
        part = by_n.loc[first:last]
        tags = sorted(set().union(*part))
        out.append(
            {
                "from": str(when(first)),
                "to": str(when(last)),
                "samples": last - first + 1,
                "tags": len(tags),
                "values": int(sum(len(t) for t in part)),
                "tag_names": tags if len(tags) <= 5 else [*tags[:5], "..."],
                "causes": dict(Counter(missing[missing["n"].between(first, last)]["cause"])),
            }
        )
    return out


def compare(truth: pd.DataFrame, stored: pd.DataFrame, name: str) -> dict:
    """Keys of ``truth`` (tag, n, value, status) missing from ``stored``, and stored values
    that differ (value or StatusCode)."""
    both = truth.merge(stored, on=["tag", "n"], how="left", suffixes=("", "_got"), indicator=True)
    present = both["_merge"] == "both"
    got = both[present]
    value_differs = ~_same(got["value"].to_numpy(), got["value_got"].to_numpy(dtype=float))
    status_differs = got["status"].to_numpy() != got["status_got"].to_numpy(dtype=np.int64)
    diff = got[value_differs | status_differs]
    return {
        "source": name,
        "expected": len(truth),
        "present": int(present.sum()),
        "missing": int((~present).sum()),
        "value_differs": int(value_differs.sum()),
        "status_differs": int(status_differs.sum()),
        "differ_examples": diff.head(5)[["tag", "n", "value", "value_got", "status", "status_got"]]
        .astype(str)
        .to_dict("records"),
        "_missing": both.loc[~present, ["tag", "n"]],
    }


def duplicates(disk: pd.DataFrame, reader: pd.DataFrame) -> dict:
    """(tag, time) pairs stored twice: on disk (rows beyond the first of a key, keys with
    conflicting values or StatusCodes) and in the answer of a query (must be none)."""
    sizes = disk.groupby(["tag", "us"]).size()
    twice = sizes[sizes > 1]
    keys = disk.set_index(["tag", "us"]).loc[twice.index].reset_index() if len(twice) else disk[:0]
    conflicting = 0
    if len(keys):
        spread = keys.groupby(["tag", "us"]).agg(
            values=("value", lambda v: v.nunique(dropna=False)),
            status=("status", "nunique"),
        )
        conflicting = int(((spread["values"] > 1) | (spread["status"] > 1)).sum())
    return {
        "disk_rows": len(disk),
        "disk_keys_stored_twice": len(twice),
        "disk_extra_rows": int((twice - 1).sum()),
        "disk_keys_conflicting": conflicting,
        "disk_twice_flagged_clock_back": int((keys["flags"] & 32 != 0).sum()) if len(keys) else 0,
        "disk_twice_examples": keys.head(6).astype(str).to_dict("records"),
        "query_keys_twice": int(reader.duplicated(["tag", "us"]).sum()),
    }


def quarantine_cost(root: Path, corruption: dict) -> dict:
    """Of the corrupted file's rows: how many a query still answers (stored elsewhere or
    brought back), with their original values, and how many are gone."""
    from connectors.historian import Historian

    keys = corruption.get("_keys")
    if keys is None or not len(keys):
        return {}
    keys = keys.assign(time=pd.to_datetime(keys["time"], utc=True))
    got = Historian(root / "historian").query(
        sorted(keys["tag"].unique()), keys["time"].min(), keys["time"].max() + pd.Timedelta("1us")
    )
    both = keys.merge(got[["tag", "time", "value", "flags"]], on=["tag", "time"], how="left")
    back = both["flags"].notna()
    same = _same(both.loc[back, "value_x"].to_numpy(), both.loc[back, "value_y"].to_numpy())
    return {
        "rows_in_file": len(keys),
        "answered_at_end": int(back.sum()),
        "answered_with_original_value": int(same.sum()),
        "gone": int((~back).sum()),
        "answered_flagged_backfilled": int((both.loc[back, "flags"].astype(int) & 16 != 0).sum()),
    }


def served_frames(root: Path, seam: pd.Timestamp, end: pd.Timestamp) -> dict:
    """The twin's truth, the server's history, a query's answer and the rows on disk over
    the served samples [seam, end], on the sample grid."""
    from connectors.historian import Historian
    from connectors.warm import load_epoch
    from twin.config import load_config

    epoch = load_epoch(root / "twin" / "epoch.json")
    step_us = int(load_config().plant.sample_interval_min * 60 * 1_000_000)
    epoch_us = int(epoch.start_time.timestamp() * 1_000_000)
    n0 = (seam.value // 1000 - epoch_us) // step_us
    n1 = (end.value // 1000 - epoch_us) // step_us
    truth = twin_truth(root, n0, n1)
    width = n1 - n0 + 1
    long = pd.DataFrame(
        {
            "tag": np.repeat([t["tag"] for t in truth.values()], width),
            "n": np.tile(np.arange(n0, n1 + 1), len(truth)),
            "value": np.concatenate([t["values"] for t in truth.values()]),
            "status": np.concatenate([t["status"] for t in truth.values()]),
        }
    )
    tag_of = {node: t["tag"] for node, t in truth.items()}
    produced = ServerHistory(root / "opcua-history.sqlite").all_values(seam)
    produced["tag"] = produced["node"].str.split(";s=", n=1).str[1].map(tag_of)
    produced = _grid(produced.dropna(subset=["tag"]), epoch_us, step_us, n0, n1)
    reader = Historian(root / "historian").query(None, seam, end + pd.Timedelta(minutes=1))
    reader = reader.assign(us=reader["time"].dt.as_unit("us").astype("int64"))
    reader = _grid(reader, epoch_us, step_us, n0, n1)
    disk = historian_disk(root, seam)
    return {
        "n0": n0,
        "n1": n1,
        "epoch_us": epoch_us,
        "step_us": step_us,
        "when": lambda n: pd.Timestamp(epoch_us + n * step_us, unit="us", tz="UTC"),
        "truth": long,
        "produced": produced,
        "reader": reader,
        "disk": disk,
    }


def check_values(root: Path, run: Run) -> dict:
    """Every served (tag, sample): in the server's history and in the historian, with the
    twin's value and StatusCode; missing values by cause and time range; duplicates;
    rows that no sample explains."""
    _, end = ServerHistory(root / "opcua-history.sqlite").span()
    f = served_frames(root, run.seam, end)
    cols = ["tag", "n", "value", "status"]
    produced, reader = f["produced"], f["reader"]
    server = compare(f["truth"], produced.loc[produced["n"] >= 0, cols], "server history")
    stored = compare(f["truth"], reader.loc[reader["n"] >= 0, cols], "historian (query)")
    server_missing = server.pop("_missing")
    missing = stored.pop("_missing")
    lost_keys = set()
    keys = run.corruption.get("_keys")
    if keys is not None:
        times = pd.to_datetime(keys["time"], utc=True).dt.as_unit("us").astype("int64")
        n = (times - f["epoch_us"]) // f["step_us"]
        lost_keys = set(zip(keys["tag"], n, strict=True))
    unpublished = set(zip(server_missing["tag"], server_missing["n"], strict=True))
    last_stored = int(reader.loc[reader["n"] >= 0, "n"].max())
    cause = [
        "quarantined"
        if (t, n) in lost_keys
        else "never published"
        if (t, n) in unpublished
        else "after the last stored sample"
        if n > last_stored
        else "lost"
        for t, n in zip(missing["tag"], missing["n"], strict=True)
    ]
    missing = missing.assign(cause=cause)
    flags = reader["flags"].astype(int)
    return {
        "served_from": str(run.seam),
        "served_to": str(end),
        "samples": f["n1"] - f["n0"] + 1,
        "tags": int(f["truth"]["tag"].nunique()),
        "server_vs_twin": server,
        "historian_vs_twin": stored,
        "missing_by_cause": dict(Counter(cause)),
        "missing_ranges": missing_ranges(missing, f["when"]),
        "stored_not_published": len(reader[reader["n"] >= 0].merge(server_missing)),
        "stored_off_grid": int((reader["n"] < 0).sum()),
        "stored_off_grid_examples": reader[reader["n"] < 0].head(5).astype(str).to_dict("records"),
        "flagged_backfilled": int((flags & 16 != 0).sum()),
        "flagged_clock_back": int((flags & 32 != 0).sum()),
        "duplicates": duplicates(f["disk"], reader),
    }


# ---------------------------------------------------------------------- memory
def _level(series: pd.DataFrame, lo: float, hi: float) -> float | None:
    part = series[(series["t"] >= lo) & (series["t"] <= hi)]["group_rss_kb"]
    return float(part.median()) / 1024 if len(part) else None


def memory_table(mon: Monitor, run: Run) -> list[dict]:
    """One row per series (a service's run between restarts): RSS of its process group at
    start, after the warm-up (20 % of the run's wall time after the series' start, or after
    the first served sample), at the end (medians over 60 s), and the growth."""
    samples = pd.DataFrame(mon.samples)
    warmup = WARMUP_FRACTION * run.wall_run_s
    rows = []
    for s in mon.starts:
        series = samples[(samples["service"] == s["service"]) & (samples["pid"] == s["pid"])]
        if series.empty:
            continue
        first, last = series["t"].min(), series["t"].max()
        origin = max(first, run.t_ready)
        warm_t = origin + warmup
        warm = _level(series, warm_t, warm_t + LEVEL_WINDOW_S)
        end = _level(series, last - LEVEL_WINDOW_S, last)
        judged = warm is not None and last - warm_t >= warmup
        rows.append(
            {
                "service": s["service"],
                "pid": s["pid"],
                "from_s": first,
                "to_s": last,
                "samples": len(series),
                "start_mb": round(float(series["group_rss_kb"].iloc[0]) / 1024, 1),
                "after_warmup_mb": None if warm is None else round(warm, 1),
                "end_mb": None if end is None else round(end, 1),
                "peak_mb": round(float(series["group_rss_kb"].max()) / 1024, 1),
                "processes_max": int(series["processes"].max()),
                "growth_pct": round((end - warm) / warm * 100, 1) if judged else None,
                "judged": judged,
            }
        )
    return rows


# ---------------------------------------------------------------------- after the stop
def history_verify(root: Path, corrupted: str | None) -> dict:
    """``biotwin history verify``: exit code, whether it names the corrupted file."""
    proc = subprocess.run(
        [PYTHON, "-m", "biotwin", "history", "verify", "--data-dir", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    )
    out = proc.stdout + proc.stderr
    name = Path(corrupted).name if corrupted else None
    return {
        "exit_code": proc.returncode,
        "names_corrupted_file": bool(name and name[:40] in out),
        "lines": [line for line in out.splitlines() if "quarantine" in line or "damage" in line][
            :10
        ],
    }


def alarms(root: Path, run: Run) -> dict:
    """The historian's alarms and the command center's event list (dashboard/events.py)."""
    from connectors.historian import Historian
    from dashboard.events import event_list

    historian = Historian(root / "historian")
    rows = historian.alarms()
    name = Path(run.corruption.get("file", "-")).name
    about = rows[rows["message"].str.contains(name[:40], regex=False)]
    out = {
        "historian_alarms": len(rows),
        "about_corrupted_file": about[["severity", "message", "ongoing"]].to_dict("records"),
        "clock_back_alarms": int(rows["key"].str.contains("clock-back").sum()),
    }
    try:
        events = event_list(
            historian, root, run.seam, (run.twin_end or run.seam) + pd.Timedelta(1, "h")
        )
        listed = events[events["message"].str.contains(name[:40], regex=False)]
        out["command_center_lists_it"] = len(listed) > 0
        out["command_center_event_types"] = dict(Counter(events["type"]))
    except Exception as exc:  # a failing event list is a finding
        out["command_center_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


_NOISE = re.compile(r"\d+(\.\d+)?")


def log_findings(root: Path) -> dict:
    """Per service log: warning, error and traceback lines, and the most frequent ones."""
    out = {}
    for path in sorted((root / "logs").glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        bad = [
            line
            for line in lines
            if " WARNING " in line
            or " ERROR " in line
            or " failed" in line  # e.g. "12:00:00 scoring failed: ..." (not a log record)
            or line.startswith(("Traceback", "Error"))
        ]
        common = Counter(_NOISE.sub("#", line.split(" - ")[-1])[:160] for line in bad)
        out[path.stem] = {
            "lines": len(lines),
            "warnings": sum(" WARNING " in line for line in bad),
            "errors": sum(" ERROR " in line for line in bad),
            "failed_lines": sum(" failed" in line for line in bad),
            "tracebacks": sum(line.startswith("Traceback") for line in lines),
            "supervisor_restarts": sum("supervisor:" in line for line in lines),
            "most_frequent": common.most_common(4),
        }
    return out


def scores(root: Path) -> dict:
    """The scoring service's output: the newest plant time it scored (it scores every 60 s;
    the triage reads this file)."""
    path = root / "scores" / "batch_scores.parquet"
    try:
        frame = pd.read_parquet(path, columns=["plant_time"])
    except (OSError, ValueError, KeyError) as exc:
        return {"error": f"cannot read {path}: {type(exc).__name__} {exc}"[:300]}
    return {"batches": len(frame), "plant_time": str(frame["plant_time"].max())}


# ---------------------------------------------------------------------- verdict
def _restarted(mon: Monitor, event: dict) -> float | None:
    """Seconds from a fault to the next start of its service."""
    later = [s["t"] for s in mon.starts_of(event.get("service", "")) if s["t"] > event["t"]]
    return round(min(later) - event["t"], 1) if later else None


def criteria(mon: Monitor, run: Run, res: dict) -> list[tuple[str, bool, str]]:
    """(criterion, passed, figures) for every check of the soak test."""
    ev = [e for e in run.events if "error" not in e]
    kinds = Counter(e["what"] for e in ev)
    back = [_restarted(mon, e) for e in ev if e["what"] != "corrupt"]
    starts = Counter(s["service"] for s in mon.starts)
    unplanned = sum(starts.values()) - len(SERVICES) - len(back)
    v = res.get("values", {})
    h, d = v.get("historian_vs_twin", {}), v.get("duplicates", {})
    s = v.get("server_vs_twin", {})
    causes = v.get("missing_by_cause", {})
    lost = sum(n for c, n in causes.items() if c != "quarantined")
    q, c = res.get("quarantine_cost", {}), run.corruption
    alarm, verify, stop = res.get("alarms", {}), res.get("history_verify", {}), res.get("stop", {})
    mem = res.get("memory", [])
    judged = [m for m in mem if m["judged"]]
    over = [m for m in judged if m["growth_pct"] >= GROWTH_LIMIT_PCT]
    unjudged = sorted(set(SERVICES) - {m["service"] for m in judged})
    twin_h = (run.twin_end - run.seam) / pd.Timedelta(hours=1) if run.twin_end is not None else 0.0
    before = res.get("rows_before_seam", {})
    scored = res.get("scores", {})
    half = run.seam + pd.Timedelta(hours=run.hours / 2)
    return [
        ("scoring service scored during the second half of the run",
         "plant_time" in scored and pd.Timestamp(scored["plant_time"]) >= half,
         f"newest plant time scored {scored.get('plant_time', scored.get('error'))}"),
        ("faults injected (>= 2 ingest SIGKILL, >= 2 server SIGTERM, 1 corruption), "
         "each service back",
         kinds["kill-ingest"] >= 2 and kinds["restart-server"] >= 2 and kinds["corrupt"] == 1
         and None not in back,
         f"{dict(kinds)}; back after {back} s"),
        ("no restart that was not injected", unplanned == 0,
         f"{unplanned} (starts per service {dict(starts)})"),
        (f"ran >= {run.hours:g} twin hours", twin_h >= run.hours,
         f"{twin_h:.2f} twin h in {run.wall_run_s / 60:.1f} wall min"),
        ("server published the twin (every sample, its value and StatusCode)",
         s.get("missing", 1) == 0 and s.get("value_differs", 1) + s.get("status_differs", 1) == 0,
         f"{s.get('expected', 0):,} expected: {s.get('missing')} missing, "
         f"{s.get('value_differs')} values / {s.get('status_differs')} status differ"),
        ("historian holds every served value (apart from the corrupted file)", lost == 0,
         f"{h.get('present', 0):,} of {h.get('expected', 0):,}; missing by cause {causes}"),
        ("historian values equal the twin's", h.get("value_differs", 1) + h.get(
            "status_differs", 1) == 0,
         f"{h.get('value_differs')} values, {h.get('status_differs')} StatusCodes differ"),
        ("no (tag, time) stored twice", d.get("disk_keys_stored_twice", 1) == 0
         and d.get("query_keys_twice", 1) == 0,
         f"on disk {d.get('disk_keys_stored_twice')} keys ({d.get('disk_keys_conflicting')} "
         f"conflicting), in query answers {d.get('query_keys_twice')}"),
        ("nothing stored that the server did not produce",
         v.get("stored_off_grid", 1) == 0 and v.get("stored_not_published", 1) == 0
         and before.get("added", 1) == 0,
         f"off the served grid {v.get('stored_off_grid')}, not in the server's history "
         f"{v.get('stored_not_published')}, added before the seam {before.get('added')} "
         f"({before.get('clock_back_end')} flagged clock-back)"),
        ("corrupted file quarantined during the run, alarm raised and listed",
         "quarantined_after_s" in c and bool(alarm.get("about_corrupted_file"))
         and alarm.get("command_center_lists_it", False),
         f"quarantined after {c.get('quarantined_after_s')} s by {c.get('quarantined_by')}; "
         f"{len(alarm.get('about_corrupted_file', []))} alarm(s); command center lists it: "
         f"{alarm.get('command_center_lists_it')}"),
        ("`biotwin history verify` exits 1 naming it",
         verify.get("exit_code") == 1 and verify.get("names_corrupted_file", False),
         f"exit {verify.get('exit_code')}, names it: {verify.get('names_corrupted_file')}"),
        ("values of the quarantined file back by the end", q.get("gone", 1) == 0,
         f"{q.get('rows_in_file', 0):,} rows in the file: {q.get('answered_at_end', 0):,} "
         f"answered at the end, {q.get('gone', 0):,} gone"),
        (f"RSS growth after warm-up < {GROWTH_LIMIT_PCT:g} % for every service",
         not over and not unjudged,
         "; ".join(f"{m['service']} {m['growth_pct']:+.1f} %" for m in judged)
         + (f"; not judged: {unjudged}" if unjudged else "")),
        ("SIGTERM to `up` stops every child, ports free",
         stop.get("exit_code") == 0 and not stop.get("left_running") and not stop.get(
             "ports_busy"),
         f"exit {stop.get('exit_code')} in {stop.get('stop_s')} s, "
         f"{len(stop.get('left_running', []))} left running, ports busy {stop.get('ports_busy')}"),
    ]  # fmt: skip


def _public(obj):
    """``obj`` without the private ``_...`` keys (frames kept for the checks)."""
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list | tuple):
        return [_public(v) for v in obj]
    return obj


def print_report(res: dict, checks: list[tuple[str, bool, str]]) -> None:
    """Memory table, missing ranges and the verdicts."""
    print("\nresident memory of each service's process group (MB; a restart starts a series)")
    print(f"{'service':<11}{'pid':>8}{'from s':>8}{'to s':>8}{'start':>8}{'warm':>8}"
          f"{'end':>8}{'peak':>8}{'growth':>9}")  # fmt: skip
    for m in res.get("memory", []):
        growth = f"{m['growth_pct']:+.1f} %" if m["judged"] else "short"
        print(
            f"{m['service']:<11}{m['pid']:>8}{m['from_s']:>8.0f}{m['to_s']:>8.0f}"
            f"{m['start_mb']:>8.0f}{m['after_warmup_mb'] or 0:>8.0f}{m['end_mb'] or 0:>8.0f}"
            f"{m['peak_mb']:>8.0f}{growth:>9}"
        )
    ranges = res.get("values", {}).get("missing_ranges", [])
    print(f"\nmissing values: {len(ranges)} time range(s)")
    for r in ranges[:12]:
        print(
            f"  {r['from']} .. {r['to']}: {r['samples']} samples x {r['tags']} tags = "
            f"{r['values']:,} values {r['causes']} {r['tag_names']}"
        )
    print()
    for name, ok, figures in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {figures}")


def write_json(path: Path, data: dict) -> None:
    """``data`` as JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_public(data), indent=2, default=str))
    os.replace(tmp, path)


def after_stop(root: Path, mon: Monitor, run: Run, res: dict) -> None:
    """The checks that read the stopped data dir (each failure recorded, not raised)."""
    steps = (
        ("history_verify", lambda: history_verify(root, run.corruption.get("file"))),
        ("scores", lambda: scores(root)),
        ("alarms", lambda: alarms(root, run)),
        ("values", lambda: check_values(root, run)),
        ("quarantine_cost", lambda: quarantine_cost(root, run.corruption)),
        ("memory", lambda: memory_table(mon, run)),
        ("logs", lambda: log_findings(root)),
    )
    for key, step in steps:
        t = time.monotonic()
        try:
            res[key] = step()
        except Exception as exc:  # reported as a failed check
            res[key + "_error"] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"  {key}: {res[key + '_error']}")
        print(f"  checked {key} ({time.monotonic() - t:.0f} s)", flush=True)
    before = res.get("rows_before_seam", {})
    end = rows_before(root, run.seam)
    keys = run.corruption.get("_keys")
    quarantined = 0 if keys is None else int((keys["time"] < run.seam).sum())
    before.update(rows_end=end["rows"], clock_back_end=end["clock_back"])
    before["quarantined"] = quarantined  # rows of the corrupted file, if of the loaded days
    before["added"] = end["rows"] + quarantined - before.get("rows", end["rows"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="twin hours to run")
    parser.add_argument("--speed", type=float, default=100.0, help="twin s per wall s")
    parser.add_argument("--data-dir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--json", type=Path, help="figures (default: beside the data dir)")
    args = parser.parse_args()
    if not (args.hours > 0 and args.speed > 0):
        parser.error(f"--hours and --speed must be > 0; got {args.hours}, {args.speed}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = (args.data_dir or Path(tempfile.mkdtemp(prefix=f"biotwin-soak-{stamp}-"))).resolve()
    out = args.json or root.parent / f"biotwin-soak-{stamp}.json"
    ports = [free_port(), free_port()]
    res: dict = {
        "command": " ".join(sys.argv),
        "date": stamp,
        "machine": machine(),
        "data_dir": str(root),
        "hours": args.hours,
        "speed": args.speed,
        "expected_wall_min": round(args.hours * 3600 / args.speed / 60, 1),
    }
    print(res["machine"])
    print(f"biotwin up --speed {args.speed:g} on {root} (dashboard {ports[0]}, OPC UA {ports[1]})")
    up = start_up(root, args.speed, ports[0], ports[1])
    mon = Monitor(up.pid, time.monotonic())
    run = None
    try:
        seam = wait_ready(up, mon, ServerHistory(root / "opcua-history.sqlite"))
        run = Run(seam, args.hours, args.speed, time.monotonic() - mon.t0)
        res["first_start_s"] = round(run.t_ready, 1)
        res["rows_before_seam"] = rows_before(root, seam)
        print(f"serving from {seam} after {run.t_ready:.0f} s; {args.hours:g} twin h ahead")
        soak(up, mon, root, run)
    except (RuntimeError, OSError) as exc:
        res["run_error"] = str(exc)
        print(f"run failed: {exc}")
    finally:
        res["stop"] = stop_up(up, mon, root, ports)
        print(f"stopped: {res['stop']}")
    if run is not None:
        res.update(events=run.events, seam=str(run.seam), twin_end=str(run.twin_end))
        res["wall_run_min"] = round(run.wall_run_s / 60, 1)
        res["service_starts"] = mon.starts
        after_stop(root, mon, run, res)
        checks = criteria(mon, run, res)
        print_report(res, checks)
    else:
        checks = [("run", False, res.get("run_error", "did not start"))]
    res["criteria"] = [{"name": n, "pass": ok, "figures": f} for n, ok, f in checks]
    res["rss_samples"] = mon.samples
    write_json(out, res)
    print(f"\nfigures: {out}")
    if args.data_dir is None and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
