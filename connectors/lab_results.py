"""Lab results and raw-material lot attributes per batch: the store's ``lab_results`` table.

What OPC UA subscriptions do not carry -- a raw-material lot's potency or purity from the
LIMS, a QC / CQA result of a batch -- OT systems push into ``biotwin receive`` with the
method ``ReportResult(batch_id, attribute, value, eng_unit, source_time)``
(docs/receive.md). Each report is one row of this table (docs/store.md)::

    batch_id       string                 the batch the result belongs to
    attribute      string                 e.g. media_potency, titer_g_per_l
    value          float64                the result, in eng_unit
    eng_unit       string                 UNECE code or unit text ("" if none)
    source_time    timestamp[us, UTC]     when it was measured (the writer's time)
    received_time  timestamp[us, UTC]     when the receiver stored it
    user           string                 who reported it (the OPC UA user)
    source         string                 through what (the endpoint)

Rows are never changed: a new report of an attribute adds a row. Readers take, per
(batch_id, attribute), the report with the latest ``source_time``, and of reports with the
same ``source_time`` the one received last (a correction): :meth:`LabResults.latest`,
:meth:`LabResults.wide`. The table lives in ``DATA_DIR/historian/tables/lab_results/``
(:mod:`connectors._tables`: atomic commits with manifest entries).

The quality models find these values as batch context:
:func:`quality.live.batch_history_from_historian` adds every attribute as a column of
the batches' outcomes (a model trained with that context column uses it; others ignore
it), and
:func:`quality.live.training_history_from_historian` takes context and CQA columns that the
outcomes file lacks from here.

Exceptions::

    ValueError
     └── LabResultError    a report refused (field, rule and value named)
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa

from connectors._tables import SideTable

__all__ = [
    "LAB_SCHEMA",
    "RESERVED",
    "LabResultError",
    "LabResults",
    "check_result",
]

LAB_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("attribute", pa.string()),
        ("value", pa.float64()),
        ("eng_unit", pa.string()),
        ("source_time", pa.timestamp("us", tz="UTC")),
        ("received_time", pa.timestamp("us", tz="UTC")),
        ("user", pa.string()),
        ("source", pa.string()),
    ]
)
#: Names an attribute may not take: they are columns of the models' batch tables.
RESERVED = frozenset({"batch_id", "order", "label", "dev_class", "onset_h", "production_unit"})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}")
_BATCH = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


class LabResultError(ValueError):
    """A report refused: the message names the field, the rule and the value."""


def check_result(batch_id, attribute, value, eng_unit, source_time) -> None:
    """Check one report's fields.

    Raises
    ------
    LabResultError
        Naming the first field that breaks its rule: ``batch_id`` 1-200 characters without
        control characters; ``attribute`` a letter then up to 99 letters, digits, ``_``,
        ``.`` or ``-`` and not one of :data:`RESERVED`; ``value`` a finite number;
        ``eng_unit`` text of at most 50 characters; ``source_time`` a time.
    """
    if not isinstance(batch_id, str) or not _BATCH.fullmatch(batch_id.strip() or "\x00"):
        raise LabResultError(
            f"batch_id: must be 1-200 characters without control characters; got {batch_id!r}"
        )
    if not isinstance(attribute, str) or not _NAME.fullmatch(attribute):
        raise LabResultError(
            "attribute: must be a letter then up to 99 letters, digits, '_', '.' or '-'; "
            f"got {attribute!r}"
        )
    if attribute in RESERVED:
        raise LabResultError(
            f"attribute: must not be one of {', '.join(sorted(RESERVED))}; got {attribute!r}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LabResultError(f"value: must be a finite number; got {value!r}")
    if eng_unit is not None and (not isinstance(eng_unit, str) or len(eng_unit) > 50):
        raise LabResultError(f"eng_unit: must be text of at most 50 characters; got {eng_unit!r}")
    if source_time is None or not hasattr(source_time, "year"):
        raise LabResultError(f"source_time: must be a DateTime; got {source_time!r}")


class LabResults:
    """The lab results table of a historian (see the module docstring).

    Parameters
    ----------
    root : path
        The historian's root (``DATA_DIR/historian``).
    """

    def __init__(self, root: str | Path) -> None:
        self.table = SideTable(root, "lab_results", LAB_SCHEMA)

    def __repr__(self) -> str:
        return f"LabResults({str(self.table.folder)!r})"

    def append(self, rows: pd.DataFrame) -> int:
        """Commit reports (columns of :data:`LAB_SCHEMA`), each checked first.

        Raises
        ------
        LabResultError
            The first report that breaks a rule (nothing is written then).
        """
        for i, r in enumerate(rows.itertuples(index=False)):
            try:
                check_result(r.batch_id, r.attribute, r.value, r.eng_unit, r.source_time)
            except LabResultError as exc:
                raise LabResultError(f"row {i}: {exc}") from None
        frame = rows.copy()
        for col in ("source_time", "received_time"):
            frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[us, UTC]")
        frame["eng_unit"] = frame["eng_unit"].fillna("")
        return self.table.append(frame)

    def all(self) -> pd.DataFrame:
        """Every report stored, in the order committed."""
        return self.table.read(
            "SELECT * EXCLUDE (filename, file_row_number) FROM t ORDER BY filename, file_row_number"
        )

    def latest(self, batch_ids=None) -> pd.DataFrame:
        """One row per (batch_id, attribute): the latest source time, then the last received.

        Parameters
        ----------
        batch_ids : iterable of str, optional
            Only these batches.
        """
        frame = self.table.read(
            """SELECT * EXCLUDE (k, filename, file_row_number) FROM (
                   SELECT *, row_number() OVER (
                       PARTITION BY batch_id, attribute
                       ORDER BY source_time DESC, received_time DESC,
                                filename DESC, file_row_number DESC) AS k
                   FROM t)
               WHERE k = 1 ORDER BY batch_id, attribute"""
        )
        if batch_ids is not None:
            frame = frame[frame["batch_id"].isin(set(batch_ids))]
        return frame.reset_index(drop=True)

    def wide(self, batch_ids=None) -> pd.DataFrame:
        """One row per batch (index ``batch_id``), one float column per attribute."""
        latest = self.latest(batch_ids)
        if latest.empty:
            return pd.DataFrame(index=pd.Index([], name="batch_id", dtype=str))
        out = latest.pivot(index="batch_id", columns="attribute", values="value")
        out.columns.name = None
        return out.astype(float)
