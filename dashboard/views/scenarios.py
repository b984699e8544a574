"""Downtime and demand what-ifs from the plant's current state (Monte Carlo with the twin).

The starting point (the plant state read from the historian) is pinned for the session, so
that every scenario of a study starts from the same state and shares one baseline; the
baseline of the current sweep settings is computed ahead while the user fills in the
scenario (dashboard/whatif.py). Runs are saved under DATA_DIR/scenarios/ with their
results (dashboard/saved.py), can be shown again and compared side by side.
"""

from __future__ import annotations

import os
import time

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import saved as saved_mod
from dashboard.plant import data_dir, live_state
from dashboard.session import config, historian
from dashboard.whatif import (
    RISK_THRESHOLD,
    BaselineCache,
    batch_outcomes,
    good_rate,
    predicted_failure_events,
    read_scores,
    run_pair,
    with_batch_risk,
)
from twin.scenarios import (
    AssetOutage,
    DemandChange,
    FailureRisk,
    PMMove,
    Scenario,
    ShiftRemoved,
    compare,
)


@st.cache_resource
def baselines() -> BaselineCache:
    """Baselines shared by the sessions of this server."""
    return BaselineCache()


st.title("Downtime scenarios")
plant = config()
store = data_dir()
saved_dir = store / "scenarios"
ss = st.session_state

# ------------------------------------------------------------------ the starting point
if "sc_start" not in ss:
    state0, notes0 = live_state(historian(), plant)
    ss["sc_start"] = (state0, notes0, time.time())
state0, notes0, taken = ss["sc_start"]
batch_scores, batch_msg = read_scores(store, "batch")
asset_scores, asset_msg = read_scores(store, "asset")
outcomes = batch_outcomes(store)
rate, rate_source = good_rate(outcomes, batch_scores)
state = with_batch_risk(state0, batch_scores)
default_risk = 1.0 - rate if (len(outcomes) or batch_scores is not None) else None
state_json = state.model_dump_json()
n_scored = sum(b.risk is not None for b in state.batches)

with st.expander("Starting point: the plant now", expanded=False):
    st.write(
        f"{len(state.batches)} batches on units, {len(state.assets)} assets; "
        f"plant clock {state.clock_h / 24:.1f} days; read {(time.time() - taken) / 60:.0f} "
        "min ago (kept for the session, so scenarios share it and its baseline)"
    )
    for note in notes0:
        st.caption(note)
    st.caption(
        f"Expected good lots: {n_scored} of {len(state.batches)} batches in progress with a "
        f"predicted deviation risk; batches not started yet count {rate:.2f} ({rate_source})"
    )
    if st.button("Read the plant state again", key="sc_refresh"):
        ss.pop("sc_start", None)
        st.rerun()

units = [u.id for u in plant.units]
assets = [f"{u.id}/{a.name}" for u in plant.units for a in plant.unit_classes[u.unit_class].assets]
pm_assets = [
    f"{u.id}/{a.name}"
    for u in plant.units
    for a in plant.unit_classes[u.unit_class].assets
    if a.pm_interval_h
]
DEFAULTS = {
    "sc_name": "BR-202 down 3 days",
    "sc_horizon": 30,
    "sc_reps": 200,
    "sc_seed": 0,
    "sc_outage_unit": "BR-202",
    "sc_outage_from": 24.0,
    "sc_outage_to": 96.0,
    "sc_risk_asset": "(none)",
    "sc_risk_p": 0.3,
    "sc_risk_days": 30.0,
    "sc_demand": 0,
    "sc_pm_asset": "(none)",
    "sc_pm_to": 48.0,
    "sc_shift_from": 0.0,
    "sc_shift_to": 0.0,
    "sc_predicted": False,
    "sc_threshold": RISK_THRESHOLD,
}
for k, v in DEFAULTS.items():
    ss.setdefault(k, v)


def sweep_key(horizon_days, reps, seed) -> tuple:
    """What a baseline depends on besides the plant: starting point and sweep."""
    return (
        saved_mod.state_key(state_json),
        float(horizon_days) * 24,
        int(reps),
        int(seed),
        default_risk,
    )


