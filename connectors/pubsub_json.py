"""OPC UA PubSub JSON messages (OPC 10000-14, 7.2.5) decoded into historian rows.

A pure decoder: bytes of one MQTT message (and its topic) in, samples (tag, source time,
value, status, flags) and what happened (sequence gaps, late and repeated messages,
refused values by StatusCode name) out. No network, no files: the subscriber
(:mod:`connectors.mqtt_receive`) feeds it, a test feeds it hand-written messages.

What it accepts, how fields map to tags and how SequenceNumbers are judged is the contract
of docs/pubsub-mqtt.md. In short:

- NetworkMessages (``"MessageType": "ua-data"``, ``Messages``), a DataSetMessage alone or
  an array of them (the NetworkMessage header switched off), and ``ua-metadata`` messages;
- key, delta and event frames (every Payload field is one value) and keep-alives (no values,
  but their SequenceNumber counts);
- field values raw, as Variants or DataValues, in the 1.04 (reversible / non-reversible) and
  1.05 (compact / verbose) JSON encodings of OPC 10000-6, 5.4;
- a field is stored under the tag the tag table's ``pubsub`` column names for
  ``<PublisherId>/<DataSetWriterId>/<field>``, else under the tag of the field's name;
- a bad message, field or value is refused with a StatusCode name (``BadDecodingError``,
  ``BadTypeMismatch``, ``BadInvalidTimestamp``, ``BadNodeIdUnknown``, ``BadNotSupported``),
  counted in :attr:`Decoded.rejected` and logged in one line naming the field, the rule and
  the value (rate-limited); decoding never raises for a message.

Exceptions::

    ValueError
     └── PubSubError    a tag table the decoder cannot use (field, rule and value named)
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from connectors._rows import (
    FLAG_BAD_STATUS,
    FLAG_NAN,
    FLAG_OUT_OF_RANGE,
    FLAG_OVERFLOW,
    quality_from_status,
)

__all__ = [
    "BAD_DECODING",
    "BAD_NOT_SUPPORTED",
    "BAD_TIMESTAMP",
    "BAD_TYPE",
    "BAD_UNKNOWN_FIELD",
    "DATA_TYPES",
    "FUTURE_LIMIT_S",
    "Decoded",
    "Gap",
    "PubSubDecoder",
    "PubSubError",
    "SequenceEvent",
    "SequenceTracker",
    "topic_parts",
]

logger = logging.getLogger(__name__)

#: StatusCode names of refused messages and values (counted per name)
BAD_DECODING = "BadDecodingError"
BAD_TYPE = "BadTypeMismatch"
BAD_TIMESTAMP = "BadInvalidTimestamp"
BAD_UNKNOWN_FIELD = "BadNodeIdUnknown"
BAD_NOT_SUPPORTED = "BadNotSupported"

#: seconds a source time may lie after the message's arrival (the OPC UA receiver's rule)
FUTURE_LIMIT_S = 300.0
#: seconds without a message after which a writer's SequenceNumber going back is a restart
RESET_AFTER_S = 60.0
#: SequenceNumbers remembered per writer, and how far back a late one may come
SEQUENCE_WINDOW = 1024
#: seconds between two log lines of the same kind (the rest are counted in the next one)
LOG_EVERY_S = 10.0

#: tag file ``data_type`` values (case-insensitive) and what the historian accepts for them
DATA_TYPES = {
    "double": "number",
    "float": "number",
    "int32": "int32",
    "boolean": "bool",
    "string": "string",
}
_INT32 = (-(2**31), 2**31 - 1)
_UINT32_MAX = 2**32 - 1
_DATA_MESSAGE_TYPES = {"ua-keyframe", "ua-deltaframe", "ua-event", "ua-condition", "ua-keepalive"}
_IGNORED_TYPES = {
    "ua-status",
    "ua-application",
    "ua-endpoints",
    "ua-connection",
    "ua-action-request",
    "ua-action-response",
    "ua-action-metadata",
    "ua-action-responder",
}
_NETWORK_KEYS = {
    "MessageId",
    "MessageType",
    "PublisherId",
    "WriterGroupName",
    "DataSetClassId",
    "Messages",
}
_DATASET_KEYS = {
    "DataSetWriterId",
    "DataSetWriterName",
    "PublisherId",
    "WriterGroupName",
    "SequenceNumber",
    "MetaDataVersion",
    "MinorVersion",
    "Timestamp",
    "Status",
    "MessageType",
    "Payload",
}
_DATAVALUE_KEYS = (
    "Status",
    "StatusCode",
    "SourceTimestamp",
    "ServerTimestamp",
    "SourcePicoseconds",
    "ServerPicoseconds",
)
_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_DECIMAL = re.compile(r"-?\d{1,20}")
_INT64_TYPES = {8, 9}  # Variant type ids of Int64 and UInt64 (JSON strings in OPC 10000-6)
_FLOAT_TYPES = {10, 11}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_CACHE_SIZE = 4096


class PubSubError(ValueError):
    """A tag table or option the decoder cannot use; the message names field, rule, value."""


class _Refused(Exception):
    """One message, DataSetMessage or value refused with ``status`` (internal)."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _shown(value, limit: int = 60) -> str:
    """A bad value as a log line shows it: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value) -> str:
    """The JSON kind of a decoded value, for messages ("a JSON object", "a string")."""
    if isinstance(value, dict):
        return f"a JSON object with keys {sorted(value)[:6]}"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {_shown(value)}"
    if value is None:
        return "null"
    return f"the number {value!r}"


def topic_parts(topic: str) -> tuple[str | None, str | None, str | None]:
    """The PublisherId, WriterGroup and Writer levels of a Part 14 topic.

    ``<prefix>/json/data/<PublisherId>[/<WriterGroup>[/<Writer>]]`` (or ``json/metadata``);
    any prefix. Levels a topic does not have are None.

    Examples
    --------
    >>> topic_parts("opcua/json/data/line1/BR-201/1")
    ('line1', 'BR-201', '1')
    >>> topic_parts("sensors/temperature")
    (None, None, None)
    """
    levels = topic.split("/")
    for i in range(len(levels) - 1):
        if levels[i] == "json" and levels[i + 1] in ("data", "metadata"):
            rest = [level or None for level in levels[i + 2 : i + 5]]
            rest += [None] * (3 - len(rest))
            return rest[0], rest[1], rest[2]
    return None, None, None


# --------------------------------------------------------------------------- sequences
@dataclass(frozen=True)
class SequenceEvent:
    """What one SequenceNumber meant for its writer.

    ``kind`` is "first", "next", "gap" (``missing`` numbers were skipped), "late" (behind the
    highest seen, not seen before: reordered), "duplicate" (seen before: a redelivery),
    "restart" (the publisher started over; ``previous`` was the highest seen) or
    "keepalive" (a keep-alive that announced the next number, ``missing`` skipped before it).
    """

    kind: str
    missing: int = 0
    previous: int | None = None


@dataclass
class _Writer:
    high: int
    last_time: float
    max_seen: int
    modulus: int = 2**32
    seen: OrderedDict = field(default_factory=OrderedDict)  # seq -> fingerprint
    keepalive: int | None = None  # next number announced by the last keep-alive


class SequenceTracker:
    """SequenceNumbers per writer: gaps, late and repeated messages, restarts, wrap-around.

    Parameters
    ----------
    window : int, default 1024
        Numbers remembered per writer (to tell a redelivery from a late message), and how
        far behind the highest a number may be to count as late rather than a restart.
    reset_after_s : float, default 60
        A number behind the highest after this long without a message from the writer is a
        restart of the publisher (OPC 10000-14 1.05: forget the numbers after twice the
        keep-alive time).

    The rules are those of docs/pubsub-mqtt.md ("Sequence numbers"). Pure: times are passed in.
    """

    def __init__(
        self, *, window: int = SEQUENCE_WINDOW, reset_after_s: float = RESET_AFTER_S
    ) -> None:
        if window < 1:
            raise PubSubError(f"window: must be >= 1; got {window!r}")
        if not reset_after_s > 0:
            raise PubSubError(f"reset_after_s: must be > 0; got {reset_after_s!r}")
        self.window = window
        self.reset_after_s = reset_after_s
        self._writers: dict[tuple[str, str], _Writer] = {}

    def __repr__(self) -> str:
        return f"SequenceTracker(writers={len(self._writers)}, window={self.window})"

    def highest(self, key: tuple[str, str]) -> int | None:
        """The highest SequenceNumber seen of the writer ``key``, or None."""
        w = self._writers.get(key)
        return None if w is None else w.high

    def observe(
        self,
        key: tuple[str, str],
        seq: int,
        now: float,
        *,
        fingerprint: str | None = None,
        keepalive: bool = False,
    ) -> SequenceEvent:
        """Judge SequenceNumber ``seq`` of the writer ``key`` arriving at ``now`` (seconds).

        ``fingerprint`` (the NetworkMessage's MessageId, else the DataSetMessage's Timestamp)
        tells a redelivery (same) from a restarted publisher reusing the number (another).
        """
        w = self._writers.get(key)
        if w is None:
            w = self._writers[key] = _Writer(high=seq, last_time=now, max_seen=seq)
            if keepalive:
                w.high, w.keepalive = (seq - 1) % w.modulus, seq
            else:
                self._remember(w, seq, fingerprint)
            return SequenceEvent("first")
        quiet = now - w.last_time >= self.reset_after_s
        w.last_time = now
        d = (seq - w.high) % w.modulus
        if (
            w.modulus == 2**32
            and not quiet
            and w.max_seen < 2**16
            and w.high >= 2**16 - self.window
            and seq < self.window
            and d >= 2**31
        ):
            w.modulus = 2**16  # a 16-bit counter wrapped (UADP's UInt16 kept in JSON)
            d = (seq - w.high) % w.modulus
        ahead = 0 < d < w.modulus // 2
        behind = 0 if ahead else (w.high - seq) % w.modulus
        if keepalive:
            if ahead or not (quiet or behind > self.window):
                return self._keepalive(w, seq, d)
            return self._restart(key, seq, now, fingerprint, keepalive=True)
        if ahead:
            missing = d - 1
            if w.keepalive is not None and missing == 1 and seq == (w.keepalive + 1) % w.modulus:
                missing = 0  # the publisher spent the announced number on the keep-alive
            w.keepalive = None
            w.high, w.max_seen = seq, max(w.max_seen, seq)
            self._remember(w, seq, fingerprint)
            return SequenceEvent("gap", missing=missing) if missing else SequenceEvent("next")
        known = seq in w.seen
        if known and fingerprint is not None and fingerprint == w.seen[seq]:
            return SequenceEvent("duplicate")  # the same message again (a redelivery)
        reused = known and None not in (fingerprint, w.seen[seq])  # another message, same number
        if quiet or behind > self.window or reused:
            return self._restart(key, seq, now, fingerprint)
        if known:
            return SequenceEvent("duplicate")
        self._remember(w, seq, fingerprint)
        return SequenceEvent("late")

    def _restart(self, key, seq: int, now: float, fingerprint, *, keepalive=False):
        """Start the writer's record over at ``seq`` (its publisher restarted)."""
        previous = self._writers[key].high
        self._writers[key] = w = _Writer(high=seq, last_time=now, max_seen=seq)
        if keepalive:
            w.high, w.keepalive = (seq - 1) % w.modulus, seq
        else:
            self._remember(w, seq, fingerprint)
        return SequenceEvent("restart", previous=previous)

    def _keepalive(self, w: _Writer, seq: int, d: int) -> SequenceEvent:
        """A keep-alive announcing ``seq`` as the next number (``d`` ahead of the highest)."""
        if not 0 < d < w.modulus // 2:
            return SequenceEvent("keepalive")  # the last used number, or an old one: no news
        w.high = (seq - 1) % w.modulus
        w.max_seen = max(w.max_seen, w.high)
        w.keepalive = seq
        return SequenceEvent("keepalive", missing=d - 1)

    def _remember(self, w: _Writer, seq: int, fingerprint: str | None) -> None:
        w.seen[seq] = fingerprint
        w.seen.move_to_end(seq)
        while len(w.seen) > self.window:
            w.seen.popitem(last=False)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Gap:
    """SequenceNumbers a writer skipped: ``missing`` numbers between ``previous`` and ``got``."""

    publisher: str
    writer: str
    previous: int | None
    got: int
    missing: int
    time: float  # arrival, POSIX seconds


