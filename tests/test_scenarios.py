"""The scenario engine: snapshots, events, replications, KPIs and their spread."""

from __future__ import annotations

import json

import numpy as np
import pydantic
import pytest

from twin.errors import ScenarioError
from twin.line import Line
from twin.scenarios import (
    KPI_NAMES,
    AssetOutage,
    DemandChange,
    FailureRisk,
    PMMove,
    Scenario,
    ShiftRemoved,
    compare,
    run_replication,
    run_scenario,
)
from twin.state import BatchState, PlantState, validate_state

MONTH = 24.0 * 30


@pytest.fixture(scope="module")
def state(plant_100d):
    return plant_100d


@pytest.fixture(scope="module")
def baseline(config, state):
    return run_scenario(config, state, [], horizon_h=MONTH, replications=60, seed=5, workers=2)


# ---------------------------------------------------------------------- the snapshot
def test_snapshot_holds_work_in_progress_and_round_trips_as_json(config, state):
    on_units = [b for b in state.batches if b.unit is not None]
    in_qc = [b for b in state.batches if b.qc_remaining_h is not None]
    assert len(on_units) >= 3 and len(in_qc) >= 1
    assert len({b.unit for b in on_units}) == len(on_units)  # one batch per unit
    assert all(a.age_h >= 0 for a in state.assets) and len(state.assets) == sum(
        len(config.unit_classes[u.unit_class].assets) for u in config.units
    )
    validate_state(state, config)
    again = PlantState.model_validate_json(state.model_dump_json())
    assert again == state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"unit": "BR-999"}, "batches[0].unit: must be a unit of the plant; got 'BR-999'"),
        ({"unit": "FL-701"}, "batches[0].unit: step production runs on a production_bioreactor"),
        ({"step": "fermentation"}, "batches[0].step: must be one of"),
    ],
)
def test_invalid_state_names_field_rule_and_value(config, change, message):
    batch = BatchState(batch_id="B1", seq=0, step="production", unit="BR-201", due_h=100)
    bad = PlantState(batches=(batch.model_copy(update=change),))
    with pytest.raises(ScenarioError) as err:
        validate_state(bad, config)
    assert message in str(err.value)


def test_two_batches_on_one_unit_are_refused(config):
    a = BatchState(batch_id="B1", seq=0, step="production", unit="BR-201", due_h=100)
    b = a.model_copy(update={"batch_id": "B2", "seq": 1})
    with pytest.raises(ScenarioError, match="already holds batch B1"):
        validate_state(PlantState(batches=(a, b)), config)


def test_invalid_events_are_refused(config):
    with pytest.raises(ScenarioError, match=r"events\[0\] \(outage\).target: .*'BR-999'"):
        run_scenario(config, None, [AssetOutage(target="BR-999", start_h=0, end_h=5)])
    with pytest.raises(ScenarioError, match="must be an asset with a PM plan"):
        run_scenario(config, None, [PMMove(asset="BR-201/nothing", to_h=3)])
    with pytest.raises(pydantic.ValidationError, match="end_h must be > start_h"):
        AssetOutage(target="BR-201", start_h=10, end_h=5)
    with pytest.raises(ScenarioError, match="replications: must be >= 1; got 0"):
        run_scenario(config, None, [], replications=0)


def test_scenario_saves_and_loads_as_json():
    scenario = Scenario(
        name="BR-202 down, +20 %",
        horizon_h=MONTH,
        events=[AssetOutage(target="BR-202", start_h=24, end_h=96), DemandChange(factor=1.2)],
    )
    again = Scenario.model_validate(json.loads(scenario.model_dump_json()))
    assert again == scenario and isinstance(again.events[0], AssetOutage)


# ---------------------------------------------------------------------- replications
def test_replication_is_a_pure_function_of_its_inputs(config, state):
    events = [AssetOutage(target="BR-202", start_h=24, end_h=72), DemandChange(factor=1.1)]
    a = run_replication(config, state, events, MONTH, seed=42, keep_schedule=True)
    b = run_replication(config, state, events, MONTH, seed=42, keep_schedule=True)
    c = run_replication(config, state, events, MONTH, seed=43)
    assert a.kpis == b.kpis and a.schedule == b.schedule
    assert a.kpis != c.kpis


def test_same_seed_same_result_whatever_the_number_of_processes(config, state):
    one = run_scenario(config, state, [], horizon_h=MONTH, replications=8, seed=1, workers=1)
    two = run_scenario(config, state, [], horizon_h=MONTH, replications=8, seed=1, workers=2)
    assert one.kpis.equals(two.kpis)
    assert one.schedule.equals(two.schedule)


def test_batches_in_progress_finish_first(config, state):
    """Batches resumed from the snapshot are filled before any batch released later."""
    rep = run_replication(config, state, [], MONTH, seed=9, keep_schedule=True)
    on_units = {b.batch_id for b in state.batches if b.unit is not None}
    filling = [r for r in rep.schedule if r[2] == "filling" and r[3] == "batch"]
    first = [r[1] for r in sorted(filling, key=lambda r: r[4])[: len(on_units)]]
    assert set(first) == on_units


