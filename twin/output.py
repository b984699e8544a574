"""The twin's output files: tables of a simulation, written atomically as Parquet.

Layout of an output directory (schemas in docs/data-contracts.md)::

    OUT/
      manifest.json          seed, days, config hash, row counts, package version
      tags.parquet           one row per tag: unit, signal, description, units, EU range
      signals/UNIT.parquet   long format: time, unit, tag, value, quality (one file per unit)
      batches.parquet        one row per batch: times, lots, CQAs, deviations, disposition
      phases.parquet         one row per batch step and ISA-88 phase: unit, start, end
      deviations.parquet     one row per deviation: class, root cause, onset, severity
      schedule.parquet       unit occupancy: batch steps, holding, CIP, SIP, PM, repairs
      asset_events.parquet   wear snapshots, failures, repairs, PMs with age and health
      events.parquet         the event log of the run
      sensor_faults.parquet  ground truth of injected sensor faults

Everything is first written into a hidden temporary directory beside ``OUT`` and renamed
into place at the end: a failed or interrupted run leaves ``OUT`` as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twin.config import PlantConfig
from twin.errors import OutputError
from twin.sensors import QUALITY_NAMES
from twin.simulate import Simulation, simulate

__all__ = ["batch_tables", "simulate_to", "write_outputs"]

logger = logging.getLogger(__name__)

PARQUET_OPTIONS = {"compression": "lz4"}
_QUALITY_DICT = pa.array(QUALITY_NAMES, pa.string())


def _ts(sim: Simulation, hours) -> pd.Series:
    """Hours since the start of the run to UTC timestamps (NaN/None stay missing)."""
    h = pd.to_numeric(pd.Series(hours, dtype="float64"))
    return (sim.start + pd.to_timedelta(h, unit="h")).astype("datetime64[ms, UTC]")


def _no_batches(config) -> pd.DataFrame:
    """The batch table of a run too short to release a batch: its columns, no rows."""
    columns = ["batch_id", "product", "recipe", "status", "disposition"]
    columns += [f"{c}_h" for c in ("release", "due", "start", "filled", "qc_start")]
    columns += ["disposition_h", "units", "production_unit", "lost_reason"]
    columns += [c for name in config.specs for c in (name, f"{name}_oos")]
    columns += ["deviation_classes", "root_causes", "n_deviations", "any_oos"]
    return pd.DataFrame(
        {c: pd.Series(dtype=float if c.endswith("_h") else object) for c in columns}
    )


def batch_tables(sim: Simulation) -> dict[str, pd.DataFrame]:
    """The simulation's records as tables (everything but the signals)."""
    config = sim.config
    rows, phase_rows, dev_rows = [], [], []
    for b in sim.line.batches:
        units = [s.unit for s in b.steps]
        production = next((s.unit for s in b.steps if s.step == "production"), None)
        cqa = sim.cqa.get(b.id, {})
        row = {
            "batch_id": b.id,
            "product": b.product,
            "recipe": config.recipe.name,
            "status": b.status,
            "disposition": b.disposition,
            "release_h": b.release_h,
            "due_h": b.due_h,
            "start_h": b.start_h,
            "filled_h": b.filled_h,
            "qc_start_h": b.qc_start_h,
            "disposition_h": b.disposition_h
            if b.disposition in ("released", "rejected", "lost")
            else None,
            "units": ",".join(units),
            "production_unit": production,
            "lost_reason": b.lost_reason,
            **{k: v for k, v in b.lot.items()},
        }
        for name, spec in config.specs.items():
            value = cqa.get(name, np.nan)
            row[name] = value
            row[f"{name}_oos"] = (
                bool(
                    np.isfinite(value)
                    and (
                        (spec.low is not None and value < spec.low)
                        or (spec.high is not None and value > spec.high)
                    )
                )
                if cqa
                else None
            )
        classes = sorted({d.deviation_class for d in b.deviations})
        row["deviation_classes"] = ",".join(classes)
        row["root_causes"] = "; ".join(sorted({d.root_cause for d in b.deviations}))
        row["n_deviations"] = len(b.deviations)
        row["any_oos"] = any(row[f"{n}_oos"] for n in config.specs) if cqa else None
        rows.append(row)
        steps = {s.name: s for s in config.recipe.steps}
        for rec in b.steps:
            if rec.end_h is not None:
                total, cut = rec.end_h - rec.start_h, math.inf
            else:  # in progress at the horizon: phases by the planned duration, cut there
                elapsed = sim.horizon_h - rec.start_h
                total, cut = max(b.durations.get(rec.step, elapsed), elapsed), sim.horizon_h
            edges = np.cumsum([0.0] + [p.fraction for p in steps[rec.step].phases])
            for p, a, z in zip(steps[rec.step].phases, edges[:-1], edges[1:], strict=True):
                t0 = rec.start_h + a * total
                if t0 >= cut:
                    break
                phase_rows.append(
                    (b.id, rec.step, p.name, rec.unit, t0, min(rec.start_h + z * total, cut))
                )
        for d in b.deviations:
            onset = d.onset_h
            if onset is None:
                rec = next((r for r in b.steps if r.step == d.step), None)
                if rec is not None:
                    end = rec.end_h if rec.end_h is not None else sim.horizon_h
                    onset = rec.start_h + d.onset_fraction * (end - rec.start_h)
            unit = d.unit or next((r.unit for r in b.steps if r.step == d.step), None)
            dev_rows.append(
                (
                    b.id,
                    d.deviation_class,
                    d.root_cause,
                    d.step,
                    unit,
                    onset,
                    d.onset_fraction,
                    d.severity,
                    d.consequential,
                    d.source,
                )
            )
    batches = pd.DataFrame(rows) if rows else _no_batches(config)
    for col in ("release", "due", "start", "filled", "qc_start", "disposition"):
        batches[f"{col}_time"] = _ts(sim, batches.pop(f"{col}_h"))
    batches["late"] = batches["disposition_time"].notna() & (
        batches["disposition_time"] > batches["due_time"]
    )
    phases = pd.DataFrame(phase_rows, columns=["batch_id", "step", "phase", "unit", "s", "e"])
    phases["start_time"], phases["end_time"] = _ts(sim, phases.pop("s")), _ts(sim, phases.pop("e"))
    deviations = pd.DataFrame(
        dev_rows,
        columns=[
            "batch_id",
            "deviation_class",
            "root_cause",
            "step",
            "unit",
            "onset_h",
            "onset_fraction",
            "severity",
            "consequential",
            "source",
        ],
    )
    deviations["onset_time"] = _ts(sim, deviations.pop("onset_h"))

    sched = []
    for b in sim.line.batches:
        for rec in b.steps:
            end = rec.end_h if rec.end_h is not None else sim.horizon_h
            sched.append((rec.unit, b.id, rec.step, "batch", rec.start_h, end))
            released = rec.released_h if rec.released_h is not None else sim.horizon_h
            if released > end:
                sched.append((rec.unit, b.id, rec.step, "holding", end, released))
    sched += [(u, b, s, a, t0, t1) for u, b, s, a, t0, t1 in sim.line.records.schedule]
    sched += [
        (u, None, a.split("/")[-1], "repair", t0, t1)
        for u, a, t0, t1, kind in sim.line.records.down
        if kind == "failure"
    ]
    schedule = pd.DataFrame(sched, columns=["unit", "batch_id", "step", "activity", "s", "e"])
    schedule = schedule.sort_values(["s", "unit"], kind="stable").reset_index(drop=True)
    schedule["start_time"], schedule["end_time"] = (
        _ts(sim, schedule.pop("s")),
        _ts(sim, schedule.pop("e")),
    )

    assets = pd.DataFrame(
        sim.line.records.asset_events,
        columns=["t", "asset", "unit", "event", "age_h", "life_h", "health", "detail"],
    )
    assets.insert(0, "time", _ts(sim, assets.pop("t")))
    events = pd.DataFrame(
        sim.line.records.events, columns=["t", "kind", "unit", "batch_id", "detail"]
    )
    events.insert(0, "time", _ts(sim, events.pop("t")))
    tags = []
    for unit in config.units:
        spec = config.unit_classes[unit.unit_class]
        for s in spec.signals:
            tags.append(
                (
                    s.tag.format(n=unit.loop_number),
                    unit.id,
                    unit.unit_class,
                    s.name,
                    s.description,
                    s.eng_unit,
                    s.low,
                    s.high,
                    s.noise_sd,
                )
            )
    tags = pd.DataFrame(
        tags,
        columns=[
            "tag",
            "unit",
            "unit_class",
            "signal",
            "description",
            "eng_unit",
            "eu_low",
            "eu_high",
            "noise_sd",
        ],
    )
    return {
        "batches": batches,
        "phases": phases,
        "deviations": deviations,
        "schedule": schedule,
        "asset_events": assets,
        "events": events,
        "tags": tags,
    }


