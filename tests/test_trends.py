"""The Trends page: tags found by unit and text, downsampled history with its gaps and
flagged samples, the plant's local time, data freshness, and the page itself (AppTest)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_users
from streamlit.testing.v1 import AppTest

from connectors.historian import Historian
from connectors.twin_import import import_simulation
from dashboard.trends import (
    MAX_TAGS,
    data_gaps,
    eng_unit_label,
    envelope_tags,
    find_tags,
    freshness,
    overlay_envelope,
    overlay_trajectory,
    tag_catalog,
    time_window,
    trend_data,
)

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "dashboard" / "views" / "trends.py"
T0 = pd.Timestamp("2026-01-10 00:00", tz="UTC")
STEP = pd.Timedelta(minutes=10)
GAP = (pd.Timestamp("2026-01-10 10:00", tz="UTC"), pd.Timestamp("2026-01-10 13:00", tz="UTC"))
BAD = [pd.Timestamp("2026-01-10 06:00", tz="UTC"), pd.Timestamp("2026-01-10 06:10", tz="UTC")]
SPIKE = pd.Timestamp("2026-01-10 04:20", tz="UTC")


@pytest.fixture
def small(tmp_path) -> Historian:
    """One day of two tags at 10 min: a sine with a spike at 04:20, no samples from 10:00
    to 13:00 on TIC-201.PV, two bad samples at 06:00 (one without a value)."""
    h = Historian(tmp_path / "historian")
    times = pd.date_range(T0, periods=144, freq=STEP)
    temp = pd.DataFrame(
        {"time": times, "tag": "TIC-201.PV", "value": 37 + np.sin(np.arange(144) / 10)}
    )
    temp.loc[temp["time"] == SPIKE, "value"] = 45.0
    temp["quality"] = np.where(temp["time"].isin(BAD), 2, 0)
    temp.loc[temp["time"] == BAD[1], "value"] = np.nan
    temp = temp[(temp["time"] <= GAP[0]) | (temp["time"] >= GAP[1])]
    do = pd.DataFrame({"time": times, "tag": "AIC-2012.PV", "value": 40.0, "quality": 0})
    h.append(pd.concat([temp, do], ignore_index=True))
    h.upsert_tags(
        pd.DataFrame(
            {
                "tag": ["TIC-201.PV", "AIC-2012.PV", "TIC-101.PV"],
                "unit": ["BR-201", "BR-201", "MP-101"],
                "eng_unit": ["CEL", "P1", "CEL"],
                "description": ["Broth temperature", "Dissolved oxygen", "Media temperature"],
                "eu_low": [0.0, 0.0, 0.0],
                "eu_high": [150.0, 120.0, 100.0],
            }
        )
    )
    return h


@pytest.fixture
def brussels(monkeypatch):
    monkeypatch.setenv("BIOTWIN_TZ", "Europe/Brussels")
    return "Europe/Brussels"


# ---------------------------------------------------------------------- tags
@pytest.mark.parametrize(
    ("unit", "text", "expected"),
    [
        ("BR-201", "", ["AIC-2012.PV", "TIC-201.PV"]),
        ("MP-101", "", ["TIC-101.PV"]),
        (None, "temperature", ["TIC-101.PV", "TIC-201.PV"]),
        (None, "TIC-2", ["TIC-201.PV"]),
        (None, "dissolved OXYGEN", ["AIC-2012.PV"]),
        ("MP-101", "oxygen", []),
    ],
    ids=["by-unit", "other-unit", "description", "tag-name", "words-any-case", "none"],
)
def test_tags_are_found_by_unit_and_by_text(small, unit, text, expected):
    found = find_tags(tag_catalog(small.tags()), unit=unit, text=text)
    assert sorted(found["tag"]) == expected


def test_the_catalog_speaks_engineering_units():
    assert eng_unit_label("CEL") == "°C"
    assert eng_unit_label("P1") == "%"
    assert eng_unit_label("C62", "Broth pH, off-line sample") == "pH"
    assert eng_unit_label(None) == ""
    catalog = tag_catalog(pd.DataFrame({"tag": ["X-1"], "unit": [None], "description": [None]}))
    assert catalog.loc[0, "label"] == "X-1 · —" and catalog.loc[0, "unit"] == "—"


# ---------------------------------------------------------------------- trend data
def test_each_bucket_keeps_its_minimum_and_maximum(small):
    trend = trend_data(small, ["TIC-201.PV"], T0, T0 + pd.Timedelta(days=1), buckets=12)
    raw = small.query(["TIC-201.PV"], T0, T0 + pd.Timedelta(days=1))
    raw = raw[raw["quality"] <= 1].dropna(subset=["value"])
    lines = trend.lines.dropna(subset=["value"])
    assert len(lines) < len(raw)  # downsampled
    assert trend.bucket == pd.Timedelta(hours=2)
    for key, part in raw.groupby(raw["time"].dt.floor("2h")):
        shown = lines[lines["time"].dt.tz_convert("UTC").dt.floor("2h") == key]
        assert shown["value"].max() == part["value"].max()
        assert shown["value"].min() == part["value"].min()
    spike = lines[lines["value"] == 45.0]
    assert list(spike["time"].dt.tz_convert("UTC")) == [SPIKE]  # at its own time


def test_a_gap_in_the_data_shows_as_a_gap(small):
    gaps = data_gaps(small.query(["TIC-201.PV", "AIC-2012.PV"]))
    assert list(gaps["tag"]) == ["TIC-201.PV"]
    assert (gaps.loc[0, "start"], gaps.loc[0, "end"]) == GAP
    trend = trend_data(small, ["TIC-201.PV"], T0, T0 + pd.Timedelta(days=1))
    line = trend.lines.assign(time=trend.lines["time"].dt.tz_convert("UTC"))
    inside = line[(line["time"] > GAP[0]) & (line["time"] < GAP[1])]
    assert len(inside) >= 1 and inside["value"].isna().all()  # a break, no drawn point


def test_bad_samples_are_flagged_not_dropped(small):
    trend = trend_data(small, ["TIC-201.PV"], T0, T0 + pd.Timedelta(days=1))
    bad = trend.flagged[trend.flagged["quality"] == "bad"]
    assert sorted(bad["time"].dt.tz_convert("UTC")) == BAD
    assert bad["samples"].sum() == 2
    assert bad["value"].isna().sum() == 1  # the one without a value is still there
    assert not trend.lines["time"].dt.tz_convert("UTC").isin(BAD).any()


def test_times_are_in_the_plant_time_zone(small, brussels):
    trend = trend_data(small, ["AIC-2012.PV"], T0, T0 + pd.Timedelta(hours=2))
    assert str(trend.lines["time"].dt.tz) == brussels
    assert trend.lines["time"].iloc[0].strftime("%H:%M") == "01:00"  # 00:00 UTC in winter
    start, end = time_window(start_local="2026-07-01 08:00", end_local="2026-07-01 16:00")
    assert start == pd.Timestamp("2026-07-01 06:00", tz="UTC")  # summer time: UTC+2
    assert end - start == pd.Timedelta(hours=8)
    start, end = time_window("Last 8 h", end=T0)
    assert (start, end) == (T0 - pd.Timedelta(hours=8), T0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "Last year"}, "preset: must be one of"),
        ({"start_local": "2026-01-02", "end_local": "2026-01-01"}, "end: must be after"),
    ],
    ids=["unknown-preset", "end-before-start"],
)
def test_bad_time_ranges_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_window(**kwargs)


def test_at_most_ten_tags_on_one_trend(small):
    with pytest.raises(ValueError, match=f"at most {MAX_TAGS}"):
        trend_data(small, [f"T-{i}" for i in range(MAX_TAGS + 1)], T0, T0 + STEP)


def test_freshness_says_live_then_stale(small, brussels):
    assert freshness(small).text.startswith("live, ")
    later = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)
    stale = freshness(small, now=later)
    assert not stale.live and stale.text.startswith("stale since 20")
    assert stale.newest_sample == T0 + 143 * STEP


# ---------------------------------------------------------------------- sample history
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    import_simulation(ROOT / "sample_data" / "twin", Historian(root / "historian"))
    write_users(root / "users.toml")
    (root / "simulation").mkdir()
    shutil.copy(ROOT / "sample_data" / "twin" / "batches.parquet", root / "simulation")
    return root


def test_a_batch_tag_against_its_golden_envelope(store, config):
    h = Historian(store / "historian")
    assert envelope_tags(config)["TIC-201.PV"] == ("BR-201", "temperature")
    ctx = h.batch_context()
    batch = ctx.loc[ctx["unit"] == "BR-201", "batch_id"].dropna().iloc[0]
    traj = overlay_trajectory(h, config, batch, "TIC-201.PV")
    assert len(traj) and set(traj["tag"]) == {"TIC-201.PV"} and traj["batch_time_h"].min() >= 0
    others = sorted(set(ctx["batch_id"].dropna()) - {batch})
    band = overlay_envelope(h, config, "TIC-201.PV", others)
    assert list(band.columns) == ["batch_time_h", "lo", "median", "hi", "n"]
    assert (band["lo"] <= band["hi"]).all() and 30 < band["median"].median() < 40
    with pytest.raises(ValueError, match="production bioreactor"):
        overlay_trajectory(h, config, batch, "TI-101.PV")


def test_trends_page_draws_tags_and_a_batch_overlay(store, monkeypatch):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    monkeypatch.setenv("BIOTWIN_TZ", "Europe/Brussels")
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    status = [m.value for m in [*at.success, *at.warning]]
    assert any(m.startswith("Data: ") and "newest sample 2026-03-02 00:50" in m for m in status)
    at.selectbox(key="tr_unit").set_value("BR-201").run()
    at.text_input(key="tr_search").input("temperature").run()
    assert [o.split(" ")[0] for o in at.multiselect(key="tr_tags").options] == [
        "TIC-201.PV",
        "TIC-201.SP",
    ]
    at.text_input(key="tr_search").input("").run()
    options = at.multiselect(key="tr_tags").options
    want = [next(o for o in options if o.startswith(t)) for t in ("TIC-201.PV", "AIC-2012.PV")]
    assert want[0] == "TIC-201.PV · Broth temperature (°C)"
    at.multiselect(key="tr_tags").set_value(want).run()
    at.radio(key="tr_range").set_value("Last 7 days").run()
    assert not at.exception
    summary = at.dataframe[0].value
    assert list(summary["Tag"]) == ["TIC-201.PV", "AIC-2012.PV"]
    assert list(summary["Unit of measure"]) == ["°C", "%"]
    assert not summary.astype(str).isin(["None", "nan"]).any().any()
    at.toggle(key="tr_overlay").set_value(True).run()
    assert not at.exception
    assert any("against the envelope of" in c.value for c in at.caption)


def test_an_unknown_time_zone_is_said_and_the_machine_s_used(store, monkeypatch):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    monkeypatch.setenv("BIOTWIN_TZ", "Mars/Olympus_Mons")
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    assert any("BIOTWIN_TZ" in w.value and "Mars/Olympus_Mons" in w.value for w in at.warning)