# compute the baseline of the current settings ahead (the user is still typing)
if os.environ.get("BIOTWIN_PREFETCH_BASELINE", "1") != "0":
    h, r, s = ss["sc_horizon"], ss["sc_reps"], ss["sc_seed"]
    baselines().prefetch(
        sweep_key(h, r, s),
        plant,
        state,
        horizon_h=float(h) * 24,
        replications=int(r),
        seed=int(s),
        default_risk=default_risk,
    )

with st.form("scenario"):
    st.text_input("Scenario name", key="sc_name")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Horizon (days)", 1, 180, key="sc_horizon")
    c2.number_input("Replications", 10, 2000, step=10, key="sc_reps")
    c3.number_input("Seed", 0, 10_000, key="sc_seed")
    st.markdown("**Outage**")
    o1, o2, o3 = st.columns(3)
    o1.selectbox("Unit down", ["(none)", *units], key="sc_outage_unit")
    o2.number_input("from (h)", 0.0, 4000.0, key="sc_outage_from")
    o3.number_input("to (h)", 0.0, 4000.0, key="sc_outage_to")
    st.markdown("**Failure risk**")
    p1, p2 = st.columns([2, 1])
    p1.checkbox(
        "Use predicted failure risk (maintenance model)",
        key="sc_predicted",
        help="From scores/asset_scores.parquet: every asset at or above the threshold "
        "fails within 7 days with its P(fail in 7 d), in place of its wear-out life; the "
        "others keep the twin's wear model (docs/dashboard.md).",
    )
    p2.number_input("threshold P(fail in 7 d)", 0.0, 1.0, step=0.01, key="sc_threshold")
    if asset_scores is None:
        st.caption(f"No predicted failure risk available: {asset_msg}.")
    r1, r2, r3 = st.columns(3)
    r1.selectbox("Asset (by hand)", ["(none)", *assets], key="sc_risk_asset")
    r2.slider("P(failure)", 0.0, 1.0, key="sc_risk_p")
    r3.number_input("within (days)", 1.0, 180.0, key="sc_risk_days")
    d1, d2, d3 = st.columns(3)
    d1.number_input("Demand change (%)", -50, 200, key="sc_demand")
    d2.selectbox("Move the PM of", ["(none)", *pm_assets], key="sc_pm_asset")
    d3.number_input("to (h from now)", 0.0, 4000.0, key="sc_pm_to")
    s1, s2 = st.columns(2)
    s1.number_input("Shift removed from (h, 0 = none)", 0.0, 4000.0, key="sc_shift_from")
    s2.number_input("until (h)", 0.0, 4000.0, key="sc_shift_to")
    submitted = st.form_submit_button("Run baseline and scenario", key="sc_run")


def manual_events() -> list:
    out = []
    if ss["sc_outage_unit"] != "(none)" and ss["sc_outage_to"] > ss["sc_outage_from"]:
        out.append(
            AssetOutage(
                target=ss["sc_outage_unit"], start_h=ss["sc_outage_from"], end_h=ss["sc_outage_to"]
            )
        )
    if ss["sc_risk_asset"] != "(none)" and ss["sc_risk_p"] > 0:
        out.append(
            FailureRisk(
                asset=ss["sc_risk_asset"],
                probability=ss["sc_risk_p"],
                within_h=ss["sc_risk_days"] * 24,
            )
        )
    if ss["sc_demand"]:
        out.append(DemandChange(factor=1 + ss["sc_demand"] / 100))
    if ss["sc_pm_asset"] != "(none)":
        out.append(PMMove(asset=ss["sc_pm_asset"], to_h=ss["sc_pm_to"]))
    if ss["sc_shift_to"] > ss["sc_shift_from"] > 0:
        out.append(ShiftRemoved(start_h=ss["sc_shift_from"], end_h=ss["sc_shift_to"]))
    return out


