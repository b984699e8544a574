"""Benchmark: the historian on a year of 1-minute data for 150 tags (~79 M rows).

Writes the year as one append per day (what a day of ingest compacts to), then times, each
over several runs (medians reported):

- the command center's query: the last 24 h of 50 tags as 1-minute means;
- a raw 7-day range of 10 tags;
- a batch-aligned query (all tags of one unit over a 50-hour batch);
- and the append rate of small commits (1 s of 3,000 tags), as the ingest makes them.

Usage: ``python benchmarks/bench_historian.py [--days 365] [--runs 5]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import machine

from connectors.historian import Historian

START = pd.Timestamp("2026-01-01", tz="UTC")


def write_year(h: Historian, days: int, n_tags: int) -> tuple[float, int]:
    tags = np.array([f"T{i:03d}" for i in range(n_tags)])
    rng = np.random.default_rng(0)
    minutes = 24 * 60
    rows = 0
    t0 = time.perf_counter()
    for d in range(days):
        times = START + pd.Timedelta(days=d) + pd.to_timedelta(np.arange(minutes), "min")
        frame = pd.DataFrame(
            {
                "time": np.tile(times.to_numpy(), n_tags),
                "tag": np.repeat(tags, minutes),
                "value": rng.normal(size=minutes * n_tags),
            }
        )
        frame["time"] = (
            frame["time"].dt.tz_localize("UTC") if frame["time"].dt.tz is None else frame["time"]
        )
        rows += h.append(frame)
    h.upsert_tags(pd.DataFrame({"tag": tags, "unit": [f"U{i // 15:02d}" for i in range(n_tags)]}))
    return time.perf_counter() - t0, rows


def timed(fn, runs: int) -> tuple[float, list[float]]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--tags", type=int, default=150)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="biotwin-hist-"))
    try:
        h = Historian(work / "historian")
        seconds, rows = write_year(h, args.days, args.tags)
        print(f"machine: {machine()}")
        print(
            f"wrote {rows:,} rows in {seconds:.1f} s = {rows / seconds / 1e6:.2f} M rows/s "
            f"(one commit per day, zstd)"
        )
        end = START + pd.Timedelta(days=args.days)
        fifty = [f"T{i:03d}" for i in range(0, 150, 3)][:50]
        med, all_ = timed(
            lambda: h.query(fifty, end - pd.Timedelta(hours=24), end, resample="1min"), args.runs
        )
        runs = ", ".join(f"{t:.3f}" for t in all_)
        print(f"24 h x 50 tags, 1-min means: median {med:.3f} s ({runs})")
        med, all_ = timed(lambda: h.query(fifty[:10], end - pd.Timedelta(days=7), end), args.runs)
        print(f"7 days x 10 tags raw: median {med:.3f} s")
        ctx_start = end - pd.Timedelta(days=30)
        h.append_batch_context(
            pd.DataFrame(
                {
                    "batch_id": ["B1"],
                    "unit": ["U01"],
                    "phase": ["run"],
                    "state": ["running"],
                    "start_time": [ctx_start],
                    "end_time": [ctx_start + pd.Timedelta(hours=50)],
                }
            )
        )
        med, _ = timed(lambda: h.batch_series("B1"), args.runs)
        print(f"batch_series (15 tags x 50 h): median {med:.3f} s")
        small = pd.DataFrame(
            {
                "time": [end + pd.Timedelta(seconds=1)] * 3000,
                "tag": [f"X{i}" for i in range(3000)],
                "value": np.ones(3000),
            }
        )
        med, _ = timed(lambda: h.append(small), args.runs * 4)
        print(f"small commit (3,000 rows): median {med * 1000:.1f} ms = {3000 / med:,.0f} rows/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