@dataclass
class Decoded:
    """Samples and events of one or more decoded messages (columns as lists).

    Attributes
    ----------
    times_us, tags, values, status, flags : list
        One entry per value: source time (microseconds since 1970 UTC), tag, value, OPC UA
        StatusCode, historian flags (docs/store.md).
    rejected : collections.Counter
        Refused messages and values by StatusCode name.
    gaps : list of Gap
        Skipped SequenceNumbers.
    reordered, duplicates, restarts : int
        Late messages, repeated ones (redeliveries), publisher restarts.
    publishers : set of str
        Publishers heard from (values or keep-alives).
    messages, keepalives, metadata, ignored : int
        DataSetMessages decoded, keep-alives among them, ua-metadata messages, messages of
        other types (ua-status ...) ignored.
    """

    times_us: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    gaps: list[Gap] = field(default_factory=list)
    reordered: int = 0
    duplicates: int = 0
    restarts: int = 0
    publishers: set[str] = field(default_factory=set)
    messages: int = 0
    keepalives: int = 0
    metadata: int = 0
    ignored: int = 0

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return (
            f"Decoded(values={len(self)}, rejected={dict(self.rejected)}, "
            f"gaps={self.missing}, reordered={self.reordered})"
        )

    @property
    def missing(self) -> int:
        """SequenceNumbers skipped, over all gaps."""
        return sum(g.missing for g in self.gaps)

    def newest_time(self) -> float | None:
        """The newest source time, POSIX seconds (None without values)."""
        return max(self.times_us) / 1e6 if self.times_us else None

    def rows(self) -> pd.DataFrame:
        """The values as historian rows: time (UTC), tag, value, status, quality, flags."""
        status = np.asarray(self.status, dtype=np.uint32)
        times = pd.Series(np.asarray(self.times_us, dtype="int64").astype("datetime64[us]"))
        return pd.DataFrame(
            {
                "time": times.dt.tz_localize("UTC"),
                "tag": pd.Series(self.tags, dtype=object),
                "value": np.asarray(self.values, dtype=np.float64),
                "status": status,
                "quality": quality_from_status(status),
                "flags": np.asarray(self.flags, dtype=np.uint8),
            }
        )


