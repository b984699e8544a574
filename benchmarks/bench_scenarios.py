"""Benchmark: what-if scenario replications per second on all cores.

Runs the issue's two sweeps, each several times, and prints medians:

- 200 replications of a 30-day scenario (goal: at most 2 s on 2 cores);
- 1,000 replications of 90 days (goal: at most 15 s).

Both start from a plant in full swing (a snapshot taken 100 days into a run: batches on
units, in QC, worn assets) with a realistic event list (a bioreactor down for 2 days and
+10 % demand), and from an empty plant for reference. Wall time includes starting the
worker processes, so it is what a user of ``run_scenario`` waits for.

Usage: ``python benchmarks/bench_scenarios.py [--runs 3] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _machine import machine

from twin.config import load_config
from twin.line import Line
from twin.scenarios import AssetOutage, DemandChange, run_replication, run_scenario
from twin.state import PlantState, snapshot


def plant_in_progress(config) -> PlantState:
    line = Line(config, seed=3, log_events=False)
    line.start(wear_snapshots_h=None)
    line.env.run(until=24 * 100)
    return snapshot(line)


def sweep(config, state, events, days: float, n: int, runs: int) -> list[float]:
    times = []
    for r in range(runs):
        t0 = time.perf_counter()
        run_scenario(config, state, events, horizon_h=24 * days, replications=n, seed=r)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only the 200 x 30-day sweep")
    args = parser.parse_args()
    config = load_config()
    state = plant_in_progress(config)
    events = [AssetOutage(target="BR-202", start_h=24, end_h=72), DemandChange(factor=1.1)]
    print(f"machine: {machine()}; workers: {os.cpu_count()}")

    t0 = time.perf_counter()
    for s in range(20):
        run_replication(config, state, events, 24 * 90, seed=s)
    single = (time.perf_counter() - t0) / 20
    print(f"one 90-day replication in this process: {single * 1000:.1f} ms")

    cases = [("30 days", 30, 200, 2.0)]
    if not args.quick:
        cases.append(("90 days", 90, 1000, 15.0))
    for label, days, n, goal in cases:
        for name, st, ev in (("in progress + events", state, events), ("empty plant", None, [])):
            times = sweep(config, st, ev, days, n, args.runs)
            med = statistics.median(times)
            verdict = "met" if med <= goal else "NOT met"
            print(
                f"{n} x {label} ({name}): median {med:.2f} s "
                f"({', '.join(f'{t:.2f}' for t in times)}) = {n / med:,.0f} replications/s; "
                f"goal <= {goal:g} s: {verdict}"
            )


if __name__ == "__main__":
    main()
