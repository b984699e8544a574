"""OPC UA end to end on 127.0.0.1: our twin server, our ingest, the historian on disk."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from asyncua import Client, Server, ua
from conftest import PASSWORDS, write_users

from connectors.historian import (
    FLAG_BACKFILLED,
    FLAG_BAD_STATUS,
    FLAG_NAN,
    FLAG_OUT_OF_RANGE,
    Historian,
)
from connectors.ingest import Ingest, IngestError, read_tag_map
from connectors.security import client_certificate
from connectors.server import NAMESPACE_URI, TwinServer

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_rows(historian: Historian) -> tuple[int, int]:
    """Rows on disk and distinct (tag, time) keys: equal when nothing was written twice."""
    files = [str(p) for p in historian.segments.rglob("*.parquet")]
    con = duckdb.connect()
    total = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0]
    distinct = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT tag, time FROM read_parquet(?))", [files]
    ).fetchone()[0]
    return total, distinct


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))


async def until(done, timeout_s: float = 60.0) -> None:
    """Wait until ``done()`` holds (or time out), then one more flush: the server simulates
    its next horizon meanwhile, so a fixed sleep fails on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)


@pytest.fixture
def store(tmp_path) -> Path:
    write_users(tmp_path / "users.toml")
    return tmp_path


def test_every_value_the_server_produced_is_stored_once(config, store):
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/"

    async def main():
        server = TwinServer(
            config, url, store, speed=1800, horizon_days=2, security="none", allow_anonymous=True
        )
        await server.setup()
        historian = Historian(store / "historian")
        # 30 samples a second while the server simulates its next horizon beside (the GIL
        # holds its publishing up to ~1.5 s): the queue must hold that, asyncua's server
        # drops the oldest without the Overflow bit
        ingest = Ingest(url, historian, store / "spool", publishing_ms=200, queue_size=200)
        serving = asyncio.create_task(server.run(until_samples=60, hold=ingest.connected))
        await server.serving.wait()
        job = asyncio.create_task(ingest.run())
        await server.publishing_done.wait()
        expected = server.values_published + sum(map(len, server.tag_nodes.values()))
        await until(lambda: ingest.state.received >= expected)
        ingest.stop()
        await job
        server.stop()
        await serving
        return server, ingest, historian

    server, _ingest, historian = run(main())
    n_tags = sum(len(v) for v in server.tag_nodes.values())
    assert server.values_published == 60 * n_tags
    # every published value plus each tag's initial (BadWaitingForInitialData) value
    assert historian.count() == server.values_published + n_tags
    total, distinct = raw_rows(historian)
    assert total == distinct  # nothing written twice
    tags = historian.tags()
    assert (tags["rows"] == 61).all()
    temp = tags.set_index("tag").loc["TIC-201.PV"]
    assert temp["eng_unit"] == "CEL" and temp["unit"] == "BR-201" and temp["eu_high"] == 150
    data = historian.query(["TIC-201.PV"])
    start = pd.Timestamp(server.start)
    assert data["time"].iloc[1] == start  # source timestamps are the twin's
    assert data["flags"].iloc[0] & FLAG_BAD_STATUS  # the initial value is flagged, not dropped
    ctx = historian.batch_context()
    assert set(ctx["unit"]) == {u.id for u in config.units}