# --------------------------------------------------------------------------- tags
@dataclass(frozen=True)
class _Tag:
    name: str
    kind: str  # "number", "int32", "bool", "string" or "any"
    eu_low: float | None
    eu_high: float | None


@dataclass
class _Meta:
    names: list[str]
    major: int | None
    minor: int | None


def _bound(value) -> float | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan  # refused by the caller, naming the value
    return None if math.isnan(number) else number


def _read_tags(tags: pd.DataFrame) -> tuple[dict[str, _Tag], dict[tuple[str, str, str], str]]:
    """The tag table as tag specs and the ``pubsub`` mapping; PubSubError on a bad entry."""
    if not isinstance(tags, pd.DataFrame):
        raise PubSubError(f"tags: must be a pandas DataFrame; got {type(tags).__name__}")
    if "tag" not in tags.columns:
        raise PubSubError(f"tags.tag: required column is missing; got columns {list(tags.columns)}")
    specs: dict[str, _Tag] = {}
    mapping: dict[tuple[str, str, str], str] = {}
    for i, row in enumerate(tags.to_dict("records")):
        name = row.get("tag")
        if not isinstance(name, str) or not name.strip():
            raise PubSubError(f"tags.tag: must be a non-empty name; got {name!r} (row {i})")
        raw_type = row.get("data_type")
        if raw_type is None or (isinstance(raw_type, float) and math.isnan(raw_type)):
            kind = "any"
        elif isinstance(raw_type, str) and raw_type.strip().lower() in DATA_TYPES:
            kind = DATA_TYPES[raw_type.strip().lower()]
        elif isinstance(raw_type, str) and not raw_type.strip():
            kind = "any"
        else:
            raise PubSubError(
                f"tags.data_type: must be one of Double, Float, Int32, Boolean, String; "
                f"got {raw_type!r} (row {i}, tag {name!r})"
            )
        low, high = _bound(row.get("eu_low")), _bound(row.get("eu_high"))
        for col, v in (("eu_low", low), ("eu_high", high)):
            if v is not None and math.isnan(v):
                raise PubSubError(
                    f"tags.{col}: must be a number; got {row.get(col)!r} (row {i}, tag {name!r})"
                )
        specs[name] = _Tag(name, kind, low, high)
        entry = row.get("pubsub")
        if entry is None or (isinstance(entry, float) and math.isnan(entry)) or entry == "":
            continue
        parts = entry.split("/", 2) if isinstance(entry, str) else []
        if len(parts) != 3 or not all(parts):
            raise PubSubError(
                "tags.pubsub: must be <PublisherId>/<DataSetWriterId>/<field> (* for any "
                f"publisher or writer); got {entry!r} (row {i}, tag {name!r})"
            )
        key = (parts[0], parts[1], parts[2])
        if key in mapping and mapping[key] != name:
            raise PubSubError(
                f"tags.pubsub: must name each field once; got {entry!r} for tags "
                f"{mapping[key]!r} and {name!r} (row {i})"
            )
        mapping[key] = name
    return specs, mapping


