"""The Alarms and events page: one list from the batch context, the historian's samples,
the scores and the service logs; acknowledgements in the audit trail, refused for viewers."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_users
from streamlit.testing.v1 import AppTest

from connectors.historian import Historian
from dashboard.audit import AuditTrail, SignatureError
from dashboard.events import (
    acknowledge,
    event_list,
    model_events,
    quality_events,
    service_events,
    shown,
)

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "dashboard" / "views" / "events.py"
T0 = pd.Timestamp("2026-01-10 00:00", tz="UTC")
END = T0 + pd.Timedelta(days=1)
GAP = (pd.Timestamp("2026-01-10 10:00", tz="UTC"), pd.Timestamp("2026-01-10 13:00", tz="UTC"))
BAD = pd.Timestamp("2026-01-10 06:00", tz="UTC")  # 3 bad samples of TIC-201.PV from here
REPAIR = (pd.Timestamp("2026-01-10 15:00", tz="UTC"), pd.Timestamp("2026-01-10 19:30", tz="UTC"))


def log_time(utc: str) -> str:
    """2026-01-10 ``utc`` as a service writes it in its log: the machine's local time."""
    stamp = pd.Timestamp(f"2026-01-10 {utc}", tz="UTC")
    return stamp.tz_convert(datetime.now().astimezone().tzinfo).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def store(tmp_path) -> Path:
    """One day of BR-201 (two tags, 10 min): no data 10:00-13:00, three bad samples at
    06:00; BR-202 in repair 15:00-19:30; a batch at risk, a drift flag, a restarted ingest."""
    h = Historian(tmp_path / "historian")
    times = pd.date_range(T0, END, freq="10min", inclusive="left")
    parts = []
    for tag in ("TIC-201.PV", "AIC-2012.PV"):
        rows = pd.DataFrame({"time": times, "tag": tag, "value": 37.0, "quality": 0})
        rows = rows[(rows["time"] <= GAP[0]) | (rows["time"] >= GAP[1])]
        parts.append(rows)
    parts[0].loc[parts[0]["time"].between(BAD, BAD + pd.Timedelta(minutes=20)), "quality"] = 2
    h.append(pd.concat(parts, ignore_index=True))
    h.upsert_tags(
        pd.DataFrame(
            {
                "tag": ["TIC-201.PV", "AIC-2012.PV"],
                "unit": "BR-201",
                "eng_unit": ["CEL", "P1"],
                "description": ["Broth temperature", "Dissolved oxygen"],
            }
        )
    )
    h.append_batch_context(
        pd.DataFrame(
            {
                "batch_id": [None, "B00007"],
                "unit": ["BR-202", "BR-201"],
                "recipe": [None, "ADJ-EMU-01"],
                "phase": ["repair", "growth"],
                "state": ["repair", "running"],
                "start_time": [REPAIR[0], T0],
                "end_time": [REPAIR[1], None],
            }
        )
    )
    scores = tmp_path / "scores"
    scores.mkdir()
    pd.DataFrame(
        {
            "batch_id": ["B00007", "B00008"],
            "unit": ["BR-201", "BR-203"],
            "progress": [0.6, 0.2],
            "p_deviation": [0.72, 0.03],
            "likely_class": ["do_crash", None],
            "reasons": ["DO below envelope for 3.2 h in growth", ""],
            "low_confidence": [False, False],
            "suspect_sensors": ["", ""],
            "model_version": "deviation-v3",
            "scored_at": END - pd.Timedelta(minutes=5),
        }
    ).to_parquet(scores / "batch_scores.parquet")
    drift = {
        "computed_at": (END - pd.Timedelta(minutes=5)).isoformat(),
        "deviation": {
            "model_version": "deviation-v3",
            "features_checked": 40,
            "features_drifting": 3,
            "worst": [{"feature": "growth.do_mean", "psi": 0.4}],
            "flag": True,
        },
    }
    (scores / "drift.json").write_text(json.dumps(drift))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ingest.log").write_text(
        f"{log_time('20:00:00')},123 INFO connectors.ingest: subscribed to 178 tags\n"
        f"{log_time('20:05:00')},001 ERROR connectors.ingest: session lost: connection refused\n"
        f"{log_time('20:05:02')} ingest stopped (exit 1); restarting (restart 1, log ingest.log)\n"
    )
    (logs / "scoring.log").write_text(
        f"{log_time('21:00:00')},000 INFO quality.live: scored 3 batches\n"
        "Traceback (most recent call last):\n"
        '  File "quality/live.py", line 1, in <module>\n'
        "    score()\n"
        "MemoryError: out of memory\n"
        f"{log_time('21:10:00')},000 ERROR quality.live: scoring failed\n"
        "Traceback (most recent call last):\n"
        '  File "quality/live.py", line 2, in score\n'
        "OSError: disk full\n"
    )
    write_users(tmp_path / "users.toml")
    return tmp_path


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("BIOTWIN_TZ", "UTC")


