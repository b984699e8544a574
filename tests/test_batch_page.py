"""The batch record page: one batch's phases, deviations, CQAs, signatures and scores."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from conftest import PASSWORDS, write_users
from streamlit.testing.v1 import AppTest

from connectors.historian import Historian
from connectors.warm import ensure_epoch, warm_history
from dashboard.audit import AuditTrail
from dashboard.batch_record import (
    batch_choices,
    cqa_table,
    deviation_lines,
    disposition_records,
    latest_score,
    pick_batch,
    plant_record,
    qc_note,
    record_facts,
    risk_trend,
    spec_text,
    timeline,
    timeline_table,
    words,
)
from quality.live import plant_clock

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "dashboard" / "views" / "batch.py"
NOW = datetime(2026, 12, 5, 10, 0, 17, tzinfo=UTC)
SNAKE = re.compile(r"\b[a-z]+_[a-z_]+\b")


@pytest.fixture(scope="module")
def store(tmp_path_factory, config) -> Path:
    """Two weeks of plant history ending at NOW: released, in-QC and running batches, a
    signed disposition and hand-made scores of one running batch."""
    root = tmp_path_factory.mktemp("batch_store")
    write_users(root / "users.toml")
    epoch, _ = ensure_epoch(root, config, warm_days=14, seed=5, now=NOW)
    warm_history(Historian(root / "historian"), config, epoch, until=NOW)
    return root


@pytest.fixture(scope="module")
def records(store) -> pd.DataFrame:
    return pd.read_parquet(store / "simulation" / "batches.parquet")


@pytest.fixture(scope="module")
def ctx(store) -> pd.DataFrame:
    return Historian(store / "historian").batch_context()


@pytest.fixture(scope="module")
def now(store, ctx) -> pd.Timestamp:
    return plant_clock(Historian(store / "historian"), ctx)


@pytest.fixture(scope="module")
def tested(records) -> str:
    """A batch with QC results in the plant's records."""
    return records.loc[records["titer_g_per_l"].notna(), "batch_id"].iloc[0]


@pytest.fixture(scope="module")
def running(records, ctx, now) -> str:
    """A batch in a phase at the plant clock: no QC results yet."""
    ids = set(records.loc[records["status"] == "in_progress", "batch_id"])
    live = ctx[(ctx["state"] == "running") & ctx["batch_id"].isin(ids)]
    live = live[(live["start_time"] <= now) & ~(live["end_time"] <= now)]
    return live["batch_id"].iloc[0]


@pytest.fixture(scope="module")
def signed(store, tested) -> dict:
    trail = AuditTrail(store / "audit", store / "users.toml")
    return trail.sign(
        user="qa",
        password=PASSWORDS["qa"],
        batch_id=tested,
        decision="release",
        reason="QC results within specification; no deviation",
        meaning="batch released for distribution",
    )


@pytest.fixture(scope="module")
def scored(store, running, now) -> str:
    """Scores of the running batch, as ``biotwin score`` writes them."""
    folder = store / "scores"
    folder.mkdir(exist_ok=True)
    pd.DataFrame(
        {
            "batch_id": [running] * 3 + ["B99999"],
            "progress": [0.10, 0.05, 0.15, 0.5],
            "batch_time_h": [4.8, 2.4, 7.2, 24.0],
            "p_deviation": [0.20, 0.10, 0.35, 0.9],
            "plant_time": now,
        }
    ).to_parquet(folder / "batch_risk_trend.parquet")
    pd.DataFrame(
        {
            "batch_id": [running],
            "progress": [0.15],
            "p_deviation": [0.35],
            "likely_class": ["raw_material"],
            "reasons": ["growth rate low for the lot (+0.8); media potency low (+0.3)"],
            "model_version": ["deviation-7"],
            "plant_time": [now],
        }
    ).to_parquet(folder / "batch_scores.parquet")
    return running


# ------------------------------------------------------------------ choosing the batch
def test_batches_are_offered_newest_first(ctx):
    choices = batch_choices(ctx)
    running = ctx[ctx["state"] == "running"]
    first = running.groupby("batch_id")["start_time"].min()
    assert set(choices) == set(first.index)
    assert list(first[choices]) == sorted(first, reverse=True)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        pytest.param("B00002", "B00002", id="a link names the batch"),
        pytest.param(" b00002 ", "B00002", id="typed loosely"),
        pytest.param("B99999", "B00009", id="unknown batch: the newest"),
        pytest.param(None, "B00009", id="no link: the newest"),
    ],
)
def test_a_link_picks_the_batch(requested, expected):
    assert pick_batch(["B00009", "B00002", "B00001"], requested) == expected


