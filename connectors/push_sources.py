"""What each push source (an OPC UA writer endpoint, an MQTT PubSub subscription) has done.

The receiver keeps one :class:`PushSource` per path it serves and writes its status, at most
once a second, to ``DATA_DIR/receive/status-<name>.json`` (temporary file, ``os.replace``),
where the command center reads it (:func:`read_statuses`). Status file fields::

    name              "opcua" or "mqtt" (or another path's name)
    endpoint          the endpoint URL or broker URL and topic
    started           ISO 8601 UTC time the receiver started serving
    updated           ISO 8601 UTC time of this status
    connected         names of the connected writers (OPC UA users or MQTT publisher ids)
    values_total      values stored since start
    values_per_s      values stored per second over the last ``RATE_WINDOW_S`` seconds
    last_value_time   ISO 8601 UTC source time of the newest value stored, or null
    rejected          {StatusCode name: count} of values refused (e.g. "BadTypeMismatch")
    sequence_gaps     missing SequenceNumbers counted (PubSub), 0 for paths without them
    reordered         messages that arrived behind a later SequenceNumber (PubSub)
    stopped           ISO 8601 UTC time the path stopped (:meth:`PushSource.on_stop`), or null
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, deque
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["RATE_WINDOW_S", "PushSource", "read_statuses", "status_dir"]

logger = logging.getLogger(__name__)

#: seconds over which ``values_per_s`` is measured
RATE_WINDOW_S = 10.0
#: seconds between two status files (at most)
WRITE_EVERY_S = 1.0


def status_dir(data_dir: str | os.PathLike) -> Path:
    """Folder of the receivers' status files under ``data_dir``."""
    return Path(data_dir) / "receive"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat()


class PushSource:
    """Counters of one push path, written as a status file for the command center.

    Parameters
    ----------
    name : str
        Short name of the path (``"opcua"``, ``"mqtt"``); names the status file.
    endpoint : str
        What writers connect to, shown on the page.
    data_dir : path-like, optional
        Data dir whose ``receive/`` folder gets the status file; none: counters only.

    Thread-safe: the ``on_*`` methods may be called from the event loop and from threads.
    """

    def __init__(self, name: str, endpoint: str, data_dir: str | os.PathLike | None = None):
        self.name = name
        self.endpoint = endpoint
        self.path = None if data_dir is None else status_dir(data_dir) / f"status-{name}.json"
        self.started = time.time()
        self.values_total = 0
        self.last_value_time: float | None = None
        self.rejected: Counter[str] = Counter()
        self.sequence_gaps = 0
        self.reordered = 0
        self._connected: Counter[str] = Counter()
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self._written = 0.0
        self.stopped: float | None = None

    def __repr__(self) -> str:
        return f"PushSource({self.name!r}, values={self.values_total}, gaps={self.sequence_gaps})"

    # -- events ---------------------------------------------------------------------------
    def on_connect(self, writer: str) -> None:
        """A writer (user or publisher id) connected."""
        with self._lock:
            self._connected[writer] += 1
        self.flush()

    def on_disconnect(self, writer: str) -> None:
        """A writer disconnected."""
        with self._lock:
            self._connected[writer] -= 1
            if self._connected[writer] <= 0:
                del self._connected[writer]
        self.flush()

    def on_stored(self, n: int, newest_source_time: float | None) -> None:
        """``n`` values were stored durably; ``newest_source_time`` in POSIX seconds."""
        now = time.time()
        with self._lock:
            self.values_total += n
            self._recent.append((now, n))
            if newest_source_time is not None and (
                self.last_value_time is None or newest_source_time > self.last_value_time
            ):
                self.last_value_time = newest_source_time
        self.flush()

    def on_rejected(self, status_name: str, n: int = 1) -> None:
        """``n`` values were refused with the StatusCode ``status_name``."""
        with self._lock:
            self.rejected[status_name] += n
        self.flush()

    def on_sequence(self, gaps: int = 0, reordered: int = 0) -> None:
        """``gaps`` SequenceNumbers were missing; ``reordered`` messages came late."""
        with self._lock:
            self.sequence_gaps += gaps
            self.reordered += reordered
        self.flush(force=bool(gaps or reordered))

    def on_stop(self) -> None:
        """The path stopped serving: no writer is connected any more (written at once)."""
        with self._lock:
            self._connected.clear()
            self.stopped = time.time()
        self.flush(force=True)

    # -- status ---------------------------------------------------------------------------
    def values_per_s(self, now: float | None = None) -> float:
        """Values stored per second over the last :data:`RATE_WINDOW_S` seconds."""
        now = time.time() if now is None else now
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            total = sum(n for _, n in self._recent)
        span = min(RATE_WINDOW_S, max(now - self.started, 1e-9))
        return total / span

    def status(self) -> dict:
        """The status file's fields (see the module docstring)."""
        rate = self.values_per_s()
        with self._lock:
            return {
                "name": self.name,
                "endpoint": self.endpoint,
                "started": _iso(self.started),
                "updated": _iso(time.time()),
                "connected": sorted(self._connected),
                "values_total": self.values_total,
                "values_per_s": round(rate, 1),
                "last_value_time": _iso(self.last_value_time),
                "rejected": dict(sorted(self.rejected.items())),
                "sequence_gaps": self.sequence_gaps,
                "reordered": self.reordered,
                "stopped": _iso(self.stopped),
            }

    def flush(self, *, force: bool = False) -> None:
        """Write the status file, at most once per :data:`WRITE_EVERY_S` unless ``force``."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._written < WRITE_EVERY_S:
            return
        self._written = now
        text = json.dumps(self.status(), indent=1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, self.path)
        except OSError as exc:  # a status file never stops the receiver
            logger.warning("push status %s not written: %s", self.path, exc)


def read_statuses(data_dir: str | os.PathLike) -> list[dict]:
    """Every push path's last status under ``data_dir``, by name; unreadable files skipped
    with a warning."""
    out = []
    for path in sorted(status_dir(data_dir).glob("status-*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            logger.warning("push status %s unreadable: %s", path, exc)
    return out