def events_of(store: Path, trail: AuditTrail | None = None) -> pd.DataFrame:
    return event_list(Historian(store / "historian"), store, T0, END, trail=trail)


def test_the_list_holds_the_planted_repair_and_gap_newest_first(store, utc):
    events = events_of(store)
    assert events["time"].is_monotonic_decreasing
    failure = events[events["type"] == "equipment failure"].iloc[0]
    assert (failure["unit"], failure["time"], failure["severity"]) == ("BR-202", REPAIR[0], "high")
    repaired = events[events["type"] == "equipment repair"].iloc[0]
    assert repaired["time"] == REPAIR[1] and "after 4.5 h of repair" in repaired["message"]
    gap = events[events["type"] == "data gap"]
    assert len(gap) == 1  # both tags of the unit in one event
    gap = gap.iloc[0]
    assert (gap["unit"], gap["time"]) == ("BR-201", GAP[0])
    assert "No data from 2 tags of BR-201" in gap["message"] and "for 3.0 h" in gap["message"]
    assert set(events["state"]) == {"active"}


def test_a_run_of_bad_samples_is_a_sensor_fault(store, utc):
    h = Historian(store / "historian")
    faults = quality_events(h, T0, END)
    bad = faults[faults["type"] == "sensor fault"]
    assert len(bad) == 1 and bad.iloc[0]["time"] == BAD
    assert "TIC-201.PV reported bad quality (3 samples) for 30 min" in bad.iloc[0]["message"]


def test_scores_drift_and_service_logs_become_events(store, utc):
    model = model_events(store)
    risk = model[model["type"] == "deviation"]
    assert list(risk["batch_id"]) == ["B00007"]  # 3 % is no alarm
    assert (
        risk.iloc[0]["severity"] == "high"
        and "risk 72%, most likely do crash" in (risk.iloc[0]["message"])
    )
    assert (model["type"] == "drift flag").sum() == 1
    assert risk.iloc[0]["time"] == END - pd.Timedelta(minutes=5)  # scored_at: no plant time


def test_scores_are_dated_on_the_plant_clock_when_the_file_has_it(store, utc):
    path = store / "scores" / "batch_scores.parquet"
    scores = pd.read_parquet(path).assign(plant_time=T0 + pd.Timedelta(hours=20))
    scores.to_parquet(path)
    risk = model_events(store).query("type == 'deviation'")
    assert list(risk["time"]) == [T0 + pd.Timedelta(hours=20)]
    service = service_events(store / "logs").set_index("source")
    ingest = service.loc["logs/ingest.log"]
    assert list(ingest["severity"]) == ["medium", "high"]
    restart = ingest.iloc[1]
    assert restart["time"] == pd.Timestamp("2026-01-10 20:05:02", tz="UTC")
    assert restart["message"].startswith("Service ingest: ingest stopped (exit 1)")
    scoring = service.loc["logs/scoring.log"]  # a crash; an error with its own traceback
    assert list(scoring["message"]) == [
        "Service scoring crashed: MemoryError: out of memory",
        "Service scoring logged an error: ERROR quality.live: scoring failed",
    ]
    assert scoring["time"].iloc[0] == pd.Timestamp("2026-01-10 21:00", tz="UTC")


