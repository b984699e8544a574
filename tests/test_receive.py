"""`biotwin receive`: OT systems push values, history updates and lab results (docs/receive.md).

Real servers on 127.0.0.1 with asyncua clients; the independent peer (node-opcua) is in
tests/test_receive_node.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from asyncua import Client, ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from typer.testing import CliRunner

from connectors._tables import SideTable
from connectors.historian import FLAG_BAD_STATUS, FLAG_NAN, FLAG_OUT_OF_RANGE, Historian
from connectors.lab_results import LabResultError, LabResults, check_result
from connectors.push_sources import PushSource, read_statuses
from connectors.receive import NAMESPACE_URI, ReceiveServer
from connectors.receive_decode import decode_write, raw_values
from connectors.receive_store import CORRECTION_SCHEMA, Job, ReceiveStore
from connectors.receive_tags import ReceiveTag, TagFileError, plant_tags, read_tag_file
from connectors.receive_writes import check_value, to_us
from connectors.security import add_user
from dashboard.push import push_table

SC = ua.StatusCodes
WRITER, VIEWER = ("gateway", "gateway-test-password"), ("viewer", "viewer-test-password")
TAGS = """tag,unit,eng_unit,eu_low,eu_high,data_type,description,hard_low,hard_high
TIC-1.PV,R1,CEL,0,100,Double,reactor temperature,-50,400
FIC-1.PV,R1,E32,0,50,Float,feed flow,,
CNT-1.PV,R1,C62,0,1000,Int32,counter,,
ZS-1.PV,R1,,,,Boolean,valve open,,
LOT-1.ID,R1,,,,String,lot in use,,
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tag_file(tmp_path: Path, text: str = TAGS, name: str = "tags.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _users(data: Path) -> None:
    add_user(data / "users.toml", WRITER[0], password=WRITER[1], roles=["ot-writer"])
    add_user(data / "users.toml", VIEWER[0], password=VIEWER[1], roles=["viewer"])


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **options):
    """A receiver on a free port (security None: passwords still travel encrypted)."""
    _users(tmp_path)
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/receive"
    server = ReceiveServer(
        read_tag_file(_tag_file(tmp_path)), url, tmp_path, security="none", **options
    )
    await server.setup()
    job = asyncio.create_task(server.run())
    await server.serving.wait()
    try:
        yield server, url
    finally:
        server.stop()
        await job


@contextlib.asynccontextmanager
async def signed_in(url: str, user: tuple[str, str]):
    client = Client(url, timeout=10)
    client.set_user(user[0])
    client.set_password(user[1])
    async with client:
        client.ns = await client.get_namespace_index(NAMESPACE_URI)
        yield client


def _write(client, items) -> ua.WriteParameters:
    """WriteParameters of (node id text, Variant or None, source time or None, status)."""
    nodes = []
    for name, variant, ts, status in items:
        dv = ua.DataValue(variant, StatusCode=ua.StatusCode(status), SourceTimestamp=ts)
        nodes.append(
            ua.WriteValue(
                NodeId=ua.NodeId(name, client.ns), AttributeId=ua.AttributeIds.Value, Value=dv
            )
        )
    return ua.WriteParameters(NodesToWrite=nodes)


async def _history_update(client, details) -> list[ua.HistoryUpdateResult]:
    request = ua.HistoryUpdateRequest()
    request.Parameters = ua.HistoryUpdateParameters(HistoryUpdateDetails=details)
    data = await client.uaclient.protocol.send_request(request)
    response = struct_from_binary(ua.HistoryUpdateResponse, data)
    response.ResponseHeader.ServiceResult.check()
    return response.Results


def _dv(value, ts) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value), SourceTimestamp=ts)


def _names(codes) -> list[str]:
    return [c.name for c in codes]


