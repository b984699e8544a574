"""Benchmark: values per second from an OPC UA server on loopback into the historian.

A node-opcua server (connectors/interop/server.js, a separate process) changes N Double
tags R times per second, each tick stamped once and counted by a Tick variable. Our ingest
subscribes to all of them and writes the historian: with ``--sessions 1`` in this process
(what ``biotwin ingest`` does), with ``--sessions N`` (N > 1) over N worker processes, one
OPC UA session each (connectors/ingest_shards.py, what ``biotwin ingest --sessions N``
does). Reported per case, medians over ``--runs``:

- values/s received by the ingest over the measured window (after connect + 2 s settle),
  and values/s the server produced in that window (by source time): an ingest receiving
  less than was produced is falling behind;
- completeness: for every tag, the values stored from the first tick that every session saw
  to the last tick the server produced, against the ticks in that window (checked with the
  tick counter, not estimated); the server stops producing (SIGUSR2) before the ingest
  stops;
- latency from source timestamp to committed (queryable) in the historian, p50 / p95;
- ingest CPU microseconds per value: process time of every ingest process (this one, plus
  the workers) over the window / values received;
- the server's CPU over the window (% of one core), to show what is left.

``--server asyncua`` runs the same tick server on asyncua (benchmarks/asyncua_server.py)
instead: asyncua's server costs ~100 us per value change, so offer it less (e.g.
``--cases 100x40,1000x4,3000x1.333``, 4,000 values/s).

Usage: ``python benchmarks/bench_ingest.py [--seconds 10] [--runs 3] [--sessions 1,2]
[--cases 100x200,1000x20,3000x6.667] [--server node|asyncua]`` (node: needs
``npm ci --prefix connectors/interop``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine

from connectors.historian import FLAG_OVERFLOW, Historian
from connectors.ingest import Ingest
from connectors.ingest_shards import ShardedIngest

INTEROP = Path(__file__).resolve().parents[1] / "connectors" / "interop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def json_line(stream) -> dict:
    for _ in range(50):
        line = stream.readline()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("node server printed no JSON")


class TimedHistorian(Historian):
    """Records when each appended row became queryable, in ``latency/<pid>.f64`` next to the
    historian (it runs in worker processes too)."""

    def append(self, rows):
        n = super().append(rows)
        committed = time.time()
        source = rows["time"].astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
        folder = self.root.parent / "latency"
        folder.mkdir(exist_ok=True)
        with open(folder / f"{os.getpid()}.f64", "ab") as fh:
            (committed - source).astype(np.float64).tofile(fh)
        return n

    def latencies(self) -> np.ndarray:
        files = sorted((self.root.parent / "latency").glob("*.f64"))
        return np.concatenate([np.fromfile(f, dtype=np.float64) for f in files])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVERS = {  # the tick server's command and endpoint path
    "node": (["node", str(INTEROP / "server.js")], "/UA/node"),
    "asyncua": (
        [sys.executable, str(Path(__file__).with_name("asyncua_server.py"))],
        "/UA/asyncua",
    ),
}


def run_case(
    tags: int, rate: float, seconds: float, work: Path, sessions: int, server: str = "node"
) -> dict:
    port = free_port()
    command, path = SERVERS[server]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--tags", str(tags), "--rate", str(rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        json_line(proc.stdout)
        historian = TimedHistorian(work / f"h{tags}")
        url = f"opc.tcp://127.0.0.1:{port}{path}"
        # every monitored item's queue holds 2 s of its changes (the default, 10, is 0.5 s
        # at 20 Hz: a pause of the ingest longer than that drops values, flagged Overflow)
        queue = max(10, math.ceil(2 * rate))
        options = dict(publishing_ms=200, flush_s=0.5, queue_size=queue)

        def snapshot(job) -> tuple[float, dict]:
            """(this process's CPU, {worker pid: (time, received, cpu)}) right now."""
            if sessions == 1:
                return time.process_time(), {0: (time.perf_counter(), job.state.received, 0)}
            return time.process_time(), {
                s.pid: (s.at, s.received, s.cpu_s) for s in job.stats() if s.pid
            }

        async def main():
            if sessions == 1:
                job = Ingest(url, historian, work / "spool", **options)
            else:
                job = ShardedIngest(
                    url, historian, work / "spool", sessions=sessions, stats_s=0.25, **options
                )
            task = asyncio.create_task(job.run())
            await asyncio.wait_for(job.connected.wait(), 300)
            await asyncio.sleep(2)  # settle
            c0, w0 = snapshot(job)
            n0, t0 = cpu_seconds(proc.pid), time.time()
            await asyncio.sleep(seconds)
            c1, w1 = snapshot(job)
            n1, t1 = cpu_seconds(proc.pid), time.time()
            proc.send_signal(signal.SIGUSR2)  # stop producing; the ingest gets the rest
            done = await asyncio.to_thread(json_line, proc.stdout)
            await asyncio.sleep(2)
            job.stop()
            await task
            assert set(w0) == set(w1), "a worker restarted during the window"
            received = sum(w1[p][1] - w0[p][1] for p in w0)
            rate_in = sum((w1[p][1] - w0[p][1]) / (w1[p][0] - w0[p][0]) for p in w0)
            cpu = (c1 - c0) + sum(w1[p][2] - w0[p][2] for p in w0)
            server_cpu = (n1 - n0) / seconds
            return rate_in, cpu / max(received, 1) * 1e6, server_cpu, done, (t0, t1)

        rate_in, cpu_us, server_cpu, done, (t0, t1) = asyncio.run(main())
        # the window: from the first tick every session saw (sessions subscribe one after
        # the other) to the last tick produced; every tag must have each tick in it once
        data = historian.query()
        data = data[data["tag"].str.startswith("T0")]
        first = int(data.groupby("tag")["value"].min().max())
        last = int(done["ticks"])
        expected = (last - first + 1) * tags
        window = data[(data["value"] >= first) & (data["value"] <= last)]
        per_tag = (
            window.groupby("tag")
            .size()
            .reindex([f"T{i:05d}" for i in range(1, tags + 1)], fill_value=0)
        )
        stored = int(per_tag.min())
        # what the server produced in the window (all of it stored, if complete): when the
        # ingest receives less than this, it is falling behind (the backlog grows)
        stamp = data["time"].astype("datetime64[ns, UTC]").astype("int64") / 1e9
        produced = int(((stamp >= t0) & (stamp < t1)).sum()) / (t1 - t0)
        total = int(per_tag.sum())
        lat = historian.latencies()
        return {
            "tags": tags,
            "rate_hz": rate,
            "values_per_s": rate_in,
            "produced_per_s": produced,
            "cpu_us_per_value": cpu_us,
            "server_cpu": server_cpu,
            "ticks_window": last - first + 1,
            "complete_min_tag": stored / (last - first + 1),
            "complete_all": total / expected,
            "rows_total": total,
            "overflow_rows": int((data["flags"].astype(int) & FLAG_OVERFLOW).astype(bool).sum()),
            "queue_size": queue,
            "expected_window_rows": expected,
            "p50_latency_s": float(np.percentile(lat, 50)),
            "p95_latency_s": float(np.percentile(lat, 95)),
            "server_ticks": last,
            "last_tick_seen": int(historian.query(["Tick"])["value"].max()),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cases", default="100x200,1000x20,3000x6.667", help="TAGSxHZ,...")
    parser.add_argument("--sessions", default="1,2", help="ingest sessions (processes),...")
    parser.add_argument(
        "--server",
        choices=sorted(SERVERS),
        default="node",
        help="node-opcua (connectors/interop/server.js) or asyncua (benchmarks/asyncua_server.py)",
    )
    args = parser.parse_args()
    if args.server == "node":
        assert shutil.which("node"), "needs Node.js and `npm ci --prefix connectors/interop`"
    print(f"machine: {machine()}; server: {args.server}")
    work = Path(tempfile.mkdtemp(prefix="biotwin-ingest-"))
    try:
        for case in args.cases.split(","):
            tags, rate = (float(x) for x in case.split("x"))
            for sessions in (int(n) for n in args.sessions.split(",")):
                results = []
                for r in range(args.runs):
                    res = run_case(
                        int(tags),
                        rate,
                        args.seconds,
                        work / f"c{case}-s{sessions}-r{r}",
                        sessions,
                        args.server,
                    )
                    results.append(res)
                    print("  run", json.dumps({k: round(v, 3) for k, v in res.items()}))
                med = {k: statistics.median(r[k] for r in results) for k in results[0]}
                print(
                    f"{int(tags):>5} tags x {rate:g} Hz, {sessions} session(s): "
                    f"{med['values_per_s']:,.0f} values/s received "
                    f"({med['produced_per_s']:,.0f}/s produced), "
                    f"completeness {100 * med['complete_min_tag']:.1f} % "
                    f"(worst tag over {int(med['ticks_window'])} ticks), "
                    f"latency p50 {med['p50_latency_s']:.2f} s p95 {med['p95_latency_s']:.2f} s, "
                    f"ingest CPU {med['cpu_us_per_value']:.1f} us/value, "
                    f"server CPU {100 * med['server_cpu']:.0f} %",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
