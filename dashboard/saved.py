"""Saved what-if scenarios: ``DATA_DIR/scenarios/<name>.json``.

A saved scenario holds what was asked (the :class:`~twin.scenarios.Scenario`: name,
horizon, events; the sweep: replications and seed; the options such as the predicted
failure risk, the good rate of new lots, the plant's now and time zone), where it started
(the plant state), and what came out: the KPIs and the lots of every replication of the
scenario, of its baseline and of each of its levers run alone, per-unit utilization and
availability, and the schedule of replication 1. So it can be shown again, and compared
with other saved scenarios, without running the twin again. Files of the first format
(no lots, no levers) still load. Each saved scenario carries its author (user, full name,
roles) and the time it was saved; only a user who may run scenarios saves
(:func:`dashboard.whatif.check_may_run`).

Names are unique and at most :data:`MAX_NAME_CHARS` characters (:func:`check_new_name`,
checked before the run): a name whose file exists is refused, never overwritten. Files
are written whole under a temporary name (fsync) and linked into place, so a reader never
sees half of one and two saves of one name cannot replace each other.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from dashboard.whatif import Author, check_may_run
from twin.scenarios import Scenario, ScenarioResult

__all__ = [
    "COMPARED_KPIS",
    "FORMAT",
    "MAX_NAME_CHARS",
    "author_text",
    "check_new_name",
    "compare_saved",
    "file_name",
    "list_saved",
    "load_saved",
    "result_from_dict",
    "result_to_dict",
    "save_scenario",
    "state_key",
    "unique_name",
]

FORMAT = "biotwin-scenario/2"
#: The longest scenario name accepted (characters, after trimming spaces).
MAX_NAME_CHARS = 80

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


def check_new_name(folder: Path, name: str) -> str:
    """The name, trimmed, if a new scenario may be saved under it (call before the run).

    Raises
    ------
    ValueError
        An empty name, one longer than :data:`MAX_NAME_CHARS`, or one whose file exists
        already in ``folder`` (a saved scenario is never overwritten).
    """
    name = (name or "").strip()
    if not name:
        raise ValueError("scenario name: must not be empty; got ''")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(
            f"scenario name: must be at most {MAX_NAME_CHARS} characters; got {len(name)} "
            f"characters ({name[:40]!r}...)"
        )
    path = Path(folder) / file_name(name)
    if path.exists():
        raise ValueError(
            f"scenario name: must be new, a saved scenario is never overwritten; got {name!r}, "
            f"saved already in {path.name} (choose another name)"
        )
    return name


def unique_name(folder: Path, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``... the first not saved yet (for the names
    the page makes from what a scenario changes), cut to :data:`MAX_NAME_CHARS`."""
    base = name.strip()[: MAX_NAME_CHARS - 6]
    candidate, k = base, 1
    while (Path(folder) / file_name(candidate)).exists():
        k += 1
        candidate = f"{base} ({k})"
    return candidate


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
    author: Author,
    baseline: ScenarioResult,
    result: ScenarioResult,
    replications: int,
    seed: int,
    state_json: str,
    options: dict | None = None,
    levers: dict[str, ScenarioResult] | None = None,
) -> Path:
    """Write one saved scenario atomically under a new name; returns its path.

    ``levers``: each lever of the scenario run alone (label -> result), with the same
    seeds. ``author``: who ran it, saved with it.

    Raises
    ------
    PermissionError
        If ``author`` may not run scenarios (nothing written).
    ValueError
        If the name is empty, too long or saved already (nothing written).
    """
    check_may_run(author)
    check_new_name(folder, scenario.name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "format": FORMAT,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "author": author.to_dict(),
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
        try:
            os.link(tmp, path)  # fails if the name was saved meanwhile: never overwrite
        except FileExistsError:
            raise ValueError(
                f"scenario name: must be new, a saved scenario is never overwritten; got "
                f"{scenario.name!r}, saved meanwhile in {path.name}"
            ) from None
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
    """One row per saved scenario, newest first: name, file, saved_at, author (full name
    and user, empty for files saved before authors were kept), horizon_d, events,
    replications, seed, start (starting-point key), results (whether KPIs are stored).

    Files of the first format (the scenario definition alone) are listed without results;
    unreadable files are skipped.
    """
    rows = []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).exists() else []:
        row = _listed(path)
        if row is not None:
            rows.append(row)
    cols = ["name", "file", "saved_at", "author", "horizon_d", "events", "replications", "seed"]
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
            "author": author_text(data.get("author")),
            "horizon_d": scenario.get("horizon_h", 0) / 24,
            "events": len(scenario.get("events", [])),
            "replications": data.get("replications"),
            "seed": data.get("seed"),
            "start": data.get("start", {}).get("key"),
            "results": "result" in data,
        }
    _LISTED[path] = (st.st_mtime_ns, st.st_size, row)
    return row


def author_text(author: dict | None) -> str:
    """ "Full Name (user)" of a saved scenario's author; "" when it has none."""
    if not isinstance(author, dict) or not author.get("user"):
        return ""
    full = author.get("full_name") or author["user"]
    return full if full == author["user"] else f"{full} ({author['user']})"


def load_saved(folder: Path, file: str) -> dict:
    """A saved scenario: ``scenario`` (Scenario), ``baseline`` and ``result``
    (ScenarioResult, None if not stored), ``replications``, ``seed``, ``options``,
    ``start`` (key and state), ``saved_at``, ``author`` (dict, None for older files),
    ``levers`` (label -> ScenarioResult, empty for a scenario of one lever or a file of the
    first format).

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
        "author": data.get("author"),
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
