"""PubSub JSON over MQTT (docs/pubsub-mqtt.md): the decoder on hand-written Part 14 messages,
the sequence rules as invariants, and the subscriber against a real mosquitto on 127.0.0.1
fed by ``mosquitto_pub`` (the independent peer, not our code)."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import math
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.historian import (
    FLAG_BAD_STATUS,
    FLAG_NAN,
    FLAG_OUT_OF_RANGE,
    FLAG_OVERFLOW,
    Historian,
)
from connectors.mqtt_receive import (
    MqttReceiveError,
    check_topic_filter,
    historian_sink,
    metadata_filter,
    parse_url,
    subscribe,
)
from connectors.pubsub_json import PubSubDecoder, PubSubError, SequenceTracker, topic_parts
from connectors.push_sources import PushSource

TOPIC = "opcua/json/data/line1"
#: when the hand-written messages "arrive" (their times are a few seconds before)
RECEIVED = pd.Timestamp("2026-12-05T08:00:05Z").timestamp()
TAGS = pd.DataFrame(
    {
        "tag": ["TIC-201.PV", "FIC-201.PV", "PIC-201.PV", "AGIT-201.ON", "CNT-201", "BATCH-201"],
        "unit": ["BR-201"] * 6,
        "eng_unit": ["CEL", "LTR", "BAR", None, None, None],
        "eu_low": [0.0, 0.0, 0.0, None, None, None],
        "eu_high": [50.0, 500.0, 5.0, None, None, None],
        "data_type": ["Double", "Double", "Float", "Boolean", "Int32", "String"],
        "description": ["temperature", "feed", "pressure", "agitator on", "counter", "batch"],
    }
)
UNCERTAIN = 0x408F0000  # UncertainLastUsableValue... severity 01
BAD = 0x80000000


def network(*messages, publisher="line1", message_id="m-1") -> str:
    """A NetworkMessage (Part 14, 7.2.5.3) around DataSetMessages."""
    return json.dumps(
        {
            "MessageId": message_id,
            "MessageType": "ua-data",
            "PublisherId": publisher,
            "Messages": list(messages),
        }
    )


def dsm(payload=None, **header) -> dict:
    """A DataSetMessage (Part 14, 7.2.5.4): writer 1, a message Timestamp, the payload."""
    out = {"DataSetWriterId": 1, "Timestamp": "2026-12-05T08:00:00Z", **header}
    if payload is not None:
        out["Payload"] = payload
    return out


def decode(message, topic=TOPIC, tags=TAGS, decoder=None):
    decoder = decoder or PubSubDecoder(tags)
    payload = message.encode() if isinstance(message, str) else message
    return decoder.decode(payload, topic, received=RECEIVED)


def rows_of(out) -> list[tuple]:
    frame = out.rows()
    return [
        (r.tag, r.time.isoformat(), None if math.isnan(r.value) else r.value, r.status, r.flags)
        for r in frame.itertuples()
    ]


T0 = "2026-12-05T08:00:00+00:00"

# --------------------------------------------------------------------------- good messages
GOOD = [
    pytest.param(
        # the shape of open62541's JSON decoding tests: 1.04 reversible Variants
        network(dsm({"TIC-201.PV": {"Type": 11, "Body": 37.5}}, SequenceNumber=4711)),
        [("TIC-201.PV", T0, 37.5, 0, 0)],
        id="variant-1.04-reversible",
    ),
    pytest.param(
        network(
            dsm(
                {
                    "TIC-201.PV": {
                        "Value": {"Type": 11, "Body": 37.5},
                        "Status": UNCERTAIN,
                        "SourceTimestamp": "2026-12-05T07:59:59.9Z",
                    }
                }
            )
        ),
        [("TIC-201.PV", "2026-12-05T07:59:59.900000+00:00", 37.5, UNCERTAIN, FLAG_BAD_STATUS)],
        id="datavalue-1.04-reversible",
    ),
    pytest.param(
        network(
            dsm(
                {
                    "TIC-201.PV": {
                        "Value": 37.5,
                        "Status": {"Code": UNCERTAIN, "Symbol": "UncertainLastUsableValue"},
                        "SourceTimestamp": "2026-12-05T07:59:59.1234567Z",
                    }
                }
            )
        ),
        [("TIC-201.PV", "2026-12-05T07:59:59.123456+00:00", 37.5, UNCERTAIN, FLAG_BAD_STATUS)],
        id="datavalue-1.04-non-reversible",
    ),
    pytest.param(
        network(dsm({"FIC-201.PV": {"UaType": 11, "Value": 1.25}})),
        [("FIC-201.PV", T0, 1.25, 0, 0)],
        id="variant-1.05-compact",
    ),
    pytest.param(
        network(
            dsm(
                {
                    "FIC-201.PV": {
                        "UaType": 11,
                        "Value": 1.25,
                        "SourceTimestamp": "2026-12-05T07:59:58Z",
                    }
                }
            )
        ),
        [("FIC-201.PV", "2026-12-05T07:59:58+00:00", 1.25, 0, 0)],
        id="datavalue-1.05",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": 37.5, "FIC-201.PV": 2, "AGIT-201.ON": True})),
        [
            ("TIC-201.PV", T0, 37.5, 0, 0),
            ("FIC-201.PV", T0, 2.0, 0, 0),
            ("AGIT-201.ON", T0, 1.0, 0, 0),
        ],
        id="raw-values-verbose",
    ),
    pytest.param(
        json.dumps(dsm({"TIC-201.PV": 37.5}, SequenceNumber=1)),
        [("TIC-201.PV", T0, 37.5, 0, 0)],
        id="dataset-message-without-header",
    ),
    pytest.param(
        json.dumps([dsm({"TIC-201.PV": 37.5}), dsm({"FIC-201.PV": 3.0}, DataSetWriterId=2)]),
        [("TIC-201.PV", T0, 37.5, 0, 0), ("FIC-201.PV", T0, 3.0, 0, 0)],
        id="dataset-messages-array-without-header",
    ),
    pytest.param(
        json.dumps(
            {
                "MessageId": "x",
                "MessageType": "ua-data",
                "PublisherId": 7,
                "Messages": dsm({"TIC-201.PV": 37.5}, DataSetWriterId="1"),
            }
        ),
        [("TIC-201.PV", T0, 37.5, 0, 0)],
        id="single-message-object-numeric-publisher",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": "NaN", "FIC-201.PV": {"Type": 11, "Body": "Infinity"}})),
        [("TIC-201.PV", T0, None, 0, FLAG_NAN), ("FIC-201.PV", T0, math.inf, 0, FLAG_OUT_OF_RANGE)],
        id="float-words-of-part-6",
    ),
    pytest.param(
        network(dsm({"CNT-201": {"Type": 8, "Body": "123456"}})),
        [("CNT-201", T0, 123456.0, 0, 0)],
        id="int64-as-decimal-string",
    ),
    pytest.param(
        network(
            dsm({"TIC-201.PV": 37.5, "FIC-201.PV": {"Value": 1.0, "Status": BAD}}, Status=UNCERTAIN)
        ),
        [
            ("TIC-201.PV", T0, 37.5, UNCERTAIN, FLAG_BAD_STATUS),
            ("FIC-201.PV", T0, 1.0, BAD, FLAG_BAD_STATUS),
        ],
        id="message-status-applies-the-worse-wins",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": {"Value": 37.5, "Status": 0x480}})),
        [("TIC-201.PV", T0, 37.5, 0x480, FLAG_OVERFLOW)],
        id="overflow-bit",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": 75.0, "PIC-201.PV": -1})),
        [
            ("TIC-201.PV", T0, 75.0, 0, FLAG_OUT_OF_RANGE),
            ("PIC-201.PV", T0, -1.0, 0, FLAG_OUT_OF_RANGE),
        ],
        id="outside-eu-range-flagged",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": {"Status": BAD}})),
        [("TIC-201.PV", T0, None, BAD, FLAG_NAN | FLAG_BAD_STATUS)],
        id="bad-status-without-value",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": {"Value": 1.0, "StatusCode": UNCERTAIN}})),
        [("TIC-201.PV", T0, 1.0, UNCERTAIN, FLAG_BAD_STATUS)],
        id="statuscode-alias-not-part-14",
    ),
    pytest.param(
        network({"DataSetWriterId": 1, "Payload": {"TIC-201.PV": 37.5}}),
        [("TIC-201.PV", "2026-12-05T08:00:05+00:00", 37.5, 0, 0)],
        id="no-timestamp-arrival-time",
    ),
    pytest.param(
        network(
            dsm({"TIC-201.PV": {"Value": 1.0, "SourceTimestamp": "2026-12-05T09:59:00+02:00"}})
        ),
        [("TIC-201.PV", "2026-12-05T07:59:00+00:00", 1.0, 0, 0)],
        id="offset-converted-to-utc",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": {"Value": 1.0, "SourceTimestamp": "0001-01-01T00:00:00Z"}})),
        [("TIC-201.PV", T0, 1.0, 0, 0)],
        id="min-datetime-means-no-time",
    ),
    pytest.param(
        network(dsm(MessageType="ua-keepalive", SequenceNumber=5)),
        [],
        id="keepalive-has-no-values",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": 36.0}, MessageType="ua-deltaframe")),
        [("TIC-201.PV", T0, 36.0, 0, 0)],
        id="delta-frame",
    ),
]


@pytest.mark.parametrize(("message", "expected"), GOOD)
def test_good_messages_become_rows(message, expected):
    out = decode(message)
    assert rows_of(out) == expected
    assert not out.rejected


def test_rows_have_the_historian_row_columns():
    rows = decode(
        network(dsm({"TIC-201.PV": 1.0, "FIC-201.PV": {"Value": 2, "Status": BAD}}))
    ).rows()
    assert list(rows.columns) == ["time", "tag", "value", "status", "quality", "flags"]
    assert str(rows["time"].dt.tz) == "UTC"
    assert rows["quality"].tolist() == [0, 2]


# --------------------------------------------------------------------------- bad messages
BAD_CASES = [
    pytest.param(b"{not json", "BadDecodingError", "payload: must be JSON", id="not-json"),
    pytest.param(
        b"\xf1\x01\x02\x03uadp", "BadDecodingError", "must be UTF-8 JSON text", id="uadp-binary"
    ),
    pytest.param(b"42", "BadDecodingError", "must be a JSON object or array", id="json-number"),
    pytest.param(
        json.dumps({"MessageType": "ua-foo", "Payload": {}}),
        "BadDecodingError",
        "MessageType: must be ua-data, ua-metadata or a DataSetMessage type",
        id="unknown-message-type",
    ),
    pytest.param(
        json.dumps({"MessageId": "1", "Messages": [dsm({"TIC-201.PV": 1})]}),
        "BadDecodingError",
        "MessageType: must be 'ua-data' in a NetworkMessage with Messages; got none",
        id="network-message-without-type",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": 1}, SequenceNumber=-4)),
        "BadDecodingError",
        "Messages[0].SequenceNumber: must be a UInt32 (0 ... 4294967295); got the number -4",
        id="negative-sequence-number",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": 1}, SequenceNumber=2**32)),
        "BadDecodingError",
        "SequenceNumber: must be a UInt32",
        id="sequence-number-too-large",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": 1}, DataSetWriterId=70000)),
        "BadDecodingError",
        "DataSetWriterId: must be a UInt16 (0 ... 65535); got the number 70000",
        id="writer-id-too-large",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": 1}, Timestamp="yesterday")),
        "BadDecodingError",
        "Messages[0].Timestamp: must be an ISO 8601 DateTime",
        id="timestamp-not-iso",
    ),
    pytest.param(
        network(dsm([1, 2])),
        "BadDecodingError",
        "Messages[0].Payload: must be a JSON object of field name -> value; got a JSON array",
        id="payload-array",
    ),
    pytest.param(
        json.dumps([{"NodeId": "ns=2;s=TIC-201.PV", "Value": 37.5}]),
        "BadDecodingError",
        "must be a Part 14 DataSetMessage",
        id="vendor-shape-nodeid-value",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": "hot"})),
        "BadTypeMismatch",
        "Payload['TIC-201.PV']: tag 'TIC-201.PV' is a number: must be a number; "
        "got the string 'hot'",
        id="string-to-double",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": {"Temp": 37, "Unit": "C"}})),
        "BadTypeMismatch",
        "must be a number, boolean, Variant or DataValue; got a JSON object",
        id="structure-value",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": {"Type": 11, "Body": [1, 2], "Dimensions": [2]}})),
        "BadTypeMismatch",
        "must be a scalar; got an array",
        id="array-value",
    ),
    pytest.param(
        network(dsm({"CNT-201": 1.5})),
        "BadTypeMismatch",
        "tag 'CNT-201' is an Int32: must be a whole number in -2147483648 ... 2147483647; "
        "got the number 1.5",
        id="fraction-to-int32",
    ),
    pytest.param(
        network(dsm({"AGIT-201.ON": 1})),
        "BadTypeMismatch",
        "tag 'AGIT-201.ON' is a Boolean: must be true or false; got the number 1",
        id="number-to-boolean",
    ),
    pytest.param(
        network(dsm({"TIC-201.PV": {"Value": 1, "SourceTimestamp": "2026-12-05T08:30:00Z"}})),
        "BadInvalidTimestamp",
        "source time must be at most 300 s after arrival (2026-12-05T08:00:05.000+00:00); "
        "got 2026-12-05T08:30:00.000+00:00",
        id="source-time-in-the-future",
    ),
    pytest.param(
        network(dsm({"Temp": 37.5})),
        "BadNodeIdUnknown",
        "field 'Temp' of line1/1 maps to no tag",
        id="unknown-field",
    ),
    pytest.param(
        network(dsm({"BATCH-201": "B-0042"})),
        "BadNotSupported",
        "tag 'BATCH-201' is a String; the historian stores numbers",
        id="string-tag-not-stored",
    ),
    pytest.param(
        network(dsm({"0": 37.5})),
        "BadDecodingError",
        "a field index must name a field of the writer's ua-metadata; got '0', but no "
        "ua-metadata of the writer has arrived",
        id="field-index-without-metadata",
    ),
]


@pytest.mark.parametrize(("message", "status", "line"), BAD_CASES)
def test_bad_messages_are_refused_with_one_clear_line(message, status, line, caplog):
    with caplog.at_level(logging.WARNING, logger="connectors.pubsub_json"):
        out = decode(message)
    assert out.rejected == Counter({status: 1})
    assert not out.values
    assert line in caplog.text


def test_a_bad_dataset_message_leaves_the_others_of_its_message():
    out = decode(network(dsm({"TIC-201.PV": 1}, SequenceNumber="x"), dsm({"FIC-201.PV": 2.0})))
    assert [r[0] for r in rows_of(out)] == ["FIC-201.PV"]
    assert out.rejected == Counter({"BadDecodingError": 1})


def test_unknown_fields_are_counted_every_time_and_logged_once(caplog):
    decoder = PubSubDecoder(TAGS)
    with caplog.at_level(logging.WARNING, logger="connectors.pubsub_json"):
        for _ in range(3):
            out = decode(network(dsm({"Temp": 1.0, "TIC-201.PV": 2.0})), decoder=decoder)
            assert out.rejected == Counter({"BadNodeIdUnknown": 1})
    assert caplog.text.count("field 'Temp' of line1/1 maps to no tag") == 1


def test_non_part_14_keys_are_logged_not_silently_dropped(caplog):
    with caplog.at_level(logging.INFO, logger="connectors.pubsub_json"):
        out = decode(network(dsm({"TIC-201.PV": 1.0}, Vendor="x")))
    assert len(out) == 1
    assert "DataSetMessage field 'Vendor' is not Part 14; ignored" in caplog.text


def test_other_message_types_are_ignored():
    out = decode(json.dumps({"MessageId": "s", "MessageType": "ua-status", "IsCyclic": True}))
    assert out.ignored == 1 and not out.rejected and not out.values


# --------------------------------------------------------------------------- tag mapping
def test_pubsub_column_maps_fields_most_specific_first():
    tags = pd.DataFrame(
        {
            "tag": ["T-A", "T-B", "T-C", "T-D"],
            "pubsub": ["line1/1/Temp", "line1/*/Temp", "*/*/Temp", "*/2/Flow"],
        }
    )
    decoder = PubSubDecoder(tags)
    out = decode(
        json.dumps(
            [
                dsm({"Temp": 1.0}, PublisherId="line1", DataSetWriterId=1),
                dsm({"Temp": 2.0}, PublisherId="line1", DataSetWriterId=9),
                dsm({"Temp": 3.0, "Flow": 4.0}, PublisherId="line2", DataSetWriterId=2),
            ]
        ),
        decoder=decoder,
    )
    assert list(zip(out.tags, out.values, strict=True)) == [
        ("T-A", 1.0),
        ("T-B", 2.0),
        ("T-C", 3.0),
        ("T-D", 4.0),
    ]


def test_topic_gives_publisher_and_writer_of_a_message_without_them():
    tags = pd.DataFrame({"tag": ["T-A"], "pubsub": ["gw7/BR-201/Temp"]})
    out = decode(
        json.dumps({"Payload": {"Temp": 1.0}, "Timestamp": "2026-12-05T08:00:00Z"}),
        topic="opcua/json/data/gw7/group/BR-201",
        tags=tags,
    )
    assert out.tags == ["T-A"] and out.publishers == {"gw7"}
    assert topic_parts("plant/json/metadata/gw7") == ("gw7", None, None)


def test_field_indices_resolve_through_ua_metadata():
    decoder = PubSubDecoder(TAGS)
    metadata = {
        "MessageId": "md-1",
        "MessageType": "ua-metadata",
        "PublisherId": "line1",
        "DataSetWriterId": 1,
        "MetaData": {
            "Name": "BR-201",
            "Fields": [{"Name": "TIC-201.PV", "BuiltInType": 11}, {"Name": "FIC-201.PV"}],
            "ConfigurationVersion": {"MajorVersion": 7, "MinorVersion": 1},
        },
    }
    assert decode(json.dumps(metadata), "opcua/json/metadata/line1", decoder=decoder).metadata == 1
    out = decode(
        network(dsm({"0": 37.5, "1": 2.0}, MetaDataVersion={"MajorVersion": 7})), decoder=decoder
    )
    assert list(zip(out.tags, out.values, strict=True)) == [
        ("TIC-201.PV", 37.5),
        ("FIC-201.PV", 2.0),
    ]
    stale = decode(network(dsm({"0": 37.5}, MetaDataVersion={"MajorVersion": 6})), decoder=decoder)
    assert stale.rejected == Counter({"BadDecodingError": 1})


@pytest.mark.parametrize(
    ("tags", "match"),
    [
        pytest.param(
            pd.DataFrame({"name": ["x"]}), r"tags\.tag: required column", id="no-tag-column"
        ),
        pytest.param(
            pd.DataFrame({"tag": ["x"], "data_type": ["Decimal"]}),
            r"tags\.data_type: must be one of Double, Float, Int32, Boolean, String; got 'Decimal'",
            id="bad-data-type",
        ),
        pytest.param(
            pd.DataFrame({"tag": ["x"], "pubsub": ["line1/Temp"]}),
            r"tags\.pubsub: must be <PublisherId>/<DataSetWriterId>/<field>.*got 'line1/Temp'",
            id="pubsub-entry-short",
        ),
        pytest.param(
            pd.DataFrame({"tag": ["x"], "eu_low": ["cold"]}),
            r"tags\.eu_low: must be a number; got 'cold'",
            id="eu-low-text",
        ),
    ],
)
def test_bad_tag_tables_are_refused(tags, match):
    with pytest.raises(PubSubError, match=match):
        PubSubDecoder(tags)


# --------------------------------------------------------------------------- sequences
def observe_all(seqs, tracker=None, *, step_s=0.01, fingerprints=None):
    tracker = tracker or SequenceTracker()
    events = []
    for i, s in enumerate(seqs):
        fp = None if fingerprints is None else fingerprints[i]
        events.append(tracker.observe(("p", "1"), s, i * step_s, fingerprint=fp))
    return events


@pytest.mark.parametrize(
    ("seqs", "kinds", "missing"),
    [
        pytest.param([1, 2, 3], ["first", "next", "next"], 0, id="in-order"),
        pytest.param([1, 2, 4], ["first", "next", "gap"], 1, id="one-skipped"),
        pytest.param([1, 3, 2, 4], ["first", "gap", "late", "next"], 1, id="reordered"),
        pytest.param([1, 2, 2], ["first", "next", "duplicate"], 0, id="redelivered"),
        pytest.param(
            [2**32 - 2, 2**32 - 1, 0, 1], ["first", "next", "next", "next"], 0, id="uint32-wrap"
        ),
        pytest.param([65534, 65535, 0, 1], ["first", "next", "next", "next"], 0, id="uint16-wrap"),
        pytest.param([65535, 1], ["first", "gap"], 1, id="uint16-wrap-with-gap"),
        pytest.param([5000, 5001, 3], ["first", "next", "restart"], 0, id="restart-far-back"),
    ],
)
def test_sequence_rules(seqs, kinds, missing):
    events = observe_all(seqs)
    assert [e.kind for e in events] == kinds
    assert sum(e.missing for e in events) == missing


def test_a_number_going_back_after_silence_is_a_restart():
    tracker = SequenceTracker(reset_after_s=60)
    assert tracker.observe(("p", "1"), 10, 0.0).kind == "first"
    assert tracker.observe(("p", "1"), 11, 1.0).kind == "next"
    assert tracker.observe(("p", "1"), 1, 200.0).kind == "restart"
    assert tracker.observe(("p", "1"), 2, 201.0).kind == "next"


def test_a_late_redelivery_of_the_same_message_is_a_duplicate():
    tracker = SequenceTracker(reset_after_s=60)
    tracker.observe(("p", "1"), 10, 0.0, fingerprint="a")
    tracker.observe(("p", "1"), 11, 1.0, fingerprint="b")
    assert tracker.observe(("p", "1"), 11, 200.0, fingerprint="b").kind == "duplicate"


def test_a_reused_number_with_another_message_id_is_a_restart():
    events = observe_all([1, 2, 1], fingerprints=["a", "b", "c"])
    assert [e.kind for e in events] == ["first", "next", "restart"]
    assert observe_all([1, 2, 1], fingerprints=["a", "b", "a"])[-1].kind == "duplicate"


@pytest.mark.parametrize(
    ("after_keepalive", "missing"),
    [pytest.param(5, 0, id="next-is-announced"), pytest.param(6, 0, id="keepalive-spent-one")],
)
def test_keepalive_announces_the_next_number(after_keepalive, missing):
    tracker = SequenceTracker()
    tracker.observe(("p", "1"), 4, 0.0)
    assert tracker.observe(("p", "1"), 5, 1.0, keepalive=True).missing == 0
    assert tracker.observe(("p", "1"), after_keepalive, 2.0).missing == missing


def test_a_keepalive_after_skipped_messages_shows_the_gap():
    tracker = SequenceTracker()
    tracker.observe(("p", "1"), 4, 0.0)
    assert tracker.observe(("p", "1"), 8, 1.0, keepalive=True).missing == 3


@settings(max_examples=60, deadline=None)
@given(
    start=st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 400, 2**32 - 1)),
    n=st.integers(3, 400),
    data=st.data(),
)
def test_gaps_count_exactly_the_dropped_numbers_across_uint32_wrap(start, n, data):
    drops = data.draw(st.sets(st.integers(1, n - 2)))
    seqs = [(start + i) % 2**32 for i in range(n) if i not in drops]
    events = observe_all(seqs)
    assert sum(e.missing for e in events) == len(drops)
    assert {e.kind for e in events} <= {"first", "next", "gap"}


@settings(max_examples=60, deadline=None)
@given(start=st.integers(64_000, 65_535), n=st.integers(3, 600), data=st.data())
def test_gaps_count_exactly_the_dropped_numbers_across_uint16_wrap(start, n, data):
    drops = data.draw(st.sets(st.integers(1, n - 2), max_size=n // 3))
    seqs = [(start + i) % 2**16 for i in range(n) if i not in drops]
    events = observe_all(seqs)
    assert sum(e.missing for e in events) == len(drops)
    assert {e.kind for e in events} <= {"first", "next", "gap"}


@settings(max_examples=60, deadline=None)
@given(n=st.integers(4, 300), data=st.data())
def test_every_reordering_is_one_gap_and_one_late_message(n, data):
    swaps = sorted(data.draw(st.sets(st.integers(1, n - 2), max_size=n // 4)))
    order = list(range(n))
    done = set()
    for i in swaps:  # swap disjoint neighbours (i, i + 1)
        if i in done or i + 1 in done:
            continue
        order[i], order[i + 1] = order[i + 1], order[i]
        done |= {i, i + 1}
    events = observe_all(order)
    late = sum(e.kind == "late" for e in events)
    assert late == len(done) // 2
    assert sum(e.missing for e in events) == late


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 300), data=st.data())
def test_redeliveries_are_duplicates_never_gaps(n, data):
    repeats = data.draw(st.lists(st.integers(0, n - 1), max_size=20))
    seqs, fingerprints = [], []
    for i in range(n):
        seqs.append(i)
        fingerprints.append(f"m{i}")
        for r in (r for r in repeats if r == i):
            seqs.append(r)
            fingerprints.append(f"m{r}")
    events = observe_all(seqs, fingerprints=fingerprints)
    assert sum(e.kind == "duplicate" for e in events) == len(repeats)
    assert sum(e.missing for e in events) == 0


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("url", "match"),
    [
        pytest.param("tcp://127.0.0.1:1883", "must start with mqtt:// or mqtts://", id="scheme"),
        pytest.param("mqtt://:1883", "must name a host", id="no-host"),
        pytest.param(
            "mqtt://127.0.0.1:99999", r"port must be a number in 1 \.\.\. 65535", id="port"
        ),
        pytest.param("mqtt://127.0.0.1/opcua", "must have no path", id="path"),
    ],
)
def test_bad_broker_urls_are_refused(url, match):
    with pytest.raises(MqttReceiveError, match=f"url: {match}.*got '{url}'"):
        parse_url(url)


def test_broker_url_hides_the_password():
    broker = parse_url("mqtts://ot:s%40cret@broker.plant:8884")
    assert (broker.host, broker.port, broker.username, broker.password) == (
        "broker.plant",
        8884,
        "ot",
        "s@cret",
    )
    assert "cret" not in str(broker) and "cret" not in repr(broker)


@pytest.mark.parametrize(
    "topic", ["opcua/#/data", "opcua/json/da+ta/#", "", "opcua/json#"], ids=str
)
def test_bad_topic_filters_are_refused(topic):
    with pytest.raises(MqttReceiveError, match="topic: "):
        check_topic_filter(topic)


def test_metadata_topic_follows_the_data_topic():
    assert metadata_filter("opcua/json/data/line1/#") == "opcua/json/metadata/line1/#"
    assert metadata_filter("plant/values/#") is None


# --------------------------------------------------------------------------- real broker
def _mosquitto() -> tuple[str, str]:
    broker = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    pub = shutil.which("mosquitto_pub")
    if broker is None or pub is None:
        pytest.fail(
            "mosquitto and mosquitto_pub are not installed: apt-get install mosquitto "
            "mosquitto-clients (.ci/run installs them)"
        )
    return broker, pub


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A mosquitto of the test's own on a free port of 127.0.0.1, with persistence, that the
    test may stop and start again (its sessions and queued messages kept on disk)."""

    def __init__(self, folder: Path, port: int | None = None):
        self.binary, self.pub = _mosquitto()
        self.port = port or _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.folder = folder
        folder.mkdir(exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            # as root, mosquitto drops to the user "mosquitto", who may not write here
            f"user {getpass.getuser()}\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 1000\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        log = (self.folder / "mosquitto.log").open("a")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"mosquitto did not start: {(self.folder / 'mosquitto.log').read_text()}"
                    )
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # mosquitto saves its sessions on SIGTERM
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    """A running :class:`Mosquitto`."""
    m = Mosquitto(tmp_path / "mosquitto").start()
    yield m
    m.stop()


