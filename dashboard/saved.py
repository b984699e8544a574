"""Saved what-if scenarios: ``DATA_DIR/scenarios/<name>.json``.

A saved scenario holds what was asked (the :class:`~twin.scenarios.Scenario`: name,
horizon, events; the sweep: replications and seed; the options such as the predicted
failure risk, the good rate of new lots, the plant's now and time zone), where it started
(the plant state), and what came out: the KPIs and the lots of every replication of the
scenario, of its baseline and of each of its levers run alone, per-unit utilization and
availability, and the schedule of replication 1. So it can be shown again, and compared
with other saved scenarios, without running the twin again. Files of the first format
(no lots, no levers) still load.

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

FORMAT = "biotwin-scenario/2"

# KPIs of the side-by-side comparison of runs saved without lot records (label -> KPI
# column); runs with lots are compared on the planner's KPIs (whatif.PLANNER_KPIS)
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
        "lots": None if result.lots is None else _lots_to_dict(result.lots),
    }


def _lots_to_dict(lots: pd.DataFrame) -> dict:
    """Lot records by column, times rounded to 0.01 h (36 s), NaN as null."""
    out = {}
    for col in lots.columns:
        values = lots[col]
        if col.endswith("_h") or col == "risk":
            values = values.astype("float64").round(2)
            out[col] = [None if v != v else v for v in values.tolist()]
        else:
            out[col] = values.tolist()
    return out


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
        lots=_lots_from_dict(data.get("lots")),
    )


def _lots_from_dict(data: dict | None) -> pd.DataFrame | None:
    if data is None:
        return None
    lots = pd.DataFrame(data)
    for col in lots.columns:
        if col.endswith("_h") or col == "risk":
            lots[col] = lots[col].astype("float64")
    return lots


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
    levers: dict[str, ScenarioResult] | None = None,
) -> Path:
    """Write one saved scenario atomically; returns its path. ``levers``: each lever of
    the scenario run alone (label -> result), with the same seeds."""
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
        "levers": {k: result_to_dict(v) for k, v in (levers or {}).items()},
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
        row = _listed(path)
        if row is not None:
            rows.append(row)
    cols = ["name", "file", "saved_at", "horizon_d", "events", "replications", "seed"]
    table = pd.DataFrame(rows, columns=[*cols, "start", "results"])
    return table.sort_values("saved_at", ascending=False, na_position="last").reset_index(drop=True)


# path -> (mtime_ns, size, row): a saved run with its lots is a few MB of JSON; the list
# is drawn on every rerun of the page, so each file is read again only when it changed
_LISTED: dict[Path, tuple[int, int, dict | None]] = {}


def _listed(path: Path) -> dict | None:
    try:
        st = path.stat()
    except OSError:
        return None
    hit = _LISTED.get(path)
    if hit is not None and hit[:2] == (st.st_mtime_ns, st.st_size):
        return hit[2]
    data = _read(path)
    row = None
    if data is not None:
        scenario = data.get("scenario", data)
        row = {
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
    _LISTED[path] = (st.st_mtime_ns, st.st_size, row)
    return row


def load_saved(folder: Path, file: str) -> dict:
    """A saved scenario: ``scenario`` (Scenario), ``baseline`` and ``result``
    (ScenarioResult, None if not stored), ``replications``, ``seed``, ``options``,
    ``start`` (key and state), ``saved_at``, ``levers`` (label -> ScenarioResult, empty
    for a scenario of one lever or a file of the first format).

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
        "levers": {k: result_from_dict(v) for k, v in (data.get("levers") or {}).items()},
    }


def _kpi_columns(res: ScenarioResult, options: dict) -> dict[str, pd.Series]:
    """Per-replication KPI columns by label: the planner's (with the good rate the run
    used) when the run has lot records, else :data:`COMPARED_KPIS`."""
    from dashboard.whatif import PLANNER_KPIS, lot_kpis

    rate = (options.get("good_rate") or {}).get("rate")
    if res.lots is not None and rate is not None:
        k = lot_kpis(res, float(rate))
        return {f"{spec.label} ({spec.unit})": k[name] for name, spec in PLANNER_KPIS.items()}
    return {label: res.kpis[kpi] for label, kpi in COMPARED_KPIS.items() if kpi in res.kpis}


def compare_saved(saved: list[dict]) -> pd.DataFrame:
    """Saved scenarios side by side.

    One row per (KPI, statistic) with statistics mean, p10 and p90 and one column per
    scenario, plus the baseline of the first one (``baseline: <name>``). KPIs are the
    planner's (``whatif.PLANNER_KPIS``, labelled with their unit) for runs with lot
    records, :data:`COMPARED_KPIS` for older ones; their spread is the 10-90 % range over
    the replications.
    """
    columns = {}
    for i, s in enumerate(saved):
        runs = [("", s["result"])]
        if i == 0 and s.get("baseline") is not None:
            runs.insert(0, ("baseline: ", s["baseline"]))
        for prefix, res in runs:
            if res is None:
                continue
            col = {}
            for label, values in _kpi_columns(res, s.get("options", {})).items():
                col[(label, "mean")] = float(values.mean())
                col[(label, "p10")] = float(values.quantile(0.10))
                col[(label, "p90")] = float(values.quantile(0.90))
            columns[prefix + s["scenario"].name] = col
    table = pd.DataFrame(columns)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["kpi", "stat"])
    return table