if submitted:
    t_click = time.perf_counter()
    events = manual_events()
    options = {"predicted_risk": bool(ss["sc_predicted"]), "threshold": ss["sc_threshold"]}
    if ss["sc_predicted"]:
        if asset_scores is None:
            st.warning(f"Run without predicted failure risk: {asset_msg}.")
            options["predicted_risk"] = False
        else:
            predicted, risk_notes = predicted_failure_events(
                asset_scores, plant, ss["sc_threshold"]
            )
            by_hand = {e.asset for e in events if isinstance(e, FailureRisk)}
            predicted = [e for e in predicted if e.asset not in by_hand]
            events += predicted
            options["predicted_assets"] = [e.asset for e in predicted]
            options["notes"] = risk_notes
    options["expected_good"] = {"batches_scored": n_scored, "new_batch_good_rate": rate}
    options["expected_good_source"] = rate_source
    name = ss["sc_name"].strip() or "scenario"
    horizon_days, reps, seed = ss["sc_horizon"], int(ss["sc_reps"]), int(ss["sc_seed"])
    scenario = Scenario(name=name, horizon_h=horizon_days * 24, events=events)
    key = sweep_key(horizon_days, reps, seed)
    bar = st.progress(0.0, text="starting")
    shown = [0.0]  # when the bar last moved

    def advance(done: int, total: int) -> None:
        """Move the bar at most every 0.4 s (and at the end): each move is a message the
        browser re-renders while the replications need both cores."""
        now = time.perf_counter()
        if done == total or now - shown[0] >= 0.4:
            shown[0] = now
            bar.progress(done / total, text=f"replications {done}/{total}")

    base = baselines().get(key, wait=True)
    base, what = run_pair(
        plant,
        state,
        scenario.events,
        horizon_h=scenario.horizon_h,
        replications=reps,
        seed=seed,
        name=name,
        baseline=base,
        default_risk=default_risk,
        progress=advance,
    )
    baselines().put(key, base)
    bar.progress(1.0, text=f"done: {what.seconds:.1f} s of replications")
    path = saved_mod.save_scenario(
        saved_dir,
        scenario,
        baseline=base,
        result=what,
        replications=reps,
        seed=seed,
        state_json=state_json,
        options=options,
    )
    ss["sc_view"] = {
        "scenario": scenario,
        "baseline": base,
        "result": what,
        "options": options,
        "source": f"run now, saved as {path.name}",
        "clicked": t_click,
    }


def load_into_view() -> None:
    """Callback of "Show it": the saved run in view, its settings in the form."""
    file = ss["sc_load_file"]
    data = saved_mod.load_saved(saved_dir, file)
    ss["sc_view"] = {**data, "source": f"saved {data.get('saved_at')} in {file}"}
    sc, opts = data["scenario"], data.get("options", {})
    ss["sc_name"] = sc.name
    ss["sc_horizon"] = max(1, min(180, round(sc.horizon_h / 24)))
    if data.get("replications"):
        ss["sc_reps"] = int(data["replications"])
    if data.get("seed") is not None:
        ss["sc_seed"] = int(data["seed"])
    for k in ("sc_outage_unit", "sc_risk_asset", "sc_pm_asset"):
        ss[k] = "(none)"
    ss["sc_demand"], ss["sc_shift_from"], ss["sc_shift_to"] = 0, 0.0, 0.0
    ss["sc_predicted"] = bool(opts.get("predicted_risk"))
    ss["sc_threshold"] = float(opts.get("threshold", RISK_THRESHOLD))
    predicted = set(opts.get("predicted_assets", []))
    for e in sc.events:
        if isinstance(e, AssetOutage) and e.target in units and ss["sc_outage_unit"] == "(none)":
            ss["sc_outage_unit"], ss["sc_outage_from"], ss["sc_outage_to"] = (
                e.target,
                min(e.start_h, 4000.0),
                min(e.end_h, 4000.0),
            )
        elif isinstance(e, FailureRisk) and e.asset not in predicted:
            ss["sc_risk_asset"], ss["sc_risk_p"] = e.asset, e.probability
            ss["sc_risk_days"] = max(1.0, min(180.0, e.within_h / 24))
        elif isinstance(e, DemandChange):
            ss["sc_demand"] = max(-50, min(200, round((e.factor - 1) * 100)))
        elif isinstance(e, PMMove):
            ss["sc_pm_asset"], ss["sc_pm_to"] = e.asset, min(e.to_h, 4000.0)
        elif isinstance(e, ShiftRemoved):
            ss["sc_shift_from"], ss["sc_shift_to"] = min(e.start_h, 4000.0), min(e.end_h, 4000.0)


def spread(result) -> pd.Series:
    q = result.summary()[["p05", "p95"]].round(2).astype(str)
    return q.agg(" - ".join, axis=1)