def test_no_batch_no_pick():
    assert pick_batch([], "B00001") is None


# ------------------------------------------------------------------ ISA-88 phases
def test_the_timeline_follows_the_recipe_on_its_units(ctx, config, tested, now):
    rows = timeline(ctx, tested, config, now)
    assert rows["start"].is_monotonic_increasing
    assert not rows["open"].any()  # a batch in QC has left the line
    steps = list(dict.fromkeys(rows["step"]))
    assert steps == [s.name.replace("_", " ") for s in config.recipe.steps]
    class_of = {u.id: u.unit_class for u in config.units}
    for unit, label, step in zip(rows["unit"], rows["label"], rows["step"], strict=True):
        assert label == f"{unit} ({class_of[unit].replace('_', ' ')})"
        assert {s.unit_class: s.name for s in config.recipe.steps}[class_of[unit]].replace(
            "_", " "
        ) == step
    expected_h = (rows["end"] - rows["start"]).dt.total_seconds() / 3600
    assert (rows["duration_h"] > 0).all()
    pd.testing.assert_series_equal(rows["duration_h"], expected_h, check_names=False)
    production = rows.loc[rows["step"] == "production", "duration_h"].sum()
    assert 40 <= production <= 60  # the recipe's 46-52 h
    text = " ".join(rows[["label", "step", "phase"]].to_numpy().ravel())
    assert "_" not in text and "fed batch" in text


def test_the_timeline_table_is_in_local_time_and_hours(ctx, config, tested, now, monkeypatch):
    monkeypatch.setenv("BIOTWIN_TZ", "Europe/Brussels")
    rows = timeline(ctx, tested, config, now)
    table = timeline_table(rows)
    assert list(table.columns) == ["Unit", "Step", "Phase", "Start", "End", "Duration (h)"]
    first = rows["start"].iloc[0].tz_convert("Europe/Brussels").strftime("%Y-%m-%d %H:%M %Z")
    assert table["Start"].iloc[0] == first and first.endswith("CET")
    assert table["Duration (h)"].str.fullmatch(r"\d+\.\d").all()


def test_a_running_phase_ends_at_the_plant_clock(ctx, config, running, now):
    rows = timeline(ctx, running, config, now)
    assert rows["open"].iloc[-1] and rows["end"].iloc[-1] == now
    assert timeline_table(rows)["End"].iloc[-1] == "running"


def test_a_batch_without_records_has_an_empty_timeline(ctx, config, now):
    assert timeline(ctx, "B99999", config, now).empty


# ------------------------------------------------------------------ deviations and CQAs
def test_cqa_rows_carry_the_plant_spec_and_the_verdict(store, config, tested, records):
    record = plant_record(store, tested)
    assert qc_note(record, config) is None
    table = cqa_table(record, config).set_index("Attribute")
    assert len(table) == len(config.specs)
    titer = table.loc["Antigen titer at harvest"]
    assert titer["Specification"] == "≥ 6.5 g/L" and titer["Result"].endswith(" g/L")
    assert table.loc["Emulsion droplet size, Z-average", "Specification"] == "140 to 180 nm"
    assert table.loc["Final bulk pH", "Result"].startswith("pH ")
    assert table.loc["Bioburden of the filtered bulk", "Specification"] == "≤ 0 CFU/100 mL"
    row = records.set_index("batch_id").loc[tested]
    for name, spec in config.specs.items():
        verdict = table.loc[spec.description, "Within specification"]
        assert verdict == ("no" if row[f"{name}_oos"] else "yes")


@pytest.mark.parametrize(
    ("value", "verdict", "result"),
    [
        pytest.param(7.1, "yes", "7.10 g/L", id="above the lower limit"),
        pytest.param(6.2, "no", "6.20 g/L", id="below the lower limit"),
        pytest.param(float("nan"), "—", "—", id="not measured"),
    ],
)
def test_a_result_is_judged_against_its_limit(config, value, verdict, result):
    record = {"titer_g_per_l": value, "purity_pct": 97.0}
    row = cqa_table(record, config).set_index("Attribute").loc["Antigen titer at harvest"]
    assert (row["Result"], row["Within specification"]) == (result, verdict)