# --------------------------------------------------------------------------- decoding
@dataclass
class _Context:
    """What a NetworkMessage (or the topic) says about the DataSetMessages it carries."""

    topic: str
    topic_publisher: str | None
    group: str | None
    topic_writer: str | None
    received: float
    received_us: int
    publisher: str | None = None  # the NetworkMessage header's
    message_id: str | None = None


class PubSubDecoder:
    """Decode Part 14 JSON messages into historian rows, keeping the state between them.

    Parameters
    ----------
    tags : pandas.DataFrame
        The tag table: ``tag`` (required), and ``data_type``, ``eu_low``, ``eu_high``,
        ``pubsub`` where given (docs/pubsub-mqtt.md, "Fields -> tags").
    future_limit_s : float, default 300
        A source time more than this after the arrival is refused (BadInvalidTimestamp).
    reset_after_s : float, default 60
        See :class:`SequenceTracker`.
    window : int, default 1024
        See :class:`SequenceTracker`.

    State kept between messages: the writers' metadata (field names by index), their
    SequenceNumbers (:attr:`sequences`), and what was logged once. Not thread-safe: use it
    from one thread at a time.

    Raises
    ------
    PubSubError
        If the tag table has no ``tag`` column, a bad ``data_type``, ``eu_low``/``eu_high``
        or ``pubsub`` entry.

    Examples
    --------
    >>> tags = pd.DataFrame({"tag": ["TIC-201.PV"]})
    >>> msg = b'{"MessageId": "1", "MessageType": "ua-data", "PublisherId": "p", "Messages":'
    >>> msg += b' [{"DataSetWriterId": 1, "Payload": {"TIC-201.PV": 37.1}}]}'
    >>> PubSubDecoder(tags).decode(msg, "opcua/json/data/p").values
    [37.1]
    """

    def __init__(
        self,
        tags: pd.DataFrame,
        *,
        future_limit_s: float = FUTURE_LIMIT_S,
        reset_after_s: float = RESET_AFTER_S,
        window: int = SEQUENCE_WINDOW,
    ) -> None:
        if not future_limit_s >= 0:
            raise PubSubError(f"future_limit_s: must be >= 0; got {future_limit_s!r}")
        self.future_limit_s = future_limit_s
        self._tags, self._mapping = _read_tags(tags)
        self.sequences = SequenceTracker(window=window, reset_after_s=reset_after_s)
        self.metadata: dict[tuple[str, str], _Meta] = {}
        self._resolved: dict[tuple[str, str, str], str | None] = {}
        self._times: dict[str, int | None] = {}
        self._once: set = set()
        self._last_log: dict[str, tuple[float, int]] = {}

    def __repr__(self) -> str:
        return (
            f"PubSubDecoder(tags={len(self._tags)}, pubsub entries={len(self._mapping)}, "
            f"writers={len(self.metadata)} with metadata)"
        )

    # -- public ----------------------------------------------------------------------------
    def decode(
        self,
        payload: bytes | str,
        topic: str = "",
        *,
        received: float | None = None,
        out: Decoded | None = None,
    ) -> Decoded:
        """Decode one MQTT message.

        Parameters
        ----------
        payload : bytes or str
            The message: UTF-8 JSON text.
        topic : str
            Its MQTT topic (PublisherId, WriterGroup, Writer where the message has none).
        received : float, optional
            Its arrival, POSIX seconds (default: now): the time of values without one, and
            the reference of the future limit and of the sequence judgement.
        out : Decoded, optional
            Append to this result (a batch) instead of a new one.

        Returns
        -------
        Decoded
            Never raises for a bad message: it is counted in ``rejected`` and logged.
        """
        out = Decoded() if out is None else out
        received = time.time() if received is None else received
        ctx = _Context(topic, *topic_parts(topic), received, int(received * 1e6))
        where = topic or "(no topic)"
        try:
            self._document(self._parse(payload), ctx, out)
        except _Refused as r:
            self._refuse(out, r, where)
        except RecursionError:
            self._refuse(out, _Refused(BAD_DECODING, "payload: must nest less deeply"), where)
        except Exception:  # a bug of ours must not stop the subscriber: counted, logged
            logger.exception("pubsub: %s: message not decoded (internal error)", where)
            out.rejected[BAD_DECODING] += 1
        return out

    # -- messages --------------------------------------------------------------------------
    def _parse(self, payload):
        if isinstance(payload, bytes | bytearray | memoryview):
            try:
                payload = bytes(payload).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Refused(
                    BAD_DECODING,
                    f"payload: must be UTF-8 JSON text (UADP binary is not supported); got "
                    f"{_shown(bytes(payload)[:40])} (byte {exc.start} is not UTF-8)",
                ) from None
        try:
            return json.loads(payload)
        except json.JSONDecodeError as exc:
            raise _Refused(
                BAD_DECODING,
                f"payload: must be JSON (RFC 8259); got {_shown(payload[:60])} "
                f"({exc.msg} at character {exc.pos})",
            ) from None

    def _document(self, doc, ctx: _Context, out: Decoded) -> None:
        if isinstance(doc, list):  # DataSetMessages without NetworkMessage header
            for i, dsm in enumerate(doc):
                self._dataset_message(dsm, f"[{i}]", ctx, out)
            return
        if not isinstance(doc, dict):
            raise _Refused(
                BAD_DECODING,
                "payload: must be a JSON object or array (a Part 14 NetworkMessage or "
                f"DataSetMessage); got {_kind(doc)}",
            )
        mtype = doc.get("MessageType")
        if "Messages" in doc:
            self._network_message(doc, ctx, out)
        elif mtype == "ua-data":
            raise _Refused(
                BAD_DECODING, "Messages: must be present in a ua-data NetworkMessage; got none"
            )
        elif mtype == "ua-metadata":
            self._metadata(doc, ctx, out)
        elif mtype in _IGNORED_TYPES:
            out.ignored += 1
            self._log_once(("type", mtype), logging.INFO, "%s messages are ignored", mtype)
        elif mtype is None or mtype in _DATA_MESSAGE_TYPES:
            self._dataset_message(doc, "DataSetMessage", ctx, out)
        else:
            raise _Refused(
                BAD_DECODING,
                "MessageType: must be ua-data, ua-metadata or a DataSetMessage type "
                f"(ua-keyframe, ua-deltaframe, ua-event, ua-keepalive); got {_shown(mtype)}",
            )

    def _network_message(self, doc: dict, ctx: _Context, out: Decoded) -> None:
        if doc.get("MessageType") != "ua-data":
            raise _Refused(
                BAD_DECODING,
                "MessageType: must be 'ua-data' in a NetworkMessage with Messages; got "
                + (_shown(doc["MessageType"]) if "MessageType" in doc else "none"),
            )
        self._unknown_keys(doc, _NETWORK_KEYS, "NetworkMessage")
        publisher = _text_id(doc.get("PublisherId"), "PublisherId")
        if publisher is not None:
            ctx.publisher = publisher
        group = doc.get("WriterGroupName")
        if isinstance(group, str):
            ctx.group = group
        message_id = doc.get("MessageId")
        ctx.message_id = None if message_id is None else str(message_id)
        messages = doc["Messages"]
        if isinstance(messages, dict):
            messages = [messages]  # SingleDataSetMessage with the header on
        if not isinstance(messages, list):
            raise _Refused(
                BAD_DECODING,
                f"Messages: must be an array of DataSetMessages; got {_kind(messages)}",
            )
        for i, dsm in enumerate(messages):
            self._dataset_message(dsm, f"Messages[{i}]", ctx, out)

    def _metadata(self, doc: dict, ctx: _Context, out: Decoded) -> None:
        publisher = _text_id(doc.get("PublisherId"), "PublisherId") or ctx.topic_publisher or ""
        writer = _writer_id(doc.get("DataSetWriterId"), "DataSetWriterId")
        if writer is None:
            name = doc.get("DataSetWriterName")
            writer = name if isinstance(name, str) else ctx.topic_writer or ""
        meta = doc.get("MetaData")
        if not isinstance(meta, dict):
            raise _Refused(BAD_DECODING, f"MetaData: must be a JSON object; got {_kind(meta)}")
        fields = meta.get("Fields")
        if not isinstance(fields, list):
            raise _Refused(BAD_DECODING, f"MetaData.Fields: must be an array; got {_kind(fields)}")
        names = []
        for i, f in enumerate(fields):
            name = f.get("Name") if isinstance(f, dict) else None
            if not isinstance(name, str):
                raise _Refused(
                    BAD_DECODING,
                    f"MetaData.Fields[{i}].Name: must be a string; got "
                    + _kind(name if isinstance(f, dict) else f),
                )
            names.append(name)
        version = meta.get("ConfigurationVersion")
        major, minor = _version(version, "MetaData.ConfigurationVersion")
        self.metadata[(publisher, writer)] = _Meta(names, major, minor)
        out.metadata += 1
        logger.info(
            "pubsub: metadata of %s/%s: %d fields, version %s.%s",
            publisher,
            writer,
            len(names),
            major,
            minor,
        )

    def _dataset_message(self, dsm, path: str, ctx: _Context, out: Decoded) -> None:
        """One DataSetMessage; a bad one is refused alone (the others of its message stay)."""
        try:
            if not isinstance(dsm, dict):
                raise _Refused(
                    BAD_DECODING,
                    f"{path}: must be a JSON object (a DataSetMessage); got {_kind(dsm)}",
                )
            self._unknown_keys(dsm, _DATASET_KEYS, "DataSetMessage")
            if not any(key in dsm for key in _DATASET_KEYS):
                raise _Refused(
                    BAD_DECODING,
                    f"{path}: must be a Part 14 DataSetMessage (DataSetWriterId, "
                    f"SequenceNumber, Timestamp, Payload ...); got {_kind(dsm)}",
                )
            publisher = (
                ctx.publisher
                or _text_id(dsm.get("PublisherId"), f"{path}.PublisherId")
                or ctx.topic_publisher
                or ""
            )
            writer = _writer_id(dsm.get("DataSetWriterId"), f"{path}.DataSetWriterId")
            if writer is None:
                name = dsm.get("DataSetWriterName")
                writer = name if isinstance(name, str) else ctx.topic_writer or ""
            seq = dsm.get("SequenceNumber")
            if seq is not None and (type(seq) is not int or not 0 <= seq <= _UINT32_MAX):
                raise _Refused(
                    BAD_DECODING,
                    f"{path}.SequenceNumber: must be a UInt32 (0 ... {_UINT32_MAX}); got "
                    + _kind(seq),
                )
            mtype = dsm.get("MessageType", "ua-keyframe")
            if mtype not in _DATA_MESSAGE_TYPES:
                raise _Refused(
                    BAD_DECODING,
                    f"{path}.MessageType: must be one of ua-keyframe, ua-deltaframe, ua-event, "
                    f"ua-keepalive; got {_shown(mtype)}",
                )
            stamp = dsm.get("Timestamp")
            dsm_time = self._time(stamp, f"{path}.Timestamp")
            dsm_status = _status(dsm.get("Status"), f"{path}.Status")
            major = None
            if "MetaDataVersion" in dsm:
                major, _ = _version(dsm["MetaDataVersion"], f"{path}.MetaDataVersion")
            payload = dsm.get("Payload")
            if payload is not None and not isinstance(payload, dict):
                raise _Refused(
                    BAD_DECODING,
                    f"{path}.Payload: must be a JSON object of field name -> value; got "
                    + _kind(payload),
                )
        except _Refused as r:
            self._refuse(out, r, ctx.topic or "(no topic)")
            return
        out.messages += 1
        if publisher:
            out.publishers.add(publisher)
        keepalive = mtype == "ua-keepalive"
        if seq is not None:
            fingerprint = ctx.message_id or (stamp if isinstance(stamp, str) else None)
            self._sequence(publisher, writer, seq, ctx.received, fingerprint, keepalive, out)
        if keepalive:
            out.keepalives += 1
            return
        if not payload:
            return
        meta = self.metadata.get((publisher, writer))
        if meta is not None and major is not None and meta.major not in (None, major):
            self._log_once(
                ("version", publisher, writer, major),
                logging.WARNING,
                "%s/%s sends MetaDataVersion %s but its metadata has %s; named fields are "
                "stored as usual, indexed ones refused",
                publisher,
                writer,
                major,
                meta.major,
            )
        for name, raw in payload.items():
            self._field(publisher, writer, name, raw, path, dsm_time, dsm_status, major, ctx, out)

    def _sequence(self, publisher, writer, seq, received, fingerprint, keepalive, out) -> None:
        key = (publisher, writer)
        previous = self.sequences.highest(key)
        event = self.sequences.observe(
            key, seq, received, fingerprint=fingerprint, keepalive=keepalive
        )
        if event.missing:
            out.gaps.append(Gap(publisher, writer, previous, seq, event.missing, received))
            self._log(
                f"gap:{publisher}/{writer}",
                logging.WARNING,
                f"writer {publisher}/{writer} skipped {event.missing} SequenceNumbers "
                f"({previous} -> {seq})",
            )
        elif event.kind == "late":
            out.reordered += 1
            self._log(
                f"late:{publisher}/{writer}",
                logging.WARNING,
                f"writer {publisher}/{writer}: SequenceNumber {seq} arrived after {previous} "
                "(reordered)",
            )
        elif event.kind == "duplicate":
            out.duplicates += 1
            logger.debug("pubsub: %s/%s: SequenceNumber %s again", publisher, writer, seq)
        elif event.kind == "restart":
            out.restarts += 1
            logger.warning(
                "pubsub: writer %s/%s started over: SequenceNumber %s after %s (publisher "
                "restarted); sequence record restarted",
                publisher,
                writer,
                seq,
                event.previous,
            )
        elif event.kind == "first":
            logger.info("pubsub: first message of writer %s/%s (SequenceNumber %s)", *key, seq)

    # -- fields ----------------------------------------------------------------------------
    def _field(self, publisher, writer, name, raw, path, dsm_time, dsm_status, major, ctx, out):
        tag = self._tag_for(publisher, writer, name, major, out)
        if tag is None:
            return
        spec = self._tags[tag]
        where = f"{path}.Payload[{name!r}]"
        try:
            if spec.kind == "string":
                raise _Refused(
                    BAD_NOT_SUPPORTED,
                    f"{where}: tag {tag!r} is a String; the historian stores numbers, so its "
                    "values are not stored",
                )
            value, vtype, status, source, server = self._unwrap(raw, where)
            value = _number(value, vtype, spec, where)
        except _Refused as r:
            if r.status == BAD_NOT_SUPPORTED:
                out.rejected[r.status] += 1
                self._log_once(("string", tag), logging.WARNING, "%s", r.text)
            else:
                self._refuse(out, r, ctx.topic or "(no topic)")
            return
        if (dsm_status >> 30) > (status >> 30):
            status = dsm_status
        t = source if source is not None else server if server is not None else dsm_time
        if t is None:
            t = ctx.received_us
            self._log_once(
                ("no time", publisher, writer),
                logging.WARNING,
                "writer %s/%s sends no timestamps (no SourceTimestamp, no DataSetMessage "
                "Timestamp): its values are stored at their time of arrival",
                publisher,
                writer,
            )
        elif t > ctx.received_us + self.future_limit_s * 1e6:
            self._refuse(
                out,
                _Refused(
                    BAD_TIMESTAMP,
                    f"{where}: source time must be at most {self.future_limit_s:g} s after "
                    f"arrival ({_iso(ctx.received_us)}); got {_iso(t)}",
                ),
                ctx.topic or "(no topic)",
            )
            return
        f = 0
        if value != value:
            f |= FLAG_NAN
        elif (spec.eu_low is not None and value < spec.eu_low) or (
            spec.eu_high is not None and value > spec.eu_high
        ):
            f |= FLAG_OUT_OF_RANGE
        if status:
            if status >> 30:
                f |= FLAG_BAD_STATUS
            if (status & 0x480) == 0x480:  # InfoType DataValue + Overflow bit
                f |= FLAG_OVERFLOW
        out.times_us.append(t)
        out.tags.append(tag)
        out.values.append(value)
        out.status.append(status)
        out.flags.append(f)

    def _tag_for(self, publisher, writer, name, major, out) -> str | None:
        """The tag of a field (docs/pubsub-mqtt.md, "Fields -> tags"); None if none (the
        value counted as refused)."""
        key = (publisher, writer, name)
        tag = self._resolved.get(key, "")
        if tag != "":
            if tag is None:
                out.rejected[BAD_UNKNOWN_FIELD] += 1
            return tag
        tag = self._lookup(publisher, writer, name)
        if tag is None and name.isdigit():
            return self._indexed(publisher, writer, name, major, out)  # not cached
        self._resolved[key] = tag
        if tag is None:
            self._unknown(publisher, writer, name, out)
        return tag

    def _lookup(self, publisher: str, writer: str, name: str) -> str | None:
        m = self._mapping
        return (
            m.get((publisher, writer, name))
            or m.get((publisher, "*", name))
            or m.get(("*", writer, name))
            or m.get(("*", "*", name))
            or (name if name in self._tags else None)
        )

    def _unknown(self, publisher: str, writer: str, name: str, out: Decoded) -> None:
        out.rejected[BAD_UNKNOWN_FIELD] += 1
        self._log_once(
            ("unknown", publisher, writer, name),
            logging.WARNING,
            "field %r of %s/%s maps to no tag (no tag of that name, no pubsub entry); its "
            "values are counted as %s",
            name,
            publisher,
            writer,
            BAD_UNKNOWN_FIELD,
        )

    def _indexed(self, publisher, writer, name, major, out) -> str | None:
        """The tag of a field keyed by its index in the writer's metadata (not Part 14)."""
        meta = self.metadata.get((publisher, writer))
        index = int(name)
        if meta is None:
            problem = "no ua-metadata of the writer has arrived"
        elif major is not None and meta.major not in (None, major):
            problem = f"its MetaDataVersion {major} is not the metadata's {meta.major}"
        elif index >= len(meta.names):
            problem = f"the metadata has only {len(meta.names)} fields"
        else:
            real = meta.names[index]
            tag = self._lookup(publisher, writer, real)
            if tag is None:
                self._unknown(publisher, writer, real, out)
            return tag
        out.rejected[BAD_DECODING] += 1
        self._log_once(
            ("index", publisher, writer, problem),
            logging.WARNING,
            "Payload field %r of %s/%s: a field index must name a field of the writer's "
            "ua-metadata; got %r, but %s (%s)",
            name,
            publisher,
            writer,
            name,
            problem,
            BAD_DECODING,
        )
        return None

    def _unwrap(self, raw, where: str):
        """A field as (value, Variant type id or None, status, source µs, server µs)."""
        if type(raw) is not dict:
            return raw, None, 0, None, None
        if "Type" in raw or "Body" in raw:  # Variant, 1.04 reversible
            _no_array(raw, where)
            return raw.get("Body"), raw.get("Type"), 0, None, None
        if "UaType" not in raw or any(k in raw for k in _DATAVALUE_KEYS):
            if "Value" not in raw and not any(k in raw for k in _DATAVALUE_KEYS):
                raise _Refused(
                    BAD_TYPE,
                    f"{where}: must be a number, boolean, Variant or DataValue; got "
                    f"{_kind(raw)} (a structure)",
                )
            value, vtype = raw.get("Value"), raw.get("UaType")
            if type(value) is dict:
                if "Type" in value or "Body" in value:  # DataValue 1.04 with a Variant
                    _no_array(value, where)
                    value, vtype = value.get("Body"), value.get("Type")
                elif "UaType" in value:
                    _no_array(value, where)
                    value, vtype = value.get("Value"), value.get("UaType")
            _no_array(raw, where)
            status = _status(raw.get("Status", raw.get("StatusCode")), f"{where}.Status")
            source = self._time(raw.get("SourceTimestamp"), f"{where}.SourceTimestamp")
            server = self._time(raw.get("ServerTimestamp"), f"{where}.ServerTimestamp")
            return value, vtype, status, source, server
        _no_array(raw, where)  # Variant, 1.05 compact
        return raw.get("Value"), raw.get("UaType"), 0, None, None

    def _time(self, text, where: str) -> int | None:
        """An OPC UA DateTime (ISO 8601 text) as microseconds since 1970 UTC; None if absent
        or DateTime.MinValue."""
        if text is None:
            return None
        cached = self._times.get(text, -1) if isinstance(text, str) else -1
        if cached != -1:
            return cached
        if not isinstance(text, str):
            raise _Refused(
                BAD_DECODING, f"{where}: must be an ISO 8601 DateTime string; got {_kind(text)}"
            )
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise _Refused(
                BAD_DECODING,
                f"{where}: must be an ISO 8601 DateTime (2026-12-05T08:00:00.000Z); got "
                f"{_shown(text)}",
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        if dt.year <= 1:
            us = None  # DateTime.MinValue: no time
        else:
            delta = dt - _EPOCH
            us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        if len(self._times) >= _TIME_CACHE_SIZE:
            self._times.clear()
        self._times[text] = us
        return us

    # -- logging ---------------------------------------------------------------------------
    def _unknown_keys(self, doc: dict, known: set, what: str) -> None:
        for key in doc:
            if key not in known:
                self._log_once(
                    ("key", what, key),
                    logging.INFO,
                    "%s field %r is not Part 14; ignored",
                    what,
                    key,
                )

    def _refuse(self, out: Decoded, r: _Refused, where: str) -> None:
        out.rejected[r.status] += 1
        self._log(f"{r.status}:{where}", logging.WARNING, f"{where}: {r.text} ({r.status})")

    def _log(self, key: str, level: int, text: str) -> None:
        """One line per ``key`` per :data:`LOG_EVERY_S` seconds; the rest counted."""
        now = time.monotonic()
        last, held = self._last_log.get(key, (-math.inf, 0))
        if now - last < LOG_EVERY_S:
            self._last_log[key] = (last, held + 1)
            return
        more = f" [{held} more like this in the last {LOG_EVERY_S:g} s]" if held else ""
        self._last_log[key] = (now, 0)
        logger.log(level, "pubsub: %s%s", text, more)

    def _log_once(self, key, level: int, fmt: str, *args) -> None:
        if key in self._once:
            return
        self._once.add(key)
        logger.log(level, "pubsub: " + fmt, *args)


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="milliseconds")


