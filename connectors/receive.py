"""``biotwin receive``: an OPC UA server that OT systems push values into (docs/receive.md).

Gateways, PLCs, MES and LIMS that cannot be subscribed to from outside push outwards; this
server takes what they push and stores it in the historian, where the ingest's values are:

- **Address space** (ISA-95), namespace ``urn:biotwin:receive``::

      Objects/<Site>/<Area>/<Line>/<Unit>/<tag>    AnalogItemType (numbers; EURange,
                                                   EngineeringUnits) or BaseDataVariable
      Objects/<Site>/<Area>/<Line>/<Unit>/BatchId, Recipe, Phase, State   String
      Objects/<Site>/ReportResult(batch_id, attribute, value, eng_unit, source_time)

  node ids ``ns=<i>;s=<tag>``, ``ns=<i>;s=<unit>.BatchId``, ``ns=<i>;s=ReportResult``.
  The tags come from a tag file (:mod:`connectors.receive_tags`) or the plant config.
- **Writes** (the Value attribute, with SourceTimestamps), **HistoryUpdate** (Insert,
  Replace, Update: backfill after an outage, corrections) and **ReportResult** (lab results
  and lot attributes, :mod:`connectors.lab_results`), by users with the role ``ot-writer``
  only; everyone else gets BadUserAccessDenied for each value. Each value is checked
  (:mod:`connectors.receive_writes`) and answered with its own StatusCode.
- **Good means durable**: a value is answered Good only once it is committed to the
  historian (fsynced, :mod:`connectors.receive_store`); writes of BatchId / Recipe / Phase
  / State become batch context records as the ingest makes them.
- **HistoryRead** answers from the historian (:mod:`connectors.receive_history`);
  HistoryServerCapabilities advertise Insert, Replace and Update of data.
- **Security** as the twin server's (:mod:`connectors.opcua_doors`): Basic256Sha256 Sign and
  SignAndEncrypt, client certificates in ``DATA_DIR/pki/trusted`` (``biotwin opcua-certs
  --trust FILE``), passwords encrypted with the server's certificate, anonymous off.
- **Status** for the command center: connected writers, values stored, rejections by
  StatusCode (:class:`connectors.push_sources.PushSource`).

How the services are taken over from asyncua: :mod:`connectors.receive_dispatch`.

Exceptions::

    RuntimeError
     └── ReceiveError    the server cannot start as asked (security, tags, node ids)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from asyncua import ua
from asyncua.server.internal_session import InternalSession

from connectors.historian import FLAG_OUT_OF_RANGE, Historian
from connectors.opcua_doors import DoorServer, RoleRules, _DoorInternalServer, _DoorSession
from connectors.push_sources import PushSource
from connectors.receive_decode import raw_values
from connectors.receive_dispatch import start_server
from connectors.receive_history import HistorianHistory, update_jobs
from connectors.receive_store import Job, ReceiveStore
from connectors.receive_tags import CONTEXT_FIELDS, NUMERIC_TYPES, ReceiveTag, receive_tags
from connectors.receive_writes import FUTURE_S, GOOD, check_fields, status_name, to_us
from connectors.security import (
    OT_WRITER,
    UserFileManager,
    load_users,
    server_certificate,
    trust_validator,
)
from connectors.server import eu_information

__all__ = [
    "APPLICATION_URI",
    "DEFAULT_ENDPOINT",
    "NAMESPACE_URI",
    "REPORT_RESULT",
    "SECURITY",
    "ReceiveError",
    "ReceiveServer",
    "WriterRoles",
]

logger = logging.getLogger(__name__)

NAMESPACE_URI = "urn:biotwin:receive"
APPLICATION_URI = "urn:biotwin:receive"
DEFAULT_ENDPOINT = "opc.tcp://127.0.0.1:4850/biotwin/receive"
#: ``--security``: the endpoints offered (Basic256Sha256); "secure" is Sign + SignAndEncrypt
SECURITY = {
    "secure": ("sign", "encrypt"),
    "sign": ("sign",),
    "encrypt": ("encrypt",),
    "all": ("none", "sign", "encrypt"),
    "none": ("none",),
}
_POLICIES = {
    "none": ua.SecurityPolicyType.NoSecurity,
    "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
REPORT_RESULT = "ReportResult"
_REPORT_ARGS = (
    ("batch_id", ua.VariantType.String, "The batch the result belongs to"),
    ("attribute", ua.VariantType.String, "Lot attribute or QC / CQA result name"),
    ("value", ua.VariantType.Double, "The result, in eng_unit"),
    ("eng_unit", ua.VariantType.String, "UNECE code or unit text"),
    ("source_time", ua.VariantType.DateTime, "When it was measured"),
)
_ACCESS = (
    (1 << ua.AccessLevel.CurrentRead)
    | (1 << ua.AccessLevel.CurrentWrite)
    | (1 << ua.AccessLevel.HistoryRead)
    | (1 << ua.AccessLevel.HistoryWrite)
)
_CAPABILITIES = {
    "AccessHistoryDataCapability": True,
    "InsertDataCapability": True,
    "ReplaceDataCapability": True,
    "UpdateDataCapability": True,
    "DeleteRawCapability": False,
    "DeleteAtTimeCapability": False,
    "InsertAnnotationCapability": False,
    "AccessHistoryEventsCapability": False,
    "InsertEventCapability": False,
    "ReplaceEventCapability": False,
    "UpdateEventCapability": False,
    "DeleteEventCapability": False,
    "ServerTimestampSupported": False,
}
_SC = ua.StatusCodes


class ReceiveError(RuntimeError):
    """The receiver cannot start as asked; the message names what and why."""


class WriterRoles:
    """Whether a session's user may push: a users.toml user with the role ``ot-writer``,
    not disabled. users.toml is read again when it changes (a role taken away applies at
    the next request)."""

    def __init__(self, users_file: Path) -> None:
        self.path = Path(users_file)
        self._sig: tuple | None = None
        self._writers: frozenset[str] = frozenset()

    def writers(self) -> frozenset[str]:
        try:
            st = self.path.stat()
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            sig = None
        if sig != self._sig:
            users = load_users(self.path) if sig is not None else {}
            self._writers = frozenset(
                name
                for name, entry in users.items()
                if OT_WRITER in (entry.get("roles") or []) and not entry.get("disabled")
            )
            self._sig = sig
        return self._writers

    def may_write(self, user) -> bool:
        name = getattr(user, "name", None)
        return bool(name) and name in self.writers()


class _ReceiveSession(_DoorSession):
    """A session that tells the receiver when a writer signs in and leaves."""

    _writer: str | None = None

    def activate_session(self, params, peer_certificate):
        result = super().activate_session(params, peer_certificate)
        receiver = getattr(self.iserver, "receiver", None)
        if receiver is not None and self._writer is None:
            self._writer = receiver.session_opened(self.user)
        return result

    async def close_session(self, delete_subs: bool = True) -> None:
        writer, self._writer = self._writer, None
        receiver = getattr(self.iserver, "receiver", None)
        if writer is not None and receiver is not None:
            receiver.session_closed(writer)
        await super().close_session(delete_subs)


class _ReceiveInternalServer(_DoorInternalServer):
    session_class = _ReceiveSession
    receiver: ReceiveServer | None = None


class _ReceiveRules(RoleRules):
    """The doors' rules, with HistoryUpdate allowed to signed-in users (the receiver then
    checks the role ot-writer per operation)."""

    def __init__(self) -> None:
        super().__init__()
        from asyncua.crypto.permission_rules import UserRole

        update = ua.NodeId(ua.ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary)
        for role in (UserRole.Admin, UserRole.User):
            self.allowed[role] = self.allowed[role] | {update}


class _ReceiveDoorServer(DoorServer):
    internal_server_class = _ReceiveInternalServer

    async def start(self) -> None:
        await start_server(self)


def _same_meta(a, b) -> bool:
    """Equal metadata values; missing (None, NaN, "") equals missing."""
    a_missing = a is None or a == "" or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or b == "" or (isinstance(b, float) and math.isnan(b))
    return (a_missing and b_missing) or (not a_missing and not b_missing and a == b)


_STATUS: dict[int, ua.StatusCode] = {}


def _status(code: int) -> ua.StatusCode:
    """A StatusCode object per code, made once (they are only read when encoded)."""
    status = _STATUS.get(code)
    if status is None:
        status = _STATUS[code] = ua.StatusCode(code)
    return status


def _now_us() -> int:
    return time.time_ns() // 1000


def _user_name(user) -> str:
    return getattr(user, "name", None) or "anonymous"


class ReceiveServer:
    """The receiving OPC UA server (see the module docstring).

    Parameters
    ----------
    tags : pandas.DataFrame
        The tag table (:func:`connectors.receive_tags.read_tag_file` or ``plant_tags``).
    endpoint : str
        ``opc.tcp://host:port/path``.
    data_dir : Path
        The store: historian, users.toml, pki.
    security : str
        A key of :data:`SECURITY` (default "secure": Sign and SignAndEncrypt).
    retention_days : float
        Values with a source time older than this are refused (BadInvalidTimestamp).
    future_s : float
        Values with a source time further ahead of the server's clock are refused.
    site, area, line : str
        ISA-95 levels of tags that do not name theirs.
    source : PushSource, optional
        Where the status for the command center goes (default: ``PushSource("opcua",
        endpoint, data_dir)``).
    """

    def __init__(
        self,
        tags: pd.DataFrame,
        endpoint: str,
        data_dir: Path,
        *,
        security: str = "secure",
        retention_days: float = 365.0,
        future_s: float = FUTURE_S,
        site: str = "Site",
        area: str = "Area",
        line: str = "Line",
        source: PushSource | None = None,
    ) -> None:
        if security not in SECURITY:
            raise ReceiveError(f"security: must be one of {', '.join(SECURITY)}; got {security!r}")
        if not retention_days > 0:
            raise ReceiveError(f"retention_days: must be > 0; got {retention_days!r}")
        if not future_s >= 0:
            raise ReceiveError(f"future_s: must be >= 0; got {future_s!r}")
        self.tags = tags
        self.specs = receive_tags(tags, site=site, area=area, line=line)
        self.endpoint = endpoint
        self.data_dir = Path(data_dir)
        self.security = security
        self.retention_us = int(retention_days * 86400e6)
        self.future_s = float(future_s)
        self.source = source or PushSource("opcua", endpoint, self.data_dir)
        users = UserFileManager(
            self.data_dir / "users.toml", trusted=self.data_dir / "pki" / "trusted"
        )
        self.roles = WriterRoles(self.data_dir / "users.toml")
        self.server = _ReceiveDoorServer(users, allow_anonymous=False)
        self.server.rules = _ReceiveRules()
        self.server.iserver.receiver = self
        self.historian = Historian(self.data_dir / "historian", compact_every=None)
        self.store = ReceiveStore(
            self.historian, text_tags={s.tag for s in self.specs if s.is_text}
        )
        self.idx = 0
        self.by_node: dict[ua.NodeId, ReceiveTag] = {}
        self.context_nodes: dict[ua.NodeId, tuple[str, str]] = {}
        #: (namespace, identifier) -> the tag (a unit's context variable as a String tag)
        self.by_key: dict[tuple[int, object], ReceiveTag] = {}
        #: "<unit>.<field>" -> (unit, field) of the context variables
        self.context_of: dict[str, tuple[str, str]] = {}
        self.tag_nodes: dict[str, ua.NodeId] = {}
        self.report_node: ua.NodeId | None = None
        self.report_parent: ua.NodeId | None = None
        self._shown: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self.serving = asyncio.Event()

    def __repr__(self) -> str:
        return f"ReceiveServer({self.endpoint!r}, {len(self.specs)} tags)"

    # ------------------------------------------------------------------ setup
    async def setup(self) -> None:
        """Certificates, endpoints, address space, history; the store reads what it holds."""
        server = self.server
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("biotwin receive")
        await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy(
            [_POLICIES[p] for p in SECURITY[self.security]], permission_ruleset=server.rules
        )
        pki = self.data_dir / "pki"
        cert, key = await server_certificate(pki, APPLICATION_URI, name="receive")
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        if self.security != "none":
            server.set_certificate_validator(await trust_validator(pki))
        self.idx = await server.register_namespace(NAMESPACE_URI)
        await self._build_address_space()
        await self._advertise_history()
        server.iserver.history_manager.set_storage(
            HistorianHistory(
                self.historian,
                self.store.text,
                {nid.to_string(): spec for nid, spec in self.by_node.items()},
                {nid.to_string(): uf for nid, uf in self.context_nodes.items()},
            )
        )
        await self.store.start()
        changed = await asyncio.to_thread(self._metadata_changes)
        if len(changed):
            await asyncio.to_thread(self.historian.upsert_tags, changed)
        logger.info(
            "receive: %d tags of %d units; writers need the role %s",
            len(self.specs),
            len(self.context_units()),
            OT_WRITER,
        )

    def context_units(self) -> list[str]:
        return sorted({s.unit for s in self.specs})

    def _metadata(self) -> pd.DataFrame:
        """Tag metadata for the historian (String tags too: their values are in the text
        table)."""
        return pd.DataFrame(
            [
                {
                    "tag": s.tag,
                    "node_id": f"nsu={NAMESPACE_URI};s={s.tag}",
                    "unit": s.unit,
                    "eng_unit": s.eng_unit,
                    "description": s.description,
                    "eu_low": s.eu_low,
                    "eu_high": s.eu_high,
                }
                for s in self.specs
            ]
        )

    def _metadata_changes(self) -> pd.DataFrame:
        """The tags whose metadata the historian lacks or holds otherwise (unit, engineering
        unit, EURange, description). A tag described already keeps its node id: the same
        tag may also come from an ingest (a plant whose twin tags are pushed here too)."""
        mine = self._metadata()
        stored = self.historian.tags()
        if stored.empty:
            return mine
        keep = ["unit", "eng_unit", "description", "eu_low", "eu_high"]
        old = stored.set_index("tag")
        changed = []
        for row in mine.itertuples(index=False):
            if row.tag not in old.index or pd.isna(old.at[row.tag, "node_id"]):
                changed.append(row._asdict())
                continue
            before = old.loc[row.tag]
            differs = any(not _same_meta(before[c], getattr(row, c)) for c in keep)
            if differs:
                changed.append({**row._asdict(), "node_id": before["node_id"]})
        return pd.DataFrame(changed, columns=mine.columns)

    def _check_node_ids(self) -> None:
        ids: dict[str, str] = {}

        def claim(node_id: str, what: str) -> None:
            if node_id in ids:
                raise ReceiveError(
                    f"node id ns={self.idx};s={node_id} would name both {ids[node_id]} and "
                    f"{what}: rename one in the tag file"
                )
            ids[node_id] = what

        claim(REPORT_RESULT, "the ReportResult method")
        for s in self.specs:
            for path in (
                s.site,
                f"{s.site}/{s.area}",
                f"{s.site}/{s.area}/{s.line}",
                f"{s.site}/{s.area}/{s.line}/{s.unit}",
            ):
                ids.setdefault(path, f"folder {path}")
        for unit in self.context_units():
            for name in CONTEXT_FIELDS:
                claim(f"{unit}.{name}", f"the batch context variable {unit}.{name}")
        for s in self.specs:
            claim(s.tag, f"tag {s.tag}")
            if s.data_type in NUMERIC_TYPES:
                claim(f"{s.tag}.EURange", f"the EURange of {s.tag}")
                claim(f"{s.tag}.EngineeringUnits", f"the EngineeringUnits of {s.tag}")

    async def _build_address_space(self) -> None:
        self._check_node_ids()
        idx = self.idx
        folders: dict[str, object] = {}

        async def folder(path: list[str]):
            key = "/".join(path)
            if key not in folders:
                parent = await folder(path[:-1]) if len(path) > 1 else self.server.nodes.objects
                folders[key] = await parent.add_object(
                    ua.NodeId(key, idx), ua.QualifiedName(path[-1], idx)
                )
            return folders[key]

        analog = ua.NodeId(ua.ObjectIds.AnalogItemType)
        base = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
        units_done: set[str] = set()
        for s in self.specs:
            unit = await folder([s.site, s.area, s.line, s.unit])
            nid = ua.NodeId(s.tag, idx)
            initial = "" if s.is_text else (0 if s.data_type != "Double" else math.nan)
            if s.data_type == "Boolean":
                initial = False
            var = await unit.add_variable(
                nid, ua.QualifiedName(s.tag, idx), initial, s.variant_type
            )
            if s.data_type in NUMERIC_TYPES:
                await var.delete_reference(base, ua.ObjectIds.HasTypeDefinition)
                await var.add_reference(analog, ua.ObjectIds.HasTypeDefinition)
                await var.add_property(
                    ua.NodeId(f"{s.tag}.EURange", idx),
                    ua.QualifiedName("EURange", 0),
                    ua.Range(Low=float(s.eu_low), High=float(s.eu_high)),
                )
                await var.add_property(
                    ua.NodeId(f"{s.tag}.EngineeringUnits", idx),
                    ua.QualifiedName("EngineeringUnits", 0),
                    eu_information(s.eng_unit),
                )
            await self._writable(var, s.description or s.tag)
            await self.server.write_attribute_value(
                nid,
                ua.DataValue(
                    ua.Variant(initial, s.variant_type),
                    StatusCode=ua.StatusCode(_SC.BadWaitingForInitialData),
                ),
            )
            self.by_node[nid] = s
            self.by_key[(idx, s.tag)] = s
            self.tag_nodes[s.tag] = nid
            if s.unit not in units_done:
                units_done.add(s.unit)
                for name in CONTEXT_FIELDS:
                    cid = ua.NodeId(f"{s.unit}.{name}", idx)
                    ctx = await unit.add_variable(
                        cid, ua.QualifiedName(name, idx), "", ua.VariantType.String
                    )
                    await self._writable(ctx, f"{name} of {s.unit} (batch context)")
                    self.context_nodes[cid] = (s.unit, name)
                    key = f"{s.unit}.{name}"
                    self.context_of[key] = (s.unit, name)
                    self.by_key[(idx, key)] = ReceiveTag(key, s.unit, "String")
        site = await folder([self.specs[0].site])
        inputs = [
            ua.Argument(
                Name=name,
                DataType=ua.NodeId(vtype.value),
                ValueRank=-1,
                Description=ua.LocalizedText(text),
            )
            for name, vtype, text in _REPORT_ARGS
        ]
        method = await site.add_method(
            ua.NodeId(REPORT_RESULT, idx),
            ua.QualifiedName(REPORT_RESULT, idx),
            _refused,
            inputs,
            [],
        )
        self.report_node, self.report_parent = method.nodeid, site.nodeid

    async def _writable(self, var, description: str) -> None:
        level = ua.DataValue(ua.Variant(_ACCESS, ua.VariantType.Byte))
        await var.write_attribute(ua.AttributeIds.AccessLevel, level)
        await var.write_attribute(ua.AttributeIds.UserAccessLevel, level)
        await var.write_attribute(
            ua.AttributeIds.Historizing, ua.DataValue(ua.Variant(True, ua.VariantType.Boolean))
        )
        await var.write_attribute(
            ua.AttributeIds.Description, ua.DataValue(ua.LocalizedText(description))
        )

    async def _advertise_history(self) -> None:
        """HistoryServerCapabilities: HistoryRead of data, Insert, Replace, Update."""
        values = {**_CAPABILITIES, "MaxReturnDataValues": 10_000}
        for name, value in values.items():
            oid = getattr(ua.ObjectIds, f"HistoryServerCapabilities_{name}", None)
            if oid is None:
                continue
            vtype = ua.VariantType.Boolean if isinstance(value, bool) else ua.VariantType.UInt32
            with contextlib.suppress(ua.UaError):
                await self.server.write_attribute_value(
                    ua.NodeId(oid), ua.DataValue(ua.Variant(value, vtype))
                )

    # ------------------------------------------------------------------ serving
    async def run(self) -> None:
        """Serve until :meth:`stop`; then answer what is queued and close."""
        async with self.server:
            self.serving.set()
            logger.info("receive: serving at %s", self.endpoint)
            status = asyncio.create_task(self._status_loop())
            try:
                await self._stop.wait()
            finally:
                status.cancel()
                await self.store.close()
                self.source.on_stop()

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(self.source.flush)

    def stop(self) -> None:
        """Stop taking requests (queued ones are committed and answered first)."""
        self._stop.set()

    # ------------------------------------------------------------------ sessions
    def session_opened(self, user) -> str | None:
        """A session was activated: a writer (ot-writer) is counted as connected."""
        if not self.roles.may_write(user):
            return None
        name = _user_name(user)
        self.source.on_connect(name)
        return name

    def session_closed(self, writer: str) -> None:
        self.source.on_disconnect(writer)

    # ------------------------------------------------------------------ services
    def _count(self, codes: list[int]) -> None:
        refused: dict[int, int] = {}
        for code in codes:
            if code >> 31:  # Bad
                refused[code] = refused.get(code, 0) + 1
        for code, n in refused.items():
            self.source.on_rejected(status_name(code), n)

    async def write(self, session: InternalSession, params) -> list:
        """The Write service: every value checked, stored and answered with its code.

        ``params`` are the request's values as :func:`connectors.receive_decode.decode_write`
        gives them, or asyncua's ``WriteParameters``.
        """
        values = raw_values(params) if isinstance(params, ua.WriteParameters) else params
        user = session.user
        if not self.roles.may_write(user):
            logger.info(
                "receive: %d values of %s refused: not an %s",
                len(values),
                _user_name(user),
                OT_WRITER,
            )
            self.source.on_rejected("BadUserAccessDenied", len(values))
            return [ua.StatusCode(_SC.BadUserAccessDenied)] * len(values)
        codes = [0] * len(values)
        now_us = _now_us()
        oldest_us = now_us - self.retention_us
        future_s = self.future_s
        job = Job("write", _user_name(user))
        add = job.add
        slots, context_slots, why = [], [], []
        targets = self.by_key
        value_attr = ua.AttributeIds.Value
        for i, (ns, ident, attr, index_range, vtype, raw, is_array, status, t_us) in enumerate(
            values
        ):
            spec = targets.get((ns, ident))
            if spec is None:
                node = ua.NodeId(ident, ns) if isinstance(ident, int | str) else None
                known = node is not None and self._exists(node)
                codes[i] = _SC.BadNotWritable if known else _SC.BadNodeIdUnknown
                continue
            if attr != value_attr:
                codes[i] = _SC.BadNotWritable
                continue
            if index_range:
                codes[i] = _SC.BadWriteNotSupported
                continue
            checked = check_fields(
                spec,
                vtype,
                raw,
                is_array,
                status,
                t_us,
                now_us=now_us,
                oldest_us=oldest_us,
                future_s=future_s,
            )
            if checked.code != GOOD:
                codes[i] = checked.code
                if len(why) < 3:
                    why.append(checked.why)
                continue
            context = self.context_of.get(spec.tag)
            if context is not None:
                job.context.append((*context, checked.time_us, checked.text or ""))
                context_slots.append(i)
                continue
            add(
                spec.tag,
                checked.time_us,
                checked.value,
                checked.text,
                checked.status,
                checked.flags,
            )
            slots.append(i)
        for line in why:
            logger.info("receive: value of %s refused: %s", job.user, line)
        if len(job):
            outcome = await self.store.submit(job)
            for slot, code in zip(slots, outcome.codes, strict=True):
                codes[slot] = code
            for slot in context_slots:
                codes[slot] = outcome.other
            self._later(self._stored(job, outcome.fresh))  # after the answer
        self._count(codes)
        return [_status(c) for c in codes]

    def _later(self, coro) -> None:
        """Run ``coro`` after the current answer is sent (counters, shown values)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _exists(self, node_id: ua.NodeId) -> bool:
        with contextlib.suppress(Exception):
            return self.server.iserver.aspace.get(node_id) is not None
        return False

    async def _stored(self, job: Job, fresh: list[bool]) -> None:
        """Count the values written now; show each tag's newest value in the address space."""
        good = [i for i, written in enumerate(fresh) if written]
        if not good:
            return
        newest = max(job.times[i] for i in good)
        self.source.on_stored(len(good), newest / 1e6)
        latest: dict[str, int] = {}
        for i in good:
            tag = job.tags[i]
            if job.times[i] > self._shown.get(tag, -1) and (
                tag not in latest or job.times[i] > job.times[latest[tag]]
            ):
                latest[tag] = i
        aspace = self.server.iserver.aspace
        for tag, i in latest.items():
            self._shown[tag] = job.times[i]
            spec = self.by_node[self.tag_nodes[tag]]
            value = job.texts[i] if spec.is_text else _typed_value(spec, job.values[i])
            if value is None:  # no value to show (a failed sensor's sample)
                continue
            dv = ua.DataValue(
                ua.Variant(value, spec.variant_type),
                StatusCode=ua.StatusCode(job.status[i]),
                SourceTimestamp=datetime.fromtimestamp(job.times[i] / 1e6, UTC),
                ServerTimestamp=datetime.now(UTC),
            )
            with contextlib.suppress(Exception):  # showing it never fails a stored write
                await aspace.write_attribute_value(self.tag_nodes[tag], ua.AttributeIds.Value, dv)

    async def history_update(self, session: InternalSession, params) -> list:
        """The HistoryUpdate service (see :mod:`connectors.receive_history`)."""
        now_us = _now_us()
        user = session.user
        results, jobs = update_jobs(
            params,
            tags=self.by_node,
            context=self.context_nodes,
            may_write=self.roles.may_write(user),
            user=_user_name(user),
            now_us=now_us,
            oldest_us=now_us - self.retention_us,
            future_s=self.future_s,
        )
        outcomes = await asyncio.gather(*(self.store.submit(job) for _, job, _, _ in jobs))
        all_codes = []
        for (n, job, slots, codes), outcome in zip(jobs, outcomes, strict=True):
            for slot, code in zip(slots, outcome.codes, strict=True):
                codes[slot] = code
            results[n].OperationResults = [ua.StatusCode(c) for c in codes]
            await self._stored(job, outcome.fresh)
            all_codes += codes
        for result in results:
            if not result.OperationResults:
                all_codes.append(result.StatusCode.value)
        self._count(all_codes)
        return results

    async def call(self, session: InternalSession, params: ua.CallParameters) -> list:
        """The Call service: ReportResult here, any other method by asyncua."""
        results = []
        for request in params.MethodsToCall or []:
            if request.MethodId == self.report_node:
                results.append(await self._report(session, request))
            else:
                results.extend(await session.call([request]))
        return results

    async def _report(self, session, request: ua.CallMethodRequest) -> ua.CallMethodResult:
        """``ReportResult(batch_id, attribute, value, eng_unit, source_time)``."""
        from connectors.lab_results import LabResultError, check_result

        result = ua.CallMethodResult()
        code = _SC.Good
        args = list(request.InputArguments or [])
        user = session.user
        if request.ObjectId != self.report_parent:
            code = _SC.BadMethodInvalid
        elif not self.roles.may_write(user):
            code = _SC.BadUserAccessDenied
        elif len(args) < len(_REPORT_ARGS):
            code = _SC.BadArgumentsMissing
        elif len(args) > len(_REPORT_ARGS):
            code = _SC.BadTooManyArguments
        if code != _SC.Good:
            result.StatusCode = ua.StatusCode(code)
            self._count([code])
            return result
        checks = []
        for arg, (name, vtype, _) in zip(args, _REPORT_ARGS, strict=True):
            ok = arg.VariantType == vtype or (
                name == "value" and arg.VariantType in (ua.VariantType.Float, ua.VariantType.Int32)
            )
            ok = ok or (name == "eng_unit" and arg.VariantType == ua.VariantType.Null)
            checks.append(_SC.Good if ok else _SC.BadTypeMismatch)
        if any(checks):
            result.StatusCode = ua.StatusCode(_SC.BadInvalidArgument)
            result.InputArgumentResults = [ua.StatusCode(c) for c in checks]
            self._count([_SC.BadTypeMismatch])
            return result
        batch_id, attribute, value, eng_unit, source_time = (a.Value for a in args)
        value = float(value)
        now_us = _now_us()
        t_us = to_us(source_time) if source_time is not None else now_us
        if t_us > now_us + self.future_s * 1e6 or t_us < now_us - self.retention_us:
            result.StatusCode = ua.StatusCode(_SC.BadInvalidTimestamp)
            self._count([_SC.BadInvalidTimestamp])
            return result
        try:
            check_result(batch_id, attribute, value, eng_unit, source_time)
        except LabResultError as exc:
            logger.info("receive: ReportResult of %s refused: %s", _user_name(user), exc)
            result.StatusCode = ua.StatusCode(_SC.BadInvalidArgument)
            self._count([_SC.BadInvalidArgument])
            return result
        now = pd.Timestamp(now_us, unit="us", tz="UTC")
        job = Job("write", _user_name(user))
        job.lab = pd.DataFrame(
            {
                "batch_id": [batch_id.strip()],
                "attribute": [attribute],
                "value": [value],
                "eng_unit": [eng_unit or ""],
                "source_time": [pd.Timestamp(t_us, unit="us", tz="UTC")],
                "received_time": [now],
                "user": [job.user],
                "source": [self.endpoint],
            }
        )
        outcome = await self.store.submit(job)
        result.StatusCode = ua.StatusCode(outcome.other)
        if outcome.other == _SC.Good:
            self.source.on_stored(1, t_us / 1e6)
        else:
            self._count([outcome.other])
        return result

    # ------------------------------------------------------------------ other push paths
    async def store_rows(self, rows: pd.DataFrame, *, source: PushSource, user: str) -> int:
        """Store historian rows of another push path (PubSub over MQTT) durably.

        The rows (columns time, tag, value, status, quality, flags) go through the checks
        the Write service applies to a value's time and tag (tags of the tag table, numbers
        only; source times within the retention and at most ``future_s`` ahead) and the
        same store: returns once they are committed. Values refused are counted on
        ``source`` by StatusCode (BadNodeIdUnknown: a tag not in the tag table;
        BadTypeMismatch: a String tag; BadInvalidTimestamp; BadEntryExists: a key stored
        with another value); the values stored are counted by the caller, from the number
        returned.

        Returns
        -------
        int
            Values stored (or already stored with the same value).

        Raises
        ------
        RuntimeError
            If the commit failed (nothing acknowledged: the caller keeps the message).
        """
        if rows is None or len(rows) == 0:
            return 0
        now_us = _now_us()
        oldest_us = now_us - self.retention_us
        times = pd.to_datetime(rows["time"], utc=True).astype("datetime64[us, UTC]")
        t_us = times.astype("int64").to_numpy()
        status = (
            rows["status"].to_numpy(dtype=np.int64)
            if "status" in rows
            else np.zeros(len(rows), np.int64)
        )
        flags = (
            rows["flags"].to_numpy(dtype=np.int64)
            if "flags" in rows
            else np.zeros(len(rows), np.int64)
        )
        specs = {s.tag: s for s in self.specs}
        job = Job("write", user)
        refused: dict[str, int] = {}
        for tag, t, v, s, f in zip(
            rows["tag"].tolist(),
            t_us.tolist(),
            rows["value"].to_numpy(dtype=float).tolist(),
            status.tolist(),
            flags.tolist(),
            strict=True,
        ):
            spec = specs.get(tag)
            if spec is None:
                code = "BadNodeIdUnknown"
            elif spec.is_text:
                code = "BadTypeMismatch"
            elif t > now_us + self.future_s * 1e6 or t < oldest_us:
                code = "BadInvalidTimestamp"
            else:
                code = None
                if spec.eu_low is not None and not (spec.eu_low <= v <= spec.eu_high) and v == v:
                    f |= FLAG_OUT_OF_RANGE
                job.add(tag, t, v, None, s, f)
            if code is not None:
                refused[code] = refused.get(code, 0) + 1
        if len(job):
            outcome = await self.store.submit(job)
            if outcome.other != GOOD:
                raise RuntimeError(
                    f"receive: commit of {len(job)} values failed ({status_name(outcome.other)})"
                )
            for c in outcome.codes:
                if c != GOOD:
                    refused[status_name(c)] = refused.get(status_name(c), 0) + 1
        for name, n in refused.items():
            source.on_rejected(name, n)
        return len(rows) - sum(refused.values())


def _typed_value(spec: ReceiveTag, value: float):
    """A stored float as the tag's type; None for NaN where the type has no NaN."""
    if value != value:
        return value if spec.data_type in ("Double", "Float") else None
    if spec.data_type == "Int32":
        return int(value)
    if spec.data_type == "Boolean":
        return bool(value)
    return float(value)


async def _refused(parent, *args):
    """ReportResult's callback for asyncua: never reached (the receiver answers the call)."""
    return ua.StatusCode(_SC.BadUserAccessDenied)
