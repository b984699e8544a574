"""History of ``biotwin receive``: HistoryRead from the historian, HistoryUpdate into it.

**HistoryRead** (raw, :class:`HistorianHistory`, asyncua's ``HistoryStorageInterface``):
a tag variable's history is what the historian holds for the tag (numbers) or what the
text table holds (String tags), one value per source time, with the StatusCode stored; a
unit's BatchId / Recipe / Phase / State history is its batch context records, one value
at each record's start. Time order as OPC UA Part 11 says: ascending from StartTime to
EndTime, descending when EndTime is before StartTime (or only EndTime is given); at most
``NumValuesPerNode`` values (and at most :data:`MAX_VALUES` per answer), with a
continuation point at the next value's time.

**HistoryUpdate** (:func:`update_jobs`): ``UpdateDataDetails`` with PerformUpdateType
Insert, Replace or Update, per value the checks of :mod:`connectors.receive_writes` (a
SourceTimestamp is required) and then the store's decision (Part 11 6.8.2):

============= ======================== =========================================
update        key not stored           key stored
============= ======================== =========================================
Insert        GoodEntryInserted        BadEntryExists
Replace       BadNoEntryExists         GoodEntryReplaced (old value recorded)
Update        GoodEntryInserted        GoodEntryReplaced (old value recorded)
============= ======================== =========================================

Other details (``DeleteRawModifiedDetails``, ``UpdateStructureDataDetails``, events...)
are answered BadHistoryOperationUnsupported, PerformUpdateType Remove
BadHistoryOperationInvalid, an unknown node BadNodeIdUnknown, a batch context variable
BadHistoryOperationUnsupported (its history is the batch context), and every operation of
a user without the role ot-writer BadUserAccessDenied.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pandas as pd
from asyncua import ua
from asyncua.server.history import HistoryStorageInterface

from connectors.historian import Historian
from connectors.receive_store import Job, TextValues
from connectors.receive_tags import ReceiveTag
from connectors.receive_writes import GOOD, check_value

__all__ = ["MAX_VALUES", "UPDATE_MODES", "HistorianHistory", "update_jobs"]

logger = logging.getLogger(__name__)

#: At most this many values per node in one HistoryRead answer (then a continuation point).
MAX_VALUES = 10_000
#: PerformUpdateType -> the store's mode
UPDATE_MODES = {
    ua.PerformUpdateType.Insert: "insert",
    ua.PerformUpdateType.Replace: "replace",
    ua.PerformUpdateType.Update: "update",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SC = ua.StatusCodes


def _utc(t: datetime | None) -> pd.Timestamp | None:
    if t is None:
        return None
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


class HistorianHistory(HistoryStorageInterface):
    """HistoryRead of the receiver's variables from the store (see the module docstring).

    Parameters
    ----------
    historian : Historian
    text : TextValues
        The text table (String tags).
    tags : dict
        Node id string -> :class:`ReceiveTag` of the tag variables.
    context : dict
        Node id string -> (unit, field) of the batch context variables.
    """

    def __init__(
        self,
        historian: Historian,
        text: TextValues,
        tags: dict[str, ReceiveTag],
        context: dict[str, tuple[str, str]],
    ) -> None:
        super().__init__(MAX_VALUES)
        self.historian, self.text = historian, text
        self.tags, self.context = tags, context

    async def init(self) -> None:
        return None

    async def new_historized_node(self, node_id, period, count=0) -> None:
        return None

    async def save_node_value(self, node_id, datavalue) -> None:
        return None  # pushed values are stored by the receiver's store, never through here

    async def read_node_history(self, node_id, start, end, nb_values):
        epoch = ua.get_win_epoch()
        start = None if start in (None, epoch) else _utc(start)
        end = None if end in (None, epoch) else _utc(end)
        descending = (start is not None and end is not None and start > end) or (
            start is None and end is not None
        )
        if start is not None and end is not None and start > end:
            start, end = end, start
        limit = self.max_history_data_response_size + 1
        if nb_values:
            limit = min(limit, int(nb_values))
        key = node_id.to_string()
        if key in self.tags:
            rows = await asyncio.to_thread(
                self._tag_rows, self.tags[key], start, end, limit, descending
            )
        elif key in self.context:
            rows = await asyncio.to_thread(
                self._context_rows, *self.context[key], start, end, limit, descending
            )
        else:
            return [], None
        cont = None
        if len(rows) > self.max_history_data_response_size:
            cont = rows[-1].SourceTimestamp
            rows = rows[:-1]
        return rows, cont

    def _tag_rows(self, spec: ReceiveTag, start, end, limit: int, descending: bool):
        hi = None if end is None else end + pd.Timedelta(microseconds=1)  # EndTime included
        if spec.is_text:
            frame = self.text.query([spec.tag], start, hi)
            frame = frame.sort_values("time", ascending=not descending).head(limit)
            values = frame["text"].tolist()
        else:
            frame = self.historian.query([spec.tag], start, hi, limit=limit, descending=descending)
            values = [_typed(spec, v) for v in frame["value"].tolist()]
        vtype = spec.variant_type
        return [
            ua.DataValue(
                ua.Variant(v, vtype if v is not None else ua.VariantType.Null),
                StatusCode=ua.StatusCode(int(s)),
                SourceTimestamp=t.to_pydatetime(),
            )
            for v, s, t in zip(values, frame["status"].tolist(), frame["time"], strict=True)
        ]

    def _context_rows(self, unit: str, name: str, start, end, limit: int, descending: bool):
        column = {"BatchId": "batch_id", "Recipe": "recipe", "Phase": "phase", "State": "state"}
        ctx = self.historian.batch_context(unit)
        times = ctx["start_time"]
        keep = pd.Series(True, index=ctx.index)
        if start is not None:
            keep &= times >= start
        if end is not None:
            keep &= times <= end
        ctx = ctx[keep].sort_values("start_time", ascending=not descending).head(limit)
        return [
            ua.DataValue(
                ua.Variant("" if v is None or v != v else str(v), ua.VariantType.String),
                SourceTimestamp=t.to_pydatetime(),
            )
            for v, t in zip(ctx[column[name]].tolist(), ctx["start_time"], strict=True)
        ]

    async def new_historized_event(self, source_id, evtypes, period, count=0) -> None:
        raise NotImplementedError("the receiver keeps no event history")

    async def save_event(self, event) -> None:
        return None

    async def read_event_history(self, source_id, start, end, nb_values, evfilter):
        return [], None

    async def stop(self) -> None:
        return None


def _typed(spec: ReceiveTag, value: float):
    """A stored float as the tag's type (NaN: no value)."""
    if value != value:
        return None
    if spec.data_type == "Int32":
        return int(value)
    if spec.data_type == "Boolean":
        return bool(value)
    return float(value)


