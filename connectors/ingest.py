"""Ingest any OPC UA server into the historian, without losing or doubling data.

``biotwin ingest opc.tcp://HOST:PORT`` connects (asyncua client), discovers the variables
(browse, or a tag map), subscribes with data-change monitored items and writes every
notification to the historian (:mod:`connectors.historian`).

How nothing is lost:

- Each publish response is handled as one batch in the subscription's publish callback,
  which only converts and queues (it never waits on the disk); a writer task appends to
  the historian every ``flush_s`` seconds, in a thread.
- Store-and-forward: when an append fails (disk full, historian unavailable), the rows go
  to a bounded in-memory buffer, beyond which they spill to Parquet files in the spool
  directory; both are retried, oldest first, before new rows.
- Reconnection: a health probe detects a dropped server, and a watchdog a subscription
  that has gone silent (no publish response, not even a keep-alive, for three keep-alive
  periods: the server lost it, and asyncua's client stops publishing without an error);
  the ingest reconnects with
  exponential backoff (capped, with jitter from a seeded generator), re-subscribes, and
  where the server supports HistoryRead, backfills each tag from its last stored source
  time. Live values arriving during the backfill are held and written after it.
- Backfill on start: an ingest started against a store that holds data of its tags
  backfills them the same way, from the last stored time per tag, so what the server
  produced while the ingest was down is stored.
- No duplicates: rows are de-duplicated on (tag, source time) against the last time
  accepted per tag, so a backfill that overlaps live data, or an initial value re-sent
  on re-subscription (same time, same value), is counted as a duplicate, not stored; so
  is the notification of a value the backfill read already that arrives after the read
  (within the publishing interval), until a live value newer than the read arrives.
- A source clock gone back (a server restarted without its epoch): a value older than
  the newest stored of its tag that is no such duplicate is kept with
  ``FLAG_CLOCK_BACK`` and quality uncertain (or refused, ``on_clock_back="refuse"``); one
  warning line names the server, the tag count and the jump, and an alarm is recorded
  (:mod:`connectors.alarms`). Never counted as duplicates in silence.
- Quarantined segments recovered: on start and after each reconnection, before the
  backfill (live values are held meanwhile), and every 30 s while a session runs (a file
  quarantined meanwhile by any reader), the values of each quarantined segment
  whose manifest entry recorded its time span (:mod:`connectors.manifest`) are read
  again by HistoryRead over that span; those the historian does not hold are stored,
  flagged backfilled, and the quarantine note records it (``recovered_at``,
  ``values_recovered``, ``endpoint``, ``recovered_tags``).
  A server without history for the span leaves the note (and its alarm) as it was.
- Bad data is kept: NaN, values outside EURange, non-Good StatusCodes and the queue
  Overflow bit are stored with flags (docs/store.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from asyncua import Client, ua
from asyncua.common.subscription import Subscription

from connectors._rows import context_row
from connectors.alarms import record as record_alarm
from connectors.historian import (
    FLAG_BACKFILLED,
    FLAG_CLOCK_BACK,
    FLAG_OUT_OF_RANGE,
    FLAG_OVERFLOW,
    Historian,
    HistorianError,
    quality_from_status,
)
from connectors.manifest import mark_recovered

__all__ = ["ON_CLOCK_BACK", "Ingest", "IngestError", "TagSpec", "read_tag_map"]

logger = logging.getLogger(__name__)

#: how long what a backfill read is remembered after it, for live notifications of the same
#: values still on their way: this many publishing intervals, and at least OVERLAP_MIN_S
OVERLAP_PUBLISHES = 10
OVERLAP_MIN_S = 5.0

_URL = re.compile(r"^opc\.tcp://[^:/\s]+:\d{1,5}(/.*)?$")
_NUMERIC = {
    ua.VariantType.Double,
    ua.VariantType.Float,
    ua.VariantType.Int16,
    ua.VariantType.Int32,
    ua.VariantType.Int64,
    ua.VariantType.UInt16,
    ua.VariantType.UInt32,
    ua.VariantType.UInt64,
    ua.VariantType.Byte,
    ua.VariantType.SByte,
    ua.VariantType.Boolean,
}
_CONTEXT = ("BatchId", "Recipe", "Phase", "State")
#: What :class:`Ingest` may do with values whose source clock went back.
ON_CLOCK_BACK = ("flag", "refuse")
#: Seconds between looks for files quarantined while a session runs (their values are then
#: read again from the server's history, as on start)
RECOVER_EVERY_S = 30.0


class IngestError(RuntimeError):
    """A problem the user must fix (endpoint, security, credentials, tag map)."""


@dataclass
class TagSpec:
    """One variable to ingest."""

    node_id: str
    tag: str
    unit: str | None = None
    eng_unit: str | None = None
    description: str | None = None
    eu_low: float | None = None
    eu_high: float | None = None
    deadband: float | None = None


@dataclass
class _State:
    """What the ingest accepted so far (for de-duplication and backfill)."""

    last: dict[str, datetime] = field(default_factory=dict)  # tag -> newest source time (UTC)
    last_value: dict[str, float] = field(default_factory=dict)  # tag -> value at that time
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    clock_back: int = 0  # values older than the newest stored of their tag, kept flagged
    refused: int = 0  # the same, refused (on_clock_back="refuse")


@dataclass
class _ClockBack:
    """One episode of a server's source clock behind what is stored (for the alarm)."""

    since: pd.Timestamp  # wall clock, when detected
    tags: set[str] = field(default_factory=set)
    values: int = 0
    jump: timedelta = timedelta(0)  # largest (newest stored - received)
    ongoing: bool = True
    recorded: bool = False  # the alarm file is up to date


