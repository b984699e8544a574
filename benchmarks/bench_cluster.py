"""Benchmark: scenario replications per second on the local pool and on Dask workers.

Starts a real Dask cluster on 127.0.0.1 (``dask scheduler`` and ``dask worker --nthreads 1
--no-nanny`` processes, as tests/test_cluster.py does) and measures, from a plant in full
swing with a bioreactor down for 2 days and +10 % demand (bench_scenarios.py's case):

- the per-task overhead: no-op tasks carrying a real chunk's payload (the plant, the
  state, the events: what every chunk ships), one after the other on one slot, and all
  at once on every slot;
- replications per second of ``run_scenario`` on the local pool (2 processes), on 1 and
  on 2 Dask worker processes (wall time includes connecting the client, so it is what a
  user waits for), for 200 x 30 days and 1,000 x 90 days (goal: <= 15 s);
- with ``--big``, 10,000 x 90 days once on the local pool and once on 2 workers.

Every sweep on the cluster is checked equal to the local one (KPIs, bit for bit).

Usage: ``python benchmarks/bench_cluster.py [--runs 3] [--quick] [--big]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _machine import machine

from biotwin.execution import executor
from twin.config import load_config
from twin.line import Line
from twin.scenarios import AssetOutage, DemandChange, run_replication, run_scenario
from twin.state import PlantState, snapshot

ROOT = Path(__file__).resolve().parents[1]


def plant_in_progress(config) -> PlantState:
    line = Line(config, seed=3, log_events=False)
    line.start(wear_snapshots_h=None)
    line.env.run(until=24 * 100)
    return snapshot(line)


class LocalCluster:
    """A scheduler and worker processes on 127.0.0.1 (stopped by pid, workers first)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        file = folder / "scheduler.json"
        self._start(
            ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(file), "--idle-timeout", "3600"],
            "scheduler",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not file.exists() or not file.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError((folder / "scheduler.log").read_text())
            time.sleep(0.05)
        time.sleep(0.05)
        self.address = json.loads(file.read_text())["address"]

    def _start(self, args: list[str], name: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
        with open(self.folder / f"{name}.log", "w") as log:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", *args], stdout=log, stderr=log, env=env, cwd=ROOT
                )
            )

    def add_workers(self, n: int) -> None:
        import distributed

        have = len(self.procs) - 1
        for i in range(have, have + n):
            self._start(
                ["distributed.cli.dask_worker", self.address, "--name", f"w{i}",
                 "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                 "--memory-limit", "0", "--death-timeout", "60",
                 "--local-directory", str(self.folder / f"w{i}")],
                f"w{i}",
            )  # fmt: skip
        with distributed.Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(have + n, timeout=60)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _noop(payload):
    return len(payload)


def task_overhead(where: str | None, payload: tuple, n: int) -> tuple[float, float]:
    """ms per no-op task carrying ``payload``: (one at a time, all at once per slot)."""
    with executor(where, 2) as pool:
        t0 = time.perf_counter()
        for _ in range(n):
            pool.submit(_noop, payload).result()
        serial = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for _ in pool.stream(_noop, [payload] * n):
            pass
        parallel = (time.perf_counter() - t0) / n
    return serial * 1000, parallel * 1000


def sweep(where: str, config, state, events, days: float, n: int, runs: int):
    times, result = [], None
    for r in range(runs):
        t0 = time.perf_counter()
        result = run_scenario(
            config, state, events, horizon_h=24 * days, replications=n, seed=r, scheduler=where
        )
        times.append(time.perf_counter() - t0)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only the 200 x 30-day sweep")
    parser.add_argument("--big", action="store_true", help="also 10,000 x 90 days, once")
    args = parser.parse_args()
    config = load_config()
    state = plant_in_progress(config)
    events = [AssetOutage(target="BR-202", start_h=24, end_h=72), DemandChange(factor=1.1)]
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    for s in range(20):
        run_replication(config, state, events, 24 * 90, seed=s)
    print(
        f"one 90-day replication in this process: {(time.perf_counter() - t0) / 20 * 1000:.1f} ms"
    )
    payload = ("scenario", config, state, events, 24 * 90.0, list(range(50)), list(range(50)), {})

    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    cluster = LocalCluster(folder)
    cases = [(30, 200)] + ([] if args.quick else [(90, 1000)])
    reference: dict = {}
    try:
        for workers in (1, 2):
            cluster.add_workers(1)
            for label, where in (
                ("local pool, 2 processes", "local"),
                (f"Dask, {workers} worker processes", cluster.address),
            ):
                if where == "local" and workers == 2:
                    continue  # measured once
                print(f"{label}:")
                for what, load in (("a chunk's payload (40 kB)", payload), ("no payload", ())):
                    one, every = task_overhead(where, load, 200)
                    print(
                        f"  per-task overhead, {what}: {one:.2f} ms one at a time, "
                        f"{every:.2f} ms per task all at once"
                    )
                for days, n in cases:
                    times, result = sweep(where, config, state, events, days, n, args.runs)
                    med = statistics.median(times)
                    key = (days, n)
                    if key in reference:
                        pd.testing.assert_frame_equal(result.kpis, reference[key], check_exact=True)
                    else:
                        reference[key] = result.kpis
                    goal = (
                        "" if days != 90 else f"; goal <= 15 s: {'met' if med <= 15 else 'NOT met'}"
                    )
                    each = ", ".join(f"{t:.2f}" for t in times)
                    print(
                        f"  {n} x {days} days: median {med:.2f} s ({each}) "
                        f"= {n / med:,.0f} replications/s{goal}"
                    )
        if args.big:
            for label, where in (
                ("local pool, 2 processes", "local"),
                ("Dask, 2 worker processes", cluster.address),
            ):
                print(f"load average before: {os.getloadavg()[0]:.2f}")
                times, result = sweep(where, config, state, events, 90, 10_000, 1)
                if "big" in reference:
                    pd.testing.assert_frame_equal(result.kpis, reference["big"], check_exact=True)
                reference["big"] = result.kpis
                rate = 10_000 / times[0]
                print(f"{label}: 10000 x 90 days in {times[0]:.1f} s = {rate:,.0f} replications/s")
        print(
            f"load average at the end {os.getloadavg()[0]:.2f}; "
            "every cluster sweep equal to the local one"
        )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