# ------------------------------------------------------------------ the run in view
view = ss.get("sc_view")
if view is not None and view.get("result") is not None:
    scenario, base, what = view["scenario"], view["baseline"], view["result"]
    st.subheader(f"{scenario.name} vs baseline ({len(what.kpis)} paired replications)")
    st.caption(view["source"])
    if base is not None:
        table = compare(base, what).join(
            pd.DataFrame({"baseline p05-p95": spread(base), "scenario p05-p95": spread(what)})
        )
        st.dataframe(table.round(3), width="stretch")
        g1, g2, g3 = st.columns(3)
        good_base = base.kpis["expected_good_lots"].mean()
        good_what = what.kpis["expected_good_lots"].mean()
        g1.metric("Expected good lots, baseline", f"{good_base:.1f}")
        g2.metric(
            "Expected good lots, scenario", f"{good_what:.1f}", f"{good_what - good_base:+.1f}"
        )
        g3.metric("Batches completed, scenario", f"{what.kpis['completed'].mean():.1f}")
        eg = view.get("options", {}).get("expected_good")
        if eg:
            st.caption(
                "Expected good lots: each batch completed in the horizon counted as 1 - its "
                f"predicted deviation risk ({eg['batches_scored']} batches in progress scored; "
                f"new batches {eg['new_batch_good_rate']:.2f}: "
                f"{view['options'].get('expected_good_source', '')})"
            )
        pred = view.get("options", {}).get("predicted_assets")
        if pred:
            st.caption(f"Predicted failure risk used for: {', '.join(pred)}")
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
    if "clicked" in view:
        st.caption(f"computed and drawn in {time.perf_counter() - view.pop('clicked'):.2f} s")

# ------------------------------------------------------------------ saved scenarios
listing = saved_mod.list_saved(saved_dir)
if len(listing):
    st.subheader("Saved scenarios")
    st.dataframe(listing.drop(columns=["start"]), hide_index=True, width="stretch")
    with_results = listing[listing["results"]]
    l1, l2 = st.columns([3, 1])
    l1.selectbox("Saved scenario", list(listing["file"]), key="sc_load_file")
    l2.button("Show it", key="sc_load", on_click=load_into_view)
    chosen = st.multiselect(
        "Compare side by side (two or more)",
        list(with_results["file"]),
        key="sc_compare",
        format_func=lambda f: listing.set_index("file").loc[f, "name"],
    )
    if len(chosen) >= 2:
        runs = [saved_mod.load_saved(saved_dir, f) for f in chosen]
        numbers = saved_mod.compare_saved(runs)
        cells = (
            numbers.xs("mean", level="stat").round(2).astype(str)
            + " ("
            + numbers.xs("p05", level="stat").round(2).astype(str)
            + " - "
            + numbers.xs("p95", level="stat").round(2).astype(str)
            + ")"
        )
        st.caption("mean over the replications (5 - 95 % of the replications)")
        st.dataframe(cells, width="stretch")
        long = numbers.stack().rename("value").reset_index()
        long = long.rename(columns={"level_2": "scenario"})
        wide = long.pivot_table(index=["kpi", "scenario"], columns="stat", values="value")
        wide = wide.reset_index()
        wide["plus"], wide["minus"] = wide["p95"] - wide["mean"], wide["mean"] - wide["p05"]
        fig = px.bar(
            wide,
            x="scenario",
            y="mean",
            error_y="plus",
            error_y_minus="minus",
            color="scenario",
            facet_col="kpi",
            facet_col_wrap=4,
            height=520,
        )
        fig.update_yaxes(matches=None, showticklabels=True, title=None)
        fig.update_xaxes(showticklabels=False, title=None)
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
        st.plotly_chart(fig, width="stretch")
        first = runs[0]
        paired = [
            r
            for r in runs[1:]
            if r["start"].get("key") == first["start"].get("key")
            and r["seed"] == first["seed"]
            and r["scenario"].horizon_h == first["scenario"].horizon_h
        ]
        if paired:
            st.caption(
                f"Paired differences against {first['scenario'].name} (same starting point, "
                "horizon and seeds: replication i of each saw the same random draws)"
            )
            diffs = pd.DataFrame(
                {
                    r["scenario"].name: compare(first["result"], r["result"])
                    .loc[list(saved_mod.COMPARED_KPIS.values())]
                    .apply(
                        lambda x: (
                            f"{x['difference']:+.2f} [{x['ci95_low']:+.2f}, {x['ci95_high']:+.2f}]"
                        ),
                        axis=1,
                    )
                    for r in paired
                }
            )
            st.dataframe(diffs, width="stretch")