def _signal_table(sim: Simulation, unit_id: str, times: pa.Array) -> tuple[pa.Table, list]:
    readings = sim.read_unit(unit_id)
    k, n = readings.values.shape
    tag_codes = np.repeat(np.arange(k, dtype=np.int32), n)
    table = pa.table(
        {
            "time": pa.chunked_array([times] * k),
            "unit": pa.DictionaryArray.from_arrays(
                np.zeros(k * n, dtype=np.int32), pa.array([unit_id])
            ),
            "tag": pa.DictionaryArray.from_arrays(tag_codes, pa.array(readings.tags)),
            "value": readings.values.reshape(-1),
            "quality": pa.DictionaryArray.from_arrays(readings.quality.reshape(-1), _QUALITY_DICT),
        }
    )
    return table, readings.faults


def write_outputs(sim: Simulation, out: str | os.PathLike, *, threads: int | None = None) -> dict:
    """Write every table and the signals of ``sim`` under ``out``, atomically.

    Returns
    -------
    dict
        The manifest (row counts per file, seed, horizon...).

    Raises
    ------
    OutputError
        If the directory cannot be written; ``out`` is then left untouched.
    """
    out = Path(out)
    tmp = _temporary_beside(out)
    try:
        with ThreadPoolExecutor(threads or min(2, os.cpu_count() or 1)) as pool:
            futures = [pool.submit(_write_unit, sim, tmp, u) for u in sim.true_signals]
            manifest = _finish(sim, tmp, futures)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def simulate_to(
    config: PlantConfig,
    out: str | os.PathLike,
    *,
    days: float,
    seed: int,
    signals: bool = True,
    threads: int | None = None,
) -> tuple[Simulation, dict]:
    """Simulate and write the output under ``out``, atomically, overlapping the two.

    Each unit's signals are handed to a writer thread as soon as they are computed (media
    prep while the seed bioreactors integrate, the seed bioreactors while the production
    bioreactors integrate...), so Parquet encoding and the instrument layer run on the
    second core while the kinetics run on the first. Same files, same bytes as
    :func:`~twin.simulate.simulate` followed by :func:`write_outputs`.

    Returns
    -------
    (Simulation, dict)
        The simulation and the manifest.
    """
    out = Path(out)
    tmp = _temporary_beside(out)
    try:
        with ThreadPoolExecutor(threads or min(2, os.cpu_count() or 1)) as pool:
            futures = []

            def unit_ready(sim: Simulation, unit_id: str) -> None:
                futures.append(pool.submit(_write_unit, sim, tmp, unit_id))

            sim = simulate(config, days=days, seed=seed, signals=signals, unit_ready=unit_ready)
            if not signals:
                for fut in futures:
                    fut.cancel()
                futures = []
            manifest = _finish(sim, tmp, futures)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sim, manifest


