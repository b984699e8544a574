"""What a pushed DataValue must be to be stored: type, time and hard limits, per value.

Every value an OT writer pushes (a Write, a HistoryUpdate, a PubSub field) is checked here
and gets its own StatusCode (docs/receive.md):

- **BadTypeMismatch**: the Variant's type does not fit the tag's data type (a String to a
  Double tag, a Double to an Int32 tag, an array), or a Good value without a value. Numbers
  of any numeric type are accepted by Double and Float tags (a widening); Int32 tags take
  integer types within Int32's range, Boolean tags Booleans, String tags Strings. A value
  without a Variant is accepted only with a non-Good StatusCode (a failed sensor's sample,
  stored as NaN, flagged).
- **BadInvalidTimestamp**: a SourceTimestamp more than :data:`FUTURE_S` seconds ahead of the
  server's clock, or older than the retention (``retention_days``). A value without a
  SourceTimestamp (or with the null DateTime) takes the server's time (Write only: a
  HistoryUpdate must say when).
- **BadOutOfRange**: outside the tag's hard limits (``hard_low``/``hard_high``), where the
  tag file sets them. A value outside the EURange is not refused: it is stored with flag
  :data:`~connectors.historian.FLAG_OUT_OF_RANGE` (2), as the ingest does.

The value's own StatusCode (Good, Uncertain, Bad) is stored as sent; the historian derives
``quality`` from its severity and flags a non-Good one (4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asyncua import ua

from connectors.historian import FLAG_OUT_OF_RANGE
from connectors.receive_tags import ReceiveTag

__all__ = [
    "FUTURE_S",
    "GOOD",
    "Checked",
    "check_fields",
    "check_value",
    "status_name",
    "to_us",
]

#: A SourceTimestamp this many seconds ahead of the server's clock is refused.
FUTURE_S = 300.0
GOOD = ua.StatusCodes.Good
BAD_TYPE = ua.StatusCodes.BadTypeMismatch
BAD_TIME = ua.StatusCodes.BadInvalidTimestamp
BAD_RANGE = ua.StatusCodes.BadOutOfRange

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: DateTimes at or before this are the null DateTime (1601-01-01) of OPC UA
_NULL_TIME = datetime(1601, 1, 2, tzinfo=UTC)
_INT32 = (-(2**31), 2**31 - 1)
_VT = ua.VariantType
_NUMBERS = frozenset(
    {
        _VT.Double,
        _VT.Float,
        _VT.SByte,
        _VT.Byte,
        _VT.Int16,
        _VT.UInt16,
        _VT.Int32,
        _VT.UInt32,
        _VT.Int64,
        _VT.UInt64,
    }
)
_INTEGERS = _NUMBERS - {_VT.Double, _VT.Float}
#: data_type -> the Variant built-in type ids it accepts
_ACCEPTS = {
    "Double": frozenset(t.value for t in _NUMBERS),
    "Float": frozenset(t.value for t in _NUMBERS),
    "Int32": frozenset(t.value for t in _INTEGERS),
    "Boolean": frozenset({_VT.Boolean.value}),
    "String": frozenset({_VT.String.value}),
}
_NAMES: dict[int, str] = {}


def status_name(code: int) -> str:
    """The StatusCode's name (``BadTypeMismatch``), for counters and logs."""
    name = _NAMES.get(code)
    if name is None:
        name = _NAMES[code] = ua.StatusCode(code).name
    return name


