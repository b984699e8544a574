"""Benchmark: feature extraction + training time, and scoring throughput.

- Training: two plant-years of twin output (simulated once, ``--interval`` minutes per
  sample), then, timed: reading the batch and asset histories (feature binning), fitting and
  validating the deviation model, fitting and validating the maintenance model (goal: both
  families in at most 60 s on this 2-core machine).
- Training on a user's batch file: 200 batches x 1,000 steps x 20 tags (long form, batch-
  relative hours, made here: a drift from a random time in 40 % of the batches), timed from
  the table to the fitted model with model selection (goal <= 60 s).
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
    parser.add_argument("--skip-twin", action="store_true", help="only the user-file case")
    args = parser.parse_args()
    print(machine())
    _user_file(args.runs)
    if args.skip_twin:
        return
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
                model.score(history, test, grid, cube)
            t1 = time.perf_counter()
            model.predict(history, test, grid, explain=True)
            t2 = time.perf_counter()
            plain.append(10 * len(test) / (t1 - t0))
            explained.append(len(test) / (t2 - t1))
        print(
            f"scoring (median of {args.runs}, {len(test)} batches, {len(model.features)} "
            f"features): {med(plain):,.0f} snapshots/s without explanations (goal >= 10,000), "
            f"{med(explained):,.0f}/s with explanations, sensor checks and CQA intervals "
            f"(goal >= 500)  runs: "
            + ", ".join(f"{a:,.0f} / {b:,.0f}" for a, b in zip(plain, explained, strict=True))
        )


def _user_file(runs: int, n: int = 200, steps: int = 1000, tags: int = 20) -> None:
    """Fit time with model selection on a synthetic batch table of the issue's size."""
    import pandas as pd

    from quality.data import batch_history

    rng = np.random.default_rng(0)
    t = np.arange(steps) * 0.23
    label = rng.random(n) < 0.4
    onset = rng.uniform(0.1, 0.9, n) * t[-1]
    base = np.cumsum(rng.normal(0, 0.05, (n, tags, steps)), axis=2)
    shape = np.sin(t / 40.0)[None, None, :] * rng.normal(1, 0.1, (n, tags, 1))
    drift = np.where(t[None, :] > onset[:, None], 0.02 * (t[None, :] - onset[:, None]), 0.0)
    values = base + shape
    values[label, rng.integers(0, tags), :] += drift[label]
    series = pd.DataFrame(
        {
            "batch": np.repeat([f"B{i:03d}" for i in range(n)], tags * steps),
            "hours": np.tile(t, n * tags),
            "tag": np.tile(np.repeat([f"tag{j:02d}" for j in range(tags)], steps), n),
            "value": values.reshape(-1),
        }
    )
    outcomes = pd.DataFrame({"batch": [f"B{i:03d}" for i in range(n)], "bad": label.astype(int)})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        history = batch_history(
            series, outcomes, batch_col="batch", time_col="hours", label_col="bad",
            tag_col="tag", value_col="value", context_cols=[],
        )  # fmt: skip
        model, _, _ = train_deviation(history, seed=0, test_share=0)
        times.append(time.perf_counter() - t0)
    print(
        f"user batch file, {n} batches x {steps} steps x {tags} tags ({len(series):,} rows): "
        f"bin + select + fit {statistics.median(times):.1f} s median of {runs} (goal <= 60 s), "
        f"runs {', '.join(f'{x:.1f}' for x in times)}; chosen {model.chosen}"
    )


def _signal_rows(out: Path):
    import pyarrow.parquet as pq

    for path in (out / "signals").glob("*.parquet"):
        yield pq.ParquetFile(path).metadata.num_rows


if __name__ == "__main__":
    main()
