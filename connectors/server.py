"""The twin served as a live plant over OPC UA (asyncua server).

``biotwin serve-opcua`` simulates the line a horizon ahead (:func:`twin.simulate.simulate`)
and replays it against the clock, ``speed`` twin seconds per wall second: at each twin
sample every tag is written with the twin's time as SourceTimestamp and a StatusCode from
the twin's sensor quality (good -> Good, uncertain -> UncertainLastUsableValue, bad ->
BadSensorFailure). The plant is continuous: horizon k is the slice [k, k+1) of one run of
the line simulated from its start to the end of horizon k+1 (a run of the twin extends a
shorter run of the same seed exactly, and the look-ahead horizon completes the runs in
progress at the seam), computed while horizon k-1 plays. After ``continuous_days`` the cost
of re-simulating from the start is capped: a new plant starts (seed + 1, documented in
docs/opcua.md).

Address space (ISA-95)::

    Objects/<Site>/<Area>/<Line>/<Unit>/<tag>      AnalogItemType, EURange, EngineeringUnits
    Objects/<Site>/<Area>/<Line>/<Unit>/BatchId, Recipe, Phase, State   batch context

Node ids are stable strings in the biotwin namespace: ``ns=<i>;s=BR-201.TIC-201.PV``,
``ns=<i>;s=BR-201.State``. Every tag and context variable is historized (SQLite under the
data dir) so that HistoryRead works, also across a server restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from asyncua import ua

from connectors.opcua_doors import DoorServer
from connectors.security import UserFileManager, server_certificate, trust_validator
from connectors.server_history import SQLiteHistory
from twin.config import PlantConfig
from twin.output import batch_tables
from twin.simulate import UnitSignals, simulate

__all__ = ["NAMESPACE_URI", "STATUS", "TwinServer", "eu_information"]

logger = logging.getLogger(__name__)

NAMESPACE_URI = "urn:biotwin:plant"
APPLICATION_URI = "urn:biotwin:server"
UNECE_URI = "http://www.opcfoundation.org/UA/units/un/cefact"
STATUS = {0: ua.StatusCodes.Good, 1: 0x40900000, 2: ua.StatusCodes.BadSensorFailure}
_DISPLAY = {
    "CEL": "°C",
    "P1": "%",
    "E32": "L/h",
    "BAR": "bar",
    "GL": "g/L",
    "C62": "1",
    "C16": "mm/s",
    "AMP": "A",
    "RPM": "r/min",
    "LTR": "L",
    "L2": "L/min",
    "H61": "mS/cm",
    "NTU": "NTU",
    "GRM": "g",
    "KGM": "kg",
}


def eu_information(code: str) -> ua.EUInformation:
    """EUInformation for a UNECE Rec. 20 common code (unitId -1 for other units)."""
    is_unece = (code in _DISPLAY and code.isupper()) or (code.isalnum() and code.isupper())
    unit_id = -1
    if is_unece and len(code) <= 3:
        unit_id = 0
        for ch in code:
            unit_id = (unit_id << 8) | ord(ch)
    return ua.EUInformation(
        NamespaceUri=UNECE_URI if unit_id >= 0 else "urn:biotwin:units",
        UnitId=unit_id,
        DisplayName=ua.LocalizedText(_DISPLAY.get(code, code)),
        Description=ua.LocalizedText(code),
    )


@dataclass
class _Context:
    """Batch context of one unit as change points on the sample grid."""

    sample: np.ndarray  # first sample of each interval
    batch_id: list[str]
    recipe: list[str]
    phase: list[str]
    state: list[str]


class TwinServer:
    """An asyncua server that replays the twin in (accelerated) real time.

    Parameters
    ----------
    config : PlantConfig
        The plant.
    endpoint : str
        ``opc.tcp://host:port/path``.
    data_dir : Path
        Where the certificates, users and the server's history live.
    seed : int
        Seed of the first simulated horizon.
    speed : float
        Twin seconds per wall second (60: one twin minute per second).
    horizon_days : float
        Days published per simulated slice.
    continuous_days : float
        How long one plant runs continuously before a new one (next seed) starts.
    security : {"none", "sign", "encrypt", "all"}
        Endpoints offered; "all" offers None, Sign and SignAndEncrypt (Basic256Sha256).
    start : datetime, optional
        Wall-clock time of twin time 0 (default: now, floored to the minute).
    allow_anonymous : bool
        Let anonymous clients in (read only). Off by default: clients sign in with a user
        name and password (encrypted with the server's certificate, on every endpoint) or
        a certificate in ``pki/trusted`` (see connectors/opcua_doors.py).
    """

    def __init__(
        self,
        config: PlantConfig,
        endpoint: str,
        data_dir: Path,
        *,
        seed: int = 7,
        speed: float = 60.0,
        horizon_days: float = 3.0,
        continuous_days: float = 90.0,
        security: str = "all",
        start: datetime | None = None,
        history_days: float = 7.0,
        allow_anonymous: bool = False,
        drain_s: float = 0.0,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0; got {speed}")
        if security not in ("none", "sign", "encrypt", "all"):
            raise ValueError(f"security must be none, sign, encrypt or all; got {security!r}")
        self.config = config
        self.endpoint = endpoint
        self.data_dir = Path(data_dir)
        self.seed = seed
        self.speed = speed
        self.horizon_days = horizon_days
        self.continuous_days = max(continuous_days, horizon_days)
        self.security = security
        self.history_days = history_days
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        self.start = start or now
        self.allow_anonymous = allow_anonymous
        #: seconds the sessions keep being served after the last sample on a stop, so that
        #: subscriptions deliver it (more than a client's publishing interval)
        self.drain_s = drain_s
        users = UserFileManager(
            self.data_dir / "users.toml",
            allow_anonymous=allow_anonymous,
            trusted=self.data_dir / "pki" / "trusted",
        )
        self.server = DoorServer(users, allow_anonymous=allow_anonymous)
        self.idx = 0
        self.tag_nodes: dict[str, list[ua.NodeId]] = {}  # unit -> node ids in tag order
        self.context_nodes: dict[str, dict[str, ua.NodeId]] = {}
        self.samples_published = 0
        self.values_published = 0
        self._stop = asyncio.Event()
        self.publishing_done = asyncio.Event()
        self.serving = asyncio.Event()
        self.history: SQLiteHistory | None = None

    # ------------------------------------------------------------------ setup
    async def setup(self) -> None:
        """Certificates, endpoints, address space and history."""
        server = self.server
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("biotwin plant twin")
        await server.set_application_uri(APPLICATION_URI)
        policies = {
            "none": [ua.SecurityPolicyType.NoSecurity],
            "sign": [ua.SecurityPolicyType.Basic256Sha256_Sign],
            "encrypt": [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
        }
        chosen = (
            [p for v in policies.values() for p in v]
            if self.security == "all"
            else policies[self.security]
        )
        server.set_security_policy(chosen, permission_ruleset=server.rules)
        # the certificate also with --security none: clients encrypt passwords with it
        cert, key = await server_certificate(self.data_dir / "pki", APPLICATION_URI)
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        if self.security != "none":  # a None channel's client certificate means nothing
            server.set_certificate_validator(await trust_validator(self.data_dir / "pki"))
        logger.info(
            "identities: user name (password encrypted with the server certificate), "
            "certificate in %s; anonymous %s",
            self.data_dir / "pki" / "trusted",
            "on" if self.allow_anonymous else "off",
        )
        history = self.data_dir / "opcua-history.sqlite"
        history.parent.mkdir(parents=True, exist_ok=True)
        storage = SQLiteHistory(str(history))
        await storage.init()
        server.iserver.history_manager.set_storage(storage)
        self.history = storage
        self.idx = await server.register_namespace(NAMESPACE_URI)
        await self._build_address_space()

    async def _build_address_space(self) -> None:
        plant = self.config.plant
        idx = self.idx
        parent = self.server.nodes.objects
        path = []
        for level in (plant.site, plant.area, plant.line):
            path.append(level)
            parent = await parent.add_object(
                ua.NodeId("/".join(path), idx), ua.QualifiedName(level, idx)
            )
        analog = ua.NodeId(ua.ObjectIds.AnalogItemType)
        base = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
        historized = []
        for unit in self.config.units:
            spec = self.config.unit_classes[unit.unit_class]
            folder = await parent.add_object(
                ua.NodeId(unit.id, idx), ua.QualifiedName(unit.id, idx)
            )
            ids = []
            for sig in spec.signals:
                tag = sig.tag.format(n=unit.loop_number)
                nid = ua.NodeId(f"{unit.id}.{tag}", idx)
                var = await folder.add_variable(
                    nid, ua.QualifiedName(tag, idx), math.nan, ua.VariantType.Double
                )
                await var.delete_reference(base, ua.ObjectIds.HasTypeDefinition)
                await var.add_reference(analog, ua.ObjectIds.HasTypeDefinition)
                await var.write_attribute(
                    ua.AttributeIds.Description, ua.DataValue(ua.LocalizedText(sig.description))
                )
                await var.add_property(
                    ua.NodeId(f"{unit.id}.{tag}.EURange", idx),
                    ua.QualifiedName("EURange", 0),
                    ua.Range(Low=float(sig.low), High=float(sig.high)),
                )
                await var.add_property(
                    ua.NodeId(f"{unit.id}.{tag}.EngineeringUnits", idx),
                    ua.QualifiedName("EngineeringUnits", 0),
                    eu_information(sig.eng_unit),
                )
                await var.write_attribute(
                    ua.AttributeIds.Historizing,
                    ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)),
                )
                ids.append(nid)
                historized.append(var)
                await self.server.write_attribute_value(nid, self._initial())
                await self.history.save_node_value(nid, self._initial())
            self.tag_nodes[unit.id] = ids
            ctx = {}
            for name in ("BatchId", "Recipe", "Phase", "State"):
                nid = ua.NodeId(f"{unit.id}.{name}", idx)
                var = await folder.add_variable(
                    nid, ua.QualifiedName(name, idx), "", ua.VariantType.String
                )
                await self.server.write_attribute_value(nid, self._initial(""))
                ctx[name] = nid
                historized.append(var)
            self.context_nodes[unit.id] = ctx
        # Every published sample goes to history (see _publish), not only changes: a
        # setpoint that stays put still has a value at every sample to backfill.
        for var in historized:
            await self.history.new_historized_node(var.nodeid, timedelta(days=self.history_days))
        logger.info("address space: %d tag variables", sum(map(len, self.tag_nodes.values())))

    def _initial(self, value: float | str = math.nan) -> ua.DataValue:
        """Value of a variable before the first sample (NaN for a tag, "" for batch context),
        BadWaitingForInitialData, stamped one sample before twin time 0 (so that it sorts
        before every real sample)."""
        before = self.start - timedelta(minutes=self.config.plant.sample_interval_min)
        kind = ua.VariantType.String if isinstance(value, str) else ua.VariantType.Double
        return ua.DataValue(
            ua.Variant(value, kind),
            StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData),
            SourceTimestamp=before,
            ServerTimestamp=datetime.now(UTC),
        )

    # ------------------------------------------------------------------ replay
    def _horizon(self, k: int):
        """Readings and batch context of horizon ``k`` (twin time k * horizon_days on).

        Horizon k is plant ``k // per_plant`` (seed + that) at slice ``j = k % per_plant``,
        cut from a run of the line simulated to the end of slice j + 1.
        """
        per_plant = max(1, int(self.continuous_days // self.horizon_days))
        plant, j = divmod(k, per_plant)
        per = self._samples_per_horizon()
        sim = simulate(self.config, days=(j + 2) * self.horizon_days, seed=self.seed + plant)
        lo, hi = j * per, (j + 1) * per
        readings = {}
        for unit in self.config.units:
            r = sim.read_unit(unit.id)
            readings[unit.id] = UnitSignals(
                r.unit_id,
                r.tags,
                np.ascontiguousarray(r.values[:, lo:hi]),
                np.ascontiguousarray(r.quality[:, lo:hi]),
                [f for f in r.faults if f[3] > lo and f[2] < hi],
            )
        contexts = {
            u: _Context(c.sample - lo, c.batch_id, c.recipe, c.phase, c.state)
            for u, c in self._contexts(sim).items()
        }
        return readings, contexts

    def _samples_per_horizon(self) -> int:
        return round(self.horizon_days * 86400 / (self.config.plant.sample_interval_min * 60.0))

    def _contexts(self, sim) -> dict[str, _Context]:
        tables = batch_tables(sim)
        dt = pd.Timedelta(minutes=self.config.plant.sample_interval_min)
        start = sim.start
        phases = tables["phases"].merge(tables["batches"][["batch_id", "recipe"]], on="batch_id")
        rows = [
            (r.unit, r.start_time, r.end_time, r.batch_id, r.recipe, r.phase, "running")
            for r in phases.itertuples()
        ]
        sched = tables["schedule"]
        rows += [
            (r.unit, r.start_time, r.end_time, r.batch_id or "", "", r.activity, r.activity)
            for r in sched[sched["activity"].isin(["cip", "sip", "pm", "repair"])].itertuples()
        ]
        out = {}
        for unit in self.config.units:
            mine = sorted((r for r in rows if r[0] == unit.id), key=lambda r: r[1])
            samples, b, rc, ph, st = [0], [""], [""], [""], ["idle"]
            for _, t0, t1, batch, recipe, phase, state in mine:
                s0 = int((t0 - start) / dt)
                s1 = int((t1 - start) / dt) if pd.notna(t1) else 1 << 40
                samples += [s0, s1]
                b += [batch or "", ""]
                rc += [recipe or "", ""]
                ph += [phase, ""]
                st += [state, "idle"]
            order = np.argsort(np.asarray(samples), kind="stable")
            out[unit.id] = _Context(
                np.asarray(samples)[order],
                [b[i] for i in order],
                [rc[i] for i in order],
                [ph[i] for i in order],
                [st[i] for i in order],
            )
        return out

    async def run(
        self,
        *,
        until_samples: int | None = None,
        hold: asyncio.Event | None = None,
        first_sample: int = 0,
    ) -> None:
        """Serve until :meth:`stop`; publish every sample, or the first ``until_samples``
        (then keep serving, history included, without new values). With ``hold``, the
        first sample waits for that event (a test starts its client first).
        ``first_sample`` resumes the replay there (a restarted server continues)."""
        dt_s = self.config.plant.sample_interval_min * 60.0
        per_horizon = self._samples_per_horizon()
        loop = asyncio.get_running_loop()
        k = first_sample // per_horizon  # a restarted server resumes in its horizon
        pending = loop.run_in_executor(None, self._horizon, k)
        async with self.server:
            logger.info("serving the twin at %s (speed %g)", self.endpoint, self.speed)
            self.serving.set()
            if hold is not None:
                await hold.wait()
            wall0 = loop.time()
            done = behind = False
            while not self._stop.is_set() and not done:
                readings, contexts = await pending
                pending = loop.run_in_executor(None, self._horizon, k + 1)
                last_ctx: dict[str, tuple] = {}
                for i in range(per_horizon):
                    n = k * per_horizon + i
                    if n < first_sample:
                        continue
                    if until_samples is not None and n >= until_samples:
                        done = True
                        break
                    delay = wall0 + (n - first_sample) * dt_s / self.speed - loop.time()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), delay)
                    else:
                        # behind the clock (a speed beyond what this machine publishes):
                        # catch up, but let the sessions' requests and publishes through
                        # between samples, or clients time out on a busy server
                        await asyncio.sleep(0)
                        if delay < -5.0 and not behind:
                            behind = True
                            logger.warning(
                                "publishing %.0f s behind the clock: speed %g is more than "
                                "this machine serves",
                                -delay,
                                self.speed,
                            )
                    if self._stop.is_set():
                        break
                    ts = self.start + timedelta(seconds=n * dt_s)
                    await self._publish(i, ts, readings, contexts, last_ctx)
                    self.samples_published += 1
                k += 1
            self.publishing_done.set()
            await self._stop.wait()
            pending.cancel()
            if self.drain_s > 0:  # the last sample reaches the subscribers before we close
                await asyncio.sleep(self.drain_s)

    async def _publish(self, i, ts, readings, contexts, last_ctx) -> None:
        write = self.server.write_attribute_value
        save = self.history.save_node_value
        server_ts = datetime.now(UTC)
        for unit_id, ids in self.tag_nodes.items():
            r = readings[unit_id]
            values, quality = r.values[:, i].tolist(), r.quality[:, i].tolist()
            for nid, v, q in zip(ids, values, quality, strict=True):
                dv = ua.DataValue(
                    ua.Variant(v, ua.VariantType.Double),
                    StatusCode=ua.StatusCode(STATUS[q]),
                    SourceTimestamp=ts,
                    ServerTimestamp=server_ts,
                )
                await write(nid, dv)
                await save(nid, dv)
            self.values_published += len(ids)
            ctx = contexts[unit_id]
            j = int(np.searchsorted(ctx.sample, i, side="right")) - 1
            now = (ctx.batch_id[j], ctx.recipe[j], ctx.phase[j], ctx.state[j])
            if last_ctx.get(unit_id) != now:
                last_ctx[unit_id] = now
                for name, value in zip(("BatchId", "Recipe", "Phase", "State"), now, strict=True):
                    nid = self.context_nodes[unit_id][name]
                    dv = ua.DataValue(
                        ua.Variant(value, ua.VariantType.String),
                        SourceTimestamp=ts,
                        ServerTimestamp=server_ts,
                    )
                    await write(nid, dv)
                    await save(nid, dv)

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the current sample."""
        self._stop.set()
