"""The OPC UA server's own history (what HistoryRead answers), in one SQLite file.

asyncua's ``HistorySQLite`` names one table per node and refuses node ids such as
``BR-201.TIC-201.PV``; this backend keeps one table keyed by the node id string, writes in
batches (at most one second old, so a HistoryRead sees nearly everything published) and
survives a server restart, which is what lets an ingest backfill the gap after one.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta

from asyncua import ua
from asyncua.server.history import HistoryStorageInterface

__all__ = ["SQLiteHistory"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int((t - _EPOCH) / timedelta(microseconds=1))


class SQLiteHistory(HistoryStorageInterface):
    """Data-change history of historized nodes, in SQLite (WAL)."""

    def __init__(self, path: str, max_history_data_response_size: int = 10000) -> None:
        super().__init__(max_history_data_response_size)
        self.path = path
        self._periods: dict[str, timedelta | None] = {}
        self._buffer: list[tuple] = []
        self._flushed = time.monotonic()
        self._pruned = time.monotonic()
        self._db: sqlite3.Connection | None = None

    async def init(self) -> None:
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS datachange (node TEXT, ts INTEGER, server_ts INTEGER,"
            " status INTEGER, vtype INTEGER, num REAL, txt TEXT, PRIMARY KEY (node, ts))"
        )
        self._db.commit()

    async def new_historized_node(self, node_id, period, count=0) -> None:
        self._periods[node_id.to_string()] = period

    async def save_node_value(self, node_id, datavalue: ua.DataValue) -> None:
        variant = datavalue.Value
        vtype = variant.VariantType.value if variant is not None else 0
        value = variant.Value if variant is not None else None
        num, txt = (value, None) if isinstance(value, int | float) else (None, value)
        self._buffer.append(
            (
                node_id.to_string(),
                _us(datavalue.SourceTimestamp or datetime.now(UTC)),
                _us(datavalue.ServerTimestamp or datetime.now(UTC)),
                datavalue.StatusCode.value if datavalue.StatusCode else 0,
                vtype,
                num,
                txt,
            )
        )
        if time.monotonic() - self._flushed > 1.0 or len(self._buffer) > 20_000:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered values (and drop values older than their node's period)."""
        if self._db is None:
            return
        if self._buffer:
            self._db.executemany(
                "INSERT OR IGNORE INTO datachange VALUES (?, ?, ?, ?, ?, ?, ?)", self._buffer
            )
            self._buffer = []
        if time.monotonic() - self._pruned > 60:
            self._pruned = time.monotonic()
            now = datetime.now(UTC)
            for node, period in self._periods.items():
                if period:
                    self._db.execute(
                        "DELETE FROM datachange WHERE node = ? AND ts < ?",
                        (node, _us(now - period)),
                    )
        self._db.commit()
        self._flushed = time.monotonic()

    async def read_node_history(self, node_id, start, end, nb_values):
        self.flush()
        node = node_id.to_string()
        epoch = ua.get_win_epoch()
        start = None if start in (None, epoch) else start
        end = None if end in (None, epoch) else end
        order = "ASC"
        if start is not None and end is not None and start > end:
            start, end, order = end, start, "DESC"
        elif start is None and end is not None:
            order = "DESC"
        sql = "SELECT ts, server_ts, status, vtype, num, txt FROM datachange WHERE node = ?"
        params: list = [node]
        if start is not None:
            sql += " AND ts >= ?"
            params.append(_us(start))
        if end is not None:
            sql += " AND ts <= ?"
            params.append(_us(end))
        limit = self.max_history_data_response_size + 1
        if nb_values:
            limit = min(limit, nb_values)
        sql += f" ORDER BY ts {order} LIMIT {int(limit)}"
        rows = self._db.execute(sql, params).fetchall()
        cont = None
        if len(rows) > self.max_history_data_response_size:
            cont = _EPOCH + timedelta(microseconds=rows[-1][0])
            rows = rows[:-1]
        out = []
        for ts, server_ts, status, vtype, num, txt in rows:
            vt = ua.VariantType(vtype) if vtype else ua.VariantType.Null
            value = txt if num is None else num
            if value is None and vt in (ua.VariantType.Double, ua.VariantType.Float):
                value = float("nan")  # SQLite stores NaN as NULL
            out.append(
                ua.DataValue(
                    ua.Variant(value, vt),
                    StatusCode=ua.StatusCode(status),
                    SourceTimestamp=_EPOCH + timedelta(microseconds=ts),
                    ServerTimestamp=_EPOCH + timedelta(microseconds=server_ts),
                )
            )
        return out, cont

    async def new_historized_event(self, source_id, evtypes, period, count=0) -> None:
        raise NotImplementedError("event history is not kept by the twin server")

    async def save_event(self, event) -> None:
        return None

    async def read_event_history(self, source_id, start, end, nb_values, evfilter):
        return [], None

    async def stop(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None
