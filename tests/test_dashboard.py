"""The command center's pages, through Streamlit's AppTest, on the sample history."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import PASSWORDS, sign_in_as, write_users
from streamlit.testing.v1 import AppTest

from connectors.historian import Historian
from connectors.twin_import import import_simulation
from dashboard.audit import AuditTrail
from dashboard.plant import availability, live_state, plant_now, unit_status
from twin.state import validate_state

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "dashboard" / "views"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    import_simulation(ROOT / "sample_data" / "twin", Historian(root / "historian"))
    write_users(root / "users.toml")
    (root / "simulation").mkdir()  # the twin's batch outcomes (good rate, golden batches)
    shutil.copy(ROOT / "sample_data" / "twin" / "batches.parquet", root / "simulation")
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


def test_status_and_availability_from_a_context_read_once(config, store):
    """The overview reads the batch context and tag list once and passes them on: the
    same figures as each function reading them itself."""
    h = Historian(store / "historian")
    ctx, tags = h.batch_context(), h.tags()
    now = plant_now(ctx, tags)
    pd.testing.assert_frame_equal(unit_status(h, config, now, ctx=ctx), unit_status(h, config))
    pd.testing.assert_frame_equal(
        availability(h, config, 7, ctx=ctx, now=now), availability(h, config, 7)
    )


def test_the_launcher_imports_the_pages_modules_before_streamlit_starts():
    """`biotwin dashboard` runs dashboard/serve.py: the pages' imports are done (and the
    first plotly figure drawn) in the server before it listens, not in the first page."""
    import sys

    from dashboard import serve
    from dashboard.cli import _streamlit_command

    assert _streamlit_command(8501)[1:3] == ["-m", "dashboard.serve"]
    assert serve.warm() > 0
    assert all(name in sys.modules for name in serve.PRELOAD)


def test_overview_shows_every_unit(env):
    at = AppTest.from_file(str(PAGES / "overview.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 12 and {"State", "Batch", "Availability, last 7 days"} <= set(
        table.columns
    )
    assert any(m.label == "Units running" for m in at.metric)
    assert table["State"].str.contains("Running a batch|Idle|Cleaning|Sterilising|Down").all()
    text = " ".join(table.astype(str).drop(columns="Utilisation, last 7 days").to_numpy().ravel())
    assert "None" not in text and "nan" not in text and "_" not in text
    assert any(s.value.startswith("Data: ") for s in [*at.success, *at.warning])


def test_scenario_page_runs_and_compares(env):
    at = AppTest.from_file(str(PAGES / "scenarios.py"), default_timeout=120)
    sign_in_as(at, "engineer")
    at.run()
    assert not at.exception
    at.number_input(key="sc_reps").set_value(20)
    at.button(key="sc_run").click().run()
    assert not at.exception
    result = at.dataframe[0].value
    # no name given: the scenario is named after what it changes (a dated outage)
    assert result.columns[0] == "Baseline"
    assert re.fullmatch(r"Scenario: BR-202 down 72 h from \d\d \w{3} \d\d:\d\d", result.columns[1])
    assert {"Expected good lots", "Lots late", "Lots lost"} <= set(result.index)
    assert result.loc["Lots late", "Baseline"].endswith(")")  # mean lots (p10 - p90)
    assert " lots (" in result.loc["Lots late", "Baseline"]
    assert any(p.name.startswith("BR-202-down-72-h-from") for p in (env / "scenarios").iterdir())


def test_scenarios_are_saved_shown_again_and_compared(env):
    at = AppTest.from_file(str(PAGES / "scenarios.py"), default_timeout=120)
    sign_in_as(at, "engineer")
    at.run()
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
    assert {"Expected good lots (lots)", "Lots late (lots)", "Lots lost (lots)"} <= set(side.index)
    assert "(" in side.loc["Lots late (lots)", "A: BR-202 down"]  # mean (p10 - p90)
    assert "baseline: A: BR-202 down" in side.columns
    paired = next(t for t in tables if list(t.columns) == ["B: more demand"])
    assert paired.loc["Lots finished (filled or lost) (lots)", "B: more demand"].startswith("+")


def test_qa_disposition_flow_is_signed_into_the_audit_trail(env):
    at = AppTest.from_file(str(PAGES / "triage.py"), default_timeout=60)
    at.session_state["user"] = "qa"
    at.session_state["roles"] = ["qa"]
    at.run()
    assert not at.exception
    batch = at.selectbox(key="disp_batch").value
    at.radio[0].set_value("hold")
    at.text_area[0].input("DO excursion in growth phase, investigate")
    at.text_input[0].input("not-the-password")
    at.button[0].click().run()
    assert any("signature refused" in e.value for e in at.error)
    at.radio[0].set_value("hold")
    at.text_area[0].input("DO excursion in growth phase, investigate")
    at.text_input[0].input(PASSWORDS["qa"])
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
    assert {"start_h", "due_dates_missed", "completed", "vs_best_lo"} <= set(table.columns)
    assert len(table) == 3 and set(table["start_h"]) == {0.0, 24.0, 48.0}
    first = table.iloc[0]
    assert (first["due_dates_missed"] <= table["due_dates_missed"]).all()
    # against itself the best has no difference; the others' paired intervals are ordered
    assert first["vs_best"] == 0 and not first["clearly_worse"]
    assert (table["vs_best_lo"] <= table["vs_best"]).all()
    assert (table["vs_best"] <= table["vs_best_hi"]).all()
    assert (table["missed_p10"] <= table["missed_p90"]).all()


def test_asset_page_finds_a_window(env):
    at = AppTest.from_file(str(PAGES / "assets.py"), default_timeout=180)
    sign_in_as(at, "maint")
    at.run()
    assert not at.exception
    at.number_input[0].set_value(1)
    at.number_input[2].set_value(10)
    at.button[0].click().run()
    assert not at.exception
    best = next(s.value for s in at.success if s.value.startswith("Start the PM of BR-201"))
    assert re.search(r"on \w{3} \d\d \w{3} 20\d\d \d\d:\d\d", best)  # a date, not "in 96 h"
    assert "10–90 % of replications" in best
    table = at.dataframe[-1].value
    assert {"PM start", "vs best (90 % interval)"} <= set(table.columns)
    assert table["vs best (90 % interval)"].iloc[0].startswith("+0.00")


def test_asset_health_is_sorted_by_risk_in_words(scored):
    at = AppTest.from_file(str(PAGES / "assets.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    risk = table["Failure risk, next 7 days"].str.rstrip("%").astype(float)
    assert risk.is_monotonic_decreasing and table["Asset"].iloc[0] == "XX-999 · none"
    text = " ".join(table.astype(str).to_numpy().ravel())
    assert "None" not in text and "nan" not in text and "_" not in text


@pytest.fixture
def scored(env):
    """Model scores in the store for one test (removed afterwards): BR-201's agitator at
    high risk, two assets below the threshold, and a risk for every batch in progress."""
    from dashboard.plant import live_state

    h = Historian(env / "historian")
    from twin.config import load_config

    state, _ = live_state(h, load_config(None))
    on_br = next(b.batch_id for b in state.batches if b.unit.startswith("BR-"))
    folder = env / "scores"
    folder.mkdir(exist_ok=True)
    pd.DataFrame(
        {
            "asset": ["BR-201/agitator", "BR-202/agitator", "HZ-502/pump", "XX-999/none"],
            "unit": ["BR-201", "BR-202", "HZ-502", "XX-999"],
            "p_fail_7d": [0.6, 0.01, 0.02, 0.9],
            "rul_h": [90.0, 2000.0, 1500.0, 10.0],
        }
    ).to_parquet(folder / "asset_scores.parquet")
    pd.DataFrame(
        {
            "batch_id": [b.batch_id for b in state.batches],
            "p_deviation": [0.5] * len(state.batches),
            "likely_class": ["do_excursion"] * len(state.batches),
            "reasons": ["DO below envelope for 3.2 h in growth"] * len(state.batches),
            "reason_tags": ["production.do"] * len(state.batches),
            "low_confidence": [b.batch_id == on_br for b in state.batches],
            "suspect_sensors": [
                "AIC-2012.PV" if b.batch_id == on_br else "" for b in state.batches
            ],
        }
    ).to_parquet(folder / "batch_scores.parquet")
    yield env
    shutil.rmtree(folder)


def test_predicted_failure_events_take_assets_at_or_above_the_threshold(config):
    from dashboard.whatif import predicted_failure_events

    scores = pd.DataFrame(
        {"asset": ["BR-201/agitator", "BR-202/agitator", "XX/none"], "p_fail_7d": [0.3, 0.01, 1]}
    )
    events, notes = predicted_failure_events(scores, config, threshold=0.05)
    assert [(e.asset, e.probability, e.within_h) for e in events] == [
        ("BR-201/agitator", 0.3, 168.0)
    ]
    assert any("XX/none" in n for n in notes) and any("below" in n for n in notes)
    assert len(predicted_failure_events(scores, config, threshold=0.0)[0]) == 2


def test_expected_good_lots_count_predicted_risk(config, store):
    from dashboard.whatif import good_rate, run_pair, with_batch_risk

    state, _ = live_state(Historian(store / "historian"), config)
    scores = pd.DataFrame({"batch_id": [b.batch_id for b in state.batches], "p_deviation": 1.0})
    risky = with_batch_risk(state, scores)
    assert all(b.risk == 1.0 for b in risky.batches)
    kw = {"horizon_h": 240, "replications": 4, "workers": 1}
    _, certain_bad = run_pair(config, risky, [], default_risk=1.0, **kw)
    assert (certain_bad.kpis["completed"] > 0).all()
    assert (certain_bad.kpis["expected_good_lots"] == 0).all()
    # only the batches in progress are certain to fail: each one completed costs one lot
    _, mixed = run_pair(config, risky, [], default_risk=0.0, **kw)
    lost = mixed.kpis["completed"] - mixed.kpis["expected_good_lots"]
    assert ((lost >= 1) & (lost <= len(state.batches))).all()
    _, all_good = run_pair(config, state, [], default_risk=0.0, **kw)
    assert (all_good.kpis["expected_good_lots"] == all_good.kpis["completed"]).all()
    # the rate for new batches: the twin's rate as a prior of 20 batches, then outcomes
    outcomes = pd.DataFrame({"batch_id": ["a", "b", "c", "d"], "good": [1, 1, 1, 0]})
    assert good_rate(outcomes, 0.9).rate == pytest.approx((18 + 3) / 24)
    assert good_rate(outcomes.iloc[:0], 0.8).rate == pytest.approx(0.8)


def test_batch_outcomes_from_the_twin_and_qa_dispositions(tmp_path):
    from dashboard.whatif import batch_outcomes

    assert batch_outcomes(tmp_path).empty
    (tmp_path / "simulation").mkdir()
    shutil.copy(ROOT / "sample_data" / "twin" / "batches.parquet", tmp_path / "simulation")
    out = batch_outcomes(tmp_path)
    sim = pd.read_parquet(ROOT / "sample_data" / "twin" / "batches.parquet")
    assert len(out) == sim["disposition"].notna().sum()
    assert out["good"].sum() < (sim["disposition"] == "released").sum() + 1


def test_scenario_page_uses_predicted_failure_risk_and_expected_good_lots(scored):
    at = AppTest.from_file(str(PAGES / "scenarios.py"), default_timeout=120)
    sign_in_as(at, "engineer")
    at.run()
    assert not at.exception
    at.text_input(key="sc_name").input("predicted risk")
    at.number_input(key="sc_reps").set_value(20)
    at.checkbox(key="sc_predicted").check()
    at.button(key="sc_run").click().run()
    assert not at.exception
    assert any(c.value == "Predicted failure risk used for: BR-201/agitator" for c in at.caption)
    saved = json.loads((scored / "scenarios" / "predicted-risk.json").read_text())
    risks = [e for e in saved["scenario"]["events"] if e["kind"] == "failure_risk"]
    assert [(e["asset"], e["probability"], e["within_h"]) for e in risks] == [
        ("BR-201/agitator", 0.6, 168.0)
    ]
    labels = [m.label for m in at.metric]
    assert "Expected good lots (scenario)" in labels
    lots = pd.DataFrame(saved["baseline"]["lots"])
    # every batch in progress scored at risk 0.5, recorded with its lots
    in_progress = lots[
        lots["lot"].isin(pd.read_parquet(scored / "scores" / "batch_scores.parquet")["batch_id"])
    ]
    assert len(in_progress) and (in_progress["risk"] == 0.5).all()
    assert saved["options"]["good_rate"]["batches_scored"] == 4
    assert any("4 batches in progress count 1 - their predicted" in c.value for c in at.caption)


def test_scenario_page_says_when_there_is_no_predicted_risk(env):
    at = AppTest.from_file(str(PAGES / "scenarios.py"), default_timeout=120)
    sign_in_as(at, "engineer")
    at.run()
    assert any("No predicted failure risk available" in c.value for c in at.caption)
    at.number_input(key="sc_reps").set_value(10)
    at.checkbox(key="sc_predicted").check()
    at.button(key="sc_run").click().run()
    assert not at.exception
    assert any("Run without predicted failure risk" in w.value for w in at.warning)


def test_triage_shows_scores_and_the_batch_against_the_golden_envelope(scored):
    at = AppTest.from_file(str(PAGES / "triage.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert {"Risk of deviation", "Likely deviation", "Confidence", "State"} <= set(table.columns)
    # only the live plant: batches in progress or awaiting disposition, each scored here
    assert set(table["State"]) <= {"In progress", "Awaiting disposition"}
    scored_rows = table[table["Risk of deviation"] != "—"]
    assert len(scored_rows) >= 1 and (scored_rows["Risk of deviation"] == "50%").all()
    assert (scored_rows["Likely deviation"] == "DO excursion").all()
    assert (table["Risk of deviation"] != "—").is_monotonic_decreasing  # scored first
    assert (table.loc[table["Risk of deviation"] == "—", "Likely deviation"] == "—").all()
    assert table["Confidence"].str.startswith("low: AIC-2012.PV").sum() == 1
    text = " ".join(str(v) for v in table.drop(columns="Risk over the batch").to_numpy().ravel())
    assert "None" not in text and "nan" not in text
    # the flagged batch in the detail: score, class, confidence, reasons, envelope
    flagged = table.loc[table["Confidence"].str.startswith("low"), "Batch"]
    at.selectbox(key="tr_batch").set_value(flagged.iloc[0]).run()
    assert not at.exception
    labels = {m.label: m.value for m in at.metric}
    assert labels["Risk of deviation (calibrated)"] == "50%"
    assert labels["Likely deviation"] == "DO excursion"
    assert labels["Confidence"] == "low"
    assert any("AIC-2012.PV" in w.value for w in at.warning)
    assert any("DO below envelope for 3.2 h in growth" in m.value for m in at.markdown)
    assert any("batches that ended good" in c.value for c in at.caption)
    charts = at.get("plotly_chart")
    assert len(charts) == 1  # one chart per signal the reasons name: DO
    fig = json.loads(charts[0].proto.spec)
    names = {t.get("name") for t in fig["data"]}
    assert {"golden batch 5-95 %", "golden median", flagged.iloc[0]} <= names
    assert fig["layout"]["title"]["text"].startswith("Dissolved oxygen (%), production on BR-")
    assert any("The signals the reasons name" in c.value for c in at.caption)


def test_golden_envelope_of_good_batches(config, store):
    from dashboard.envelope import golden_envelope, trajectory
    from dashboard.whatif import batch_outcomes

    h = Historian(store / "historian")
    good = batch_outcomes(store).query("good")["batch_id"]
    band = golden_envelope(h, config, good)
    assert set(band["signal"]) == {"do", "temperature", "ph"}
    assert (band["lo"] <= band["median"]).all() and (band["median"] <= band["hi"]).all()
    assert band["n"].max() <= len(good) and band["n"].min() >= 3
    temp = band[band["signal"] == "temperature"]
    assert temp["median"].between(30, 40).mean() > 0.9  # a culture temperature, in degC
    traj = trajectory(h, config, good.iloc[0])
    assert traj["unit"].str.startswith("BR-").all() and traj["batch_time_h"].min() < 1
    # the batch itself lies mostly inside the band of the good batches
    t = traj[traj["signal"] == "temperature"].copy()
    t["bin"] = (t["batch_time_h"] // 1 + 0.5).round(1)
    merged = t.merge(temp.assign(bin=temp["batch_time_h"].round(1)), on="bin")
    inside = merged["value"].between(merged["lo"] - 0.2, merged["hi"] + 0.2).mean()
    assert inside > 0.8


def test_one_pool_gives_the_same_replications_as_two_run_scenario_calls(config, store):
    from dashboard.whatif import BaselineCache, run_pair
    from twin.scenarios import AssetOutage, run_scenario

    state, _ = live_state(Historian(store / "historian"), config)
    events = [AssetOutage(target="BR-202", start_h=12, end_h=60)]
    kw = {"horizon_h": 120, "replications": 12, "seed": 3}
    base, what = run_pair(config, state, events, name="outage", workers=2, **kw)
    pd.testing.assert_frame_equal(base.kpis, run_scenario(config, state, [], **kw).kpis)
    alone = run_scenario(config, state, events, **kw)
    pd.testing.assert_frame_equal(what.kpis, alone.kpis)
    pd.testing.assert_frame_equal(what.schedule, alone.schedule)
    assert what.name == "outage"
    # a cached baseline is reused as is; a prefetched one is the same as one computed now
    again, what2 = run_pair(config, state, events, baseline=base, workers=2, **kw)
    assert again is base
    pd.testing.assert_frame_equal(what2.kpis, what.kpis)
    cache = BaselineCache()
    assert cache.prefetch(("k",), config, state, **kw) and not cache.prefetch(("k",), config, state)
    pd.testing.assert_frame_equal(cache.get(("k",)).kpis, base.kpis)
    assert cache.get(("other",)) is None
