"""The scenarios page for a production planner: dated inputs checked before a run, a dated
lot schedule, each lever alone and together, and expected good lots that add up."""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sign_in_as, write_users
from streamlit.testing.v1 import AppTest

from connectors.historian import Historian
from connectors.twin_import import import_simulation
from dashboard.plant import live_state
from dashboard.whatif import (
    PLANNER_KPIS,
    Author,
    Horizon,
    good_rate,
    lever_runs,
    lot_kpis,
    lot_schedule,
    plant_now,
    run_pair,
    run_study,
    scenario_events,
    show_lot_schedule,
    twin_good_rate,
)
from twin.scenarios import AssetOutage, DemandChange

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "dashboard" / "views" / "scenarios.py"
UTC = pd.Timestamp(0, tz="UTC").tz


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    import_simulation(ROOT / "sample_data" / "twin", Historian(root / "historian"))
    write_users(root / "users.toml")
    (root / "simulation").mkdir()
    shutil.copy(ROOT / "sample_data" / "twin" / "batches.parquet", root / "simulation")
    return root


@pytest.fixture
def env(store, monkeypatch):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    monkeypatch.setenv("BIOTWIN_PREFETCH_BASELINE", "0")
    monkeypatch.setenv("BIOTWIN_TZ", "Europe/Brussels")
    return store


@pytest.fixture(scope="module")
def state(config, store):
    return live_state(Historian(store / "historian"), config)[0]


@pytest.fixture(scope="module")
def study(config, state):
    """BR-202 down 10 days from tomorrow and +20 % demand, each alone and together."""
    events = [AssetOutage(target="BR-202", start_h=24, end_h=264), DemandChange(factor=1.2)]
    levers = lever_runs(events)
    author = Author("engineer", "Erin Patel", ("engineer",))
    return run_study(
        config,
        state,
        events,
        author=author,
        levers=levers,
        horizon_h=480,
        replications=12,
        seed=4,
        workers=2,
    )


def form(horizon: Horizon, start_h: float, hours: float, **more) -> dict:
    start = horizon.at(start_h)
    return {
        "sc_outage_unit": "BR-202",
        "sc_outage_date": start.date(),
        "sc_outage_time": start.time().replace(tzinfo=None),
        "sc_outage_hours": hours,
        **more,
    }


# ---------------------------------------------------------------------- the form's checks
NOW = pd.Timestamp("2026-03-01T23:50:00Z")


@pytest.mark.parametrize(
    ("start_h", "hours", "field", "wording"),
    [
        (96, -72, "sc_outage_hours", r"^Outage duration: must be > 0 h .*; got -72 h$"),
        (96, 0, "sc_outage_hours", r"^Outage duration: must be > 0 h .*; got 0 h$"),
        (-5, 10, "sc_outage_date", r"^Outage start: must be within the scenario horizon .*got "),
        (24 * 31, 10, "sc_outage_date", r"^Outage start: must be within the scenario horizon"),
        (24 * 29, 72, "sc_outage_hours", r"^Outage end: must be within the scenario horizon"),
    ],
    ids=["96h-to-24h", "zero-duration", "before-now", "after-horizon", "ends-after-horizon"],
)
def test_a_bad_outage_is_refused_with_field_rule_and_value(start_h, hours, field, wording):
    horizon = Horizon(NOW, 30 * 24, UTC)
    events, problems = scenario_events(form(horizon, start_h, hours), horizon)
    assert events == []
    assert list(problems) == [field]
    assert re.search(wording, problems[field])


def test_a_good_outage_becomes_hours_from_now_in_the_plants_time_zone():
    from zoneinfo import ZoneInfo

    horizon = Horizon(NOW, 30 * 24, ZoneInfo("Europe/Brussels"))
    inputs = form(horizon, 24, 72, sc_demand=10)
    assert inputs["sc_outage_time"].hour == 0  # 23:50 UTC + 24 h = 00:50 in Brussels
    events, problems = scenario_events(inputs, horizon)
    assert problems == {}
    outage, demand = events
    assert (outage.start_h, outage.end_h) == pytest.approx((24, 96))
    assert demand.factor == pytest.approx(1.1)