# ---------------------------------------------------------------------- the tag file
def test_a_tag_file_gives_one_row_per_tag_with_its_columns(tmp_path):
    tags = read_tag_file(_tag_file(tmp_path))
    assert list(tags["tag"]) == ["TIC-1.PV", "FIC-1.PV", "CNT-1.PV", "ZS-1.PV", "LOT-1.ID"]
    row = tags.iloc[0]
    assert (row["eu_low"], row["eu_high"], row["hard_low"], row["hard_high"]) == (0, 100, -50, 400)
    assert pd.isna(tags.iloc[3]["eu_low"])  # a Boolean has no EURange


BAD_TAG_FILES = {
    "unknown column": ("tag,unit,data_type,colour\nA,U,Double,red\n", "column must be one of"),
    "no data_type column": ("tag,unit\nA,U\n", "column data_type is required"),
    "bad data type": ("tag,unit,data_type\nA,U,Real\n", "data_type must be one of.*got 'Real'"),
    "number without range": (
        "tag,unit,eng_unit,data_type\nA,U,CEL,Double\n",
        "line 2: eu_low is required for a Double tag",
    ),
    "range upside down": (
        "tag,unit,eng_unit,eu_low,eu_high,data_type\nA,U,CEL,5,-5,Double\n",
        r"line 2: eu_high must be a number > eu_low \(5.0\); got '-5'",
    ),
    "not a number": (
        "tag,unit,eng_unit,eu_low,eu_high,data_type\nA,U,CEL,low,5,Double\n",
        "eu_low must be a finite number; got 'low'",
    ),
    "tag twice": (
        "tag,unit,data_type\nA,U,String\nA,V,String\n",
        "line 3: tag must be unique; got 'A', already on line 2",
    ),
    "context name": (
        "tag,unit,data_type\nU.BatchId,U,String\n",
        "must not be named like a unit's batch context variable",
    ),
    "no tags": ("tag,unit,data_type\n", "must hold at least one tag"),
    "short line": ("tag,unit,data_type\nA,U\n", "must have 3 fields"),
}


@pytest.mark.parametrize("text, message", BAD_TAG_FILES.values(), ids=BAD_TAG_FILES.keys())
def test_a_bad_tag_file_is_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(TagFileError, match=message):
        read_tag_file(_tag_file(tmp_path, text))


def test_without_a_tag_file_the_plant_tags_are_served(config):
    tags = plant_tags(config)
    assert len(tags) > 100 and set(tags["data_type"]) == {"Double"}
    assert "TIC-201.PV" in set(tags["tag"])
    row = tags.set_index("tag").loc["TIC-201.PV"]
    assert (row["unit"], row["eng_unit"]) == ("BR-201", "CEL")


# ---------------------------------------------------------------------- per-value checks
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DOUBLE = ReceiveTag("T", "U", "Double", "CEL", 0.0, 100.0, hard_low=-50.0, hard_high=400.0)
INT = ReceiveTag("N", "U", "Int32", "C62", 0.0, 10.0)
TEXT = ReceiveTag("S", "U", "String")
V = ua.VariantType
BAD_TIME = SC.BadInvalidTimestamp
CHECKS = {
    "a double": (DOUBLE, ua.Variant(37.5), NOW, 0, SC.Good, 0),
    "an integer to a double": (DOUBLE, ua.Variant(37, V.Int16), NOW, 0, SC.Good, 0),
    "a string to a double": (DOUBLE, ua.Variant("37.5"), NOW, 0, SC.BadTypeMismatch, 0),
    "a boolean to a double": (DOUBLE, ua.Variant(True), NOW, 0, SC.BadTypeMismatch, 0),
    "an array": (DOUBLE, ua.Variant([1.0, 2.0]), NOW, 0, SC.BadTypeMismatch, 0),
    "a double to an int": (INT, ua.Variant(3.0), NOW, 0, SC.BadTypeMismatch, 0),
    "an int64 beyond int32": (INT, ua.Variant(2**40, V.Int64), NOW, 0, SC.BadOutOfRange, 0),
    "a string to a string": (TEXT, ua.Variant("lot 7"), NOW, 0, SC.Good, 0),
    "6 min ahead": (DOUBLE, ua.Variant(1.0), NOW + timedelta(minutes=6), 0, BAD_TIME, 0),
    "4 min ahead": (DOUBLE, ua.Variant(1.0), NOW + timedelta(minutes=4), 0, SC.Good, 0),
    "beyond retention": (DOUBLE, ua.Variant(1.0), NOW - timedelta(days=400), 0, BAD_TIME, 0),
    "above hard limit": (DOUBLE, ua.Variant(401.0), NOW, 0, SC.BadOutOfRange, 0),
    "outside EURange": (DOUBLE, ua.Variant(150.0), NOW, 0, SC.Good, FLAG_OUT_OF_RANGE),
    "bad status, no value": (DOUBLE, ua.Variant(None), NOW, 0x80000000, SC.Good, 0),
    "good status, no value": (DOUBLE, ua.Variant(None), NOW, 0, SC.BadTypeMismatch, 0),
}  # fmt: skip