def test_a_live_value_notified_after_the_backfill_read_it_is_stored_once(store):
    """The race behind a duplicate at a server restart: the backfill's HistoryRead already
    returned the newest samples when the subscription's notification of one of them (sent
    within the publishing interval) arrives, after the values held during the backfill were
    accepted. It is a duplicate, not a clock going back; a genuinely older value still is."""
    from datetime import UTC, datetime, timedelta

    from connectors.ingest import TagSpec

    t0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    ingest = Ingest("opc.tcp://127.0.0.1:4840/", Historian(store / "h"), store / "spool",
                    last_times={"PR.T": pd.Timestamp(t0)})  # fmt: skip
    spec = TagSpec(node_id="ns=2;s=PR.T", tag="PR.T")
    ingest._specs = {7: spec}
    ingest.state.last_value["PR.T"] = 1.0

    def dv(minutes: int) -> ua.DataValue:
        return ua.DataValue(
            ua.Variant(float(minutes), ua.VariantType.Double),
            SourceTimestamp=(t0 + timedelta(minutes=minutes)).replace(tzinfo=None),
        )

    ingest._overlap = {}
    ingest._accept_history(spec, [dv(m) for m in (30, 60, 90)])  # the backfill's read
    ingest._release([[ua.MonitoredItemNotification(ClientHandle=7, Value=dv(30))]])  # held
    assert ingest.state.duplicates == 1
    late = [ua.MonitoredItemNotification(ClientHandle=7, Value=dv(60))]
    ingest._accept(late)  # the notification of a value the read returned, arriving late
    assert ingest.state.duplicates == 2 and ingest.state.clock_back == 0
    # a tag that sends nothing newer: what the read returned is forgotten after a few
    # publishing intervals, and an old value is then a clock going back again
    ingest._overlap_until = time.monotonic() - 1.0
    ingest._accept([ua.MonitoredItemNotification(ClientHandle=7, Value=dv(60))])
    assert ingest.state.clock_back == 1 and ingest._overlap is None
    ingest.state.clock_back = 0
    ingest._overlap = {}  # the same read again, for the rest of the story
    ingest.state.last["PR.T"] = t0
    ingest._pending, ingest._pending_rows = [], 0
    ingest._accept_history(spec, [dv(m) for m in (30, 60, 90)])
    ingest._release([])
    ingest._accept([ua.MonitoredItemNotification(ClientHandle=7, Value=dv(120))])
    assert "PR.T" not in ingest._overlap  # live past what was read: the overlap is done
    ingest._accept(late)  # now it is older than the stored values: the clock went back
    assert ingest.state.clock_back == 1
    stored = pd.concat(ingest._pending)
    assert sorted(stored["time"].dt.minute + 60 * stored["time"].dt.hour) == [
        750,
        780,
        780,
        810,
        840,
    ]  # 12:30, 13:00 (twice: once as the clock-back value, flagged), 13:30, 14:00


def test_server_restart_is_backfilled_without_gap_or_duplicates(config, store):
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/"

    async def main():
        historian = Historian(store / "historian")
        first = TwinServer(
            config, url, store, speed=1800, horizon_days=2, security="none", allow_anonymous=True
        )
        await first.setup()
        ingest = Ingest(
            url, historian, store / "spool", publishing_ms=200, queue_size=200, backoff_s=(0.5, 2.0)
        )
        serving = asyncio.create_task(first.run(until_samples=30, hold=ingest.connected))
        await first.serving.wait()
        job = asyncio.create_task(ingest.run())
        await first.publishing_done.wait()
        await asyncio.sleep(1.5)
        first.stop()  # the server goes away...
        await serving
        second = TwinServer(
            config,
            url,
            store,
            speed=1800,
            horizon_days=2,
            security="none",
            start=first.start,
            allow_anonymous=True,
        )
        await second.setup()  # ...and comes back, with its history on disk
        serving = asyncio.create_task(second.run(until_samples=60, first_sample=30))
        await second.publishing_done.wait()  # samples 30-59 are out before the ingest is back
        for _ in range(100):
            await asyncio.sleep(0.2)
            if ingest.reconnects and ingest.connected.is_set():
                break
        await asyncio.sleep(1.5)
        ingest.stop()
        await job
        second.stop()
        await serving
        return first, ingest, historian

    first, ingest, historian = run(main())
    n_tags = sum(len(v) for v in first.tag_nodes.values())
    assert ingest.reconnects >= 1

    assert historian.count() == 60 * n_tags + n_tags  # no gap
    total, distinct = raw_rows(historian)
    assert total == distinct  # no duplicates
    data = historian.query(["TIC-201.PV"])
    assert len(data) == 61
    late = data[data["time"] >= pd.Timestamp(first.start) + pd.Timedelta(minutes=30)]
    assert len(late) == 30 and (late["flags"] & FLAG_BACKFILLED).all()