def read_tag_map(path: Path) -> list[TagSpec]:
    """Tag map from CSV or TOML, checked: see :func:`connectors.tag_map.read_tag_map`."""
    from connectors.tag_map import read_tag_map as read_checked

    return read_checked(path)


class _BatchSubscription(Subscription):
    """A subscription that hands each publish response to a callback, as one batch."""

    def __init__(self, *args, on_batch: Callable, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_batch = on_batch
        self.last_publish_at = time.monotonic()
        self.revised: ua.CreateSubscriptionResult | None = None  # the server's parameters

    def silent_limit_s(self) -> float:
        """How long without any publish response (data or keep-alive) means the server has
        lost the subscription: three keep-alive periods, at least 5 s."""
        interval_ms = self.parameters.RequestedPublishingInterval
        keep_alive = self.parameters.RequestedMaxKeepAliveCount
        if self.revised is not None:
            interval_ms = self.revised.RevisedPublishingInterval or interval_ms
            keep_alive = self.revised.RevisedMaxKeepAliveCount or keep_alive
        return max(5.0, 3 * interval_ms * keep_alive / 1000.0)

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.last_publish_at = time.monotonic()
        message = publish_result.NotificationMessage
        if message.NotificationData is None:
            return
        self.last_sequence_number = int(message.SequenceNumber)
        for notif in message.NotificationData:
            if isinstance(notif, ua.DataChangeNotification):
                self.on_batch(notif.MonitoredItems)
            elif isinstance(notif, ua.StatusChangeNotification):
                logger.warning("subscription status change: %s", notif.Status)


class Ingest:
    """Subscribe to an OPC UA server and write the historian (see the module docstring).

    Parameters
    ----------
    endpoint : str
        ``opc.tcp://host:port[/path]``.
    historian : Historian
        Where rows go.
    spool_dir : Path
        Where rows wait on disk when the historian cannot take them.
    tag_map : list of TagSpec, optional
        Variables to ingest; by default every numeric variable found under ``browse_root``.
    context_map : list of (node_id, unit, field), optional
        Batch context variables (BatchId, Recipe, Phase, State of a unit) to follow; only
        used with ``resolved`` (discovery finds them otherwise).
    resolved : bool, default False
        ``tag_map`` (and ``context_map``) come from :meth:`discover` and their metadata is
        stored already: subscribe to them as they are, without reading the server again
        (a shard of :mod:`connectors.ingest_shards`).
    last_times : dict, optional
        The last stored source time per tag, if known (default: read from the historian).
    resume : bool, default False
        Start as after a lost connection: retry a refused first connection (with backoff)
        (a restarted shard). Whatever ``resume``, every session, the first included,
        backfills each tag that has a last stored time by HistoryRead from that time.
    on_clock_back : {"flag", "refuse"}, default "flag"
        What to do with a value older than the newest stored of its tag (a server whose
        source clock went back): store it with :data:`FLAG_CLOCK_BACK` and quality
        uncertain, or refuse it. Either way one warning is logged and an alarm recorded.
    """

    def __init__(
        self,
        endpoint: str,
        historian: Historian,
        spool_dir: Path,
        *,
        tag_map: list[TagSpec] | None = None,
        browse_root: str | None = None,
        sampling_ms: float = 0.0,
        publishing_ms: float = 500.0,
        queue_size: int | None = None,
        deadband: float | None = None,
        user: str | None = None,
        password: str | None = None,
        security: str | None = None,
        certificate: Path | None = None,
        private_key: Path | None = None,
        flush_s: float = 0.5,
        max_buffer_rows: int = 2_000_000,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        seed: int = 0,
        context_map: list[tuple[str, str, str]] | None = None,
        resolved: bool = False,
        last_times: dict[str, pd.Timestamp] | None = None,
        resume: bool = False,
        on_clock_back: str = "flag",
    ) -> None:
        if not _URL.match(endpoint or ""):
            raise IngestError(
                f"endpoint: must look like opc.tcp://HOST:PORT[/path]; got {endpoint!r}"
            )
        if security is not None and security not in ("Sign", "SignAndEncrypt"):
            raise IngestError(f"security: must be Sign or SignAndEncrypt; got {security!r}")
        if on_clock_back not in ON_CLOCK_BACK:
            raise IngestError(
                f"on_clock_back: must be one of {', '.join(ON_CLOCK_BACK)}; got {on_clock_back!r}"
            )
        self.on_clock_back = on_clock_back
        self.endpoint = endpoint
        self.historian = historian
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.tag_map = tag_map
        self.context_map = context_map
        self.resolved = resolved and tag_map is not None
        self.resume = resume
        self.browse_root = browse_root
        self.sampling_ms = sampling_ms
        self.publishing_ms = publishing_ms
        # at least publishing / sampling values must fit in a monitored item's queue
        ratio = publishing_ms / max(sampling_ms, 1.0) if sampling_ms else 10
        self.queue_size = queue_size or max(10, math.ceil(2 * ratio))
        self.deadband = deadband
        self.user, self.password = user, password
        self.security = security
        self.certificate, self.private_key = certificate, private_key
        self.flush_s = flush_s
        self.max_buffer_rows = max_buffer_rows
        self.backoff_s = backoff_s
        self.rng = np.random.default_rng(seed)
        last = historian.last_times() if last_times is None else last_times
        # as datetimes, what asyncua gives: one comparison per value, no conversion
        self.state = _State(
            last={tag: pd.Timestamp(t).to_pydatetime(warn=False) for tag, t in last.items()}
        )
        self.clock_offset_s: float | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._specs: dict[int, TagSpec] = {}  # client handle -> tag
        self._context_specs: dict[int, tuple[str, str]] = {}  # handle -> (unit, field)
        self._context: dict[str, dict] = {}
        self._pending: list[pd.DataFrame] = []
        self._pending_rows = 0
        self._held: list | None = None
        # tag -> (last time and value before it, times read, newest time read); kept after
        # the backfill until a live value newer than what it read arrives: a notification
        # of a value the backfill read already may come after the read (publishing interval)
        self._overlap: dict[str, tuple[datetime, float | None, set, datetime]] | None = None
        self._overlap_until = math.inf  # monotonic time the overlap is forgotten at
        self._behind: dict[str, tuple[datetime, float]] = {}  # tag -> last clock-back value
        self.clock_back: _ClockBack | None = None  # the current (or last) episode
        self._stop = asyncio.Event()
        self._client_now: Client | None = None

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        """Connect, subscribe and write until :meth:`stop`; reconnect when the server drops."""
        writer = asyncio.create_task(self._writer())
        delay = self.backoff_s[0]
        first = not self.resume
        try:
            while not self._stop.is_set():
                try:
                    # a store that holds data of these tags is backfilled from it on start
                    # as after a reconnection: what the server produced while we were down
                    await self._session(backfill=not first or bool(self.state.last))
                    delay = self.backoff_s[0]
                except IngestError:
                    raise
                except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
                    if first and not self.connected.is_set():
                        raise _explain(exc, self) from exc
                    logger.warning(
                        "ingest: connection to %s lost or refused: %r", self.endpoint, exc
                    )
                if self._stop.is_set():
                    break
                first = False
                self.connected.clear()
                jitter = 1.0 + 0.2 * self.rng.random()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay * jitter)
                delay = min(delay * 2, self.backoff_s[1])
                self.reconnects += 1
        finally:
            self._stop.set()
            await writer
            await self._flush(final=True)

    def stop(self) -> None:
        """Finish: close the session, flush everything to the historian (or the spool)."""
        self._stop.set()

    async def discover(self) -> tuple[list[TagSpec], list[tuple[str, str, str]]]:
        """Connect once, find the tags (browse or tag map), store their metadata, disconnect.

        Returns the tags and the batch context variables ``(node_id, unit, field)``, ready
        for ``Ingest(..., tag_map=tags, context_map=context, resolved=True)``.

        Raises
        ------
        IngestError
            If the server cannot be used (the one-line reasons of :meth:`run`).
        """
        client = await self._client()
        try:
            await client.connect()
        except Exception as exc:
            raise _explain(exc, self) from exc
        try:
            return await self._discover(client)
        except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
            raise _explain(exc, self) from exc
        finally:
            with _quiet():
                await client.disconnect()

    async def _client(self) -> Client:
        client = Client(self.endpoint, timeout=4)
        if self.user:
            client.set_user(self.user)
            client.set_password(self.password or "")
        if self.security:
            if not (self.certificate and self.private_key):
                raise IngestError("security: needs --cert and --key (see biotwin opcua-certs)")
            client.application_uri = "urn:biotwin:ingest"
            await client.set_security_string(
                f"Basic256Sha256,{self.security},{self.certificate},{self.private_key}"
            )
            if not self.user:  # the certificate is the identity too (not anonymous)
                await client.load_client_certificate(str(self.certificate))
                await client.load_private_key(str(self.private_key))
        return client

    async def _session(self, *, backfill: bool) -> None:
        client = await self._client()
        self._client_now = client
        try:
            await client.connect()
        except Exception as exc:
            if self.connected.is_set() or self.reconnects or self.resume:
                raise ConnectionError(repr(exc)) from exc  # retried by run()
            raise _explain(exc, self) from exc
        self._overlap, self._overlap_until = None, math.inf
        try:
            await self._check_clock(client)
            specs, context = await self._discover(client)
            held: list = []
            self._held = held  # live values wait for the recovery and the backfill
            sub = await self._subscribe(client, specs, context)
            try:
                # quarantined segments first: a tag whose newest rows were quarantined
                # is then backfilled from the end of what came back, not from before it
                await self._recover(client, specs)
                if backfill or self.state.last:
                    await self._backfill(client, specs)
                self._release(held)
            finally:
                self._held = None
            self.connected.set()
            logger.info("ingest: %d tags from %s", len(specs), self.endpoint)
            silent_s = sub.silent_limit_s()
            recover_at = time.monotonic() + RECOVER_EVERY_S
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                if self._stop.is_set():
                    break
                await client.nodes.server_state.read_value()  # health probe
                if time.monotonic() >= recover_at:  # a file quarantined while we run
                    await self._recover(client, specs)
                    recover_at = time.monotonic() + RECOVER_EVERY_S
                quiet = time.monotonic() - sub.last_publish_at
                if quiet > silent_s:  # the session lives, the subscription does not
                    raise ConnectionError(
                        f"no publish response for {quiet:.0f} s (limit {silent_s:.0f} s): "
                        "the server lost the subscription"
                    )
            with _quiet():
                await sub.delete()
        finally:
            with _quiet():
                await client.disconnect()
            self._client_now = None

    async def _check_clock(self, client: Client) -> None:
        server_now = await client.get_node(
            ua.ObjectIds.Server_ServerStatus_CurrentTime
        ).read_value()
        if server_now.tzinfo is None:
            server_now = server_now.replace(tzinfo=UTC)
        self.clock_offset_s = (server_now - datetime.now(UTC)).total_seconds()
        if abs(self.clock_offset_s) > 5:
            logger.warning(
                "ingest: server clock is %.1f s off ours; source timestamps are kept as sent",
                self.clock_offset_s,
            )

    # ------------------------------------------------------------------ discovery
    async def _discover(self, client: Client) -> tuple[list[TagSpec], list[tuple[str, str, str]]]:
        if self.resolved:
            return list(self.tag_map), list(self.context_map or [])
        if self.tag_map is not None:
            specs = await self._resolve(client, self.tag_map)
            return specs, []
        root = client.get_node(self.browse_root) if self.browse_root else client.nodes.objects
        specs, context = [], []
        seen: set[str] = set()

        async def walk(node, parent_name: str | None, depth: int) -> None:
            if depth > 8:
                return
            for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences):
                nid = child.nodeid
                if nid.NamespaceIndex == 0:
                    continue  # the Server object and the standard address space
                cls = await child.read_node_class()
                name = (await child.read_browse_name()).Name
                if cls == ua.NodeClass.Variable:
                    if name in ("EURange", "EngineeringUnits"):
                        continue
                    try:
                        vtype = await child.read_data_type_as_variant_type()
                    except (ua.UaError, ValueError, KeyError):
                        continue
                    if vtype == ua.VariantType.String and name in _CONTEXT and parent_name:
                        context.append((nid.to_string(), parent_name, name))
                    elif vtype in _NUMERIC:
                        tag = name if name not in seen else f"{parent_name}/{name}"
                        seen.add(tag)
                        specs.append(TagSpec(nid.to_string(), tag, unit=parent_name))
                    await walk(child, parent_name, depth + 1)
                elif cls == ua.NodeClass.Object:
                    await walk(child, name, depth + 1)

        await walk(root, None, 0)
        return await self._resolve(client, specs), context

    async def _resolve(self, client: Client, specs: list[TagSpec]) -> list[TagSpec]:
        """Check node ids exist; read description, EURange and EngineeringUnits."""
        unknown = []
        for spec in specs:
            node = client.get_node(spec.node_id)
            try:
                await node.read_browse_name()
            except ua.UaError:
                unknown.append(spec.node_id)
                continue
            for prop in await node.get_properties():
                name = (await prop.read_browse_name()).Name
                with _quiet():
                    if name == "EURange":
                        r = await prop.read_value()
                        spec.eu_low, spec.eu_high = float(r.Low), float(r.High)
                    elif name == "EngineeringUnits" and spec.eng_unit is None:
                        eu = await prop.read_value()
                        spec.eng_unit = (eu.Description.Text or eu.DisplayName.Text) or None
            with _quiet():
                spec.description = (await node.read_description()).Text
        if unknown:
            raise IngestError(
                f"tag map: {len(unknown)} node id(s) not found on {self.endpoint}: "
                + ", ".join(unknown[:10])
            )
        self.historian.upsert_tags(
            pd.DataFrame(
                [
                    {
                        "tag": s.tag,
                        "node_id": s.node_id,
                        "unit": s.unit,
                        "eng_unit": s.eng_unit,
                        "description": s.description,
                        "eu_low": s.eu_low,
                        "eu_high": s.eu_high,
                    }
                    for s in specs
                ]
            )
        )
        return specs

    # ------------------------------------------------------------------ subscription
    async def _subscribe(self, client: Client, specs, context) -> Subscription:
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self.publishing_ms,
            RequestedLifetimeCount=600,
            RequestedMaxKeepAliveCount=20,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = _BatchSubscription(client.uaclient, params, handler=None, on_batch=self._on_batch)
        sub.revised = await sub.init()
        sub.last_publish_at = time.monotonic()
        requests = []
        self._specs, self._context_specs = {}, {}
        handle = 1
        for spec in specs:
            deadband = spec.deadband if spec.deadband is not None else self.deadband
            # StatusValueTimestamp: a setpoint re-sent unchanged is still a sample to store
            mfilter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
            if deadband:
                mfilter.DeadbandType = ua.DeadbandType.Absolute
                mfilter.DeadbandValue = float(deadband)
            requests.append(self._request(spec.node_id, handle, mfilter))
            self._specs[handle] = spec
            handle += 1
        for node_id, unit, name in context:
            requests.append(self._request(node_id, handle, None))
            self._context_specs[handle] = (unit, name)
            handle += 1
        for i in range(0, len(requests), 1000):
            results = await client.uaclient.create_monitored_items(
                ua.CreateMonitoredItemsParameters(
                    SubscriptionId=sub.subscription_id,
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                    ItemsToCreate=requests[i : i + 1000],
                )
            )
            for res in results:
                if not res.StatusCode.is_good():
                    logger.warning("ingest: monitored item refused: %s", res.StatusCode)
        return sub

    def _request(self, node_id: str, handle: int, mfilter) -> ua.MonitoredItemCreateRequest:
        params = ua.MonitoringParameters(
            ClientHandle=handle,
            SamplingInterval=self.sampling_ms,
            QueueSize=self.queue_size,
            DiscardOldest=True,
        )
        if mfilter is not None:
            params.Filter = mfilter
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(
                NodeId=ua.NodeId.from_string(node_id), AttributeId=ua.AttributeIds.Value
            ),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=params,
        )

    def _on_batch(self, items) -> None:
        """Publish callback: convert one publish response; never blocks."""
        if self._held is not None:
            self._held.append(items)
            return
        self._accept(items)

    def _accept(self, items, flags_extra: int = 0, *, backfill: bool = False) -> None:
        """Turn notifications into pending rows: one pass, de-duplicated as it goes.

        A value newer than the last accepted one of its tag is stored. Of the others, a
        duplicate -- the same time as the last accepted one with the same value, a value
        the backfill read already, or any value of the backfill itself -- is counted in
        ``state.duplicates`` and not stored twice; a value newer than the time the
        backfill started from but missing from the history is stored; any other one is
        older than what is stored: the server's clock went back (see :meth:`_clock_back`).
        """
        times, tags, values, status, flags = [], [], [], [], []
        context_changes, back = [], []
        last, last_value = self.state.last, self.state.last_value
        received = duplicates = 0
        for item in items:
            dv = item.Value
            handle = item.ClientHandle
            ts = dv.SourceTimestamp or dv.ServerTimestamp or datetime.now(UTC)
            if ts.tzinfo is None:  # OPC UA times are UTC
                ts = ts.replace(tzinfo=UTC)
            if handle in self._context_specs:
                context_changes.append((self._context_specs[handle], ts, dv.Value.Value))
                continue
            spec = self._specs.get(handle)
            if spec is None:
                continue
            received += 1
            value = _value_of(dv)
            f = flags_extra
            prev = last.get(spec.tag)
            if prev is None or ts > prev:
                last[spec.tag], last_value[spec.tag] = ts, value
                if self._behind:
                    self._behind.pop(spec.tag, None)
                overlap = self._overlap.get(spec.tag) if self._overlap and not backfill else None
                if overlap is not None and ts > overlap[3]:  # live, past what was read
                    del self._overlap[spec.tag]
            else:
                kind = "duplicate" if backfill else self._older(spec.tag, ts, value)
                if kind == "duplicate":
                    duplicates += 1
                    continue
                if kind == "back":
                    back.append((spec.tag, prev - ts))
                    self._behind[spec.tag] = (ts, value)
                    if self.on_clock_back == "refuse":
                        continue
                    f |= FLAG_CLOCK_BACK
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            f |= _sample_flags(spec, value, code)
            times.append(ts)
            tags.append(spec.tag)
            values.append(value)
            status.append(code)
            flags.append(f)
        self.state.received += received
        self.state.duplicates += duplicates
        self._clock_back(back, caught_up=bool(times) and not self._behind)
        if times:
            self._pend(times, tags, values, status, flags)
        for (unit, name), ts, value in context_changes:
            self._context_change(unit, name, pd.Timestamp(ts).tz_convert("UTC"), value)

    def _pend(self, times, tags, values, status, flags) -> None:
        frame = _rows(times, tags, values, status, flags)
        self._pending.append(frame)
        self._pending_rows += len(frame)

    def _older(self, tag: str, ts: datetime, value: float) -> str:
        """What a value no newer than the last accepted one of its tag is: "duplicate",
        "late" (newer than where the running backfill started, missing from the
        history: stored) or "back" (the source clock went back)."""
        if ts == self.state.last[tag]:
            known = self.state.last_value.get(tag)
            if known is None or _same(known, value):
                return "duplicate"  # e.g. the initial value sent again on re-subscription
            return "back"  # the same time with another value: another run of the source
        if self._overlap and self._held is None and time.monotonic() > self._overlap_until:
            self._overlap = None  # notifications sent before the backfill's read are in
        if self._overlap is not None and tag in self._overlap:
            floor, floor_value, seen, _ = self._overlap[tag]
            if ts in seen:
                return "duplicate"
            if ts == floor:
                return "duplicate" if floor_value is None or _same(floor_value, value) else "back"
            if ts > floor:
                return "late"
        behind = self._behind.get(tag)
        if behind is not None and ts == behind[0] and _same(behind[1], value):
            return "duplicate"
        return "back"

    def _clock_back(self, back: list[tuple[str, timedelta]], *, caught_up: bool) -> None:
        """Count values whose source clock went back; one warning line per episode, and
        an alarm (written by the writer task) until every tag is past its stored time."""
        episode = self.clock_back
        if not back:
            if caught_up and episode is not None and episode.ongoing:
                episode.ongoing, episode.recorded = False, False
                logger.info(
                    "ingest: source clock of %s is past the stored times again (%d values %s)",
                    self.endpoint,
                    episode.values,
                    "refused" if self.on_clock_back == "refuse" else "flagged",
                )
            return
        if episode is None or not episode.ongoing:
            episode = self.clock_back = _ClockBack(since=pd.Timestamp.now(tz="UTC"))
            jump = max(j for _, j in back)
            logger.warning(
                "ingest: source clock of %s went back for %d tags by up to %s (older than "
                "the newest stored value of the tag); %s",
                self.endpoint,
                len({t for t, _ in back}),
                jump,
                "values refused (on_clock_back=refuse)"
                if self.on_clock_back == "refuse"
                else f"values kept with flag {FLAG_CLOCK_BACK} (clock back), quality uncertain",
            )
        episode.tags.update(t for t, _ in back)
        episode.values += len(back)
        episode.jump = max(episode.jump, *(j for _, j in back))
        episode.recorded = False
        if self.on_clock_back == "refuse":
            self.state.refused += len(back)
        else:
            self.state.clock_back += len(back)

    def _context_change(self, unit: str, name: str, ts: pd.Timestamp, value) -> None:
        cur = self._context.setdefault(unit, {"start_time": None})
        if cur.get(name) == value:
            return
        if cur["start_time"] is not None and ts < cur["start_time"]:
            # A change stamped before the context it follows (a variable whose first value
            # carries the server's clock, then the plant's): stored rows are never rewritten,
            # so it takes effect when the current row began.
            logger.warning(
                "ingest: %s.%s changed at %s, before the context stored from %s; stored from %s",
                unit,
                name,
                ts,
                cur["start_time"],
                cur["start_time"],
            )
            ts = cur["start_time"]
        rows = []
        if cur["start_time"] is not None and cur["start_time"] != ts:
            rows.append({**context_row(unit, cur), "end_time": ts})
        cur[name] = value  # several fields changing at one time: one new row
        cur["start_time"] = ts
        rows.append({**context_row(unit, cur), "end_time": None})
        try:
            self.historian.append_batch_context(pd.DataFrame(rows))
        except (OSError, HistorianError):  # never at the cost of the values in this publish
            logger.exception("ingest: batch context not stored")

    async def _backfill(self, client: Client, specs: list[TagSpec]) -> None:
        """HistoryRead each tag from its last accepted time to now (where supported).

        Keeps, until a live value newer than what it read arrives for the tag, where each
        tag started and the times read (``_overlap``), so that the live values held
        meanwhile, and those whose notification comes after the read, are told apart: read
        already (duplicates), missing from the history (stored), or older than what was
        stored (the clock went back).
        """
        filled = 0
        self._overlap = {}
        for spec in specs:
            last = self.state.last.get(spec.tag)
            if last is None:
                continue
            node = client.get_node(spec.node_id)
            try:
                # open-ended: a server's source clock may run ahead of ours (an accelerated
                # twin), and what is newer than the last stored value is what is missing
                history = await node.read_raw_history(last + timedelta(microseconds=1), None)
            except ua.UaError as exc:
                logger.info("ingest: no HistoryRead for %s (%s)", spec.tag, exc)
                continue
            before = self._pending_rows
            self._accept_history(spec, history)
            filled += self._pending_rows - before
        logger.info(
            "ingest: backfilled %d values from %s %s",
            filled,
            self.endpoint,
            "after reconnecting" if self.reconnects else "on start",
        )

    def _release(self, held: list) -> None:
        """Accept the live values held during the recovery and the backfill: they overlap
        what the backfill read, and :meth:`_older` tells the duplicates apart. What the
        backfill read stays known (``_overlap``) for notifications still on their way, for
        :data:`OVERLAP_PUBLISHES` publishing intervals at most (a tag that does not change
        sends no newer value to end it)."""
        self._held = None
        for batch in held:
            self._accept(batch)
        hold_s = max(OVERLAP_MIN_S, OVERLAP_PUBLISHES * self.publishing_ms / 1000.0)
        self._overlap_until = time.monotonic() + hold_s

    def _accept_history(self, spec: TagSpec, history: list[ua.DataValue]) -> None:
        """Accept what a HistoryRead of ``spec`` from its last accepted time returned, and
        remember what it read (``_overlap``) for the live values of the same times."""
        last = self.state.last[spec.tag]
        handle = next(h for h, s in self._specs.items() if s is spec)
        items = [ua.MonitoredItemNotification(ClientHandle=handle, Value=dv) for dv in history]
        seen = {_utc(dv.SourceTimestamp) for dv in history}
        newest = max(seen, default=last)
        self._overlap[spec.tag] = (last, self.state.last_value.get(spec.tag), seen, newest)
        self._accept(items, flags_extra=FLAG_BACKFILLED, backfill=True)

    # ------------------------------------------------------------------ recovery
    async def _recover(self, client: Client, specs: list[TagSpec]) -> None:
        """Read again from the server's history the values of quarantined segments.

        For every quarantine note with a time span (``first_time``, ``last_time``) whose
        ``recovered_tags`` lack some of ``specs``: HistoryRead those tags over the span,
        store what the historian does not hold (flagged backfilled), then record it in the
        note (:func:`connectors.manifest.mark_recovered`); each tag's last accepted time
        moves to the newest value read if that is newer, so that the backfill that follows
        goes on from there. A connection error propagates (the session is retried, and
        so is the recovery); anything else is logged and leaves the note as it was.
        """
        try:
            notes = await asyncio.to_thread(self.historian.quarantined)
        except OSError:
            logger.exception("ingest: quarantine notes unreadable; nothing recovered")
            return
        for note in notes:
            if not (note.get("first_time") and note.get("last_time")):
                continue
            done = set(note.get("recovered_tags") or ())
            todo = [spec for spec in specs if spec.tag not in done]
            if todo:
                await self._recover_note(client, note, todo)

    async def _recover_note(self, client: Client, note: dict, specs: list[TagSpec]) -> None:
        """HistoryRead ``specs`` over the span of ``note``; store the values missing."""
        first = pd.Timestamp(note["first_time"]).tz_convert("UTC")
        last = pd.Timestamp(note["last_time"]).tz_convert("UTC")
        lo, hi = first.to_pydatetime(), last.to_pydatetime()
        times, tags, values, status, flags = [], [], [], [], []
        read = []
        for spec in specs:
            node = client.get_node(spec.node_id)
            try:
                history = await node.read_raw_history(
                    lo, hi + timedelta(microseconds=1), return_bounds=False
                )
            except ua.UaError as exc:
                logger.debug("ingest: no HistoryRead for %s (%s)", spec.tag, exc)
                continue
            read.append(spec.tag)
            for dv in history:
                ts = _utc(dv.SourceTimestamp or dv.ServerTimestamp)
                if ts is None or not lo <= ts <= hi:
                    continue
                value = _value_of(dv)
                code = dv.StatusCode.value if dv.StatusCode is not None else 0
                times.append(ts)
                tags.append(spec.tag)
                values.append(value)
                status.append(code)
                flags.append(FLAG_BACKFILLED | _sample_flags(spec, value, code))
        if not times:
            logger.info(
                "ingest: %s has no history of its %d tags for quarantined %s (%s to %s); "
                "left unrecovered",
                self.endpoint,
                len(specs),
                note.get("file"),
                first,
                last,
            )
            return
        held = [p[["tag", "time"]] for p in self._pending]  # not on disk yet
        rows = _rows(times, tags, values, status, flags)
        try:
            stored = await asyncio.to_thread(self._store_missing, rows.copy(), held, first, last)
            self.state.stored += stored
            self._advance(times, tags, values)
            body = await asyncio.to_thread(
                mark_recovered,
                self.historian.root,
                note["note"],
                endpoint=self.endpoint,
                tags=read,
                values=stored,
            )
        except Exception:  # the note stays unrecovered: tried again next session
            logger.exception("ingest: recovery of quarantined %s failed", note.get("file"))
            return
        logger.info(
            "ingest: recovered %d values of quarantined %s (%s to %s, %d tags) from %s; "
            "%d recovered in all",
            stored,
            note.get("file"),
            first,
            last,
            len(read),
            self.endpoint,
            body["values_recovered"],
        )

    def _advance(self, times: list[datetime], tags: list[str], values: list[float]) -> None:
        """Move each tag's last accepted time (and value) to the newest recovered one if
        that is newer: the backfill goes on from there, and a value of the span sent again
        is a duplicate."""
        last, last_value = self.state.last, self.state.last_value
        for ts, tag, value in zip(times, tags, values, strict=True):
            prev = last.get(tag)
            if prev is None or ts > prev:
                last[tag], last_value[tag] = ts, value

    def _store_missing(self, rows: pd.DataFrame, held: list[pd.DataFrame], first, last) -> int:
        """Append the rows whose (tag, time) the historian does not hold (nor ``held``,
        rows waiting to be written); returns how many (in a thread)."""
        tags = sorted(set(rows["tag"]))
        stored = self.historian.query(tags, start=first, end=last + pd.Timedelta(microseconds=1))
        keys = pd.concat([stored[["tag", "time"]], *held], ignore_index=True)
        keys["time"] = keys["time"].astype("datetime64[us, UTC]")
        rows["time"] = rows["time"].astype("datetime64[us, UTC]")
        rows = rows.drop_duplicates(["tag", "time"], ignore_index=True)
        known = rows.merge(keys.drop_duplicates(), on=["tag", "time"], how="left", indicator=True)
        missing = rows[(known["_merge"] == "left_only").to_numpy()]
        if len(missing):
            self.historian.append(missing)
        return len(missing)

    # ------------------------------------------------------------------ writing
    async def _writer(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.flush_s)
            await self._flush()

    async def _flush(self, final: bool = False) -> None:
        """Write the spool (oldest first) then pending rows; keep them on failure."""
        episode = self.clock_back
        if episode is not None and not episode.recorded:
            episode.recorded = True
            await asyncio.to_thread(self._record_clock_back, episode)
        for path in sorted(self.spool_dir.glob("*.parquet")):
            try:
                await asyncio.to_thread(self.historian.append, pd.read_parquet(path))
            except Exception:
                logger.warning("ingest: historian still unavailable; %s waits", path.name)
                break
            path.unlink()
        if not self._pending:
            return
        batch, self._pending, self._pending_rows = self._pending, [], 0
        rows = pd.concat(batch, ignore_index=True)
        try:
            await asyncio.to_thread(self.historian.append, rows)
            self.state.stored += len(rows)
        except Exception as exc:
            logger.warning(
                "ingest: historian append failed (%r); buffering %d rows", exc, len(rows)
            )
            self._pending.insert(0, rows)
            self._pending_rows += len(rows)
            if self._pending_rows > self.max_buffer_rows or final:
                self._spill()

    def _record_clock_back(self, episode: _ClockBack) -> None:
        """Write (or update) the alarm of a clock-back episode (connectors/alarms.py)."""
        refused = self.on_clock_back == "refuse"
        message = (
            f"Source clock of {self.endpoint} went back by up to {episode.jump} for "
            f"{len(episode.tags)} tags: {episode.values:,} values older than the newest "
            + ("stored were refused" if refused else "stored were kept, flagged clock-back")
            + ("" if episode.ongoing else " (caught up since)")
        )
        try:
            record_alarm(
                self.historian.root,
                f"clock-back:{self.endpoint}:{episode.since.value}:{os.getpid()}",
                time=episode.since,
                severity="high" if refused else "medium",
                message=message,
                ongoing=episode.ongoing,
                details={
                    "endpoint": self.endpoint,
                    "tags": sorted(episode.tags)[:100],
                    "values": episode.values,
                    "jump_s": episode.jump.total_seconds(),
                    "on_clock_back": self.on_clock_back,
                },
            )
        except OSError:
            logger.exception("ingest: clock-back alarm not recorded")

    def _spill(self) -> None:
        rows = pd.concat(self._pending, ignore_index=True)
        name = f"spool-{time.time_ns():020d}.parquet"
        tmp = self.spool_dir / (name + ".tmp")
        rows.to_parquet(tmp, index=False)
        tmp.rename(self.spool_dir / name)
        logger.warning("ingest: spilled %d rows to %s", len(rows), name)
        self._pending, self._pending_rows = [], 0