def to_us(t: datetime) -> int:
    """A UTC DateTime (naive ones are UTC) as integer microseconds since 1970."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _US


@dataclass(slots=True)
class Checked:
    """The verdict on one value: its StatusCode and, if Good, what to store."""

    code: int
    time_us: int = 0
    value: float = math.nan
    text: str | None = None
    status: int = 0
    flags: int = 0
    why: str = ""


def check_value(
    spec: ReceiveTag,
    dv: ua.DataValue,
    *,
    now_us: int,
    oldest_us: int,
    future_s: float = FUTURE_S,
    time_required: bool = False,
) -> Checked:
    """Check one pushed DataValue against its tag (see the module docstring).

    Parameters
    ----------
    spec : ReceiveTag
        The tag written to.
    dv : asyncua.ua.DataValue
        What the writer sent.
    now_us : int
        The server's clock (microseconds since 1970, UTC); a value without a source time
        takes it.
    oldest_us : int
        The oldest source time accepted (the retention).
    future_s : float
        How far ahead of ``now_us`` a source time may be.
    time_required : bool
        Refuse a value without a SourceTimestamp (HistoryUpdate) instead of taking ``now_us``.

    Returns
    -------
    Checked
        ``code`` Good with the row to store, or the Bad code and ``why`` (one line naming
        the field, the rule and the value).
    """
    ts = dv.SourceTimestamp
    if ts is not None and ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    t_us = None if ts is None or ts <= _NULL_TIME else to_us(ts)
    variant = dv.Value
    if variant is None:
        vtype, raw, is_array = 0, None, False
    else:
        vtype, raw, is_array = variant.VariantType.value, variant.Value, variant.is_array
    return check_fields(
        spec,
        vtype,
        raw,
        is_array,
        dv.StatusCode.value if dv.StatusCode is not None else 0,
        t_us,
        now_us=now_us,
        oldest_us=oldest_us,
        future_s=future_s,
        time_required=time_required,
    )


def _iso(t_us: int) -> str:
    return (_EPOCH + timedelta(microseconds=t_us)).isoformat()


def check_fields(
    spec: ReceiveTag,
    vtype: int,
    raw,
    is_array: bool,
    status: int,
    t_us: int | None,
    *,
    now_us: int,
    oldest_us: int,
    future_s: float = FUTURE_S,
    time_required: bool = False,
) -> Checked:
    """:func:`check_value` on a value's fields: the Variant's built-in type id (0 for no
    value), its value, whether it is an array, the StatusCode and the source time (µs since
    1970, None when not sent). The decoder of :mod:`connectors.receive_decode` gives these
    without building asyncua objects."""
    if t_us is None:
        if time_required:
            return Checked(BAD_TIME, why=f"{spec.tag}: SourceTimestamp is required; got none")
        t_us = now_us
    elif t_us > now_us + future_s * 1e6:
        return Checked(
            BAD_TIME,
            why=f"{spec.tag}: SourceTimestamp must be at most {future_s:g} s ahead of the "
            f"server's clock; got {_iso(t_us)}",
        )
    elif t_us < oldest_us:
        return Checked(
            BAD_TIME,
            why=f"{spec.tag}: SourceTimestamp must be within the retention; got {_iso(t_us)}",
        )
    if vtype == 0 or raw is None:
        if status >> 30 == 0:  # a Good value must have one
            return Checked(BAD_TYPE, why=f"{spec.tag}: a Good value needs a value; got none")
        return Checked(GOOD, t_us, math.nan, None, status, 0)
    if is_array or vtype not in _ACCEPTS[spec.data_type]:
        name = _VT(vtype).name if vtype in _VT._value2member_map_ else f"type {vtype}"
        got = f"an array of {name}" if is_array else name
        return Checked(BAD_TYPE, why=f"{spec.tag}: must be {spec.data_type}; got {got}")
    if spec.data_type == "String":
        return Checked(GOOD, t_us, math.nan, raw, status, 0)
    if spec.data_type == "Int32" and not _INT32[0] <= raw <= _INT32[1]:
        return Checked(BAD_RANGE, why=f"{spec.tag}: must be within Int32's range; got {raw}")
    value = float(raw)
    if spec.hard_low is not None and value < spec.hard_low:
        return Checked(
            BAD_RANGE, why=f"{spec.tag}: must be >= hard_low ({spec.hard_low}); got {value}"
        )
    if spec.hard_high is not None and value > spec.hard_high:
        return Checked(
            BAD_RANGE, why=f"{spec.tag}: must be <= hard_high ({spec.hard_high}); got {value}"
        )
    flags = 0
    if spec.eu_low is not None and not (spec.eu_low <= value <= spec.eu_high):
        flags = FLAG_OUT_OF_RANGE if value == value else 0
    return Checked(GOOD, t_us, value, None, status, flags)
