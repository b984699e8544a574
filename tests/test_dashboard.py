"""The command center's pages, through Streamlit's AppTest, on the sample history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from connectors.historian import Historian
from connectors.security import ensure_demo_users
from connectors.twin_import import import_simulation
from dashboard.audit import AuditTrail
from dashboard.plant import live_state, unit_status
from twin.state import validate_state

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "dashboard" / "pages"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    import_simulation(ROOT / "sample_data" / "twin", Historian(root / "historian"))
    ensure_demo_users(root / "users.toml")
    return root


@pytest.fixture
def env(store, monkeypatch):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    monkeypatch.setenv("BIOTWIN_PREFETCH_BASELINE", "0")  # no background sweeps in tests
    return store


def test_live_state_from_the_historian_is_a_valid_snapshot(config, store):
    h = Historian(store / "historian")
    status = unit_status(h, config)
    assert set(status["unit"]) == {u.id for u in config.units}
    state, notes = live_state(h, config)
    validate_state(state, config)
    assert len(state.batches) >= 1 and len(state.assets) > 10 and notes


def test_overview_shows_every_unit(env):
    at = AppTest.from_file(str(PAGES / "overview.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 12 and {"state", "batch_id", "availability"} <= set(table.columns)
    assert any("units running" in m.label for m in at.metric)


def test_scenario_page_runs_and_compares(env):
    at = AppTest.from_file(str(PAGES / "scenarios.py"), default_timeout=120).run()
    assert not at.exception
    at.number_input(key="sc_reps").set_value(20)
    at.button(key="sc_run").click().run()
    assert not at.exception
    result = at.dataframe[0].value
    assert {"baseline", "scenario", "difference", "ci95_low"} <= set(result.columns)
    assert "completed" in result.index
    assert any(p.name == "BR-202-down-3-days.json" for p in (env / "scenarios").iterdir())


def test_scenarios_are_saved_shown_again_and_compared(env):
    at = AppTest.from_file(str(PAGES / "scenarios.py"), default_timeout=120).run()
    assert not at.exception
    at.text_input(key="sc_name").input("A: BR-202 down")
    at.number_input(key="sc_reps").set_value(20)
    at.button(key="sc_run").click().run()
    assert not at.exception
    at.text_input(key="sc_name").input("B: more demand")
    at.selectbox(key="sc_outage_unit").set_value("(none)")
    at.number_input(key="sc_demand").set_value(30)
    at.button(key="sc_run").click().run()
    assert not at.exception
    assert any("B: more demand vs baseline" in h.value for h in at.subheader)
    folder = env / "scenarios"
    saved = json.loads((folder / "A--BR-202-down.json").read_text())
    assert saved["scenario"]["events"][0]["kind"] == "outage"
    assert len(saved["result"]["kpis"]["completed"]) == 20
    assert not list(folder.glob("*.tmp"))

    # show A again: its results in view and its settings back in the form
    at.selectbox(key="sc_load_file").set_value("A--BR-202-down.json")
    at.button(key="sc_load").click().run()
    assert not at.exception
    assert any("A: BR-202 down vs baseline (20" in h.value for h in at.subheader)
    assert at.text_input(key="sc_name").value == "A: BR-202 down"
    assert at.selectbox(key="sc_outage_unit").value == "BR-202"
    assert at.number_input(key="sc_demand").value == 0

    # compare A and B side by side, with spread and paired differences
    at.multiselect(key="sc_compare").set_value(["A--BR-202-down.json", "B--more-demand.json"])
    at.run()
    assert not at.exception
    tables = [d.value for d in at.dataframe]
    side = next(t for t in tables if {"A: BR-202 down", "B: more demand"} <= set(t.columns))
    assert {"batches completed", "late", "lost", "due dates missed"} <= set(side.index)
    assert "(" in side.loc["batches completed", "A: BR-202 down"]  # mean (p05 - p95)
    assert "baseline: A: BR-202 down" in side.columns
    paired = next(t for t in tables if list(t.columns) == ["B: more demand"])
    assert "completed" in paired.index


def test_qa_disposition_flow_is_signed_into_the_audit_trail(env):
    at = AppTest.from_file(str(PAGES / "triage.py"), default_timeout=60)
    at.session_state["user"] = "qa"
    at.session_state["roles"] = ["qa"]
    at.run()
    assert not at.exception
    batch = at.selectbox[0].value
    at.radio[0].set_value("hold")
    at.text_area[0].input("DO excursion in growth phase, investigate")
    at.text_input[0].input("not-the-password")
    at.button[0].click().run()
    assert any("signature refused" in e.value for e in at.error)
    at.radio[0].set_value("hold")
    at.text_area[0].input("DO excursion in growth phase, investigate")
    at.text_input[0].input("qa-demo")
    at.button[0].click().run()
    assert any("Signed: hold" in s.value for s in at.success)
    trail = AuditTrail(env / "audit", env / "users.toml")
    assert trail.verify().ok
    assert [r["action"] for r in trail.records()][-2:] == ["signature_refused", "disposition"]
    assert trail.decisions()[batch]["decision"] == "hold"


def test_viewer_cannot_disposition(env):
    at = AppTest.from_file(str(PAGES / "triage.py"), default_timeout=60).run()
    assert not at.exception
    assert any("Only QA can disposition" in w.value for w in at.warning)
    assert len(at.button) == 0


def test_pm_window_prefers_a_start_that_misses_fewer_due_dates(config, store):
    from dashboard.maintenance import best_pm_window

    h = Historian(store / "historian")
    state, _ = live_state(h, config)
    table = best_pm_window(
        config, state, "BR-201/agitator", days=2, step_h=24, replications=10, horizon_days=10
    )
    assert list(table.columns[:3]) == ["start_h", "due_dates_missed", "completed"]
    assert len(table) == 3 and set(table["start_h"]) == {0.0, 24.0, 48.0}
    first = table.iloc[0]
    assert (first["due_dates_missed"] <= table["due_dates_missed"]).all()


def test_asset_page_finds_a_window(env):
    at = AppTest.from_file(str(PAGES / "assets.py"), default_timeout=180).run()
    assert not at.exception
    at.number_input[0].set_value(1)
    at.number_input[2].set_value(10)
    at.button[0].click().run()
    assert not at.exception
    assert any("Start the PM of BR-201/agitator" in s.value for s in at.success)