def test_wrong_password_and_untrusted_certificate_are_refused(config, store):
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/"

    async def main():
        server = TwinServer(config, url, store, speed=60, horizon_days=2, security="all")
        await server.setup()
        serving = asyncio.create_task(server.run(until_samples=5))
        await server.serving.wait()
        historian = Historian(store / "historian")
        outcomes = {}
        wrong = Ingest(url, historian, store / "spool", user="qa", password="not-it")
        with pytest.raises(IngestError) as err:
            await wrong.run()
        outcomes["password"] = str(err.value)
        cert, key = await client_certificate(store / "rogue", "urn:biotwin:rogue", trust=False)
        rogue = Ingest(
            url,
            historian,
            store / "spool",
            user="qa",
            password=PASSWORDS["qa"],
            security="SignAndEncrypt",
            certificate=cert,
            private_key=key,
        )
        with pytest.raises(IngestError) as err:
            await rogue.run()
        outcomes["certificate"] = str(err.value)
        cert, key = await client_certificate(store / "pki", "urn:biotwin:ingest")
        good = Ingest(
            url,
            historian,
            store / "spool",
            user="qa",
            password=PASSWORDS["qa"],
            security="SignAndEncrypt",
            certificate=cert,
            private_key=key,
        )
        job = asyncio.create_task(good.run())
        await asyncio.wait_for(good.connected.wait(), 60)
        good.stop()
        await job
        server.stop()
        await serving
        return outcomes

    outcomes = run(main())
    assert "refused user 'qa': wrong user name or password" in outcomes["password"]
    assert "refused our certificate" in outcomes["certificate"]


async def _small_server(url: str):
    """An independent little server (plain asyncua): numeric and string ids, bad values."""
    server = Server()
    await server.init()
    server.set_endpoint(url)
    idx = await server.register_namespace("urn:test:small")
    obj = await server.nodes.objects.add_object(idx, "Skid")
    nodes = {
        "flow": await obj.add_variable(ua.NodeId(1001, idx), "Flow", 1.0),
        "level": await obj.add_variable(ua.NodeId("Tank.Level", idx), "Level", 50.0),
        "count": await obj.add_variable(
            ua.NodeId("Counter", idx), "Counter", 0, ua.VariantType.Int32
        ),
    }
    await nodes["level"].add_property(
        ua.NodeId("Tank.Level.EURange", idx),
        ua.QualifiedName("EURange", 0),
        ua.Range(Low=0.0, High=100.0),
    )
    return server, idx, nodes


def test_any_server_through_a_tag_map_with_bad_values_flagged(store):
    url = f"opc.tcp://127.0.0.1:{free_port()}/small/"
    tag_map = store / "tags.csv"

    async def main():
        server, idx, nodes = await _small_server(url)
        tag_map.write_text(
            "node_id,tag,unit\n"
            f"ns={idx};i=1001,FT-1.PV,SKID\n"
            f"ns={idx};s=Tank.Level,LT-1.PV,SKID\n"
            f"ns={idx};s=Counter,CNT,SKID\n"
        )
        historian = Historian(store / "historian")
        async with server:
            ingest = Ingest(
                url, historian, store / "spool", tag_map=read_tag_map(tag_map), publishing_ms=100
            )
            job = asyncio.create_task(ingest.run())
            await asyncio.wait_for(ingest.connected.wait(), 30)
            t0 = pd.Timestamp.now(tz="UTC").floor("s")
            for i in range(1, 6):
                ts = (t0 + pd.Timedelta(seconds=i)).to_pydatetime()
                await nodes["count"].write_value(
                    ua.DataValue(ua.Variant(i, ua.VariantType.Int32), SourceTimestamp=ts)
                )
            ts = (t0 + pd.Timedelta(seconds=10)).to_pydatetime()
            await nodes["flow"].write_value(ua.DataValue(ua.Variant(math.nan), SourceTimestamp=ts))
            await nodes["level"].write_value(ua.DataValue(ua.Variant(130.0), SourceTimestamp=ts))
            await server.write_attribute_value(
                nodes["count"].nodeid,
                ua.DataValue(
                    ua.Variant(6, ua.VariantType.Int32),
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure),
                    SourceTimestamp=ts,
                ),
            )
            await asyncio.sleep(1.5)
            ingest.stop()
            await job
        return historian, t0

    historian, t0 = run(main())
    data = historian.query(start=t0 + pd.Timedelta(seconds=1))
    by_tag = {t: g.reset_index(drop=True) for t, g in data.groupby("tag")}
    assert by_tag["CNT"]["value"].tolist()[:5] == [1, 2, 3, 4, 5]
    assert len(by_tag["CNT"]) == 6  # the bad sample is stored too...
    assert by_tag["CNT"]["quality"].iloc[-1] == 2 and by_tag["CNT"]["flags"].iloc[-1] & 4
    assert by_tag["FT-1.PV"]["flags"].iloc[-1] & FLAG_NAN
    assert by_tag["LT-1.PV"]["flags"].iloc[-1] & FLAG_OUT_OF_RANGE
    assert by_tag["LT-1.PV"]["value"].iloc[-1] == 130.0  # stored as sent, flagged


