"""Benchmark: the historian on a year of 1-minute data for 150 tags (~79 M rows).

1. Writes the year as segments, four commits per day (6 hours of 150 tags each, what a
   slow ingest flush or `history import-sim` makes), through :meth:`Historian.append`
   (validation, one fsync'd atomic commit each): rows/s.
2. Times the command center's query, the last 24 h of 50 tags as 1-minute means, on the
   uncompacted store (4 files a day).
3. Compacts (one file per day), then times, each over ``--runs`` runs (medians):
   - the last 24 h of 50 tags as 1-minute means;
   - 7 days of 10 tags, raw;
   - ``batch_series``: the 15 tags of one unit over a 50-hour batch;
   - ``tags()`` (what `history tags` shows) and ``last_times()`` (the ingest's start);
4. and the ingest's small commits: 3,000 rows (1 s of 3,000 tags) per append.

Usage: ``python benchmarks/bench_historian.py [--days 365] [--tags 150] [--runs 5]``
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
COMMITS_PER_DAY = 4
TAGS_PER_UNIT = 15


def tag_names(n_tags: int) -> np.ndarray:
    return np.array([f"T{i:03d}" for i in range(n_tags)])


def write_year(h: Historian, days: int, n_tags: int) -> tuple[float, int]:
    """Random-walk values, ``COMMITS_PER_DAY`` appends a day; returns (seconds, rows)."""
    tags = tag_names(n_tags)
    rng = np.random.default_rng(0)
    minutes = 24 * 60 // COMMITS_PER_DAY
    rows, spent = 0, 0.0
    for chunk in range(days * COMMITS_PER_DAY):
        times = START + pd.to_timedelta(chunk * minutes + np.arange(minutes), "min")
        frame = pd.DataFrame(
            {
                "time": np.tile(times, n_tags),
                "tag": np.repeat(tags, minutes),
                "value": np.round(rng.normal(size=minutes * n_tags).cumsum(), 3),
            }
        )
        t0 = time.perf_counter()
        rows += h.append(frame)
        spent += time.perf_counter() - t0
    h.upsert_tags(
        pd.DataFrame({"tag": tags, "unit": [f"U{i // TAGS_PER_UNIT:02d}" for i in range(n_tags)]})
    )
    return spent, rows


def timed(fn, runs: int) -> tuple[float, list[float]]:
    """Median and all wall times of ``runs`` calls (after one warm-up call)."""
    fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), out


def report(what: str, fn, runs: int) -> None:
    med, all_ = timed(fn, runs)
    print(f"{what}: median {med:.3f} s ({', '.join(f'{t:.3f}' for t in all_)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--tags", type=int, default=150)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    work = Path(tempfile.mkdtemp(prefix="biotwin-hist-"))
    try:
        h = Historian(work / "historian", compact_every=None)
        seconds, rows = write_year(h, args.days, args.tags)
        size = sum(p.stat().st_size for p in work.rglob("*.parquet")) / 1e6
        print(
            f"wrote {rows:,} rows in {COMMITS_PER_DAY * args.days:,} commits: {seconds:.1f} s "
            f"= {rows / seconds / 1e6:.2f} M rows/s ({size:,.0f} MB)"
        )
        end = START + pd.Timedelta(days=args.days)
        fifty = list(tag_names(args.tags)[:: max(1, args.tags // 50)][:50])
        last_day = (fifty, end - pd.Timedelta(hours=24), end)
        report(
            "24 h x 50 tags, 1-min means, uncompacted",
            lambda: h.query(*last_day, resample="1min"),
            args.runs,
        )
        t0 = time.perf_counter()
        days = h.compact()
        print(f"compact: {days} days in {time.perf_counter() - t0:.1f} s")
        got = h.query(*last_day, resample="1min")
        assert len(got) == 50 * 1440, len(got)
        report(
            "24 h x 50 tags, 1-min means", lambda: h.query(*last_day, resample="1min"), args.runs
        )
        report(
            "7 days x 10 tags, raw",
            lambda: h.query(fifty[:10], end - pd.Timedelta(days=7), end),
            args.runs,
        )
        batch_start = end - pd.Timedelta(days=5)
        h.append_batch_context(
            pd.DataFrame(
                {
                    "batch_id": ["B1"],
                    "unit": ["U01"],
                    "phase": ["production"],
                    "state": ["running"],
                    "start_time": [batch_start],
                    "end_time": [batch_start + pd.Timedelta(hours=50)],
                }
            )
        )
        series = h.batch_series("B1")
        assert len(series) == TAGS_PER_UNIT * (50 * 60 + 1), len(series)
        report("batch_series, 15 tags x 50 h", lambda: h.batch_series("B1"), args.runs)
        report("tags() over the whole year", h.tags, args.runs)
        report("last_times() over the whole year", h.last_times, args.runs)
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
