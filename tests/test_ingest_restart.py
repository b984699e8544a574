"""The ingest against a store that already holds data: backfill on start, a clock gone back.

A plain asyncua server on 127.0.0.1 keeps the history of its variables (asyncua's
``HistoryDict``, every written value saved, as the twin server does); the test writes the
samples with the source times it chooses, so it knows every value the server holds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import timedelta

import duckdb
import pandas as pd
import pytest
from asyncua import Server, ua
from asyncua.server.history import HistoryDict

from connectors import manifest
from connectors.historian import FLAG_BACKFILLED, FLAG_CLOCK_BACK, Historian
from connectors.ingest import Ingest, IngestError

TAGS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def until(done, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert done(), "timed out"


class Skid:
    """A server with ``TAGS`` historized Double variables FT-0.. and the samples written.

    Sample ``k`` of tag ``i`` has the value ``100 k + i`` at ``t0 + k`` seconds.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.t0 = pd.Timestamp.now(tz="UTC").ceil("s") + pd.Timedelta(minutes=1)
        self.nodes: list[ua.NodeId] = []
        self.written: list[tuple[str, pd.Timestamp, float]] = []

    async def start(self) -> Skid:
        self.server = Server()
        await self.server.init()
        self.server.set_endpoint(self.url)
        idx = await self.server.register_namespace("urn:test:restart")
        self.history = HistoryDict()
        self.server.iserver.history_manager.set_storage(self.history)
        skid = await self.server.nodes.objects.add_object(idx, "Skid")
        for i in range(TAGS):
            var = await skid.add_variable(ua.NodeId(f"FT-{i}", idx), f"FT-{i}", 0.0)
            await self.history.new_historized_node(var.nodeid, None)
            self.nodes.append(var.nodeid)
        await self.server.start()
        return self

    async def sample(self, k: int, shift_s: float = 0.0) -> None:
        """Write (and historize) sample ``k`` of every tag, stamped ``shift_s`` off.

        No await yields in between, so one publish carries all the tags of a sample."""
        ts = self.t0 + pd.Timedelta(seconds=k + shift_s)
        for i, nid in enumerate(self.nodes):
            dv = ua.DataValue(ua.Variant(100.0 * k + i), SourceTimestamp=ts.to_pydatetime())
            await self.server.write_attribute_value(nid, dv)
            await self.history.save_node_value(nid, dv)
            self.written.append((f"FT-{i}", ts, 100.0 * k + i))

    def ingest(self, store, **options) -> Ingest:
        return Ingest(
            self.url,
            Historian(store / "historian"),
            store / "spool",
            browse_root=None,
            publishing_ms=100,
            flush_s=0.1,
            **options,
        )


def raw_rows(historian: Historian) -> tuple[int, int]:
    """Rows on disk and distinct (tag, time) keys: equal when nothing was written twice."""
    files = [str(p) for p in historian.segments.rglob("*.parquet")]
    con = duckdb.connect()
    total = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0]
    distinct = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT tag, time FROM read_parquet(?))", [files]
    ).fetchone()[0]
    return total, distinct


async def _ingest_until(ingest: Ingest, stored: int) -> None:
    job = asyncio.create_task(ingest.run())
    await until(lambda: ingest.state.stored >= stored)
    ingest.stop()
    await job


def test_a_restarted_ingest_backfills_what_the_server_produced_meanwhile(tmp_path):
    """Probe: 6 samples per tag made while the ingest was down were never stored."""
    skid = Skid(f"opc.tcp://127.0.0.1:{free_port()}/restart/")

    async def main():
        await skid.start()
        try:
            await skid.sample(0)
            first = skid.ingest(tmp_path)
            job = asyncio.create_task(first.run())
            await asyncio.wait_for(first.connected.wait(), 30)
            for k in range(1, 10):
                await skid.sample(k)
                await asyncio.sleep(0.02)
            await until(lambda: first.state.stored >= 10 * TAGS)
            first.stop()
            await job
            for k in range(10, 16):  # the ingest is down: 6 samples only in the history
                await skid.sample(k)
            second = skid.ingest(tmp_path)
            job = asyncio.create_task(second.run())
            await asyncio.wait_for(second.connected.wait(), 30)
            for k in (16, 17):
                await skid.sample(k)
                await asyncio.sleep(0.02)
            await until(lambda: second.state.stored >= 8 * TAGS)
            second.stop()
            await job
            return second
        finally:
            await skid.server.stop()

    second = run(main())
    historian = Historian(tmp_path / "historian")
    got = historian.query()
    want = pd.DataFrame(skid.written, columns=["tag", "time", "value"])
    assert len(got) == len(want) == 18 * TAGS  # every sample the server holds, once
    merged = got.merge(want, on=["tag", "time"], suffixes=("", "_sent"))
    assert len(merged) == len(want) and (merged["value"] == merged["value_sent"]).all()
    total, distinct = raw_rows(historian)
    assert total == distinct  # nothing written twice
    missed = got[(got["time"] >= skid.t0 + pd.Timedelta(seconds=10))]
    missed = missed[missed["time"] <= skid.t0 + pd.Timedelta(seconds=15)]
    assert len(missed) == 6 * TAGS and (missed["flags"] & FLAG_BACKFILLED).all()
    # the initial value sent on subscribing is the last backfilled one: counted, not stored
    assert second.state.duplicates >= TAGS
    assert second.state.clock_back == 0 and not (got["flags"] & FLAG_CLOCK_BACK).any()