def test_an_event_keeps_its_id_when_its_log_grows(store, utc):
    before = service_events(store / "logs")
    with open(store / "logs" / "ingest.log", "a") as fh:
        fh.write("ingest reconnected\n")
    assert list(service_events(store / "logs")["key"]) == list(before["key"])


def test_times_and_labels_are_for_people(store, monkeypatch):
    monkeypatch.setenv("BIOTWIN_TZ", "Europe/Brussels")
    table = shown(events_of(store))
    assert list(table.columns) == ["Time", "Unit", "Type", "Severity", "Message", "State"]
    assert "2026-01-10 16:00:00" in set(table["Time"])  # the repair, 15:00 UTC
    assert not table.astype(str).isin(["None", "nan", "NaT", ""]).any().any()
    assert "—" in set(table["Unit"])  # drift and service events belong to no unit
    assert not table["Type"].str.contains("_").any()


def test_acknowledging_writes_an_audit_record_with_the_user(store, utc):
    trail = AuditTrail(store / "audit", store / "users.toml")
    events = events_of(store, trail)
    gap = events[events["type"] == "data gap"].iloc[0]
    record = acknowledge(trail, gap.to_dict(), user="engineer", roles=["engineer"])
    assert (record["user"], record["action"], record["decision"]) == (
        "engineer",
        "acknowledge",
        gap["key"],
    )
    assert "data gap: No data from 2 tags" in record["reason"]
    assert trail.verify().ok
    again = events_of(store, trail).set_index("key")
    assert again.loc[gap["key"], "state"].startswith("acknowledged by engineer, 20")
    assert (again.drop(gap["key"])["state"] == "active").all()


@pytest.mark.parametrize(
    ("user", "roles", "match"),
    [
        ("viewer", ["viewer"], "needs one of the roles qa, engineer, maintenance; has viewer"),
        (None, ["viewer"], "nobody is signed in"),
        ("viewer", ["qa"], "user 'viewer' needs one of the roles"),  # users.toml decides
    ],
    ids=["viewer", "nobody", "role-not-in-users-file"],
)
def test_acknowledging_is_refused_without_the_role(store, utc, user, roles, match):
    trail = AuditTrail(store / "audit", store / "users.toml")
    event = events_of(store).iloc[0].to_dict()
    with pytest.raises(SignatureError, match=match):
        acknowledge(trail, event, user=user, roles=roles)
    assert trail.records() == []


@pytest.fixture
def page(store, monkeypatch):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    monkeypatch.setenv("BIOTWIN_TZ", "UTC")
    return AppTest.from_file(str(PAGE), default_timeout=60)


def test_a_viewer_sees_the_list_but_cannot_acknowledge(page):
    at = page.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert {"Equipment failure", "Data gap", "Deviation", "Service failure"} <= set(table["Type"])
    assert any("Severity:" in m.value and "High" in m.value for m in at.markdown)
    assert not [b for b in at.button if b.key == "ev_ack"]
    assert any("viewers see the list only" in c.value for c in at.caption)


def test_an_engineer_acknowledges_from_the_page(page, store):
    page.session_state["user"] = "engineer"
    page.session_state["roles"] = ["engineer"]
    at = page.run()
    assert not at.exception
    choice = next(
        o for o in at.selectbox(key="ev_pick").options if "Data gap" in o or "data gap" in o
    )
    at.selectbox(key="ev_pick").set_value(choice)
    at.button(key="ev_ack").click().run()
    assert not at.exception
    assert any(s.value.startswith("Acknowledged by engineer") for s in at.success)
    records = AuditTrail(store / "audit", store / "users.toml").records()
    assert [(r["user"], r["action"]) for r in records] == [("engineer", "acknowledge")]
    table = at.dataframe[0].value
    assert (
        table.loc[table["Type"] == "Data gap", "State"]
        .str.startswith("Acknowledged by engineer")
        .all()
    )
    assert np.sum(table["State"] == "Active") == len(table) - 1