def _utc(ts: datetime | None) -> datetime | None:
    """A source time as asyncua gives it, made timezone-aware (OPC UA times are UTC)."""
    return ts.replace(tzinfo=UTC) if ts is not None and ts.tzinfo is None else ts


def _same(a: float, b: float) -> bool:
    """Equal values (NaN equals NaN: a bad sample sent again is the same sample)."""
    return a == b or (a != a and b != b)


def _value_of(dv: ua.DataValue) -> float:
    """A sample's value as a float (NaN if it has none or is not numeric)."""
    raw = dv.Value.Value if dv.Value is not None else None
    try:
        return float(raw) if raw is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _sample_flags(spec: TagSpec, value: float, code: int) -> int:
    """The flags a sample carries whatever its path (live, backfill, recovery): the queue
    Overflow bit of its StatusCode, a value outside the tag's EU range."""
    f = 0
    if (code & 0x480) == 0x480:  # InfoType DataValue + Overflow bit
        f |= FLAG_OVERFLOW
    outside = spec.eu_low is not None and not (spec.eu_low <= value <= spec.eu_high)
    if outside and not math.isnan(value):
        f |= FLAG_OUT_OF_RANGE
    return f


def _rows(times, tags, values, status, flags) -> pd.DataFrame:
    """Rows for the historian; quality from the StatusCode (at least uncertain for a value
    flagged clock-back)."""
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(times, utc=True),
            "tag": tags,
            "value": np.asarray(values, dtype=float),
            "status": np.asarray(status, dtype=np.uint32),
            "flags": np.asarray(flags, dtype=np.uint8),
        }
    )
    quality = quality_from_status(frame["status"].to_numpy())
    back = (frame["flags"].to_numpy() & FLAG_CLOCK_BACK) != 0
    frame["quality"] = np.where(back, np.maximum(quality, 1), quality).astype(np.uint8)
    return frame


