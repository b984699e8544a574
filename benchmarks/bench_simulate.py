"""Benchmark: simulated plant-years per wall-second, signals and Parquet included.

Runs the twin as ``biotwin simulate`` does (:func:`twin.output.simulate_to`: each unit is
written while the next units compute) for the default line (365 days, all units, every tag
at 1 minute, written to Parquet) several times and reports the median; also the two phases
one after the other, to show where the time goes. Then it measures the *floor*: the
time numpy and pyarrow take to generate the same number of random values and write them in
the same layout (one long-format file per unit, same columns, same compression, the same
two writer threads). The ratio simulate / floor says how much the twin costs above the bare
cost of producing that much data.

Usage: ``python benchmarks/bench_simulate.py [--days 365] [--runs 3]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _machine import machine

from twin.config import load_config
from twin.output import PARQUET_OPTIONS, simulate_to, write_outputs
from twin.simulate import simulate


def run_twin(config, days: float, seed: int, out: Path) -> tuple[float, float, int]:
    """The two phases one after the other (to see where the time goes)."""
    t0 = time.perf_counter()
    sim = simulate(config, days=days, seed=seed)
    t1 = time.perf_counter()
    manifest = write_outputs(sim, out)
    t2 = time.perf_counter()
    rows = sum(v for k, v in manifest["rows"].items() if k.startswith("signals/"))
    return t1 - t0, t2 - t1, rows


def run_pipelined(config, days: float, seed: int, out: Path) -> float:
    """What ``biotwin simulate`` does: units written while the next ones compute."""
    t0 = time.perf_counter()
    simulate_to(config, out, days=days, seed=seed)
    return time.perf_counter() - t0


def run_floor(config, days: float, out: Path) -> float:
    """Random values in the twin's signal layout, written with the same options."""
    n = round(days * 24 * 60 / config.plant.sample_interval_min)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    times = pa.array(
        1_767_225_600_000 + np.arange(n, dtype=np.int64) * 60_000, pa.timestamp("ms", tz="UTC")
    )
    quality = pa.array(["good", "uncertain", "bad"])

    def unit_file(args):
        i, unit = args
        k = len(config.unit_classes[unit.unit_class].signals)
        rng = np.random.default_rng(i)
        table = pa.table(
            {
                "time": pa.chunked_array([times] * k),
                "unit": pa.DictionaryArray.from_arrays(
                    np.zeros(k * n, dtype=np.int32), pa.array([unit.id])
                ),
                "tag": pa.DictionaryArray.from_arrays(
                    np.repeat(np.arange(k, dtype=np.int32), n),
                    pa.array([f"T{j}" for j in range(k)]),
                ),
                "value": rng.standard_normal(k * n),
                "quality": pa.DictionaryArray.from_arrays(np.zeros(k * n, dtype=np.int8), quality),
            }
        )
        pq.write_table(table, out / f"{unit.id}.parquet", row_group_size=1 << 20, **PARQUET_OPTIONS)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(unit_file, enumerate(config.units)))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    config = load_config()
    work = Path(tempfile.mkdtemp(prefix="biotwin-bench-"))
    try:
        sims, writes, floors, total, rows = [], [], [], [], 0
        for r in range(args.runs):
            t_sim, t_write, rows = run_twin(config, args.days, 7 + r, work / "twin")
            sims.append(t_sim)
            writes.append(t_write)
            total.append(run_pipelined(config, args.days, 7 + r, work / "twin"))
            floors.append(run_floor(config, args.days, work / f"floor{r}"))
        sequential = [a + b for a, b in zip(sims, writes, strict=True)]
        med_total, med_floor = statistics.median(total), statistics.median(floors)
        years = args.days / 365.0
        print(f"machine: {machine()}")
        print(
            f"horizon: {args.days:g} days, {rows:,} signal rows, "
            f"{len(load_config().units)} units, runs: {args.runs}"
        )
        print(f"simulate (DES + kinetics + signals), median: {statistics.median(sims):.2f} s")
        print(f"instruments + Parquet write, median:        {statistics.median(writes):.2f} s")
        print(f"one after the other, median:                {statistics.median(sequential):.2f} s")
        print(
            f"total, pipelined (biotwin simulate), median: {med_total:.2f} s  "
            f"-> {years / med_total:.3f} plant-years/s"
        )
        print(f"floor (random values, same layout), median: {med_floor:.2f} s")
        print(f"ratio total / floor: {med_total / med_floor:.2f}")
        print("all runs (total s): " + ", ".join(f"{t:.2f}" for t in total))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
