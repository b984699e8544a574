"""Downtime and demand what-ifs from the plant's current state (Monte Carlo with the twin)."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.plant import data_dir, live_state
from dashboard.session import config, historian
from twin.scenarios import (
    AssetOutage,
    DemandChange,
    FailureRisk,
    PMMove,
    Scenario,
    ShiftRemoved,
    compare,
    run_scenario,
)

st.title("Downtime scenarios")
plant = config()
state, notes = live_state(historian(), plant)
with st.expander("Starting point: the plant now", expanded=False):
    st.write(
        f"{len(state.batches)} batches on units, {len(state.assets)} assets; "
        f"plant clock {state.clock_h / 24:.1f} days"
    )
    for note in notes:
        st.caption(note)

units = [u.id for u in plant.units]
assets = [f"{u.id}/{a.name}" for u in plant.units for a in plant.unit_classes[u.unit_class].assets]
pm_assets = [
    f"{u.id}/{a.name}"
    for u in plant.units
    for a in plant.unit_classes[u.unit_class].assets
    if a.pm_interval_h
]
saved_dir = data_dir() / "scenarios"

with st.form("scenario"):
    name = st.text_input("Scenario name", value="BR-202 down 3 days")
    c1, c2, c3 = st.columns(3)
    horizon_days = c1.number_input("Horizon (days)", 1, 180, 30)
    replications = c2.number_input("Replications", 10, 2000, 200, step=10)
    seed = c3.number_input("Seed", 0, 10_000, 0)
    st.markdown("**Outage**")
    o1, o2, o3 = st.columns(3)
    outage_unit = o1.selectbox("Unit down", ["(none)", *units], index=units.index("BR-202") + 1)
    outage_start = o2.number_input("from (h)", 0.0, 4000.0, 24.0)
    outage_end = o3.number_input("to (h)", 0.0, 4000.0, 96.0)
    st.markdown("**Failure risk** (e.g. the maintenance model's probability)")
    r1, r2, r3 = st.columns(3)
    risk_asset = r1.selectbox("Asset", ["(none)", *assets])
    risk_p = r2.slider("P(failure)", 0.0, 1.0, 0.3)
    risk_window = r3.number_input("within (days)", 1.0, 180.0, 30.0)
    d1, d2, d3 = st.columns(3)
    demand = d1.number_input("Demand change (%)", -50, 200, 0)
    pm_asset = d2.selectbox("Move the PM of", ["(none)", *pm_assets])
    pm_to = d3.number_input("to (h from now)", 0.0, 4000.0, 48.0)
    s1, s2 = st.columns(2)
    shift_from = s1.number_input("Shift removed from (h, 0 = none)", 0.0, 4000.0, 0.0)
    shift_to = s2.number_input("until (h)", 0.0, 4000.0, 0.0)
    submitted = st.form_submit_button("Run baseline and scenario")


def events() -> list:
    out = []
    if outage_unit != "(none)" and outage_end > outage_start:
        out.append(AssetOutage(target=outage_unit, start_h=outage_start, end_h=outage_end))
    if risk_asset != "(none)" and risk_p > 0:
        out.append(FailureRisk(asset=risk_asset, probability=risk_p, within_h=risk_window * 24))
    if demand:
        out.append(DemandChange(factor=1 + demand / 100))
    if pm_asset != "(none)":
        out.append(PMMove(asset=pm_asset, to_h=pm_to))
    if shift_to > shift_from > 0:
        out.append(ShiftRemoved(start_h=shift_from, end_h=shift_to))
    return out


if submitted:
    scenario = Scenario(name=name, horizon_h=horizon_days * 24, events=events())
    bar = st.progress(0.0, text="baseline")
    kw = {"horizon_h": scenario.horizon_h, "replications": int(replications), "seed": int(seed)}
    # the baseline of one starting point and sweep is computed once per session
    key = (state.model_dump_json(), scenario.horizon_h, int(replications), int(seed))
    cached = st.session_state.get("baseline")
    if cached is not None and cached[0] == key:
        base = cached[1]
    else:
        base = run_scenario(
            plant,
            state,
            [],
            name="baseline",
            progress=lambda d, n: bar.progress(d / n / 2, text=f"baseline {d}/{n}"),
            **kw,
        )
        st.session_state["baseline"] = (key, base)
    what = run_scenario(
        plant,
        state,
        scenario.events,
        name=scenario.name,
        progress=lambda d, n: bar.progress(0.5 + d / n / 2, text=f"{scenario.name} {d}/{n}"),
        **kw,
    )
    bar.progress(1.0, text=f"done; the scenario's replications took {what.seconds:.1f} s")
    st.session_state["scenario_result"] = (scenario, base, what)
    saved_dir.mkdir(parents=True, exist_ok=True)
    path = saved_dir / f"{''.join(c if c.isalnum() else '-' for c in name)}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(scenario.model_dump_json(indent=2))
    tmp.replace(path)

if "scenario_result" in st.session_state:
    scenario, base, what = st.session_state["scenario_result"]
    st.subheader(f"{scenario.name} vs baseline ({len(base.kpis)} paired replications)")
    table = compare(base, what)
    spread = pd.DataFrame(
        {
            "baseline p05-p95": base.summary()[["p05", "p95"]]
            .round(2)
            .astype(str)
            .agg(" - ".join, axis=1),
            "scenario p05-p95": what.summary()[["p05", "p95"]]
            .round(2)
            .astype(str)
            .agg(" - ".join, axis=1),
        }
    )
    st.dataframe(table.round(3).join(spread), width="stretch")
    units_table = (
        base.unit_summary()
        .add_prefix("baseline ")
        .join(what.unit_summary().add_prefix("scenario "))
    )
    st.dataframe(units_table.round(3), width="stretch")
    gantt = pd.concat(
        [base.schedule.assign(run="baseline"), what.schedule.assign(run=scenario.name)]
    )
    origin = pd.Timestamp("2000-01-01")
    gantt["start"] = origin + pd.to_timedelta(gantt["start_h"], "h")
    gantt["end"] = origin + pd.to_timedelta(gantt["end_h"], "h")
    fig = px.timeline(
        gantt,
        x_start="start",
        x_end="end",
        y="unit",
        color="activity",
        facet_row="run",
        hover_data=["batch_id", "step"],
        height=700,
    )
    fig.update_xaxes(title="hours from now (replication 1)")
    st.plotly_chart(fig, width="stretch")

saved = sorted(saved_dir.glob("*.json")) if saved_dir.exists() else []
if saved:
    st.subheader("Saved scenarios")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "file": p.name,
                    **{k: v for k, v in json.loads(p.read_text()).items() if k != "events"},
                    "events": len(json.loads(p.read_text())["events"]),
                }
                for p in saved
            ]
        ),
        hide_index=True,
    )