async def publish(broker, topic, messages, *, pace_s=0.0):
    """Publish ``messages`` (JSON text) with QoS 1 through one ``mosquitto_pub -l``."""
    proc = await asyncio.create_subprocess_exec(
        broker.pub,
        "-h",
        "127.0.0.1",
        "-p",
        str(broker.port),
        "-q",
        "1",
        "-t",
        topic,
        "-l",
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    for m in messages:
        proc.stdin.write(m.encode() + b"\n")
        await proc.stdin.drain()
        if pace_s:
            await asyncio.sleep(pace_s)
    proc.stdin.close()
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()


class Receiver:
    """Our subscriber as ``biotwin receive --mqtt`` runs it, in a task."""

    def __init__(self, broker, data_dir: Path, *, client_id="biotwin-test", sink=None, **kw):
        self.source = PushSource("mqtt", f"{broker.url} opcua/json/data/#", data_dir)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            subscribe(
                broker.url,
                "opcua/json/data/#",
                TAGS,
                sink or historian_sink(data_dir),
                source=self.source,
                client_id=client_id,
                stop=self.stop,
                batch_s=0.05,
                **kw,
            )
        )

    async def ready(self, broker):
        """Subscribed: a probe publisher's keep-alive came through."""
        probe = network(dsm(MessageType="ua-keepalive"), publisher="probe")
        deadline = time.monotonic() + 10
        while "probe" not in self.source.status()["connected"]:
            assert not self.task.done(), self.task
            assert time.monotonic() < deadline, "the subscriber never received the probe"
            await publish(broker, "opcua/json/data/probe", [probe])
            await asyncio.sleep(0.1)

    async def close(self):
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def until(check, timeout_s=10.0, *, what=lambda: ""):
    """Wait for ``check()``; on timeout fail with ``what()`` (what was seen instead)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s {what()}"
        await asyncio.sleep(0.05)


def frames(first_seq: int, n: int, *, fields: int = 3, t0=None) -> list[str]:
    """Key frame then delta frames of writer 1: every value has its own SourceTimestamp."""
    t0 = t0 or pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=10)
    tags = ["TIC-201.PV", "FIC-201.PV", "PIC-201.PV"][:fields]
    out = []
    for k in range(n):
        seq = first_seq + k
        names = tags if k % 5 == 0 else tags[: 1 + seq % len(tags)]  # key, then deltas
        payload = {
            name: {
                "Value": round(1.0 + seq * 0.01 + j, 4),
                "SourceTimestamp": (t0 + pd.Timedelta(milliseconds=10 * seq + j)).isoformat(),
            }
            for j, name in enumerate(names)
        }
        kind = "ua-keyframe" if k % 5 == 0 else "ua-deltaframe"
        out.append(
            network(dsm(payload, SequenceNumber=seq, MessageType=kind), message_id=f"m{seq}")
        )
    return out


def expected_values(messages: list[str]) -> set[tuple]:
    out = set()
    for m in messages:
        for d in json.loads(m)["Messages"]:
            for tag, v in d["Payload"].items():
                out.add((tag, pd.Timestamp(v["SourceTimestamp"]), v["Value"]))
    return out


def stored(data_dir: Path) -> pd.DataFrame:
    return Historian(data_dir / "historian").query()


def as_set(rows: pd.DataFrame) -> set[tuple]:
    return {(r.tag, r.time, r.value) for r in rows.itertuples()}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"], ids=lambda p: f"mqtt-{p}")
def test_key_and_delta_frames_published_by_mosquitto_pub_are_stored_once(
    broker, tmp_path, protocol
):
    async def main():
        receiver = Receiver(broker, tmp_path, protocol=protocol)
        await receiver.ready(broker)
        messages = frames(1, 40)
        await publish(broker, "opcua/json/data/line1", messages)
        want = expected_values(messages)
        await until(lambda: receiver.source.values_total >= len(want))
        await receiver.close()
        return receiver, want

    receiver, want = asyncio.run(main())
    rows = stored(tmp_path)
    assert len(rows) == len(want)
    assert as_set(rows) == want
    status = receiver.source.status()
    assert status["values_total"] == len(want)
    assert status["sequence_gaps"] == 0 and status["rejected"] == {}
    assert Historian(tmp_path / "historian").alarms().empty


def test_a_skipped_sequence_number_raises_a_gap_alarm(broker, tmp_path):
    async def main():
        receiver = Receiver(broker, tmp_path)
        await receiver.ready(broker)
        messages = frames(1, 6)
        sent = messages[:3] + messages[4:]  # SequenceNumber 4 never published
        await publish(broker, "opcua/json/data/line1", [sent[0], "{broken", *sent[1:]])
        await until(lambda: receiver.source.values_total >= len(expected_values(sent)))
        await receiver.close()
        return receiver

    receiver = asyncio.run(main())
    assert receiver.source.status()["sequence_gaps"] == 1
    assert receiver.source.status()["rejected"] == {"BadDecodingError": 1}
    alarms = Historian(tmp_path / "historian").alarms()
    assert len(alarms) == 1
    alarm = alarms.iloc[0]
    assert alarm["type"] == "data integrity" and alarm["severity"] == "medium"
    assert "PubSub writer line1/1 skipped 1 SequenceNumbers (3 -> 5" in alarm["message"]
    status_file = json.loads((tmp_path / "receive" / "status-mqtt.json").read_text())
    assert status_file["sequence_gaps"] == 1


def test_stopping_and_restarting_while_mosquitto_pub_publishes_loses_nothing(broker, tmp_path):
    async def main():
        first = Receiver(broker, tmp_path, client_id="biotwin-restart")
        await first.ready(broker)
        messages = frames(1, 300)
        publisher = asyncio.create_task(
            publish(broker, "opcua/json/data/line1", messages, pace_s=0.004)
        )
        await until(lambda: first.source.values_total > 0)
        await first.close()  # stopped while the publisher goes on: the broker queues
        await asyncio.sleep(0.2)
        second = Receiver(broker, tmp_path, client_id="biotwin-restart")
        await until(lambda: second.source.values_total > 0)
        second.task.cancel()  # killed mid-stream: whatever it did not acknowledge comes again
        with pytest.raises(asyncio.CancelledError):
            await second.task
        await publisher
        third = Receiver(broker, tmp_path, client_id="biotwin-restart")
        want = expected_values(messages)
        await until(
            lambda: len(stored(tmp_path)) >= len(want),
            timeout_s=15,
            what=lambda: f"({len(stored(tmp_path))} of {len(want)} values stored)",
        )
        await third.close()
        return want, [first, second, third]

    want, receivers = asyncio.run(main())
    rows = stored(tmp_path)
    assert as_set(rows) == want  # every value, once (one row per tag and time)
    assert sum(r.source.values_total for r in receivers) >= len(want)
    assert receivers[0].source.values_total < len(want)  # the first really stopped early


def test_a_failing_sink_is_retried_and_nothing_is_lost(broker, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("connectors.mqtt_receive.SINK_RETRY_MIN_S", 0.05)
    durable = historian_sink(tmp_path)
    failures = [OSError("disk full"), OSError("disk full")]

    async def flaky(rows):
        if failures and len(rows) and "probe" not in rows["tag"].tolist():
            raise failures.pop()
        await durable(rows)

    async def main():
        receiver = Receiver(broker, tmp_path, sink=flaky)
        await receiver.ready(broker)
        messages = frames(1, 20)
        await publish(broker, "opcua/json/data/line1", messages)
        want = expected_values(messages)
        await until(lambda: receiver.source.values_total >= len(want))
        await receiver.close()
        return want

    with caplog.at_level(logging.ERROR, logger="connectors.mqtt_receive"):
        want = asyncio.run(main())
    assert not failures
    assert as_set(stored(tmp_path)) == want
    assert "mqtt: sink failed for" in caplog.text and "OSError('disk full')" in caplog.text


def test_the_subscriber_waits_for_the_broker_and_reconnects(tmp_path, caplog):
    mosquitto = Mosquitto(tmp_path / "mosquitto")  # not started yet

    async def main():
        receiver = Receiver(mosquitto, tmp_path, client_id="biotwin-reconnect")
        await asyncio.sleep(0.3)
        mosquitto.start()
        await receiver.ready(mosquitto)
        first = frames(1, 5)
        await publish(mosquitto, "opcua/json/data/line1", first)
        await until(lambda: receiver.source.values_total >= len(expected_values(first)))
        mosquitto.stop()  # the broker goes away and comes back with its sessions
        await asyncio.sleep(0.3)
        mosquitto.start()
        second = frames(6, 5)
        await publish(mosquitto, "opcua/json/data/line1", second)  # queued for our session
        want = expected_values(first + second)
        await until(lambda: receiver.source.values_total >= len(want), timeout_s=15)
        await receiver.close()
        return want

    try:
        with caplog.at_level(logging.INFO, logger="connectors.mqtt_receive"):
            want = asyncio.run(main())
    finally:
        mosquitto.stop()
    assert as_set(stored(tmp_path)) == want
    assert "mqtt: cannot connect to mqtt://127.0.0.1" in caplog.text
    assert "connection to mqtt://127.0.0.1" in caplog.text and "lost" in caplog.text
    assert "(session present: True)" in caplog.text


def test_biotwin_receive_with_mqtt_stores_pubsub_values_through_the_receiver(broker, tmp_path):
    """`biotwin receive --mqtt` as a process: mosquitto_pub's key and delta frames land in
    the historian through the receiver's checks and durable store; a tag the tag file does
    not name is refused (BadNodeIdUnknown) and not counted as stored."""
    import os
    import signal
    import sys

    data = tmp_path / "data"
    data.mkdir()
    tags = tmp_path / "tags.csv"
    tags.write_text(
        "tag,unit,eng_unit,eu_low,eu_high,data_type,description\n"
        + "".join(f"{t},R1,CEL,0,200,Double,{t}\n" for t in TAGS["tag"])
    )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "biotwin", "receive", "--security", "none",
         "--endpoint", f"opc.tcp://127.0.0.1:{port}/biotwin/receive", "--tags", str(tags),
         "--data-dir", str(data), "--mqtt", broker.url, "--topic", "opcua/json/data/#"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parents[1], start_new_session=True,
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if line.startswith("receiving at"):
                break
        else:
            raise AssertionError(f"biotwin receive did not start (exit {proc.wait()})")
        messages = frames(1, 20)
        stranger = network(
            dsm({"NOT-A-TAG.PV": {"Value": 1.0}}, SequenceNumber=21), message_id="m21"
        )
        want = expected_values(messages)

        def status() -> dict:
            path = data / "receive" / "status-mqtt.json"
            return json.loads(path.read_text()) if path.exists() else {}

        async def main():
            deadline = time.monotonic() + 20
            while status().get("values_total", 0) < len(want):  # subscribed: then all of them
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, f"not stored: {status()}"
                await publish(broker, "opcua/json/data/line1", [*messages, stranger])
                await asyncio.sleep(1.2)  # the status file is written at most once a second

        asyncio.run(main())
        assert as_set(stored(data)) == want  # every value once, whatever was published twice
        assert status()["rejected"].get("BadNodeIdUnknown", 0) >= 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
