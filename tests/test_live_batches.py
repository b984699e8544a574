"""The live plant's batches: one rule for scoring and QA triage (connectors/batch_states.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from connectors.batch_states import (
    AWAITING,
    FINISHED,
    IN_PROGRESS,
    INCOMPLETE,
    batch_states,
    live_window_days,
)
from dashboard.review import class_in_words

T0 = pd.Timestamp("2026-12-01T00:00:00Z")


def rec(batch, unit, phase, start_h, end_h, state="running"):
    return {
        "batch_id": batch,
        "unit": unit,
        "recipe": "r",
        "phase": phase,
        "state": state,
        "start_time": T0 + pd.Timedelta(hours=start_h),
        "end_time": pd.NaT if end_h is None else T0 + pd.Timedelta(hours=end_h),
    }


@pytest.fixture
def ctx():
    return pd.DataFrame(
        [
            # finished (last phase of filling ended) 10 h before the clock
            rec("A", "BR-201", "fed_batch", 0, 50),
            rec("A", "FL-701", "filling", 60, 65),
            rec("A", "FL-701", "reconciliation", 65, 66),
            # filling, but not its last phase yet: in progress
            rec("B", "FL-701", "filling", 70, None),
            # cut off at the end of loaded history long ago: incomplete, never open
            rec("C", "BR-202", "fed_batch", -200, -150),
            # finished 5 days before the clock: out of the live window
            rec("D", "FL-701", "reconciliation", -40, -44 + 4),
            # between units (no open record), last active 20 h ago: in progress
            rec("E", "HC-301", "flush", 40, 56),
            # not a batch: CIP
            rec("A", "FL-701", "cip", 66, 68, state="cip"),
        ]
    )


def test_states_of_the_live_plant(ctx, config):
    now = T0 + pd.Timedelta(hours=76)
    states = batch_states(ctx, config, now, window_days=2)
    assert states.loc["A", "state"] == AWAITING
    assert states.loc["B", "state"] == IN_PROGRESS
    assert states.loc["C", "state"] == INCOMPLETE
    assert states.loc["D", "state"] == FINISHED
    assert states.loc["E", "state"] == IN_PROGRESS
    assert states.loc["A", "finished_time"] == T0 + pd.Timedelta(hours=66)
    assert states.loc["B", "last_seen"] == now  # an open record runs to the clock
    # a day later E has been quiet for 44 h: still in the 2-day window; 3 days later not
    later = batch_states(ctx, config, now + pd.Timedelta(days=3), window_days=2)
    assert later.loc["E", "state"] == INCOMPLETE
    assert later.loc["A", "state"] == FINISHED


def test_records_after_the_clock_do_not_count(ctx, config):
    early = batch_states(ctx, config, T0 + pd.Timedelta(hours=65.5), window_days=2)
    assert early.loc["A", "state"] == IN_PROGRESS  # reconciliation not ended by then
    assert "B" not in early.index


def test_the_live_window_is_configurable_and_checked(monkeypatch):
    monkeypatch.setenv("BIOTWIN_LIVE_DAYS", "3.5")
    assert live_window_days() == 3.5
    monkeypatch.setenv("BIOTWIN_LIVE_DAYS", "-1")
    with pytest.raises(ValueError, match=r"BIOTWIN_LIVE_DAYS.*'-1'"):
        live_window_days()


def test_deviation_classes_in_words(config):
    assert class_in_words("ph_drift", config) == "pH drift (pH probe calibration drift)"
    assert class_in_words("do_crash", config).startswith("DO crash (")
    assert class_in_words("raw_material", config).startswith("Raw material (")
    assert class_in_words(None, config) == "—"


def test_scoring_scores_only_the_live_plant(tmp_path, config):
    """A store whose history ends mid-batch long ago and then goes on: the old open batch is
    not scored, the recent ones are."""
    from connectors.historian import Historian
    from connectors.twin_import import import_simulation
    from connectors.warm import close_open_context
    from quality.live import batch_history_from_historian, plant_clock

    historian = Historian(tmp_path / "historian")
    import_simulation(Path(__file__).resolve().parents[1] / "sample_data" / "twin", historian)
    close_open_context(historian)
    ctx = historian.batch_context()
    assert not ctx["end_time"].isna().any()
    clock = plant_clock(historian, ctx)
    history = batch_history_from_historian(historian, config)
    states = batch_states(ctx, config, clock)
    scored = set(history.outcomes.index)
    assert scored and scored == set(states.index[states["state"].isin([IN_PROGRESS, AWAITING])])
    last = states.loc[list(scored), "last_seen"]
    assert (last >= clock - pd.Timedelta(days=2)).all()


def test_a_state_split_by_a_restart_counts_from_its_first_part(tmp_path, config):
    from connectors.historian import Historian
    from dashboard.plant import unit_status

    historian = Historian(tmp_path / "historian")
    historian.append_batch_context(
        pd.DataFrame(
            [
                rec("B", "BR-201", "batch_growth", 0, 10),
                rec("B", "BR-201", "fed_batch", 10, 30),  # closed where biotwin stopped
                rec("B", "BR-201", "fed_batch", 30, None),  # opened again by the ingest
            ]
        )
    )
    status = unit_status(historian, config, at=T0 + pd.Timedelta(hours=40)).set_index("unit")
    assert status.loc["BR-201", "phase"] == "fed_batch"
    assert status.loc["BR-201", "since"] == T0 + pd.Timedelta(hours=10)


def test_the_signals_the_reasons_name_are_charted_with_their_units(config):
    from dashboard.review import named_signals, signal_label

    pairs = named_signals("production.do, seed_culture.ph, production.do, no_such.x", config)
    assert pairs == [("production", "do"), ("seed_culture", "ph")]
    assert named_signals("", config) == [] and named_signals(None, config) == []
    assert signal_label(config, "production", "do") == "Dissolved oxygen (%), production"
    assert signal_label(config, "seed_culture", "ph") == "Broth pH, seed culture"


def test_reasons_name_the_tags_they_are_about():
    from quality.explain import format_reasons, reason_tags

    pairs = [
        (0.9, "DO low", "production.do"),
        (0.5, "tags together off (T2 / SPE)", ""),
        (0.4, "DO unsteady", "production.do"),
        (0.3, "pH drifting", "production.ph"),
        (-0.2, "temperature fine", "production.temperature"),
    ]
    assert format_reasons(pairs, 3).startswith("DO low (+0.90); tags together")
    assert reason_tags(pairs, 3) == "production.do"  # the three shown: DO twice, T2/SPE
    assert reason_tags(pairs, 4) == "production.do, production.ph"
    assert reason_tags([(-0.2, "temperature fine", "production.temperature")], 3) == (
        "production.temperature"
    )