@pytest.mark.parametrize(
    "spec, variant, ts, status, code, flags", CHECKS.values(), ids=CHECKS.keys()
)
def test_each_value_gets_its_own_status_code(spec, variant, ts, status, code, flags):
    dv = ua.DataValue(variant, StatusCode=ua.StatusCode(status), SourceTimestamp=ts)
    now_us = to_us(NOW)
    checked = check_value(spec, dv, now_us=now_us, oldest_us=now_us - 365 * 86400 * 10**6)
    assert checked.code == code, checked.why
    assert checked.flags == flags
    if code != SC.Good:
        assert spec.tag in checked.why  # one line naming the tag, the rule and the value
    else:
        assert checked.time_us == to_us(ts)


def test_a_value_without_source_time_takes_the_servers_and_an_update_needs_one():
    dv = ua.DataValue(ua.Variant(1.0))
    now_us = to_us(NOW)
    assert check_value(DOUBLE, dv, now_us=now_us, oldest_us=0).time_us == now_us
    refused = check_value(DOUBLE, dv, now_us=now_us, oldest_us=0, time_required=True)
    assert refused.code == SC.BadInvalidTimestamp and "SourceTimestamp is required" in refused.why


def test_the_fast_decoder_reads_what_asyncua_reads():
    now = datetime.now(UTC)
    variants = [
        ua.Variant(1.5), ua.Variant("x"), ua.Variant(True), ua.Variant(3, V.Int32),
        ua.Variant(None), ua.Variant(2.5, V.Float), ua.Variant(7, V.UInt64),
    ]  # fmt: skip
    nodes = [
        ua.WriteValue(
            NodeId=nid,
            AttributeId=ua.AttributeIds.Value,
            IndexRange=index_range,
            Value=ua.DataValue(
                v, StatusCode=ua.StatusCode(sc), SourceTimestamp=ts, ServerTimestamp=now
            ),
        )
        for nid, index_range in [
            (ua.NodeId("T1", 2), None),
            (ua.NodeId(5, 0), None),
            (ua.NodeId(70000, 3), "1:2"),
            (ua.NodeId(7, 1), None),
        ]
        for v in variants
        for sc in (0, 0x80000000)
        for ts in (None, now, datetime(1601, 1, 1, tzinfo=UTC))
    ]
    body = struct_to_binary(ua.WriteParameters(NodesToWrite=nodes))
    fast = decode_write(Buffer(body))
    assert fast == raw_values(struct_from_binary(ua.WriteParameters, Buffer(body)))
    assert fast[0][8] is None and fast[1][8] == to_us(now)  # no source time / its time
    # what it leaves to asyncua: a Variant holding a LocalizedText
    odd = ua.WriteValue(
        NodeId=ua.NodeId("T1", 2),
        AttributeId=ua.AttributeIds.Value,
        Value=ua.DataValue(ua.Variant(ua.LocalizedText("x"))),
    )
    assert decode_write(Buffer(struct_to_binary(ua.WriteParameters(NodesToWrite=[odd])))) is None