def _text_id(value, where: str) -> str | None:
    """A PublisherId: a string, or a number taken as its decimal text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if type(value) is int and value >= 0:
        return str(value)
    raise _Refused(BAD_DECODING, f"{where}: must be a string (or UInteger); got {_kind(value)}")


def _writer_id(value, where: str) -> str | None:
    """A DataSetWriterId (UInt16, a number or its decimal text) as text."""
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if type(value) is int and 0 <= value <= 0xFFFF:
        return str(value)
    raise _Refused(BAD_DECODING, f"{where}: must be a UInt16 (0 ... 65535); got {_kind(value)}")


def _status(value, where: str) -> int:
    """A StatusCode: a number, or ``{"Code": n, "Symbol": ...}``; absent is Good (0)."""
    if value is None:
        return 0
    if isinstance(value, dict):
        value = value.get("Code", 0)
    if type(value) is int and 0 <= value <= _UINT32_MAX:
        return value
    raise _Refused(
        BAD_DECODING, f'{where}: must be a StatusCode (UInt32 or {{"Code": n}}); got {_kind(value)}'
    )


def _version(value, where: str) -> tuple[int | None, int | None]:
    """MajorVersion and MinorVersion of a ConfigurationVersionDataType."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise _Refused(
            BAD_DECODING,
            f'{where}: must be {{"MajorVersion": n, "MinorVersion": n}}; got {_kind(value)}',
        )
    out = []
    for name in ("MajorVersion", "MinorVersion"):
        v = value.get(name)
        if v is not None and (type(v) is not int or not 0 <= v <= _UINT32_MAX):
            raise _Refused(BAD_DECODING, f"{where}.{name}: must be a UInt32; got {_kind(v)}")
        out.append(v)
    return out[0], out[1]