def test_spec_text_reads_as_a_limit(config):
    assert spec_text(config.specs["fill_volume_dev_pct"]) == "-2 to 2 %"
    assert spec_text(config.specs["pdi"]) == "≤ 0.2"


def test_a_batch_without_qc_results_says_so(store, config, running):
    record = plant_record(store, running)
    assert record is not None and cqa_table(record, config).empty
    assert "QC results of this batch are not in biotwin yet" in qc_note(record, config)
    assert "in production" in qc_note(record, config)
    assert plant_record(store, "B99999") is None
    assert "not in biotwin yet" in qc_note(None, config)


def test_deviations_and_facts_in_words(config):
    record = {
        "status": "rejected",
        "disposition": "rejected",
        "disposition_time": pd.Timestamp("2026-12-01 10:00", tz="UTC"),
        "deviation_classes": "ph_drift,raw_material",
        "n_deviations": 2,
        "any_oos": True,
        "lost_reason": None,
    }
    lines = deviation_lines(record, config)
    assert len(lines) == 2 and lines[0].startswith("pH drift (")
    facts = record_facts(record)
    assert facts["Deviations"] == "2" and facts["Any CQA out of specification"] == "yes"
    assert facts["Disposition before biotwin"].startswith("rejected on 2026-12-01")
    assert deviation_lines({"deviation_classes": ""}, config) == []
    assert words("pre_use_integrity") == "pre use integrity" and words(None) == "—"


# ------------------------------------------------------------------ signatures and scores
def test_the_batch_signatures_come_from_the_audit_trail(store, tested, signed):
    trail = AuditTrail(store / "audit", store / "users.toml")
    mine = disposition_records(trail.records(), tested)
    assert [r["hash"] for r in mine] == [signed["hash"]]
    assert disposition_records(trail.records(), "B99999") == []


def test_the_risk_trend_and_latest_score(store, config, scored):
    trend = risk_trend(store, scored)
    assert list(trend["batch_time_h"]) == [2.4, 4.8, 7.2]
    assert list(trend["risk_pct"]) == pytest.approx([10.0, 20.0, 35.0])
    score = latest_score(store, scored, config)
    assert score["risk"] == "35 %" and score["progress"] == "15 %"
    assert score["likely"].startswith("Raw material (")
    assert score["reasons"][0].startswith("growth rate low")
    assert latest_score(store, "B00001", config) is None
    assert risk_trend(store, "B00001").empty


# ------------------------------------------------------------------ the page
def _page_text(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [i.value for i in at.info] + [s.value for s in at.subheader]
    parts += [m.label + " " + str(m.value) for m in at.metric]
    for frame in at.dataframe:
        parts += [str(c) for c in frame.value.columns]
        parts += [str(v) for v in frame.value.to_numpy().ravel()]
    return " ".join(parts)


def _assert_human(text: str) -> None:
    assert "None" not in text and not re.search(r"\bnan\b", text, re.I), text
    assert not SNAKE.search(text), SNAKE.search(text)


@pytest.fixture
def env(store, monkeypatch, signed, scored):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    monkeypatch.setenv("BIOTWIN_TZ", "Europe/Brussels")
    return store


def test_the_page_shows_a_tested_and_signed_batch(env, tested):
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.query_params["batch"] = tested
    at.run()
    assert not at.exception
    assert at.selectbox(key="br_batch").value == tested
    text = _page_text(at)
    _assert_human(text)
    assert "Antigen titer at harvest" in text and "≥ 6.5 g/L" in text
    assert "Released by Quinn" in text or "Released by" in text
    assert "meaning: batch released for distribution" in text
    assert "Europe/Brussels" in text and "CET" in text
    assert [s.value for s in at.subheader] == [
        "ISA-88 phase timeline",
        "Deviations and CQAs",
        "Dispositions and signatures",
        "Predicted risk over the batch",
    ]


def test_the_page_shows_a_running_batch_with_its_scores(env, scored):
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.query_params["batch"] = scored
    at.run()
    assert not at.exception
    text = _page_text(at)
    _assert_human(text)
    assert "not in biotwin yet" in text and "running" in text
    assert any(m.label == "Risk of deviation (calibrated)" and m.value == "35 %" for m in at.metric)


def test_the_page_without_a_link_shows_the_newest_batch(env, ctx):
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="br_batch").value == batch_choices(ctx)[0]
    _assert_human(_page_text(at))


def test_the_page_of_an_empty_store_says_there_is_no_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    assert [i.value for i in at.info] == ["The historian has no batch yet: nothing to show."]
