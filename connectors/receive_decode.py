"""A fast decoder of WriteRequests, the receiver's hot path.

asyncua decodes a WriteRequest of 1,000 values into 1,000 ``WriteValue`` objects with their
``NodeId``, ``DataValue`` and ``Variant`` (each checking its fields): about 11 ms on the
machine of docs/benchmarks.md, more than everything else the receiver does with the values.
:func:`decode_write` reads the same bytes (OPC UA Part 6, 5.2: binary encoding) straight
into tuples::

    (namespace, identifier, attribute_id, index_range, variant_type, value, is_array,
     status, source_time_us or None)

It handles what writers send: NodeIds of every encoding but Guid identifiers as text, the
scalar built-in types Boolean to String plus DateTime, ByteString, Guid and StatusCode,
arrays of the fixed-size ones and of Strings, every DataValue field. Anything else (an
ExtensionObject, a LocalizedText, a Variant of DataValues...) returns None, and the
request is decoded by asyncua instead (:func:`raw_values` turns asyncua's objects into
the same tuples); the receiver answers both the same way.
"""

from __future__ import annotations

import struct

from asyncua import ua

__all__ = ["RawValue", "decode_write", "raw_values", "ticks_to_us"]

#: (ns, identifier, attribute_id, index_range, vtype, value, is_array, status, t_us)
RawValue = tuple

_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U16 = struct.Struct("<H").unpack_from
_I64 = struct.Struct("<q").unpack_from
_NUMERIC_NODE = struct.Struct("<HI").unpack_from
_FOUR_NODE = struct.Struct("<BH").unpack_from
#: 100 ns ticks from 1601-01-01 to 1970-01-01
_EPOCH_TICKS = 116_444_736_000_000_000
#: ticks below one day after 1601-01-01: the null DateTime
_NULL_TICKS = 864_000_000_000
#: built-in type id -> (struct format, size) of the fixed-size scalars
_FIXED = {
    1: ("<?", 1),
    2: ("<b", 1),
    3: ("<B", 1),
    4: ("<h", 2),
    5: ("<H", 2),
    6: ("<i", 4),
    7: ("<I", 4),
    8: ("<q", 8),
    9: ("<Q", 8),
    10: ("<f", 4),
    11: ("<d", 8),
    13: ("<q", 8),  # DateTime (its value is not used: no tag takes one)
    14: (None, 16),  # Guid
    19: ("<I", 4),  # StatusCode
}
_UNPACK = {k: struct.Struct(f).unpack_from for k, (f, _) in _FIXED.items() if f}
_STRING, _BYTES, _XML = 12, 15, 16


class _Unsupported(Exception):
    """Something :func:`decode_write` leaves to asyncua."""


def ticks_to_us(ticks: int) -> int | None:
    """An OPC UA DateTime (100 ns since 1601) as µs since 1970; None for the null DateTime."""
    if ticks < _NULL_TICKS:
        return None
    return (ticks - _EPOCH_TICKS) // 10


def _string(data, pos: int) -> tuple[str | None, int]:
    (n,) = _I32(data, pos)
    pos += 4
    if n < 0:
        return None, pos
    end = pos + n
    if end > len(data):
        raise _Unsupported("truncated")
    return bytes(data[pos:end]).decode("utf-8"), end


def _node(data, pos: int) -> tuple[int, object, int]:
    kind = data[pos]
    pos += 1
    if kind == 0:
        return 0, data[pos], pos + 1
    if kind == 1:
        ns, ident = _FOUR_NODE(data, pos)
        return ns, ident, pos + 3
    if kind == 2:
        ns, ident = _NUMERIC_NODE(data, pos)
        return ns, ident, pos + 6
    if kind == 3:
        (ns,) = _U16(data, pos)
        ident, pos = _string(data, pos + 2)
        return ns, ident, pos
    raise _Unsupported(f"NodeId encoding {kind}")


def _skip_scalar(vtype: int, data, pos: int) -> int:
    if vtype in _FIXED:
        return pos + _FIXED[vtype][1]
    if vtype in (_STRING, _BYTES, _XML):
        (n,) = _I32(data, pos)
        return pos + 4 + max(n, 0)
    raise _Unsupported(f"Variant type {vtype}")


def _variant(data, pos: int) -> tuple[int, object, bool, int]:
    mask = data[pos]
    pos += 1
    vtype = mask & 0x3F
    if mask & 0x80:  # an array: skipped (no tag takes one), its type kept for the message
        (n,) = _I32(data, pos)
        pos += 4
        for _ in range(max(n, 0)):
            pos = _skip_scalar(vtype, data, pos)
        if mask & 0x40:  # dimensions
            (n,) = _I32(data, pos)
            pos += 4 + 4 * max(n, 0)
        return vtype, None, True, pos
    if vtype == 0:
        return 0, None, False, pos
    if vtype == _STRING:
        value, pos = _string(data, pos)
        return vtype, value, False, pos
    unpack = _UNPACK.get(vtype)
    if unpack is not None:
        (value,) = unpack(data, pos)
        return vtype, value, False, pos + _FIXED[vtype][1]
    return vtype, None, False, _skip_scalar(vtype, data, pos)


def decode_write(body) -> list[RawValue] | None:
    """The values of a WriteRequest's body (an asyncua ``Buffer`` positioned after the
    RequestHeader), or None if the request holds something this decoder leaves to asyncua.
    The buffer is not consumed either way."""
    data = memoryview(body._data)
    pos = body.cur_pos
    try:
        (count,) = _I32(data, pos)
        pos += 4
        out = []
        for _ in range(max(count, 0)):
            ns, ident, pos = _node(data, pos)
            (attribute,) = _U32(data, pos)
            index_range, pos = _string(data, pos + 4)
            mask = data[pos]
            pos += 1
            vtype, value, is_array, status, t_us = 0, None, False, 0, None
            if mask & 0x01:
                vtype, value, is_array, pos = _variant(data, pos)
            if mask & 0x02:
                (status,) = _U32(data, pos)
                pos += 4
            if mask & 0x04:
                (ticks,) = _I64(data, pos)
                t_us = ticks_to_us(ticks)
                pos += 8
            if mask & 0x08:
                pos += 8
            if mask & 0x10:
                pos += 2
            if mask & 0x20:
                pos += 2
            out.append((ns, ident, attribute, index_range, vtype, value, is_array, status, t_us))
    except (_Unsupported, struct.error, IndexError, UnicodeDecodeError, KeyError):
        return None
    return out


def raw_values(params: ua.WriteParameters) -> list[RawValue]:
    """asyncua's decoded WriteParameters as :func:`decode_write`'s tuples."""
    out = []
    for wv in params.NodesToWrite or []:
        dv = wv.Value or ua.DataValue()
        variant = dv.Value
        if variant is None:
            vtype, value, is_array = 0, None, False
        else:
            vtype, value, is_array = variant.VariantType.value, variant.Value, variant.is_array
        ts = dv.SourceTimestamp
        t_us = None
        if ts is not None:
            ticks = ua.datetime_to_win_epoch(ts)
            t_us = ticks_to_us(ticks)
        out.append(
            (
                wv.NodeId.NamespaceIndex,
                wv.NodeId.Identifier,
                wv.AttributeId,
                wv.IndexRange,
                vtype,
                value,
                is_array,
                dv.StatusCode.value if dv.StatusCode is not None else 0,
                t_us,
            )
        )
    return out