class _quiet:
    """Suppress (and log at debug level) errors of best-effort calls."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, Exception):
            logger.debug("ignored: %r", exc)
            return True
        return False


def _explain(exc: BaseException, ingest: Ingest) -> IngestError:
    """One clear line for what went wrong at connect time."""
    text = repr(exc)
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in text:
        return IngestError(f"cannot connect to {ingest.endpoint}: connection refused")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return IngestError(f"cannot connect to {ingest.endpoint}: no answer (timeout)")
    if isinstance(exc, OSError):
        return IngestError(f"cannot connect to {ingest.endpoint}: {exc}")
    if (
        "BadUserAccessDenied" in text
        or "BadIdentityTokenRejected" in text
        or ("BadIdentityTokenInvalid" in text)
    ):
        if not ingest.user:
            who = "our certificate as identity" if ingest.security else "anonymous access"
            return IngestError(f"{ingest.endpoint} refused {who}: sign in with --user or --cert")
        return IngestError(
            f"{ingest.endpoint} refused user {ingest.user!r}: wrong user name or password"
        )
    if "BadSecurityPolicyRejected" in text or "No matching endpoints" in text:
        return IngestError(
            f"{ingest.endpoint} does not offer the security asked for "
            f"(Basic256Sha256 {ingest.security or 'None'})"
        )
    if (
        isinstance(exc, AssertionError)
        or "BadCertificate" in text
        or "BadSecurityChecksFailed" in text
    ):
        return IngestError(
            f"{ingest.endpoint} refused our certificate ({ingest.certificate}): is it in the "
            "server's trusted list?"
        )
    return IngestError(f"cannot use {ingest.endpoint}: {text}")