# ---------------------------------------------------------------------- the store
def test_the_store_decides_write_insert_replace_and_update(tmp_path):
    base = to_us(NOW) - 3600 * 10**6

    def job(mode, *items):
        j = Job(mode, "gateway")
        for tag, k, value in items:
            j.add(tag, base + k * 10**6, value, None, 0, 0)
        return j

    async def main():
        historian = Historian(tmp_path / "historian", compact_every=None)
        store = ReceiveStore(historian, compact_every_s=None)
        await store.start()
        out = {}
        out["write"] = await store.submit(job("write", ("A", 0, 1.0), ("A", 1, 2.0)))
        out["retry"] = await store.submit(job("write", ("A", 0, 1.0), ("A", 1, 2.5)))
        out["insert"] = await store.submit(job("insert", ("A", 2, 3.0), ("A", 1, 9.0)))
        out["replace"] = await store.submit(job("replace", ("A", 1, 20.0), ("A", 5, 5.0)))
        out["update"] = await store.submit(job("update", ("A", 0, 10.0), ("A", 6, 6.0)))
        await store.close()
        return historian, store, out

    historian, store, out = asyncio.run(main())
    assert out["write"].codes == [SC.Good, SC.Good]
    assert out["retry"].codes == [SC.Good, SC.BadEntryExists]  # same value again / another one
    assert out["retry"].fresh == [False, False]
    assert out["insert"].codes == [SC.GoodEntryInserted, SC.BadEntryExists]
    assert out["replace"].codes == [SC.GoodEntryReplaced, SC.BadNoEntryExists]
    assert out["update"].codes == [SC.GoodEntryReplaced, SC.GoodEntryInserted]
    got = historian.query(["A"])
    assert got["value"].tolist() == [10.0, 20.0, 3.0, 6.0]
    corrections = store.corrections.read()
    assert corrections[["old_value", "new_value", "mode"]].values.tolist() == [
        [2.0, 20.0, "replace"],
        [1.0, 10.0, "update"],
    ]
    assert set(corrections["user"]) == {"gateway"}
    historian.compact(min_files=2, before=NOW + timedelta(days=2))  # everything merged
    assert historian.query(["A"])["value"].tolist() == [10.0, 20.0, 3.0, 6.0]
    segments = list((tmp_path / "historian" / "segments").rglob("*.parquet"))
    assert len(segments) == 1  # one compacted file, the replaced values gone with it


