"""Benchmark: values per second from an OPC UA server on loopback into the historian.

A node-opcua server (connectors/interop/server.js, a separate process) changes N Double
tags R times per second, each tick stamped once and counted by a Tick variable. Our ingest
(in this process) subscribes to all of them and writes the historian. Reported per case:

- values/s stored, and completeness: for every tag, the values stored between the first and
  the last tick the ingest saw, against the ticks the server produced in that window (checked
  with the tick counter, not estimated);
- latency from source timestamp to committed (queryable) in the historian, p50 / p95;
- ingest CPU microseconds per value (process time of this process / values stored).

Usage: ``python benchmarks/bench_ingest.py [--seconds 10] [--cases 100x10,1000x10,3000x10]``
(needs ``npm ci --prefix connectors/interop``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine

from connectors.historian import Historian
from connectors.ingest import Ingest

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
    """Records when each appended row became queryable."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.latencies: list[np.ndarray] = []

    def append(self, rows):
        n = super().append(rows)
        committed = time.time()
        source = rows["time"].astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
        self.latencies.append(committed - source)
        return n


def run_case(tags: int, rate: float, seconds: float, work: Path) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        [
            "node",
            str(INTEROP / "server.js"),
            "--port",
            str(port),
            "--tags",
            str(tags),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds + 6),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        json_line(proc.stdout)
        historian = TimedHistorian(work / f"h{tags}")
        url = f"opc.tcp://127.0.0.1:{port}/UA/node"

        async def main():
            ingest = Ingest(url, historian, work / "spool", publishing_ms=200, flush_s=0.5)
            job = asyncio.create_task(ingest.run())
            await asyncio.wait_for(ingest.connected.wait(), 120)
            await asyncio.sleep(2)  # settle
            c0, w0, s0 = time.process_time(), time.perf_counter(), ingest.state.received
            await asyncio.sleep(seconds)
            c1, w1, s1 = time.process_time(), time.perf_counter(), ingest.state.received
            done = await asyncio.to_thread(json_line, proc.stdout)
            await asyncio.sleep(2)
            ingest.stop()
            await job
            return (s1 - s0) / (w1 - w0), (c1 - c0) / max(s1 - s0, 1) * 1e6, done

        rate_in, cpu_us, done = asyncio.run(main())
        ticks = historian.query(["Tick"])["value"]
        first, last = int(ticks[ticks > 0].min()), int(ticks.max())
        expected = (last - first + 1) * tags
        data = historian.query()
        data = data[data["tag"].str.startswith("T0")]
        window = data[(data["value"] >= first) & (data["value"] <= last)]
        per_tag = (
            window.groupby("tag")
            .size()
            .reindex([f"T{i:05d}" for i in range(1, tags + 1)], fill_value=0)
        )
        stored = int(per_tag.min())
        total = int(per_tag.sum())
        lat = np.concatenate(historian.latencies)
        return {
            "tags": tags,
            "rate_hz": rate,
            "values_per_s": rate_in,
            "cpu_us_per_value": cpu_us,
            "ticks_window": last - first + 1,
            "complete_min_tag": stored / (last - first + 1),
            "rows_total": total,
            "expected_window_rows": expected,
            "p50_latency_s": float(np.percentile(lat, 50)),
            "p95_latency_s": float(np.percentile(lat, 95)),
            "server_ticks": done.get("ticks"),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cases", default="100x10,1000x10,3000x10", help="TAGSxHZ,...")
    args = parser.parse_args()
    assert shutil.which("node"), "needs Node.js and `npm ci --prefix connectors/interop`"
    print(f"machine: {machine()}; ingest: one asyncua session; server: node-opcua")
    work = Path(tempfile.mkdtemp(prefix="biotwin-ingest-"))
    try:
        for case in args.cases.split(","):
            tags, rate = (float(x) for x in case.split("x"))
            results = [
                run_case(int(tags), rate, args.seconds, work / f"r{r}") for r in range(args.runs)
            ]
            med = {k: statistics.median(r[k] for r in results) for k in results[0]}
            print(
                f"{int(tags):>5} tags x {rate:g} Hz: {med['values_per_s']:,.0f} values/s, "
                f"completeness {100 * med['complete_min_tag']:.1f} % "
                f"(worst tag over {int(med['ticks_window'])} ticks), "
                f"latency p50 {med['p50_latency_s']:.2f} s p95 {med['p95_latency_s']:.2f} s, "
                f"ingest CPU {med['cpu_us_per_value']:.1f} us/value"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
