"""Saved what-if scenarios: ``DATA_DIR/scenarios/<name>.json``.

A saved scenario holds what was asked (the :class:`~twin.scenarios.Scenario`: name,
horizon, events; the sweep: replications and seed; the options such as the predicted
failure risk), where it started (the plant state), and what came out: the KPIs of every
replication of the scenario and of its baseline, per-unit utilization and availability,
and the schedule of replication 1. So it can be shown again, and compared with other saved
scenarios, without running the twin again.

Files are written atomically (temporary file in the same folder, fsync, ``os.replace``):
a reader sees the old file or the new one, never half of one. One file per name: saving a
name again replaces it.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from twin.scenarios import Scenario, ScenarioResult

__all__ = [
    "COMPARED_KPIS",
    "FORMAT",
    "compare_saved",
    "file_name",
    "list_saved",
    "load_saved",
    "result_from_dict",
    "result_to_dict",
    "save_scenario",
    "state_key",
]

FORMAT = "biotwin-scenario/1"

# KPIs of the side-by-side comparison (label -> KPI column)
COMPARED_KPIS = {
    "batches completed": "completed",
    "late": "late",
    "lost": "lost",
    "throughput / week": "throughput_per_week",
    "mean utilization": "mean_utilization",
    "due dates missed": "due_dates_missed",
    "expected good lots": "expected_good_lots",
}


def file_name(name: str) -> str:
    """The file a scenario name is saved in (letters and digits kept, the rest ``-``)."""
    stem = "".join(c if c.isalnum() else "-" for c in name.strip()) or "scenario"
    return f"{stem}.json"


def state_key(state_json: str) -> str:
    """A short fingerprint of a starting point (same plant state: same key)."""
    return hashlib.sha256(state_json.encode()).hexdigest()[:16]


def result_to_dict(result: ScenarioResult) -> dict:
    """The parts of a result worth keeping (JSON-safe)."""
    return {
        "name": result.name,
        "horizon_h": result.horizon_h,
        "seconds": result.seconds,
        "kpis": result.kpis.to_dict(orient="list"),
        "utilization": result.utilization.to_dict(orient="list"),
        "availability": result.availability.to_dict(orient="list"),
        "schedule": json.loads(result.schedule.to_json(orient="split", index=False)),
        "meta": result.meta,
    }


def result_from_dict(data: dict) -> ScenarioResult:
    """A :class:`ScenarioResult` back from :func:`result_to_dict`."""
    sched = data["schedule"]
    return ScenarioResult(
        name=data["name"],
        horizon_h=data["horizon_h"],
        kpis=pd.DataFrame(data["kpis"]),
        utilization=pd.DataFrame(data["utilization"]),
        availability=pd.DataFrame(data["availability"]),
        schedule=pd.DataFrame(sched["data"], columns=sched["columns"]),
        seconds=data.get("seconds", 0.0),
        meta=data.get("meta", {}),
    )


def save_scenario(
    folder: Path,
    scenario: Scenario,
    *,
    baseline: ScenarioResult,
    result: ScenarioResult,
    replications: int,
    seed: int,
    state_json: str,
    options: dict | None = None,
) -> Path:
    """Write one saved scenario atomically; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "format": FORMAT,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenario": scenario.model_dump(mode="json"),
        "replications": int(replications),
        "seed": int(seed),
        "options": options or {},
        "start": {"key": state_key(state_json), "state": json.loads(state_json)},
        "baseline": result_to_dict(baseline),
        "result": result_to_dict(result),
    }
    path = folder / file_name(scenario.name)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def list_saved(folder: Path) -> pd.DataFrame:
    """One row per saved scenario, newest first: name, file, saved_at, horizon_d, events,
    replications, seed, start (starting-point key), results (whether KPIs are stored).

    Files of the first format (the scenario definition alone) are listed without results;
    unreadable files are skipped.
    """
    rows = []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).exists() else []:
        data = _read(path)
        if data is None:
            continue
        scenario = data.get("scenario", data)
        rows.append(
            {
                "name": scenario.get("name", path.stem),
                "file": path.name,
                "saved_at": data.get("saved_at"),
                "horizon_d": scenario.get("horizon_h", 0) / 24,
                "events": len(scenario.get("events", [])),
                "replications": data.get("replications"),
                "seed": data.get("seed"),
                "start": data.get("start", {}).get("key"),
                "results": "result" in data,
            }
        )
    cols = ["name", "file", "saved_at", "horizon_d", "events", "replications", "seed"]
    table = pd.DataFrame(rows, columns=[*cols, "start", "results"])
    return table.sort_values("saved_at", ascending=False, na_position="last").reset_index(drop=True)


def load_saved(folder: Path, file: str) -> dict:
    """A saved scenario: ``scenario`` (Scenario), ``baseline`` and ``result``
    (ScenarioResult, None if not stored), ``replications``, ``seed``, ``options``,
    ``start`` (key and state), ``saved_at``.

    Raises
    ------
    ValueError
        If the file is missing or not a saved scenario.
    """
    path = Path(folder) / Path(file).name
    data = _read(path)
    if data is None:
        raise ValueError(f"file: not a readable saved scenario; got {str(path)!r}")
    scenario = Scenario.model_validate(data.get("scenario", data))
    return {
        "scenario": scenario,
        "baseline": result_from_dict(data["baseline"]) if "baseline" in data else None,
        "result": result_from_dict(data["result"]) if "result" in data else None,
        "replications": data.get("replications"),
        "seed": data.get("seed"),
        "options": data.get("options", {}),
        "start": data.get("start", {}),
        "saved_at": data.get("saved_at"),
    }


def compare_saved(saved: list[dict]) -> pd.DataFrame:
    """Saved scenarios side by side.

    One row per (KPI, statistic) with statistics mean, p05, p95 and one column per
    scenario, plus the baseline of the first one (``baseline: <name>``). KPIs are
    :data:`COMPARED_KPIS`; their spread is the 5-95 % range over the replications.
    """
    columns = {}
    for i, s in enumerate(saved):
        runs = [("", s["result"])]
        if i == 0 and s.get("baseline") is not None:
            runs.insert(0, ("baseline: ", s["baseline"]))
        for prefix, res in runs:
            if res is None:
                continue
            k = res.kpis
            col = {}
            for label, kpi in COMPARED_KPIS.items():
                if kpi not in k:
                    continue
                col[(label, "mean")] = float(k[kpi].mean())
                col[(label, "p05")] = float(k[kpi].quantile(0.05))
                col[(label, "p95")] = float(k[kpi].quantile(0.95))
            columns[prefix + s["scenario"].name] = col
    table = pd.DataFrame(columns)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["kpi", "stat"])
    return table