def test_the_page_refuses_96h_to_24h_beside_the_field_and_saves_nothing(env):
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    sign_in_as(at, "engineer")
    at.run()
    assert not at.exception
    start = pd.Timestamp.combine(
        at.date_input(key="sc_outage_date").value, at.time_input(key="sc_outage_time").value
    ) + timedelta(hours=72)  # the default start is 24 h from now: now 96 h
    at.date_input(key="sc_outage_date").set_value(start.date())
    at.time_input(key="sc_outage_time").set_value(start.time())
    at.number_input(key="sc_outage_hours").set_value(-72.0)
    at.text_input(key="sc_name").input("backwards outage")
    at.number_input(key="sc_reps").set_value(10)
    at.button(key="sc_run").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    beside = "Outage duration: must be > 0 h (the end must come after the start); got -72 h"
    assert beside in errors  # under the field, in the form
    assert any(e.startswith("Not run and not saved: 1 input(s) to fix.") for e in errors)
    assert not (env / "scenarios" / "backwards-outage.json").exists()
    assert not any("vs baseline" in h.value for h in at.subheader)


# ---------------------------------------------------------------------- the lot schedule
def test_lot_schedule_has_dates_and_delays_largest_first(study, state, config):
    base, what, _ = study
    table = lot_schedule(base, what)
    assert len(table) >= 10
    delays = table["delay_p50"].to_numpy()
    assert (np.diff(delays) <= 0).all()  # largest delay first
    assert delays[0] > 0  # a 10-day outage of a production vessel makes some lot late
    assert table["p_miss"].iloc[0] >= 0.5
    assert (table["in_scenario"] >= 0.5).any()
    horizon = Horizon(plant_now(state, config), 480, UTC)
    shown = show_lot_schedule(table, horizon)
    first = shown.iloc[0]
    assert re.fullmatch(r"\w{3} \d\d \w{3} \d\d:\d\d", first["Due (UTC)"])
    assert re.match(r"\w{3} \d\d (Mar|Apr) \d\d:\d\d \(|after the horizon", first.iloc[3])
    assert first["Misses its due date"].startswith("yes (")
    assert float(first["Late by, days: median (P10 to P90)"].split()[0]) > 0
    # no snake_case column, no None or nan cell
    assert not any("_" in c for c in shown.columns)
    assert not shown.isin(["None", "nan", "NaN"]).any().any() and shown.notna().all().all()


def test_each_lever_alone_is_the_same_as_running_it_by_itself(study, config, state):
    base, what, parts = study
    assert list(parts) == ["Outage BR-202 240 h from 24 h from now", "Demand +20 %"]
    demand = parts["Demand +20 %"]
    kw = {"horizon_h": 480, "replications": 12, "seed": 4, "workers": 2}
    again, alone = run_pair(config, state, [DemandChange(factor=1.2)], **kw)
    pd.testing.assert_frame_equal(again.kpis, base.kpis)  # same seeds: same baseline
    pd.testing.assert_frame_equal(alone.kpis, demand.kpis)
    rate = 0.9
    kb = lot_kpis(base, rate)
    late = {k: (lot_kpis(r, rate)["late"] - kb["late"]).mean() for k, r in parts.items()}
    both = (lot_kpis(what, rate)["late"] - kb["late"]).mean()
    outage = "Outage BR-202 240 h from 24 h from now"
    # together the two levers make more lots late than either alone: what the outage
    # does is not what the demand does, nor what both do
    assert both > max(late.values()) > 0
    finished = {
        k: (lot_kpis(r, rate)["finished"] - kb["finished"]).mean() for k, r in parts.items()
    }
    assert finished["Demand +20 %"] > 0 > finished[outage]


