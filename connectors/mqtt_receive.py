"""Receive OPC UA PubSub JSON messages from an MQTT broker and store their values durably.

``biotwin receive --mqtt URL --topic T`` calls :func:`subscribe`: a QoS 1 subscription on a
persistent MQTT session (paho-mqtt, in its own network thread), messages decoded in batches
by :class:`connectors.pubsub_json.PubSubDecoder`, each batch's rows handed to a durable
``sink`` in one call, and each message acknowledged (PUBACK) only after the sink returned.
What the broker sent but we did not acknowledge, it sends again when the session resumes, so
a crash, a stop or a lost connection loses nothing the broker held (docs/pubsub-mqtt.md,
"Delivery").

- Reconnection: paho-mqtt retries with backoff (1 s doubling to 60 s); each lost connection
  and failed attempt is one warning line.
- A failing sink is retried with backoff and its messages stay unacknowledged.
- SequenceNumber gaps are counted on the push source (:class:`PushSource.on_sequence`) and
  raise an alarm (:func:`connectors.alarms.record`) that the command center shows.
- Bad messages are counted as refused (:meth:`PushSource.on_rejected`), logged, and
  acknowledged (a message that can never be decoded must not come back forever).

Exceptions::

    ValueError
     └── PubSubError           (connectors.pubsub_json) a tag table the decoder cannot use
          └── MqttReceiveError a bad URL, topic filter or option (field, rule and value named)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import pandas as pd
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from connectors.alarms import record as record_alarm
from connectors.historian import Historian
from connectors.pubsub_json import Decoded, Gap, PubSubDecoder, PubSubError
from connectors.push_sources import PushSource

__all__ = [
    "PROTOCOLS",
    "BrokerUrl",
    "MqttReceiveError",
    "check_topic_filter",
    "historian_sink",
    "metadata_filter",
    "parse_url",
    "subscribe",
]

logger = logging.getLogger(__name__)

#: MQTT protocol versions :func:`subscribe` speaks
PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: seconds: reconnection backoff of paho-mqtt (first, most)
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60
#: seconds: backoff of a failing sink (first, most)
SINK_RETRY_MIN_S, SINK_RETRY_MAX_S = 1.0, 30.0
#: seconds of one gap alarm: gaps of one writer within it are one alarm
GAP_ALARM_WINDOW_S = 60.0
_UINT32_MAX = 2**32 - 1

Sink = Callable[[pd.DataFrame], Awaitable[None]]


class MqttReceiveError(PubSubError):
    """A broker URL, topic filter or option that cannot work; names field, rule and value."""


@dataclass(frozen=True)
class BrokerUrl:
    """A broker address from ``mqtt://[user[:password]@]host[:port]`` (or ``mqtts://``)."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"BrokerUrl('{self.scheme}://{user}{self.host}:{self.port}')"

    def __str__(self) -> str:
        """The URL without the password (for log lines and the status page)."""
        user = f"{self.username}@" if self.username else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}"


