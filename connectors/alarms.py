"""Alarms of the historian and the ingest, as rows for the command center's event list.

Two sources, both plain JSON files under the historian's root, so that any process (the
ingest, a query in the dashboard, ``biotwin history verify``) can raise an alarm that the
dashboard, another process, shows:

- ``quarantine/*.json``: a damaged or missing file moved aside (:mod:`connectors.manifest`);
  an alarm while the note is there (an operator removes or restores the file and its note),
  high and ongoing until the ingest has read its values again (``recovered_at`` in the
  note), then low and resolved, the note kept as the record;
- ``alarms/*.json``: alarms recorded by :func:`record` (the ingest's "source clock went
  back"), one file per alarm, rewritten atomically while it is ongoing.

The rows have the columns of :data:`dashboard.events.COLUMNS` with type "data integrity".
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd

from connectors import _segments
from connectors.manifest import quarantined

__all__ = ["ALARM_COLUMNS", "ALARM_TYPE", "historian_alarms", "record"]

logger = logging.getLogger(__name__)

ALARM_COLUMNS = [
    "key",
    "time",
    "unit",
    "type",
    "severity",
    "message",
    "batch_id",
    "source",
    "ongoing",
]
ALARM_TYPE = "data integrity"
ALARMS = "alarms"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def record(
    root: Path,
    key: str,
    *,
    time: pd.Timestamp,
    severity: str,
    message: str,
    ongoing: bool = True,
    details: dict | None = None,
) -> Path:
    """Write (or rewrite) the alarm ``key`` under ``<root>/alarms/``, atomically.

    Parameters
    ----------
    root : Path
        The historian's root.
    key : str
        The alarm's stable id (an acknowledgement in the dashboard stays with it).
    time : pandas.Timestamp
        When it was raised (UTC).
    severity : str
        high, medium, low or info (dashboard/events.py).
    message : str
        One line for the operator.
    ongoing : bool
        Still true (shown whatever the time window of the list).
    details : dict, optional
        Counts and times for the record.

    Returns
    -------
    Path
        The alarm's file.
    """
    folder = Path(root) / ALARMS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (_UNSAFE.sub("_", key)[:180] + ".json")
    body = {
        "key": key,
        "time": pd.Timestamp(time).tz_convert("UTC").isoformat(),
        "severity": severity,
        "message": message,
        "ongoing": ongoing,
        "details": details or {},
    }
    _segments.write_atomic(path, lambda tmp: tmp.write_text(json.dumps(body, indent=2)))
    return path


def _recorded(root: Path) -> list[dict]:
    rows = []
    for path in sorted((root / ALARMS).glob("*.json")):
        try:
            alarm = json.loads(path.read_text())
            rows.append(
                {
                    "key": f"historian:{alarm['key']}",
                    "time": alarm["time"],
                    "severity": alarm["severity"],
                    "message": alarm["message"],
                    "source": f"historian/{ALARMS}/{path.name}",
                    "ongoing": bool(alarm.get("ongoing", True)),
                }
            )
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("historian: alarm file %s unreadable; skipped", path)
    return rows


def _quarantine_rows(root: Path) -> list[dict]:
    rows = []
    for note in quarantined(root):
        where = note.get("quarantined_as") or "nowhere (missing)"
        rows_expected = note.get("rows_expected")
        lost = f"{rows_expected:,} rows" if isinstance(rows_expected, int) else "its rows"
        recovered = note.get("recovered_at")  # its values read again (connectors/ingest.py)
        if recovered:
            lost = (
                f"recovered: {note.get('values_recovered', 0):,} values read again from "
                f"{note.get('endpoint')} at {recovered}"
            )
        rows.append(
            {
                "key": f"historian:quarantine:{note['note']}",
                "time": note.get("detected_at"),
                "severity": "low" if recovered else "high",
                "message": (
                    f"Historian file {note.get('file')} is damaged ({note.get('problem')}): "
                    f"moved to {where}; " + (lost if recovered else f"{lost} no longer in queries")
                )[:400],
                "source": f"historian/{note['note']}",
                "ongoing": not recovered,
            }
        )
    return rows


def historian_alarms(root: Path) -> pd.DataFrame:
    """Every alarm of the historian at ``root`` (quarantined files, recorded alarms).

    Returns
    -------
    pandas.DataFrame
        :data:`ALARM_COLUMNS`, ``time`` in UTC, oldest first.
    """
    root = Path(root)
    rows = [
        {**row, "unit": None, "type": ALARM_TYPE, "batch_id": None}
        for row in _quarantine_rows(root) + _recorded(root)
    ]
    out = pd.DataFrame(rows, columns=ALARM_COLUMNS)
    out["time"] = pd.to_datetime(out["time"], utc=True, errors="coerce")
    out["ongoing"] = out["ongoing"].fillna(False).astype(bool)
    return out.sort_values(["time", "key"], kind="stable").reset_index(drop=True)