def _no_array(variant: dict, where: str) -> None:
    if variant.get("Dimensions") is not None:
        raise _Refused(
            BAD_TYPE,
            f"{where}: must be a scalar; got an array (Dimensions {_shown(variant['Dimensions'])})",
        )


def _number(value, vtype, spec: _Tag, where: str) -> float:
    """A field value as the float the historian stores, by the tag's data type."""
    kind = spec.kind
    t = type(value)
    if (t is float or t is int) and kind != "bool":
        whole = t is int or value.is_integer()
        if kind != "int32" or (whole and _INT32[0] <= value <= _INT32[1]):
            return float(value)
    elif t is bool:
        if kind in ("bool", "any"):
            return 1.0 if value else 0.0
    elif value is None:
        return math.nan
    elif t is str and kind != "bool":
        if value in _FLOAT_WORDS and kind in ("number", "any") and vtype in (None, *_FLOAT_TYPES):
            return _FLOAT_WORDS[value]
        if _DECIMAL.fullmatch(value) and vtype in (None, *_INT64_TYPES):
            number = int(value)
            if kind != "int32" or _INT32[0] <= number <= _INT32[1]:
                return float(number)
    rule = {
        "bool": "is a Boolean: must be true or false",
        "int32": f"is an Int32: must be a whole number in {_INT32[0]} ... {_INT32[1]}",
        "number": "is a number: must be a number",
        "any": "must be a number or boolean",
    }[kind]
    raise _Refused(BAD_TYPE, f"{where}: tag {spec.name!r} {rule}; got {_kind(value)}")