def test_unknown_node_ids_in_the_tag_map_are_named(store):
    url = f"opc.tcp://127.0.0.1:{free_port()}/small/"
    tag_map = store / "tags.csv"

    async def main():
        server, idx, _ = await _small_server(url)
        tag_map.write_text(f"node_id,tag\nns={idx};i=1001,FT-1.PV\nns={idx};s=Nope.PV,X\n")
        async with server:
            ingest = Ingest(
                url, Historian(store / "h"), store / "spool", tag_map=read_tag_map(tag_map)
            )
            with pytest.raises(IngestError, match=r"1 node id\(s\) not found .*s=Nope.PV"):
                await ingest.run()

    run(main())
    with pytest.raises(IngestError, match=r"must look like opc\.tcp://HOST:PORT"):
        Ingest("localhost:4840", Historian(store / "h"), store / "spool")


def test_kill_9_of_the_ingest_leaves_the_historian_intact(config, store):
    """The `biotwin ingest` process is killed mid-run; what it committed is still there."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "biotwin",
            "serve-opcua",
            "--endpoint",
            url,
            "--speed",
            "3600",
            "--security",
            "none",
            "--allow-anonymous",
            "--days",
            "1",
            "--data-dir",
            str(store / "srv"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ingest = None
    log = open(store / "ingest.log", "w")  # noqa: SIM115 (closed in finally)
    try:
        lines = []
        while not any("serving the twin" in line for line in lines) and len(lines) < 20:
            lines.append(server.stdout.readline())  # ends with the process at worst
        assert "serving the twin" in lines[-1], lines
        ingest = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "biotwin",
                "ingest",
                url,
                "--publishing-ms",
                "200",
                "--data-dir",
                str(store),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        historian = Historian(store / "historian")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and historian.count() < 5000:
            time.sleep(0.5)
        before = historian.count()
        assert before >= 5000, (store / "ingest.log").read_text()[-3000:]
        os.kill(ingest.pid, signal.SIGKILL)
        ingest.wait()
        after = Historian(store / "historian")  # opens; cleans any half-written file
        assert not list((store / "historian").rglob("*.tmp"))
        assert after.count() >= before
        total, distinct = raw_rows(after)
        assert total == distinct
    finally:
        if ingest is not None and ingest.poll() is None:
            ingest.kill()
            ingest.wait()
        log.close()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_a_plain_client_browses_engineering_units(config, store):
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/"

    async def main():
        server = TwinServer(
            config, url, store, speed=600, horizon_days=2, security="none", allow_anonymous=True
        )
        await server.setup()
        serving = asyncio.create_task(server.run(until_samples=20))
        await server.publishing_done.wait()
        async with Client(url) as client:
            idx = await client.get_namespace_index(NAMESPACE_URI)
            plant = config.plant
            path = [
                f"{idx}:{plant.site}",
                f"{idx}:{plant.area}",
                f"{idx}:{plant.line}",
                f"{idx}:BR-201",
                f"{idx}:TIC-201.PV",
            ]
            node = await client.nodes.objects.get_child(path)
            eu = await (await node.get_child("0:EngineeringUnits")).read_value()
            rng = await (await node.get_child("0:EURange")).read_value()
            typedef = await node.read_type_definition()
            history = await node.read_raw_history()
            state = await client.get_node(ua.NodeId("BR-201.State", idx)).read_value()
        server.stop()
        await serving
        return eu, rng, typedef, history, state

    eu, rng, typedef, history, state = run(main())
    assert (
        eu.UnitId == (ord("C") << 16) | (ord("E") << 8) | ord("L") and eu.DisplayName.Text == "°C"
    )
    assert (rng.Low, rng.High) == (0.0, 150.0)
    assert typedef == ua.NodeId(ua.ObjectIds.AnalogItemType)
    assert len(history) >= 20
    assert state in {"idle", "running", "cip", "sip", "pm", "repair"}


def test_served_plant_continues_across_horizons(config, store):
    """Horizon 1 continues horizon 0 (the same plant, not an empty one), and both are slices
    of one continuous run of the twin."""
    from twin.simulate import simulate

    server = TwinServer(config, "opc.tcp://127.0.0.1:4840/t/", store, seed=3, horizon_days=1.0)
    r0, c0 = server._horizon(0)
    r1, c1 = server._horizon(1)
    per = server._samples_per_horizon()
    whole = simulate(config, days=3.0, seed=3)
    contexts = server._contexts(whole)
    carried = 0
    for unit in config.units:
        ref = whole.read_unit(unit.id)
        np.testing.assert_array_equal(r0[unit.id].values, ref.values[:, :per])
        np.testing.assert_array_equal(r1[unit.id].values, ref.values[:, per : 2 * per])
        np.testing.assert_array_equal(r1[unit.id].quality, ref.quality[:, per : 2 * per])

        def at(ctx, i):
            j = int(np.searchsorted(ctx.sample, i, side="right")) - 1
            return ctx.batch_id[j], ctx.phase[j], ctx.state[j]

        for i in (0, per // 2, per - 1):
            assert at(c1[unit.id], i) == at(contexts[unit.id], per + i), (unit.id, i)
        last, first = at(c0[unit.id], per - 1), at(c1[unit.id], 0)
        carried += bool(last[0]) and last[0] == first[0]
    assert carried >= 1  # a batch running at the seam is still running after it
    # after continuous_days a new plant starts (cost of re-simulating is capped)
    capped = TwinServer(
        config, "opc.tcp://127.0.0.1:4840/t/", store, seed=3, horizon_days=1.0, continuous_days=1
    )
    fresh, _ = capped._horizon(1)
    np.testing.assert_array_equal(
        fresh["BR-201"].values, simulate(config, days=2, seed=4).read_unit("BR-201").values[:, :per]
    )


def test_a_context_change_stamped_before_the_stored_context_is_kept_valid(tmp_path):
    """A server whose context variables first carry its own clock, then the plant's (older)
    time: the change is stored from the current record's start, and nothing raises in the
    publish path (an exception there loses the publish's values)."""
    historian = Historian(tmp_path / "historian")
    ingest = Ingest("opc.tcp://127.0.0.1:4840/", historian, tmp_path / "spool")
    late, early = (
        pd.Timestamp("2026-12-01 21:27:30", tz="UTC"),
        pd.Timestamp("2026-12-01 21:27:00", tz="UTC"),
    )
    ingest._context_change("BR-201", "State", late, "")
    ingest._context_change("BR-201", "State", early, "running")
    ingest._context_change("BR-201", "BatchId", early + pd.Timedelta(minutes=5), "B00001")
    ctx = historian.batch_context("BR-201").sort_values("start_time")
    # the late change supersedes the record it follows (same start), then a valid interval
    assert list(ctx["state"]) == ["running", "running"]
    assert list(ctx["start_time"]) == [late, early + pd.Timedelta(minutes=5)]
    assert ctx["end_time"].iloc[0] == ctx["start_time"].iloc[1]
    assert ctx["batch_id"].iloc[-1] == "B00001"


def test_a_subscription_the_server_lost_is_made_again(store):
    """The session lives but the server deleted the subscription (asyncua's client then
    stops publishing for good, without an error): the ingest notices the silence, reconnects
    and stores what the server produces afterwards."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/small/"
    tag_map = store / "tags.csv"

    async def main():
        server, idx, nodes = await _small_server(url)
        tag_map.write_text(f"node_id,tag,unit\nns={idx};s=Counter,CNT,SKID\n")
        historian = Historian(store / "historian")
        async with server:
            ingest = Ingest(
                url,
                historian,
                store / "spool",
                tag_map=read_tag_map(tag_map),
                publishing_ms=100,
                backoff_s=(0.2, 1.0),
            )
            job = asyncio.create_task(ingest.run())
            await asyncio.wait_for(ingest.connected.wait(), 30)
            service = server.iserver.subscription_service
            await service.delete_subscriptions(list(service.subscriptions))
            t0 = pd.Timestamp.now(tz="UTC").floor("s")
            for i in range(1, 31):  # 15 s of values, one every 0.5 s
                ts = (t0 + pd.Timedelta(seconds=i)).to_pydatetime()
                await nodes["count"].write_value(
                    ua.DataValue(ua.Variant(i, ua.VariantType.Int32), SourceTimestamp=ts)
                )
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)
            ingest.stop()
            await job
        return historian, ingest, t0

    historian, ingest, t0 = run(main())
    assert ingest.reconnects >= 1
    late = historian.query(["CNT"], start=t0 + pd.Timedelta(seconds=20))
    assert late["value"].tolist() == list(range(20, 31))  # after the reconnection, every one