def _temporary_beside(out: Path) -> Path:
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot create output directory beside {out}: {exc}") from None


def _time_array(sim: Simulation) -> pa.Array:
    dt_ms = sim.config.plant.sample_interval_min * 60_000
    start_ms = int(sim.start.value // 1_000_000)
    return pa.array(
        start_ms + np.arange(sim.n_samples, dtype=np.int64) * dt_ms,
        pa.timestamp("ms", tz="UTC"),
    )


def _write_unit(sim: Simulation, tmp: Path, unit_id: str) -> tuple[str, int, list]:
    """Instruments and Parquet for one unit (runs in a writer thread)."""
    (tmp / "signals").mkdir(exist_ok=True)
    table, unit_faults = _signal_table(sim, unit_id, _time_array(sim))
    pq.write_table(
        table,
        tmp / "signals" / f"{unit_id}.parquet",
        row_group_size=1 << 20,
        **PARQUET_OPTIONS,
    )
    return unit_id, table.num_rows, unit_faults


def _finish(sim: Simulation, tmp: Path, futures: list) -> dict:
    """Tables, sensor-fault ground truth and manifest, once the unit writers are done."""
    counts = {}
    for name, frame in batch_tables(sim).items():
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False),
            tmp / f"{name}.parquet",
            **PARQUET_OPTIONS,
        )
        counts[f"{name}.parquet"] = len(frame)
    faults = []
    order = {u.id: i for i, u in enumerate(sim.config.units)}
    results = sorted((fut.result() for fut in futures), key=lambda r: order[r[0]])
    for unit_id, rows, unit_faults in results:
        counts[f"signals/{unit_id}.parquet"] = rows
        faults += [(unit_id, *f) for f in unit_faults]
    dt_h = sim.config.plant.sample_interval_min / 60.0
    frame = pd.DataFrame(faults, columns=["unit", "tag", "kind", "a", "b"])
    frame["start_time"] = _ts(sim, frame.pop("a") * dt_h)
    frame["end_time"] = _ts(sim, frame.pop("b") * dt_h)
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False),
        tmp / "sensor_faults.parquet",
        **PARQUET_OPTIONS,
    )
    counts["sensor_faults.parquet"] = len(frame)
    config_json = sim.config.model_dump_json().encode()
    manifest = {
        "generator": "biotwin twin",
        "seed": sim.seed,
        "days": sim.horizon_h / 24.0,
        "start": sim.config.plant.start,
        "sample_interval_min": sim.config.plant.sample_interval_min,
        "config_sha256": hashlib.sha256(config_json).hexdigest(),
        "rows": counts,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is replaced only after success."""
    if out.exists():
        if not (out / "manifest.json").exists() and any(out.iterdir()):
            raise OutputError(
                f"out must be empty or a previous biotwin output; {out} has other files"
            )
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