def test_kpis_have_a_spread_and_are_consistent(baseline):
    k = baseline.kpis
    assert len(k) == 60 and set(KPI_NAMES) <= set(k.columns)
    assert (k["released"] + k["rejected"] <= k["completed"] + 10).all()  # QC backlog at start
    assert (k["late"] <= k["released"] + k["rejected"]).all()
    assert k["completed"].std() > 0
    summary = baseline.summary()
    assert (summary["p05"] <= summary["p50"]).all() and (summary["p50"] <= summary["p95"]).all()
    assert baseline.utilization.shape == (60, 12)
    assert ((baseline.availability > 0.5) & (baseline.availability <= 1.0)).all().all()


def test_throughput_from_a_snapshot_matches_the_steady_state(config, baseline):
    """From a plant in steady state, a month's output equals what the line sustains."""
    line = Line(config, seed=21, log_events=False)
    line.start(wear_snapshots_h=None)
    line.env.run(until=24 * 400)
    filled = [b for b in line.batches if b.filled_h is not None and b.filled_h > 24 * 40]
    per_week = len(filled) / ((24 * 400 - 24 * 40) / 168)
    assert baseline.kpis["throughput_per_week"].mean() == pytest.approx(per_week, rel=0.08)


# ---------------------------------------------------------------------- events
def test_a_production_bioreactor_down_for_the_month_cuts_output(config, state, baseline):
    down = run_scenario(
        config,
        state,
        [AssetOutage(target="BR-202", start_h=0, end_h=MONTH)],
        horizon_h=MONTH,
        replications=60,
        seed=5,
        workers=2,
    )
    assert down.availability["BR-202"].max() == pytest.approx(0.0, abs=1e-9)
    diff = compare(baseline, down)
    # Three bioreactors are the bottleneck; two carry about two thirds of the output.
    drop = -diff.loc["completed", "difference"] / diff.loc["completed", "baseline"]
    assert 0.15 < drop < 0.45
    assert diff.loc["completed", "ci95_high"] < 0  # the paired interval excludes zero
    assert diff.loc["due_dates_missed", "ci95_low"] > 0


def test_demand_factor_scales_releases(config):
    """From an empty plant, +50 % demand releases about 50 % more batches (not yet capped)."""
    empty = PlantState.empty()
    a = run_scenario(config, empty, [], horizon_h=24 * 10, replications=20, seed=2, workers=1)
    b = run_scenario(
        config,
        empty,
        [DemandChange(factor=1.5)],
        horizon_h=24 * 10,
        replications=20,
        seed=2,
        workers=1,
    )
    started_a = a.schedule.query("step == 'media_preparation' and activity == 'batch'")
    started_b = b.schedule.query("step == 'media_preparation' and activity == 'batch'")
    assert len(started_b) > len(started_a)
    assert compare(a, b).loc["wip_at_end", "difference"] > 0


def test_certain_failure_risk_fails_the_asset_in_every_replication(config, state, baseline):
    risky = run_scenario(
        config,
        state,
        [FailureRisk(asset="BR-201/agitator", probability=1.0, within_h=24 * 7, repair_h=48)],
        horizon_h=MONTH,
        replications=60,
        seed=5,
        workers=2,
    )
    # 48 h repair in a 720 h month, plus any wear-out failure of its other assets.
    assert (risky.availability["BR-201"] <= 1 - 48 / MONTH + 1e-9).all()


def test_zero_risk_leaves_the_baseline_unchanged(config, state, baseline):
    """Common random numbers: an event that does nothing changes nothing."""
    none = run_scenario(
        config,
        state,
        [FailureRisk(asset="BR-201/agitator", probability=0.0, within_h=24, replaces_wear=False)],
        horizon_h=MONTH,
        replications=60,
        seed=5,
        workers=2,
    )
    assert none.kpis.equals(baseline.kpis)


def test_no_step_starts_while_the_shift_is_removed(config):
    start, end = 48.0, 96.0
    rep = run_replication(
        config,
        PlantState.empty(),
        [ShiftRemoved(start_h=start, end_h=end)],
        24 * 8,
        seed=4,
        keep_schedule=True,
    )
    max_setup = max(s.setup_h for s in config.recipe.steps)
    starts = np.array([r[4] for r in rep.schedule if r[3] == "batch"])
    assert not ((starts > start + max_setup) & (starts < end)).any()
    assert ((starts > end) & (starts < end + 24)).any()  # work resumes after the shift


def test_pm_moved_happens_when_asked(config):
    rep = run_replication(
        config,
        PlantState.empty(),
        [PMMove(asset="FL-701/dosing_pump", to_h=10.0)],
        24 * 3,
        seed=4,
        keep_schedule=True,
    )
    pms = [r for r in rep.schedule if r[0] == "FL-701" and r[3] == "pm"]
    assert pms and pms[0][4] == pytest.approx(10.0)


def test_predicted_risk_discounts_expected_good_lots(config, state):
    risky = state.model_copy(
        update={"batches": tuple(b.model_copy(update={"risk": 0.5}) for b in state.batches)}
    )
    rep = run_replication(config, risky, [], MONTH, seed=3, default_risk=0.0)
    resumed = len([b for b in state.batches if b.qc_remaining_h is None])
    assert rep.kpis["expected_good_lots"] == pytest.approx(rep.kpis["completed"] - 0.5 * resumed)


def test_progress_is_reported(config):
    seen = []
    run_scenario(
        config,
        None,
        [],
        horizon_h=48,
        replications=10,
        seed=0,
        workers=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (10, 10) and all(t == 10 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