# ---------------------------------------------------------------------- the server
def test_writes_are_answered_per_value_and_stored_with_their_source_times(tmp_path):
    async def main():
        async with serving(tmp_path) as (server, url):
            now = datetime.now(UTC).replace(microsecond=0)
            t = [now - timedelta(seconds=60 - i) for i in range(6)]
            async with signed_in(url, WRITER) as c:
                items = [
                    ("TIC-1.PV", ua.Variant(37.5), t[0], 0),  # Good
                    ("TIC-1.PV", ua.Variant(150.0), t[1], 0),  # Good, outside EURange
                    ("TIC-1.PV", ua.Variant(500.0), t[2], 0),  # above hard_high
                    ("TIC-1.PV", ua.Variant("hot"), t[3], 0),  # a String to a Double
                    ("TIC-1.PV", ua.Variant(None), t[4], SC.BadSensorFailure),  # failed sensor
                    ("FIC-1.PV", ua.Variant(1.5, V.Float), now + timedelta(minutes=10), 0),
                    ("CNT-1.PV", ua.Variant(7, V.Int32), None, 0),  # no source time: now
                    ("ZS-1.PV", ua.Variant(True), t[5], 0),
                    ("LOT-1.ID", ua.Variant("L-0042"), t[5], 0),
                    ("NO-SUCH.PV", ua.Variant(1.0), t[5], 0),
                    ("R1.Phase", ua.Variant("fermentation"), t[2], 0),
                    ("R1.BatchId", ua.Variant("B-7"), t[2], 0),
                    # a LocalizedText: the request goes through asyncua's decoder instead
                    ("TIC-1.PV", ua.Variant(ua.LocalizedText("hot")), t[3], 0),
                ]
                connected = server.source.status()["connected"]
                codes = await c.uaclient.write(_write(c, items))
                again = await c.uaclient.write(_write(c, items[:2]))  # a retry
                value = await c.get_node(ua.NodeId("TIC-1.PV", c.ns)).read_data_value(
                    raise_on_bad_status=False
                )
                history = await c.get_node(ua.NodeId("TIC-1.PV", c.ns)).read_raw_history(
                    now - timedelta(hours=1), now
                )
                texts = await c.get_node(ua.NodeId("LOT-1.ID", c.ns)).read_raw_history(
                    now - timedelta(hours=1), now
                )
                insert = await c.get_node(
                    ua.ObjectIds.HistoryServerCapabilities_InsertDataCapability
                ).read_value()
            async with signed_in(url, VIEWER) as c:
                refused = await c.uaclient.write(_write(c, items[:3]))
                assert server.source.status()["connected"] == []  # a viewer is no writer
            assert connected == ["gateway"]
            # the MQTT path's sink: historian rows through the same checks and store
            mqtt = PushSource("mqtt", "mqtt://127.0.0.1:1883 opcua/json/data/#")
            rows = pd.DataFrame(
                {
                    "time": [t[5], t[5], t[5], now + timedelta(hours=1), t[0]],
                    "tag": ["TIC-1.PV", "NO-SUCH.PV", "LOT-1.ID", "TIC-1.PV", "TIC-1.PV"],
                    "value": [36.0, 1.0, 2.0, 3.0, 99.0],
                    "status": 0,
                    "quality": 0,
                    "flags": 0,
                }
            )
            await server.store_rows(rows, source=mqtt, user="mqtt")
            return server, now, t, codes, again, value, history, texts, insert, refused, mqtt

    _, now, t, codes, again, value, history, texts, insert, refused, mqtt = asyncio.run(main())
    assert mqtt.status()["rejected"] == {
        "BadEntryExists": 1,  # t[0] holds 37.5
        "BadInvalidTimestamp": 1,
        "BadNodeIdUnknown": 1,
        "BadTypeMismatch": 1,  # a String tag
    }
    assert _names(codes) == [
        "Good", "Good", "BadOutOfRange", "BadTypeMismatch", "Good", "BadInvalidTimestamp",
        "Good", "Good", "Good", "BadNodeIdUnknown", "Good", "Good", "BadTypeMismatch",
    ]  # fmt: skip
    assert _names(again) == ["Good", "Good"]
    assert _names(refused) == ["BadUserAccessDenied"] * 3
    h = Historian(tmp_path / "historian")
    rows = h.query().set_index(["tag", "time"])
    tic = rows.loc["TIC-1.PV"]
    assert list(tic.index) == [pd.Timestamp(x) for x in (t[0], t[1], t[4], t[5])]
    assert tic["value"].iloc[0] == 37.5 and tic["flags"].iloc[1] & FLAG_OUT_OF_RANGE
    assert math.isnan(tic["value"].iloc[2]) and tic["flags"].iloc[2] & FLAG_NAN
    assert tic["status"].iloc[2] == SC.BadSensorFailure and tic["flags"].iloc[2] & FLAG_BAD_STATUS
    assert abs(rows.loc["CNT-1.PV"].index[0] - pd.Timestamp(now)) < pd.Timedelta(seconds=30)
    assert rows.loc["ZS-1.PV", "value"].iloc[0] == 1.0
    assert len(h.query(["TIC-1.PV"])) == 4  # the retry stored nothing twice
    ctx = h.batch_context("R1")
    assert ctx[["batch_id", "phase", "state"]].values.tolist() == [
        ["B-7", "fermentation", "unknown"]
    ]
    assert value.SourceTimestamp == t[4] and value.StatusCode.name == "BadSensorFailure"
    assert [dv.Value.Value for dv in history][:2] == [37.5, 150.0]
    assert [dv.Value.Value for dv in texts] == ["L-0042"] and insert is True
    status = {s["name"]: s for s in read_statuses(tmp_path)}["opcua"]
    assert status["values_total"] == 6  # tag values (batch context is not counted)
    assert status["rejected"] == {
        "BadInvalidTimestamp": 1,
        "BadNodeIdUnknown": 1,
        "BadOutOfRange": 1,
        "BadTypeMismatch": 2,
        "BadUserAccessDenied": 3,
    }
    table = push_table(read_statuses(tmp_path))
    row = table.iloc[0]
    assert row["Source"] == "OPC UA writes" and row["Values stored"] == 6
    assert "BadUserAccessDenied 3" in row["Rejected (by StatusCode)"]
    assert row["Last value"][:4].isdigit()  # dated
    assert row["Status"].startswith("stopped 20")  # the receiver stopped, when