# ---------------------------------------------------------------------- expected good lots
def test_good_rejected_and_lost_add_up_to_the_lots_finished(study):
    for result in study[:2]:
        k = lot_kpis(result, 0.85)
        total = k["expected_good"] + k["expected_rejected"] + k["lost"]
        np.testing.assert_allclose(total, k["finished"])
        assert (k["finished"] > 0).all() and (k["expected_rejected"] > 0).all()


def test_one_qa_release_hardly_moves_expected_good_lots(study):
    base = study[0]
    prior = twin_good_rate(base)
    assert 0.5 < prior < 1
    one_bad = pd.DataFrame({"batch_id": ["B1"], "good": [False]})
    then_released = pd.DataFrame({"batch_id": ["B1", "B2"], "good": [False, True]})
    before = lot_kpis(base, good_rate(one_bad, prior).rate)["expected_good"].mean()
    after = lot_kpis(base, good_rate(then_released, prior).rate)["expected_good"].mean()
    assert abs(after - before) / before < 0.05
    # the historical rate alone would have gone from 0 % to 50 % good on that release
    raw = [lot_kpis(base, r)["expected_good"].mean() for r in (0.0, 0.5)]
    assert raw[1] - raw[0] > 10 * abs(after - before)
    assert good_rate(one_bad.iloc[:0], prior).rate == pytest.approx(prior)


def test_kpi_colours_follow_each_kpis_good_direction():
    colour = {name: k.delta_color for name, k in PLANNER_KPIS.items()}
    assert colour["expected_good"] == "normal"  # more good lots: green
    for bad in ("late", "delay_days", "lost", "expected_rejected", "worst_delay_days"):
        assert colour[bad] == "inverse"  # more of these: red


# ---------------------------------------------------------------------- the page
def test_the_page_shows_levers_side_by_side_dated_lots_and_a_dated_gantt(env):
    at = AppTest.from_file(str(PAGE), default_timeout=180)
    sign_in_as(at, "engineer")
    at.run()
    assert not at.exception
    at.text_input(key="sc_name").input("outage and demand")
    at.number_input(key="sc_reps").set_value(10)
    at.number_input(key="sc_horizon").set_value(20)
    at.number_input(key="sc_demand").set_value(10)
    at.button(key="sc_run").click().run()
    assert not at.exception
    levels = at.dataframe[0].value
    assert levels.columns[0] == "Baseline" and len(levels.columns) == 4
    assert "Demand +10 % alone" in levels.columns
    assert any(c.startswith("Outage BR-202 72 h from ") for c in levels.columns)
    assert "All together: outage and demand" in levels.columns
    metrics = {m.label: m for m in at.metric}
    assert metrics["Expected good lots (scenario)"].value.endswith(" lots")
    assert "lot-days" in metrics["Delay of late lots, summed (scenario)"].value
    lots = next(d.value for d in at.dataframe if "Lot" in d.value.columns)
    assert lots.columns[1] == "Due (Europe/Brussels)" and len(lots)
    for d in at.dataframe:
        frame = d.value
        cells = frame.astype(str)
        assert not cells.isin(["None", "nan", "NaN", "<NA>"]).any().any(), frame.columns
        assert not any(re.fullmatch(r"[a-z]+(_[a-z0-9]+)+", str(c)) for c in frame.columns)
    gantt = json.loads(at.get("plotly_chart")[0].proto.spec)
    starts = [b for t in gantt["data"] for b in t.get("base", [])]
    assert starts and all(s.startswith("2026-") for s in starts)
    assert gantt["layout"]["xaxis"]["title"]["text"].startswith("Date and time (Europe/Brussels)")
    saved = json.loads((env / "scenarios" / "outage-and-demand.json").read_text())
    assert len(saved["levers"]) == 2 and saved["options"]["time_zone"] == "Europe/Brussels"