def parse_url(url: str) -> BrokerUrl:
    """The broker of ``url``.

    Raises
    ------
    MqttReceiveError
        If the scheme is not mqtt or mqtts, the host is missing, the port is not 1 ... 65535,
        or the URL has a path, query or fragment.
    """
    if not isinstance(url, str):
        raise MqttReceiveError(f"url: must be a string; got {url!r}")
    parts = urlsplit(url.strip())
    if parts.scheme not in _DEFAULT_PORTS:
        raise MqttReceiveError(
            f"url: must start with mqtt:// or mqtts:// (mqtt://HOST[:PORT]); got {url!r}"
        )
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise MqttReceiveError(f"url: port must be a number in 1 ... 65535; got {url!r}") from None
    if not parts.hostname:
        raise MqttReceiveError(f"url: must name a host (mqtt://HOST[:PORT]); got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttReceiveError(
            f"url: must have no path, query or fragment (the topic is given apart); got {url!r}"
        )
    return BrokerUrl(
        parts.scheme,
        parts.hostname,
        port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


def check_topic_filter(topic: str) -> str:
    """``topic`` if it is a valid MQTT topic filter (MQTT 5, 4.7).

    Raises
    ------
    MqttReceiveError
        If it is empty, holds a NUL character, uses ``#`` other than as the whole last level
        or ``+`` other than as a whole level.
    """
    if not isinstance(topic, str) or not topic:
        raise MqttReceiveError(f"topic: must be a non-empty MQTT topic filter; got {topic!r}")
    if "\x00" in topic or len(topic.encode()) > 65535:
        raise MqttReceiveError(
            f"topic: must be at most 65535 bytes of UTF-8 without NUL; got {topic[:80]!r}"
        )
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise MqttReceiveError(
                f"topic: '#' must be the whole last level (opcua/json/data/#); got {topic!r}"
            )
        if "+" in level and level != "+":
            raise MqttReceiveError(
                f"topic: '+' must be a whole level (opcua/json/data/+/BR-201); got {topic!r}"
            )
    return topic


def metadata_filter(topic: str) -> str | None:
    """The metadata topic filter of a data topic filter: ``json/data`` -> ``json/metadata``.

    Examples
    --------
    >>> metadata_filter("opcua/json/data/#")
    'opcua/json/metadata/#'
    >>> metadata_filter("plant/values") is None
    True
    """
    levels = topic.split("/")
    for i in range(len(levels) - 1):
        if levels[i] == "json" and levels[i + 1] == "data":
            return "/".join([*levels[: i + 1], "metadata", *levels[i + 2 :]])
    return None


def historian_sink(data_dir: str | os.PathLike) -> Sink:
    """A sink that commits rows to the historian under ``data_dir`` (``Historian.append``:
    one fsync'ed commit per UTC day of the rows), in a worker thread.

    Returns
    -------
    callable
        ``async def sink(rows: pandas.DataFrame) -> None``; returns once the rows are durable,
        raises what the historian raises (e.g. :class:`~connectors.historian.HistorianError`).
    """
    historian = Historian(Path(data_dir) / "historian")

    async def sink(rows: pd.DataFrame) -> None:
        await asyncio.to_thread(historian.append, rows)

    return sink


@dataclass(frozen=True)
class _Message:
    """One MQTT message as the network thread hands it over."""

    connection: int  # which connection delivered it (acknowledged only on that one)
    topic: str
    payload: bytes
    mid: int
    qos: int
    received: float


@dataclass
class _GapAlarm:
    """The gaps of one writer within one :data:`GAP_ALARM_WINDOW_S` (one alarm file)."""

    key: str
    first: Gap
    last: Gap
    missing: int = 0
    gaps: int = 0


class _Subscriber:
    """The state of one :func:`subscribe` call (see there)."""

    def __init__(
        self,
        broker: BrokerUrl,
        topics: list[str],
        decoder: PubSubDecoder,
        sink: Sink,
        source: PushSource,
        *,
        client_id: str,
        stop: asyncio.Event,
        alarm_root: Path | None,
        protocol: str,
        session_expiry_s: int,
        receive_maximum: int,
        batch_s: float,
        batch_messages: int,
        keepalive_s: int,
        writer_timeout_s: float,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.decoder = decoder
        self.sink = sink
        self.source = source
        self.client_id = client_id
        self.stop = stop
        self.alarm_root = alarm_root
        self.protocol = protocol
        self.batch_s = batch_s
        self.batch_messages = batch_messages
        self.writer_timeout_s = writer_timeout_s
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[_Message] = asyncio.Queue()
        self.connection = 0  # incremented by each CONNACK (network thread)
        self.stopping = False
        self.heard: dict[str, float] = {}  # publisher -> last message (monotonic)
        self.alarms: dict[tuple[str, str], _GapAlarm] = {}
        self.client = self._client(session_expiry_s, receive_maximum, keepalive_s)

    def _client(self, session_expiry_s: int, receive_maximum: int, keepalive_s: int):
        v5 = self.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=PROTOCOLS[self.protocol],
            clean_session=None if v5 else False,
            manual_ack=True,
            reconnect_on_failure=True,
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.scheme == "mqtts":
            client.tls_set()
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session_expiry_s
            properties.ReceiveMaximum = receive_maximum
        client.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=keepalive_s,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        return client

    # -- the network thread's callbacks (paho-mqtt) -----------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.warning(
                "mqtt: %s refused the connection of %r: %s; retrying",
                self.broker,
                self.client_id,
                reason_code,
            )
            return
        self.connection += 1
        if self.connection > 1 and not flags.session_present:
            logger.warning(
                "mqtt: connected to %s again, but the broker has no session for %r any more: "
                "what it held for us meanwhile is lost (session expired, or a broker without "
                "persistence restarted)",
                self.broker,
                self.client_id,
            )
        else:
            logger.info(
                "mqtt: connected to %s as %r (session present: %s); subscribing to %s, QoS 1",
                self.broker,
                self.client_id,
                flags.session_present,
                ", ".join(self.topics),
            )
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_connect_fail(self, client, userdata) -> None:
        logger.warning(
            "mqtt: cannot connect to %s; retrying with backoff (%d s doubling to %d s)",
            self.broker,
            RECONNECT_MIN_S,
            RECONNECT_MAX_S,
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.stopping:
            return
        logger.warning(
            "mqtt: connection to %s lost (%s); reconnecting with backoff (%d s doubling to "
            "%d s); unacknowledged messages come again",
            self.broker,
            reason_code,
            RECONNECT_MIN_S,
            RECONNECT_MAX_S,
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        for topic, code in zip(self.topics, reason_codes, strict=False):
            if code.is_failure:
                logger.error(
                    "mqtt: %s refused the subscription to %r: %s", self.broker, topic, code
                )
            elif code.value == 0:
                logger.warning(
                    "mqtt: %s granted only QoS 0 for %r: messages can be lost", self.broker, topic
                )

    def _on_message(self, client, userdata, message) -> None:
        item = _Message(
            self.connection, message.topic, message.payload, message.mid, message.qos, time.time()
        )
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are gone
            self.loop.call_soon_threadsafe(self.inbox.put_nowait, item)

    # -- the event loop -------------------------------------------------------------------
    async def run(self) -> None:
        self.client.loop_start()
        try:
            while not self.stop.is_set():
                batch = await self._collect()
                if batch:
                    await self._process(batch)
                self._forget_silent_writers()
            # stopping: what has arrived so far is stored and acknowledged; what comes
            # after stays unacknowledged and comes again with the next session
            pending = self.inbox.qsize()
            while pending > 0:
                batch = [self.inbox.get_nowait() for _ in range(min(pending, self.batch_messages))]
                pending -= len(batch)
                await self._process(batch)
        finally:
            self.stopping = True
            self.client.disconnect()
            await asyncio.to_thread(self.client.loop_stop)
            for publisher in list(self.heard):
                self.source.on_disconnect(publisher)
            logger.info("mqtt: subscription to %s ended", self.broker)

    async def _collect(self) -> list[_Message]:
        """Messages of one batch: the first within a second, then more for ``batch_s``."""
        batch: list[_Message] = []
        if self.inbox.empty():
            getter = asyncio.ensure_future(self.inbox.get())
            stopper = asyncio.ensure_future(self.stop.wait())
            try:
                await asyncio.wait(
                    {getter, stopper}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopper.cancel()
                getter.cancel()  # a queue getter cancelled loses no item
            if not getter.done() or getter.cancelled():
                return batch
            batch.append(getter.result())
        deadline = time.monotonic() + self.batch_s
        while True:
            while len(batch) < self.batch_messages and not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            left = deadline - time.monotonic()
            if left <= 0 or self.stop.is_set() or len(batch) >= self.batch_messages:
                return batch
            await asyncio.sleep(min(left, 0.02))

    async def _process(self, batch: list[_Message]) -> None:
        decoded = await asyncio.to_thread(self._decode, batch)
        await self._report(decoded)
        if len(decoded) and not await self._store(decoded):
            return  # stopped with the sink failing: not acknowledged, the broker resends
        self._acknowledge(batch)

    def _decode(self, batch: list[_Message]) -> Decoded:
        out = Decoded()
        for m in batch:
            self.decoder.decode(m.payload, m.topic, received=m.received, out=out)
        return out

    async def _store(self, decoded: Decoded) -> bool:
        """Hand the rows to the sink until it takes them; False if we stopped first."""
        rows = decoded.rows()
        delay = SINK_RETRY_MIN_S
        while True:
            try:
                taken = await self.sink(rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.stop.is_set():
                    logger.error(
                        "mqtt: stopping with %d values not stored (sink failed: %r); their "
                        "messages are not acknowledged, the broker sends them again",
                        len(rows),
                        exc,
                    )
                    return False
                logger.error(
                    "mqtt: sink failed for %d values (%r); retrying in %.0f s, their messages "
                    "held unacknowledged",
                    len(rows),
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                delay = min(delay * 2, SINK_RETRY_MAX_S)
                continue
            # a sink may say how many it stored (the receiver refuses some, counted there)
            stored = taken if isinstance(taken, int) else len(rows)
            self.source.on_stored(stored, decoded.newest_time())
            return True

    def _acknowledge(self, batch: list[_Message]) -> None:
        """PUBACK each message of the current connection, in the order they arrived."""
        current, stale = self.connection, 0
        for m in batch:
            if m.qos == 0:
                continue
            if m.connection != current:
                stale += 1  # the broker sends it again on the new connection
                continue
            self.client.ack(m.mid, m.qos)
        if stale:
            logger.info(
                "mqtt: %d messages of an earlier connection not acknowledged (stored; the "
                "broker sends them again, the historian keeps one row per tag and time)",
                stale,
            )

    async def _report(self, decoded: Decoded) -> None:
        now = time.monotonic()
        for publisher in decoded.publishers:
            if publisher not in self.heard:
                self.source.on_connect(publisher)
            self.heard[publisher] = now
        for status, n in decoded.rejected.items():
            if n:
                self.source.on_rejected(status, n)
        if decoded.gaps or decoded.reordered:
            self.source.on_sequence(gaps=decoded.missing, reordered=decoded.reordered)
        if decoded.gaps:
            changed = self._gap_alarms(decoded.gaps)
            if self.alarm_root is not None:
                await asyncio.to_thread(self._record_alarms, changed)

    def _gap_alarms(self, gaps: list[Gap]) -> list[_GapAlarm]:
        changed = {}
        for g in gaps:
            window = math.floor(g.time / GAP_ALARM_WINDOW_S) * GAP_ALARM_WINDOW_S
            key = f"pubsub-gap:{g.publisher}/{g.writer}:{int(window)}"
            alarm = self.alarms.get((g.publisher, g.writer))
            if alarm is None or alarm.key != key:
                alarm = self.alarms[(g.publisher, g.writer)] = _GapAlarm(key, g, g)
            alarm.last = g
            alarm.missing += g.missing
            alarm.gaps += 1
            changed[key] = alarm
        return list(changed.values())

    def _record_alarms(self, alarms: list[_GapAlarm]) -> None:
        for a in alarms:
            first = a.first
            when = pd.Timestamp(first.time, unit="s", tz="UTC")
            more = f", {a.gaps} gaps in this minute" if a.gaps > 1 else ""
            message = (
                f"PubSub writer {first.publisher}/{first.writer} skipped {a.missing:,} "
                f"SequenceNumbers ({first.previous} -> {first.got} at "
                f"{when.strftime('%H:%M:%S')} UTC{more}): those messages never reached the "
                "broker or were dropped by it"
            )
            try:
                record_alarm(
                    self.alarm_root,
                    a.key,
                    time=when,
                    severity="medium",
                    message=message,
                    ongoing=False,
                    details={
                        "broker": str(self.broker),
                        "publisher": first.publisher,
                        "writer": first.writer,
                        "missing": a.missing,
                        "gaps": a.gaps,
                        "first": [first.previous, first.got],
                        "last": [a.last.previous, a.last.got],
                    },
                )
            except OSError:
                logger.exception("mqtt: gap alarm %s not recorded", a.key)

    def _forget_silent_writers(self) -> None:
        now = time.monotonic()
        for publisher, last in list(self.heard.items()):
            if now - last > self.writer_timeout_s:
                del self.heard[publisher]
                self.source.on_disconnect(publisher)


def _data_dir_of(source: PushSource) -> Path | None:
    """The data dir whose ``receive/`` folder holds ``source``'s status file."""
    return None if source.path is None else source.path.parent.parent


def _positive(value, name: str, *, high: float | None = None) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if not ok or (high is not None and value > high):
        limit = f"in (0, {high:g}]" if high is not None else "> 0"
        raise MqttReceiveError(f"{name}: must be a number {limit}; got {value!r}")


_CLIENT_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,64}$")


async def subscribe(
    url: str,
    topic: str,
    tags: pd.DataFrame,
    sink: Sink,
    *,
    source: PushSource,
    client_id: str = "biotwin-receive",
    stop: asyncio.Event | None = None,
    data_dir: str | os.PathLike | None = None,
    metadata_topic: str | None = "auto",
    protocol: str = "5",
    session_expiry_s: int = 7 * 86400,
    receive_maximum: int = 4000,
    batch_s: float = 0.5,
    batch_messages: int = 4000,
    keepalive_s: int = 30,
    writer_timeout_s: float = 60.0,
    decoder: PubSubDecoder | None = None,
) -> None:
    """Subscribe to PubSub JSON messages on ``topic`` and store their values until ``stop``.

    Parameters
    ----------
    url : str
        The broker: ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS).
    topic : str
        MQTT topic filter of the data messages, e.g. ``opcua/json/data/#``.
    tags : pandas.DataFrame
        The tag table: ``tag`` and the tag file columns (data_type, eu_low, eu_high ...),
        optionally ``pubsub`` (docs/pubsub-mqtt.md, "Fields -> tags").
    sink : callable
        ``async def sink(rows)``: stores historian rows (time, tag, value, status, quality,
        flags) durably and returns only then; e.g. :func:`historian_sink`.
    source : PushSource
        The counters the command center shows for this path.
    client_id : str, default "biotwin-receive"
        The MQTT client id, which names the persistent session on the broker.
    stop : asyncio.Event, optional
        Set it to end: the current batch is stored and acknowledged, then DISCONNECT.
        Without it, the subscription runs until the task is cancelled.
    data_dir : path-like, optional
        Where gap alarms go (``DATA_DIR/historian/alarms``); default: the data dir of
        ``source``; none: gaps are only logged and counted.
    metadata_topic : str or None, default "auto"
        Topic filter of ua-metadata messages also subscribed: "auto" derives it from
        ``topic`` (``json/data`` -> ``json/metadata``), None subscribes to none.
    protocol : {"5", "3.1.1"}, default "5"
        MQTT version. 5: Clean Start 0 with ``session_expiry_s``; 3.1.1: clean session 0.
    session_expiry_s : int, default 7 days
        MQTT 5 Session Expiry Interval: how long the broker keeps the session (and queues
        messages for it) while we are away.
    receive_maximum : int, default 4000
        MQTT 5 Receive Maximum: unacknowledged messages the broker may send us at once.
    batch_s : float, default 0.5
        Seconds to gather messages into one sink call after the first.
    batch_messages : int, default 4000
        Messages of one sink call at most.
    keepalive_s : int, default 30
        MQTT keep-alive of the connection.
    writer_timeout_s : float, default 60
        A publisher silent this long is no longer shown as connected.
    decoder : PubSubDecoder, optional
        The decoder to use (default: one for ``tags``).

    Raises
    ------
    MqttReceiveError
        At once, for a bad URL, topic filter, client id or option.
    PubSubError
        At once, for a tag table the decoder cannot use.

    Notes
    -----
    Everything else -- an unreachable broker, bad messages, a failing sink -- is logged,
    counted and retried, never raised.
    """
    broker = parse_url(url)
    topics = [check_topic_filter(topic)]
    if metadata_topic == "auto":
        metadata_topic = metadata_filter(topic)
    if metadata_topic is not None and metadata_topic not in topics:
        topics.append(check_topic_filter(metadata_topic))
    if protocol not in PROTOCOLS:
        raise MqttReceiveError(f"protocol: must be one of 5, 3.1.1; got {protocol!r}")
    if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
        raise MqttReceiveError(
            "client_id: must be 1 to 64 letters, digits or _.:- (it names the session on the "
            f"broker); got {client_id!r}"
        )
    _positive(session_expiry_s, "session_expiry_s", high=_UINT32_MAX)
    _positive(receive_maximum, "receive_maximum", high=65535)
    _positive(batch_s, "batch_s")
    _positive(batch_messages, "batch_messages")
    _positive(keepalive_s, "keepalive_s", high=65535)
    _positive(writer_timeout_s, "writer_timeout_s")
    if not callable(sink):
        raise MqttReceiveError(f"sink: must be an async callable sink(rows); got {sink!r}")
    decoder = PubSubDecoder(tags) if decoder is None else decoder
    root = Path(data_dir) if data_dir is not None else _data_dir_of(source)
    subscriber = _Subscriber(
        broker,
        topics,
        decoder,
        sink,
        source,
        client_id=client_id,
        stop=stop if stop is not None else asyncio.Event(),
        alarm_root=None if root is None else root / "historian",
        protocol=protocol,
        session_expiry_s=int(session_expiry_s),
        receive_maximum=int(receive_maximum),
        batch_s=float(batch_s),
        batch_messages=int(batch_messages),
        keepalive_s=int(keepalive_s),
        writer_timeout_s=float(writer_timeout_s),
    )
    await subscriber.run()
