"""Push sources in the command center: what OT systems push into ``biotwin receive``.

Each push path (the OPC UA endpoint, PubSub over MQTT) writes a status file
(:class:`connectors.push_sources.PushSource`, read with
:func:`connectors.push_sources.read_statuses`); :func:`push_table` turns them into the rows
the Alarms and events page shows, without Streamlit: per source its connected writers,
values per second, values stored, the newest value's source time (plant local time, with
the date), rejected values by StatusCode and sequence gaps.
"""

from __future__ import annotations

import pandas as pd

from dashboard.localtime import age, local_text

__all__ = ["COLUMNS", "STALE_S", "push_table"]

#: A status older than this means the receiver stopped writing it (not running); a
#: status with ``stopped`` set is a receiver that stopped on purpose.
STALE_S = 10.0
COLUMNS = [
    "Source",
    "Endpoint",
    "Connected writers",
    "Values/s",
    "Values stored",
    "Last value",
    "Rejected (by StatusCode)",
    "Sequence gaps",
    "Status",
]
_NAMES = {"opcua": "OPC UA writes", "mqtt": "PubSub over MQTT"}


def _rejected(counts: dict) -> str:
    if not counts:
        return "none"
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name} {n:,}" for name, n in top)


def push_table(statuses: list[dict], now: pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per push source (see the module docstring).

    Parameters
    ----------
    statuses : list of dict
        Status files' contents (:func:`connectors.push_sources.read_statuses`).
    now : pandas.Timestamp, optional
        The wall clock (default: now): a status not updated for :data:`STALE_S` seconds
        shows the receiver as not running, with no writer connected and no rate.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    rows = []
    for s in statuses:
        updated = pd.to_datetime(s.get("updated"), utc=True, errors="coerce")
        stopped = pd.to_datetime(s.get("stopped"), utc=True, errors="coerce")
        live = pd.notna(updated) and (now - updated).total_seconds() <= STALE_S and pd.isna(stopped)
        writers = s.get("connected") or []
        gaps = int(s.get("sequence_gaps") or 0)
        reordered = int(s.get("reordered") or 0)
        rows.append(
            {
                "Source": _NAMES.get(s.get("name"), str(s.get("name"))),
                "Endpoint": str(s.get("endpoint") or ""),
                "Connected writers": (", ".join(writers) or "none") if live else "—",
                "Values/s": float(s.get("values_per_s") or 0.0) if live else 0.0,
                "Values stored": int(s.get("values_total") or 0),
                "Last value": local_text(s.get("last_value_time"), "%Y-%m-%d %H:%M:%S %Z"),
                "Rejected (by StatusCode)": _rejected(s.get("rejected") or {}),
                "Sequence gaps": f"{gaps:,}" + (f" ({reordered:,} reordered)" if reordered else ""),
                "Status": (
                    f"receiving (status {age(updated, now)})"
                    if live
                    else f"stopped {local_text(stopped, '%Y-%m-%d %H:%M:%S %Z')}"
                    if pd.notna(stopped)
                    else f"not running (last status {age(updated, now)})"
                ),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
