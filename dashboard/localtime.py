"""The plant's local time: every date the command center shows is in it.

The zone is $BIOTWIN_TZ (an IANA name such as ``Europe/Brussels``), else the machine's.
Stored times stay UTC (historian, audit trail, scores); only what is shown is converted.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

__all__ = ["age", "local", "local_text", "machine_tz", "plant_tz", "tz_name", "tz_problem"]

logger = logging.getLogger(__name__)


def machine_tz() -> tzinfo:
    """The machine's time zone: $TZ, else /etc/localtime's zone, else the current offset."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(os.readlink("/etc/localtime").split("zoneinfo/")[-1])
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return datetime.now().astimezone().tzinfo


def plant_tz() -> tzinfo:
    """The plant's time zone: $BIOTWIN_TZ, else the machine's (see :func:`tz_problem`)."""
    name = os.environ.get("BIOTWIN_TZ", "").strip()
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            logger.warning("BIOTWIN_TZ: unknown time zone %r; the machine's is used", name)
    return machine_tz()


def tz_name(tz: tzinfo) -> str:
    """A readable name of a time zone (its IANA key, else its abbreviation)."""
    return getattr(tz, "key", None) or datetime.now(tz).tzname() or str(tz)


def tz_problem() -> str | None:
    """Why $BIOTWIN_TZ is not used, in one line (None when it is, or is not set)."""
    name = os.environ.get("BIOTWIN_TZ", "").strip()
    if not name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return (
            f"BIOTWIN_TZ: must be an IANA time zone such as Europe/Brussels; got {name!r} "
            "(the machine's time zone is used)"
        )
    return None


def local(times):
    """UTC timestamps (scalar or Series) in the plant's zone (naive input is taken as UTC)."""
    tz = plant_tz()
    if isinstance(times, pd.Series):
        t = pd.to_datetime(times, utc=True)
        return t.dt.tz_convert(tz)
    t = pd.Timestamp(times)
    if pd.isna(t):
        return pd.NaT
    return (t.tz_localize("UTC") if t.tzinfo is None else t).tz_convert(tz)


def local_text(ts, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    """A timestamp as the plant's local date and time ("—" when unknown)."""
    t = local(ts)
    return "—" if pd.isna(t) else t.strftime(fmt)


def age(ts, now) -> str:
    """How long before ``now`` ``ts`` was, in words ("4 s ago", "3 h ago", "2 days ago")."""
    if pd.isna(ts) or pd.isna(now):
        return "—"
    s = (pd.Timestamp(now) - pd.Timestamp(ts)).total_seconds()
    if s < 0:
        return "just now"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if s >= 2 * size:
            return f"{s / size:.0f} {unit} ago"
    return f"{s:.0f} s ago"