def test_history_update_inserts_replaces_and_records_the_correction(tmp_path):
    async def main():
        async with serving(tmp_path) as (_server, url):
            t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
            hour = [t0 + timedelta(minutes=k) for k in range(60)]
            dv = [
                ua.DataValue(ua.Variant(float(k)), SourceTimestamp=ts) for k, ts in enumerate(hour)
            ]

            def details(mode, values, name="TIC-1.PV"):
                return ua.UpdateDataDetails(
                    NodeId=ua.NodeId(name, c.ns), PerformInsertReplace=mode, UpdateValues=values
                )

            P = ua.PerformUpdateType
            async with signed_in(url, WRITER) as c:
                first = await _history_update(c, [details(P.Insert, dv)])
                second = await _history_update(
                    c,
                    [
                        details(P.Insert, dv[:1]),
                        details(P.Replace, [_dv(99.0, hour[3])]),
                        details(P.Replace, [_dv(1.0, t0 - timedelta(days=1))]),
                        details(P.Update, [ua.DataValue(ua.Variant(5.0))]),  # no source time
                        details(P.Remove, dv[:1]),
                        details(P.Insert, dv[:1], name="NO-SUCH.PV"),
                        details(P.Insert, dv[:1], name="R1.State"),
                        ua.DeleteRawModifiedDetails(NodeId=ua.NodeId("TIC-1.PV", c.ns)),
                    ],
                )  # fmt: skip
                history = await c.get_node(ua.NodeId("TIC-1.PV", c.ns)).read_raw_history(
                    hour[0], hour[-1]
                )
            async with signed_in(url, VIEWER) as c:
                denied = await _history_update(c, [details(P.Insert, dv[:1])])
            return first, second, history, denied

    first, second, history, denied = asyncio.run(main())
    assert _names(first[0].OperationResults) == ["GoodEntryInserted"] * 60
    assert [(r.StatusCode.name, _names(r.OperationResults)) for r in second] == [
        ("Good", ["BadEntryExists"]),
        ("Good", ["GoodEntryReplaced"]),
        ("Good", ["BadNoEntryExists"]),
        ("Good", ["BadInvalidTimestamp"]),
        ("BadHistoryOperationInvalid", []),
        ("BadNodeIdUnknown", []),
        ("BadHistoryOperationUnsupported", []),
        ("BadHistoryOperationUnsupported", []),
    ]
    assert denied[0].StatusCode.name == "BadUserAccessDenied"
    values = [dv.Value.Value for dv in history]
    assert len(values) == 60 and values[3] == 99.0 and values[4] == 4.0
    h = Historian(tmp_path / "historian")
    assert len(h.query(["TIC-1.PV"])) == 60
    corrections = SideTable(tmp_path / "historian", "corrections", CORRECTION_SCHEMA).read()
    assert corrections[["tag", "old_value", "new_value", "user"]].values.tolist() == [
        ["TIC-1.PV", 3.0, 99.0, "gateway"]
    ]


