"""Alarms and events of the plant in one list, computed without Streamlit.

Where they come from:

- the historian's batch context: a unit in ``repair`` or ``down`` is an equipment failure
  (at its start) and, once the record is closed, an equipment repair (at its end);
- the historian's samples over a window, in DuckDB: runs of bad-quality samples of a tag
  (sensor faults) and gaps in a tag's samples (data gaps, one event per unit and gap);
- the scoring output in ``DATA_DIR/scores`` (``biotwin score``, see quality/live.py):
  batches at risk of a deviation, inputs that look faulty (low confidence), assets at risk
  of failure, and the drift flags of ``drift.json`` (quality/drift.py);
- the service logs in ``DATA_DIR/logs/*.log``: a service that stopped and was restarted
  ("stopped (exit ...)") and logged errors.
- the audit trail and the model registry when they do not verify
  (:func:`dashboard.audit.integrity_alarms`, docs/records.md);
- the historian's own alarms: damaged files quarantined, a server's source clock gone
  back (:meth:`connectors.historian.Historian.alarms`, docs/historian.md).

Each event has a stable id (``key``), so an acknowledgement, recorded in the audit trail
(:meth:`dashboard.audit.AuditTrail.acknowledge`), stays with it across reruns and scores.

Exceptions::

    PermissionError
     └── SignatureError    acknowledgement refused (nobody signed in, or a role missing)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime, tzinfo
from pathlib import Path

import duckdb
import pandas as pd

from connectors.historian import Historian
from dashboard.audit import AuditTrail, SignatureError, integrity_alarms
from dashboard.trends import DASH, GAP_FACTOR, data_gaps, duration_text, local_text, local_tz

__all__ = [
    "ACK_ROLES",
    "COLUMNS",
    "SEVERITIES",
    "TYPES",
    "acknowledge",
    "acknowledgements",
    "equipment_events",
    "event_list",
    "model_events",
    "quality_events",
    "service_events",
    "shown",
    "with_state",
]

logger = logging.getLogger(__name__)

ACK_ROLES = ("qa", "engineer", "maintenance")
#: severity: (colour, what it means), most severe first
SEVERITIES = {
    "high": ("#d62728", "act now: equipment down, batch at risk, service stopped"),
    "medium": ("#ff7f0e", "look today: sensor fault, data gap, drift, elevated risk"),
    "low": ("#e6b800", "note: short gaps and faults, watch items"),
    "info": ("#1f77b4", "for the record: repairs finished"),
}
TYPES = (
    "deviation",
    "equipment failure",
    "equipment repair",
    "drift flag",
    "sensor fault",
    "data gap",
    "service failure",
    "records integrity",
    "data integrity",
)
COLUMNS = ["key", "time", "unit", "type", "severity", "message", "batch_id", "source", "ongoing"]
DEVIATION_HIGH = 0.5  # P(deviation) at or above: high severity
DEVIATION_MEDIUM = 0.2  # at or above: medium
FAILURE_MEDIUM = 0.2  # P(failure in 7 days) at or above: an event
LONG_FAULT = pd.Timedelta(hours=1)  # bad-quality runs or gaps this long: medium, else low
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)(?:[,.]\d+)?\s+(.*)$")
_LOG_LEVEL = re.compile(r"^(ERROR|CRITICAL)\s")


def _frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["time"] = pd.to_datetime(out["time"], utc=True)
    out["ongoing"] = out["ongoing"].fillna(False).astype(bool)
    return out


def _iso(ts) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- batch context
def equipment_events(ctx: pd.DataFrame, *, tz: tzinfo | None = None) -> pd.DataFrame:
    """Failures (start of a ``repair`` or ``down`` record) and repairs (its end)."""
    tz = tz or local_tz()
    rows = []
    down = ctx[ctx["state"].isin(["repair", "down"])]
    for r in down.itertuples(index=False):
        batch = r.batch_id if isinstance(r.batch_id, str) and r.batch_id else None
        on = f" during batch {batch}" if batch else ""
        ongoing = pd.isna(r.end_time)
        still = " It is still down." if ongoing else ""
        rows.append(
            {
                "key": f"failure:{r.unit}:{_iso(r.start_time)}",
                "time": r.start_time,
                "unit": r.unit,
                "type": "equipment failure",
                "severity": "high",
                "message": f"{r.unit} went down for {r.state}{on}.{still}",
                "batch_id": batch,
                "source": "batch context",
                "ongoing": ongoing,
            }
        )
        if not ongoing:
            rows.append(
                {
                    "key": f"repaired:{r.unit}:{_iso(r.end_time)}",
                    "time": r.end_time,
                    "unit": r.unit,
                    "type": "equipment repair",
                    "severity": "info",
                    "message": (
                        f"{r.unit} back in service after {duration_text(r.end_time - r.start_time)}"
                        f" of {r.state} (down since {local_text(r.start_time, tz)})."
                    ),
                    "batch_id": batch,
                    "source": "batch context",
                    "ongoing": False,
                }
            )
    return _frame(rows)


# ---------------------------------------------------------------------- historian samples
_BAD_RUNS_SQL = """
    WITH r AS (
        SELECT tag, time, quality >= 2 AS bad,
               row_number() OVER (PARTITION BY tag ORDER BY time)
               - row_number() OVER (PARTITION BY tag, quality >= 2 ORDER BY time) AS grp
        FROM rows),
    last AS (SELECT tag, max(time) AS last_time FROM rows GROUP BY tag)
    SELECT r.tag, min(r.time) AS start, max(r.time) AS last_bad, count(*) AS n,
           max(r.time) = any_value(last.last_time) AS ongoing
    FROM r JOIN last USING (tag) WHERE r.bad GROUP BY r.tag, r.grp ORDER BY start"""

_TAILS_SQL = """
    SELECT tag, max(time) AS last_time, median(dt) AS step_us FROM (
        SELECT tag, time,
               epoch_us(time) - epoch_us(lag(time) OVER (PARTITION BY tag ORDER BY time)) AS dt
        FROM rows)
    GROUP BY tag"""


def quality_events(
    historian: Historian,
    start,
    end,
    *,
    tags: pd.DataFrame | None = None,
    tz: tzinfo | None = None,
) -> pd.DataFrame:
    """Sensor faults (runs of bad-quality samples per tag) and data gaps (per unit: the
    tags whose samples stop for more than three of their usual intervals) in [start, end).

    A tag whose samples stop before ``end`` for longer than that has an ongoing gap.
    ``tags``: ``historian.tags()`` if already read (for the units).
    """
    tz = tz or local_tz()
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    meta = historian.tags() if tags is None else tags
    unit_of = dict(zip(meta["tag"], meta["unit"].fillna(DASH), strict=True))
    rows = historian.query(None, start, end)[["time", "tag", "quality"]]
    if rows.empty:
        return _frame([])
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("rows", rows)
        runs = con.execute(_BAD_RUNS_SQL).df()
        gaps = data_gaps(rows, con=con)
        tails = con.execute(_TAILS_SQL).df()
    finally:
        con.close()
    tails["last_time"] = pd.to_datetime(tails["last_time"], utc=True)
    tails["step"] = pd.to_timedelta(tails["step_us"], unit="us")
    step_of = tails.set_index("tag")["step"].fillna(pd.Timedelta(0))
    out = []
    for r in runs.itertuples(index=False):
        first, last = pd.Timestamp(r.start), pd.Timestamp(r.last_bad)
        length = last - first + step_of.get(r.tag, pd.Timedelta(0))  # to the next sample
        unit = unit_of.get(r.tag, DASH)
        for_how_long = "since" if r.ongoing else f"for {duration_text(length)} from"
        out.append(
            {
                "key": f"bad:{r.tag}:{_iso(first)}",
                "time": first,
                "unit": unit,
                "type": "sensor fault",
                "severity": "medium" if length >= LONG_FAULT or r.ongoing else "low",
                "message": (
                    f"{r.tag} reported bad quality ({r.n} samples) {for_how_long} "
                    f"{local_text(first, tz)}: check the sensor."
                ),
                "batch_id": None,
                "source": "historian",
                "ongoing": bool(r.ongoing),
            }
        )
    silent = tails[tails["step"].notna() & (end - tails["last_time"] > GAP_FACTOR * tails["step"])]
    gaps = pd.concat(
        [
            gaps.assign(ongoing=False),
            pd.DataFrame(
                {"tag": silent["tag"], "start": silent["last_time"], "end": end, "ongoing": True}
            ),
        ],
        ignore_index=True,
    )
    gaps["unit"] = gaps["tag"].map(unit_of).fillna(DASH)
    for (unit, first, last, ongoing), part in gaps.groupby(
        ["unit", "start", "end", "ongoing"], sort=False
    ):
        first, last = pd.Timestamp(first), pd.Timestamp(last)
        names = sorted(part["tag"])
        which = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        count = f"{len(names)} tags" if len(names) > 1 else "1 tag"
        when = (
            f"since {local_text(first, tz)} ({duration_text(last - first)} so far)"
            if ongoing
            else f"for {duration_text(last - first)}, from {local_text(first, tz)} "
            f"to {local_text(last, tz)}"
        )
        out.append(
            {
                "key": f"gap:{unit}:{_iso(first)}" + (":ongoing" if ongoing else f":{_iso(last)}"),
                "time": first,
                "unit": unit,
                "type": "data gap",
                "severity": "medium" if last - first >= LONG_FAULT or ongoing else "low",
                "message": f"No data from {count} of {unit} ({which}) {when}.",
                "batch_id": None,
                "source": "historian",
                "ongoing": bool(ongoing),
            }
        )
    return _frame(out)


# ---------------------------------------------------------------------- scoring output
def _read_parquet(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError):
        logger.warning("events: %s is unreadable; skipped", path)
        return None


def _scored(row: dict):
    """When a score was made, on the plant's clock (``plant_time``, like every other event)
    when the score file has it, else ``scored_at`` (the wall clock)."""
    plant = row.get("plant_time")
    return plant if plant is not None and pd.notna(plant) else row.get("scored_at")


def model_events(store: Path) -> pd.DataFrame:
    """Deviation risks, low-confidence inputs, asset failure risks and drift flags from
    ``store/scores`` (what ``biotwin score`` writes); empty when nothing has been scored."""
    scores = Path(store) / "scores"
    out = []
    batches = _read_parquet(scores / "batch_scores.parquet")
    if batches is not None and "batch_id" in batches:
        batches = batches.drop_duplicates("batch_id", keep="last")
        for r in batches.to_dict("records"):
            p = r.get("p_deviation")
            unit = r.get("unit") or DASH
            when = _scored(r)
            if p is not None and pd.notna(p) and p >= DEVIATION_MEDIUM:
                cls = r.get("likely_class")
                likely = f", most likely {cls.replace('_', ' ')}" if isinstance(cls, str) else ""
                why = f" Why: {r['reasons']}." if isinstance(r.get("reasons"), str) else ""
                out.append(
                    {
                        "key": f"deviation:{r['batch_id']}",
                        "time": when,
                        "unit": unit,
                        "type": "deviation",
                        "severity": "high" if p >= DEVIATION_HIGH else "medium",
                        "message": (
                            f"Batch {r['batch_id']} predicted to deviate: risk {p:.0%}{likely} "
                            f"(model {r.get('model_version') or DASH}).{why}"
                        ),
                        "batch_id": r["batch_id"],
                        "source": "scores",
                        "ongoing": True,
                    }
                )
            if r.get("low_confidence") in (True, 1):
                sensors = r.get("suspect_sensors") or "not named"
                out.append(
                    {
                        "key": f"inputs:{r['batch_id']}:{sensors}",
                        "time": when,
                        "unit": unit,
                        "type": "sensor fault",
                        "severity": "medium",
                        "message": (
                            f"Inputs of batch {r['batch_id']} look faulty ({sensors}): its "
                            "predicted risk has low confidence."
                        ),
                        "batch_id": r["batch_id"],
                        "source": "scores",
                        "ongoing": True,
                    }
                )
    assets = _read_parquet(scores / "asset_scores.parquet")
    if assets is not None and "asset" in assets:
        for r in assets.drop_duplicates("asset", keep="last").to_dict("records"):
            p = r.get("p_fail_7d")
            if p is None or pd.isna(p) or p < FAILURE_MEDIUM:
                continue
            rul = r.get("rul_h")
            life = (
                f"; remaining life about {rul:.0f} h" if rul is not None and pd.notna(rul) else ""
            )
            out.append(
                {
                    "key": f"risk:{r['asset']}",
                    "time": _scored(r),
                    "unit": r.get("unit") or str(r["asset"]).split("/")[0],
                    "type": "equipment failure",
                    "severity": "high" if p >= DEVIATION_HIGH else "medium",
                    "message": f"{r['asset']} predicted to fail within 7 days: risk {p:.0%}{life}.",
                    "batch_id": None,
                    "source": "scores",
                    "ongoing": True,
                }
            )
    out.extend(_drift_events(scores / "drift.json"))
    return _frame(out)


def _drift_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        drift = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("events: %s is unreadable; skipped", path)
        return []
    when = drift.get("computed_at")
    out = []
    for family, d in drift.items():
        if not isinstance(d, dict):
            continue
        version = d.get("model_version") or DASH
        if d.get("flag"):
            worst = ", ".join(str(w.get("feature")) for w in (d.get("worst") or [])[:3])
            out.append(
                {
                    "key": f"drift:{family}:{version}:inputs",
                    "time": when,
                    "unit": DASH,
                    "type": "drift flag",
                    "severity": "medium",
                    "message": (
                        f"The {family} model ({version}) sees {d.get('features_drifting')} of "
                        f"{d.get('features_checked')} inputs drifting from its training data"
                        + (f" (worst: {worst})" if worst else "")
                        + ": review before trusting its scores."
                    ),
                    "batch_id": None,
                    "source": "drift check",
                    "ongoing": True,
                }
            )
        perf = d.get("performance")
        if isinstance(perf, dict) and perf.get("flag"):
            out.append(
                {
                    "key": f"drift:{family}:{perf.get('model_version') or version}:performance",
                    "time": when,
                    "unit": DASH,
                    "type": "drift flag",
                    "severity": "high",
                    "message": (
                        f"The {family} model ({perf.get('model_version') or version}) ranks "
                        f"recent batches worse than at validation: ROC AUC {perf['auc']:.2f} "
                        f"against {perf['validation_auc']:.2f}; retrain or review."
                    ),
                    "batch_id": None,
                    "source": "drift check",
                    "ongoing": True,
                }
            )
    return out


# ---------------------------------------------------------------------- service logs
def service_events(logs: Path, *, tz: tzinfo | None = None) -> pd.DataFrame:
    """Service failures from ``logs/*.log``: "<service> stopped (exit N)" lines and
    uncaught exceptions (a traceback's last line) are high, ERROR or CRITICAL log records
    medium (a traceback right after such a record is part of it).

    A line's time is its leading timestamp (the services' log format, machine time); a
    line without one takes the last timestamp above it in the file, else the file's last
    modification. The id of an event is its file, line number and text (not its time).
    """
    del tz  # messages hold no times
    logs = Path(logs)
    machine = datetime.now().astimezone().tzinfo  # logging's asctime is the machine's time
    out = []
    for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        service = path.stem
        try:
            lines = path.read_text(errors="replace").splitlines()
            when = pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC")
        except OSError:
            continue
        in_traceback = after_error = False
        for n, line in enumerate(lines, start=1):
            text = line.strip()
            stamp = _LOG_TIME.match(text)
            body = text
            if stamp:
                when = (
                    pd.Timestamp(stamp.group(1))
                    .tz_localize(machine, ambiguous=True, nonexistent="shift_forward")
                    .tz_convert("UTC")
                )
                body = stamp.group(2)
            if text.startswith("Traceback (most recent call last)"):
                in_traceback, own = True, not after_error
                continue
            if in_traceback:
                if not line[:1].isspace() and text:  # the exception's line ends the traceback
                    in_traceback = False
                    if own:
                        message = f"Service {service} crashed: {text}"
                        out.append(_service_row(path, n, when, "high", message, text))
                continue
            after_error = False
            if "stopped (exit" in body:
                out.append(_service_row(path, n, when, "high", f"Service {service}: {body}", text))
            elif _LOG_LEVEL.match(body):
                after_error = True
                message = f"Service {service} logged an error: {body}"
                out.append(_service_row(path, n, when, "medium", message, text))
    return _frame(out)


def _service_row(path: Path, n: int, when, severity: str, message: str, text: str) -> dict:
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return {
        "key": f"service:{path.name}:{n}:{digest}",
        "time": when,
        "unit": DASH,
        "type": "service failure",
        "severity": severity,
        "message": message[:400],
        "batch_id": None,
        "source": f"logs/{path.name}",
        "ongoing": False,
    }


# ---------------------------------------------------------------------- the list
def acknowledgements(trail: AuditTrail) -> dict[str, dict]:
    """The latest acknowledgement record of each event id."""
    return {r["decision"]: r for r in trail.records() if r.get("action") == "acknowledge"}


def event_list(
    historian: Historian,
    store: Path,
    start,
    end,
    *,
    trail: AuditTrail | None = None,
    tz: tzinfo | None = None,
) -> pd.DataFrame:
    """Every alarm and event in [start, end), newest first, with its state.

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS` plus ``state`` ("active", or "acknowledged by <user>, <local
        date-time>"), ``acknowledged_by`` and ``acknowledged_at`` (UTC).
    """
    tz = tz or local_tz()
    store = Path(store)
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    tags = historian.tags()
    parts = [
        equipment_events(historian.batch_context(start=start, end=end), tz=tz),
        quality_events(historian, start, end, tags=tags, tz=tz),
        model_events(store),
        service_events(store / "logs", tz=tz),
        _frame(integrity_alarms(store)),  # audit trail or model registry that does not verify
        historian.alarms(),  # damaged historian files, a source clock gone back
    ]
    found = [p for p in parts if len(p)]
    events = pd.concat(found, ignore_index=True) if found else _frame([])
    in_window = (events["time"] >= start) & (events["time"] < end)
    events = events[in_window | events["ongoing"]]
    events = events.drop_duplicates("key", keep="last")
    order = {s: i for i, s in enumerate(SEVERITIES)}
    events = events.assign(_rank=events["severity"].map(order))
    events = events.sort_values(["time", "_rank"], ascending=[False, True], kind="stable")
    events = events.drop(columns="_rank").reset_index(drop=True)
    return with_state(events, trail, tz=tz)


def with_state(
    events: pd.DataFrame, trail: AuditTrail | None, *, tz: tzinfo | None = None
) -> pd.DataFrame:
    """``events`` with ``acknowledged_by``, ``acknowledged_at`` (UTC) and ``state``
    ("active", or "acknowledged by <user>, <local date-time>") from the audit trail."""
    tz = tz or local_tz()
    acks = acknowledgements(trail) if trail is not None else {}
    by = [acks.get(k, {}).get("user") for k in events["key"]]
    at = [acks.get(k, {}).get("time") for k in events["key"]]
    events = events.assign(
        acknowledged_by=by,
        acknowledged_at=pd.to_datetime(pd.Series(at, dtype=object, index=events.index), utc=True),
    )
    events["state"] = [
        f"acknowledged by {acks[k]['user']}, {local_text(acks[k]['time'], tz)}"
        if k in acks
        else "active"
        for k in events["key"]
    ]
    return events


def shown(events: pd.DataFrame, tz: tzinfo | None = None) -> pd.DataFrame:
    """The list as the page shows it: human column names, local times, "—" for nothing."""
    tz = tz or local_tz()
    return pd.DataFrame(
        {
            "Time": [local_text(t, tz) for t in events["time"]],
            "Unit": events["unit"].fillna(DASH).replace("", DASH),
            "Type": events["type"].str.capitalize(),
            "Severity": events["severity"].str.capitalize(),
            "Message": events["message"],
            "State": events["state"].str.capitalize(),
        }
    )


def acknowledge(trail: AuditTrail, event: Mapping, *, user: str | None, roles) -> dict:
    """Acknowledge ``event`` (a row of :func:`event_list`) as ``user``: an audit record.

    Raises
    ------
    SignatureError
        Nobody is signed in, or the user has none of :data:`ACK_ROLES` (in the session or
        in users.toml); nothing is recorded.
    """
    if not user:
        raise SignatureError("acknowledgement refused: nobody is signed in")
    if not set(roles) & set(ACK_ROLES):
        raise SignatureError(
            f"acknowledgement refused: user {user!r} needs one of the roles "
            f"{', '.join(ACK_ROLES)}; has {', '.join(roles) or 'none'}"
        )
    batch = event.get("batch_id")
    return trail.acknowledge(
        user=user,
        event_id=str(event["key"]),
        message=f"{event['type']}: {event['message']}",
        batch_id=batch if isinstance(batch, str) and batch else None,
        roles=ACK_ROLES,
    )
