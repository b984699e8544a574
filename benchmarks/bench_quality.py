"""Benchmark: feature extraction + training time, and scoring throughput.

- Training: two plant-years of twin output (simulated once, ``--interval`` minutes per
  sample), then, timed: reading the batch and asset histories (feature binning), fitting and
  validating the deviation model, fitting and validating the maintenance model (goal: both
  families in at most 60 s on this 2-core machine).
- Scoring: batch snapshots per second from the binned history (features + calibrated
  probability) without explanations (goal >= 10,000/s) and with them (goal >= 500/s), on the
  held-out batches at several progress points.

Usage: ``python benchmarks/bench_quality.py [--runs 3] [--interval 10]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine

from quality.data import batch_history_from_twin, run_history_from_twin
from quality.service import split_batches, train_deviation, train_maintenance
from twin.config import load_config
from twin.output import simulate_to


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=int, default=10, help="sample interval, minutes")
    parser.add_argument("--days", type=float, default=730)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "twin"
        plant = load_config()
        plant = plant.model_copy(
            update={"plant": plant.plant.model_copy(update={"sample_interval_min": args.interval})}
        )
        simulate_to(plant, out, days=args.days, seed=1)
        rows = sum(_signal_rows(out))
        print(f"twin history: {args.days:g} days at {args.interval} min, {rows:,} signal rows")
        load, dev, mnt, total = [], [], [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            history = batch_history_from_twin(out)
            runs = run_history_from_twin(out)
            t1 = time.perf_counter()
            model, meta, _ = train_deviation(history, seed=0)
            t2 = time.perf_counter()
            train_maintenance(runs, seed=0)
            t3 = time.perf_counter()
            load.append(t1 - t0)
            dev.append(t2 - t1)
            mnt.append(t3 - t2)
            total.append(t3 - t0)
        med = statistics.median
        print(
            f"training (median of {args.runs}): read + bin {med(load):.1f} s, deviation fit + "
            f"validate {med(dev):.1f} s, maintenance fit + validate {med(mnt):.1f} s, "
            f"total {med(total):.1f} s (goal <= 60 s)  runs: "
            + ", ".join(f"{t:.1f}" for t in total)
        )
        print(f"held-out AUC: {meta['metrics']['headline']}")
        _, test = split_batches(history)
        grid = np.tile(np.array([0.25, 0.5, 0.75, 1.0]), len(test) // 4 + 1)[: len(test)]
        cube = model.featurizer.cube(history, test)
        plain, explained = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            for _rep in range(10):
                X = model.featurizer.transform(history, test, grid, cube)[model.features]
                model.predict_proba(X)
            t1 = time.perf_counter()
            model.predict(history, test, grid, explain=True)
            t2 = time.perf_counter()
            plain.append(10 * len(test) / (t1 - t0))
            explained.append(len(test) / (t2 - t1))
        print(
            f"scoring (median of {args.runs}, {len(test)} batches, {len(model.features)} "
            f"features): {med(plain):,.0f} snapshots/s without explanations (goal >= 10,000), "
            f"{med(explained):,.0f}/s with explanations, sensor checks and CQA intervals "
            f"(goal >= 500)"
        )


def _signal_rows(out: Path):
    import pyarrow.parquet as pq

    for path in (out / "signals").glob("*.parquet"):
        yield pq.ParquetFile(path).metadata.num_rows


if __name__ == "__main__":
    main()