def test_report_result_stores_lab_results_the_models_read(tmp_path, config):
    async def main():
        async with serving(tmp_path) as (server, url):
            when = datetime.now(UTC) - timedelta(hours=1)
            async with signed_in(url, WRITER) as c:
                site = c.get_node(server.report_parent)
                method = server.report_node
                await site.call_method(method, "B-1", "media_potency", 0.97, "P1", when)
                await site.call_method(
                    method, "B-1", "media_potency", 0.95, "P1", when + timedelta(minutes=5)
                )
                await site.call_method(
                    method, "B-1", "titer_g_per_l", ua.Variant(3, V.Int32), "GL", when
                )
                with pytest.raises(ua.UaStatusCodeError, match="BadInvalidArgument"):
                    await site.call_method(method, "B-1", "label", 1.0, "", when)
                with pytest.raises(ua.UaStatusCodeError, match="BadInvalidArgument"):
                    await site.call_method(method, "B-1", "potency", "high", "", when)
                with pytest.raises(ua.UaStatusCodeError, match="BadInvalidTimestamp"):
                    await site.call_method(
                        method, "B-1", "potency", 1.0, "", when + timedelta(days=1)
                    )
            async with signed_in(url, VIEWER) as c:
                with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                    await c.get_node(server.report_parent).call_method(
                        method, "B-1", "media_potency", 0.5, "P1", when
                    )  # fmt: skip

    asyncio.run(main())
    lab = LabResults(tmp_path / "historian")
    assert lab.all()["value"].tolist() == [0.97, 0.95, 3.0]
    wide = lab.wide()
    assert wide.loc["B-1"].to_dict() == {"media_potency": 0.95, "titer_g_per_l": 3.0}
    assert set(lab.all()["user"]) == {"gateway"}
    # the models read them as batch context
    from quality.live import batch_history_from_historian, lab_results

    assert lab_results(Historian(tmp_path / "historian")).loc["B-1", "media_potency"] == 0.95
    h = Historian(tmp_path / "historian")
    start = pd.Timestamp.now(tz="UTC").floor("min") - pd.Timedelta(hours=2)
    h.append_batch_context(
        pd.DataFrame(
            [{"batch_id": "B-1", "unit": "BR-201", "recipe": "r", "phase": "fermentation",
              "state": "running", "start_time": start, "end_time": None}]
        )
    )  # fmt: skip
    h.upsert_tags(pd.DataFrame([{"tag": "TIC-201.PV", "unit": "BR-201"}]))
    h.append(
        pd.DataFrame(
            {
                "time": [start + pd.Timedelta(minutes=m) for m in range(30)],
                "tag": "TIC-201.PV",
                "value": 37.0,
            }
        )
    )
    history = batch_history_from_historian(h, config, batch_ids=["B-1"])
    assert history.outcomes.loc["B-1", "media_potency"] == 0.95
    # training: CQA and context columns an outcomes file lacks come from the lab results
    from quality.errors import InputError
    from quality.live import training_history_from_historian

    decided = pd.DataFrame({"batch_id": ["B-1"], "label": [1]})
    options = dict(batch_col="batch_id", label_col="label", min_batches=0, require_both=False)
    trained = training_history_from_historian(
        h, config, decided, cqa_cols=["titer_g_per_l"], context_cols=["media_potency"], **options
    )
    assert trained.outcomes.loc["B-1", ["titer_g_per_l", "media_potency"]].tolist() == [3.0, 0.95]
    with pytest.raises(InputError, match=r"'purity' is missing.*no lab result of that name"):
        training_history_from_historian(h, config, decided, cqa_cols=["purity"], **options)


@pytest.mark.parametrize(
    "args, message",
    [
        (("", "a", 1.0, "", NOW), "batch_id: must be 1-200 characters"),
        (("B", "1abc", 1.0, "", NOW), "attribute: must be a letter"),
        (("B", "order", 1.0, "", NOW), "attribute: must not be one of"),
        (("B", "a", math.inf, "", NOW), "value: must be a finite number; got inf"),
        (("B", "a", 1.0, "x" * 51, NOW), "eng_unit: must be text of at most 50"),
    ],
    ids=["empty batch", "attribute digit", "reserved", "inf", "long unit"],
)
def test_a_bad_lab_result_is_refused_naming_the_field(args, message):
    with pytest.raises(LabResultError, match=message):
        check_result(*args)