@pytest.mark.parametrize("mode", ["flag", "refuse"])
def test_a_source_clock_gone_back_is_reported_and_its_values_flagged_or_refused(
    tmp_path, caplog, mode
):
    """Probe: a restarted server stamped times behind the stored ones; all were dropped
    as duplicates without a word."""
    skid = Skid(f"opc.tcp://127.0.0.1:{free_port()}/restart/")

    async def main():
        await skid.start()
        try:
            await skid.sample(0)
            ingest = skid.ingest(tmp_path, on_clock_back=mode)
            job = asyncio.create_task(ingest.run())
            await asyncio.wait_for(ingest.connected.wait(), 30)
            for k in range(1, 5):
                await skid.sample(k)
                await asyncio.sleep(0.02)
            await until(lambda: ingest.state.stored >= 5 * TAGS)
            for k in range(5):  # the server restarts with its clock 2 minutes back
                await skid.sample(k, shift_s=-120)
                await asyncio.sleep(0.02)
            await until(lambda: ingest.state.clock_back + ingest.state.refused >= 5 * TAGS)
            await skid.sample(5)  # and catches up
            await until(
                lambda: (
                    ingest.state.last[f"FT-{TAGS - 1}"]
                    > skid.t0.to_pydatetime() + timedelta(seconds=4.5)
                )
            )
            ingest.stop()
            await job
            return ingest
        finally:
            await skid.server.stop()

    with caplog.at_level(logging.WARNING, logger="connectors.ingest"):
        ingest = run(main())
    warnings = [r.getMessage() for r in caplog.records if "went back" in r.getMessage()]
    assert len(warnings) == 1, warnings  # one line per episode, not one per value
    assert skid.url in warnings[0] and f"for {TAGS} tags" in warnings[0]
    assert "0:02:04" in warnings[0]  # the jump: newest stored t0+4 s, received t0-120 s
    historian = Historian(tmp_path / "historian")
    got = historian.query()
    back = got[got["time"] < skid.t0]
    alarms = historian.alarms()
    assert len(alarms) == 1 and alarms["type"].iloc[0] == "data integrity"
    message = alarms["message"].iloc[0]
    assert skid.url in message and f"{5 * TAGS:,} values" in message
    assert "caught up since" in message and not alarms["ongoing"].iloc[0]
    if mode == "flag":
        assert len(back) == 5 * TAGS and ingest.state.clock_back == 5 * TAGS
        assert (back["flags"] & FLAG_CLOCK_BACK).all() and (back["quality"] == 1).all()
        assert sorted(back["value"]) == sorted(100.0 * k + i for k in range(5) for i in range(3))
        assert "kept" in message and alarms["severity"].iloc[0] == "medium"
    else:
        assert len(back) == 0 and ingest.state.refused == 5 * TAGS
        assert "refused" in message and alarms["severity"].iloc[0] == "high"
    fresh = got[got["time"] >= skid.t0]
    assert len(fresh) == 6 * TAGS and not (fresh["flags"] & FLAG_CLOCK_BACK).any()
    assert ingest.state.duplicates == 0


def test_on_clock_back_takes_flag_or_refuse_only(tmp_path):
    with pytest.raises(IngestError, match=r"on_clock_back: must be one of flag, refuse; got 'x'"):
        Ingest("opc.tcp://127.0.0.1:4840", Historian(tmp_path / "h"), tmp_path, on_clock_back="x")


def test_values_of_a_quarantined_segment_come_back_from_the_server_history(tmp_path):
    """Probe (soak test): a segment of an earlier time was quarantined and its values never
    came back, although the server's history still held them."""
    skid = Skid(f"opc.tcp://127.0.0.1:{free_port()}/restart/")
    root = tmp_path / "historian"

    async def ingest_samples(ks: range) -> None:
        ingest = skid.ingest(tmp_path)
        job = asyncio.create_task(ingest.run())
        await asyncio.wait_for(ingest.connected.wait(), 30)
        for k in ks:
            await skid.sample(k)
            await asyncio.sleep(0.02)
        newest = (skid.t0 + pd.Timedelta(seconds=ks[-1])).to_pydatetime()
        await until(lambda: all(ingest.state.last.get(f"FT-{i}") == newest for i in range(TAGS)))
        ingest.stop()
        await job

    async def main():
        await skid.start()
        try:
            await skid.sample(0)
            await ingest_samples(range(1, 5))
            entries = manifest.read_manifest(next((root / "segments").glob("date=*")))
            oldest = min(entries, key=lambda name: entries[name]["first"])
            segment = next((root / "segments").glob(f"date=*/{oldest}"))
            flip_bytes(segment)
            manifest.forget([segment])
            assert len(Historian(root).query()) < 5 * TAGS  # the query quarantined it
            for k in range(5, 8):  # the ingest is down
                await skid.sample(k)
            await ingest_samples(range(8, 10))
            return entries[oldest]
        finally:
            await skid.server.stop()

    entry = run(main())
    historian = Historian(root)
    got = historian.query()
    want = pd.DataFrame(skid.written, columns=["tag", "time", "value"])
    assert len(got) == len(want) == 10 * TAGS  # every sample the server holds, once
    merged = got.merge(want, on=["tag", "time"], suffixes=("", "_sent"))
    assert len(merged) == len(want) and (merged["value"] == merged["value_sent"]).all()
    total, distinct = raw_rows(historian)
    assert total == distinct  # nothing written twice
    (note,) = historian.quarantined()
    assert (note["first_time"], note["last_time"]) == (entry["first"], entry["last"])
    assert note["recovered_at"] and note["endpoint"] == skid.url
    assert note["values_recovered"] == note["rows_expected"] == entry["rows"]
    span = got[(got["time"] >= entry["first"]) & (got["time"] <= entry["last"])]
    assert ((span["flags"] & FLAG_BACKFILLED) != 0).sum() == entry["rows"]
    (alarm,) = historian.alarms().itertuples()
    assert "recovered" in alarm.message and not alarm.ongoing and alarm.severity == "low"


def flip_bytes(path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 4, len(data) // 4 + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