def update_jobs(
    params: ua.HistoryUpdateParameters,
    *,
    tags: dict[ua.NodeId, ReceiveTag],
    context: dict[ua.NodeId, tuple[str, str]],
    may_write: bool,
    user: str,
    now_us: int,
    oldest_us: int,
    future_s: float,
) -> tuple[list[ua.HistoryUpdateResult], list[tuple[int, Job, list[int], list[int]]]]:
    """Check a HistoryUpdate request: its results so far, and the jobs for the store.

    Returns
    -------
    results : list of asyncua.ua.HistoryUpdateResult
        One per details item; items with work for the store have their OperationResults
        filled with the codes known before the store (the Bad ones).
    jobs : list of (item index, Job, slots, codes)
        Per item with values to store: its job (mode of its PerformUpdateType), the slots of
        ``OperationResults`` its values answer, and the item's codes list to fill.
    """
    results, jobs = [], []
    why = []
    for n, details in enumerate(params.HistoryUpdateDetails or []):
        result = ua.HistoryUpdateResult(StatusCode=ua.StatusCode(_SC.Good), OperationResults=[])
        results.append(result)
        if not isinstance(details, ua.UpdateDataDetails):
            result.StatusCode = ua.StatusCode(_SC.BadHistoryOperationUnsupported)
            continue
        if not may_write:
            result.StatusCode = ua.StatusCode(_SC.BadUserAccessDenied)
            continue
        spec = tags.get(details.NodeId)
        if spec is None:
            known = details.NodeId in context
            result.StatusCode = ua.StatusCode(
                _SC.BadHistoryOperationUnsupported if known else _SC.BadNodeIdUnknown
            )
            continue
        mode = UPDATE_MODES.get(details.PerformInsertReplace)
        if mode is None:
            result.StatusCode = ua.StatusCode(_SC.BadHistoryOperationInvalid)
            continue
        job = Job(mode=mode, user=user)
        codes, slots = [], []
        for i, dv in enumerate(details.UpdateValues or []):
            checked = check_value(
                spec,
                dv,
                now_us=now_us,
                oldest_us=oldest_us,
                future_s=future_s,
                time_required=True,
            )
            codes.append(checked.code)
            if checked.code == GOOD:
                job.add(
                    spec.tag,
                    checked.time_us,
                    checked.value,
                    checked.text,
                    checked.status,
                    checked.flags,
                )
                slots.append(i)
            elif len(why) < 3:
                why.append(checked.why)
        if slots:
            jobs.append((n, job, slots, codes))
        result.OperationResults = [ua.StatusCode(c) for c in codes]
    for line in why:
        logger.info("receive: HistoryUpdate value refused: %s", line)
    return results, jobs


def time_of_us(t_us: int) -> datetime:
    """Microseconds since 1970 as a UTC datetime."""
    return _EPOCH + timedelta(microseconds=t_us)