# ---------------------------------------------------------------------- commands
def test_users_add_with_the_role_ot_writer_and_opcua_certs_trust(tmp_path):
    from biotwin.cli import app
    from connectors.security import client_certificate, load_users

    runner = CliRunner()
    result = runner.invoke(
        app,
        ["users", "add", "gateway", "--role", "ot-writer", "--data-dir", str(tmp_path)],
        input="gateway-password-1\n",
    )
    assert result.exit_code == 0, result.output
    assert load_users(tmp_path / "users.toml")["gateway"]["roles"] == ["ot-writer"]
    cert, _ = asyncio.run(client_certificate(tmp_path / "elsewhere", "urn:x:gw", trust=False))
    pem = tmp_path / "gw.pem"
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem.write_bytes(x509.load_der_x509_certificate(cert.read_bytes()).public_bytes(Encoding.PEM))
    result = runner.invoke(app, ["opcua-certs", "--trust", str(pem), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pki" / "trusted" / "gw.der").read_bytes() == cert.read_bytes()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    result = runner.invoke(app, ["opcua-certs", "--trust", str(junk), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "must be an X.509 certificate file" in result.output


def test_receive_refuses_a_bad_tag_file_in_one_line(tmp_path):
    from biotwin.cli import app

    bad = _tag_file(tmp_path, "tag,unit,data_type\nA,U,Real\n")
    result = CliRunner().invoke(app, ["receive", "--tags", str(bad), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "tag file tags.csv line 2: data_type must be one of" in result.output


def test_push_table_shows_each_source_with_local_dated_times():
    now = pd.Timestamp("2026-12-05 12:00:05", tz="UTC")
    statuses = [
        json.loads(
            json.dumps(
                {
                    "name": "mqtt",
                    "endpoint": "mqtt://127.0.0.1:1883 opcua/json/data/#",
                    "updated": "2026-12-05T12:00:03+00:00",
                    "connected": ["plc-7"],
                    "values_total": 12000,
                    "values_per_s": 2000.0,
                    "last_value_time": "2026-12-05T12:00:02+00:00",
                    "rejected": {"BadTypeMismatch": 2},
                    "sequence_gaps": 3,
                    "reordered": 1,
                }
            )
        )
    ]
    row = push_table(statuses, now=now).iloc[0]
    assert row["Source"] == "PubSub over MQTT" and row["Connected writers"] == "plc-7"
    assert row["Values/s"] == 2000.0 and row["Sequence gaps"] == "3 (1 reordered)"
    assert row["Rejected (by StatusCode)"] == "BadTypeMismatch 2"
    assert row["Last value"].startswith("2026-12-0") and row["Status"].startswith("receiving")


def test_the_events_page_shows_the_push_sources(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    source = PushSource("opcua", "opc.tcp://127.0.0.1:4850/biotwin/receive", tmp_path)
    source.on_connect("gateway")
    source.on_stored(1000, pd.Timestamp("2026-12-05 11:59:59", tz="UTC").timestamp())
    source.on_rejected("BadTypeMismatch", 2)
    source.flush(force=True)
    Historian(tmp_path / "historian")
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BIOTWIN_TZ", "Europe/Zurich")
    page = Path(__file__).resolve().parents[1] / "dashboard" / "views" / "events.py"
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not at.exception
    assert any(s.value == "Push sources" for s in at.subheader)
    table = next(d.value for d in at.dataframe if "Source" in d.value.columns)
    row = table.iloc[0]
    assert row["Connected writers"] == "gateway" and row["Values stored"] == 1000
    assert row["Last value"] == "2026-12-05 12:59:59 CET"  # plant local time, dated
    assert row["Rejected (by StatusCode)"] == "BadTypeMismatch 2"
