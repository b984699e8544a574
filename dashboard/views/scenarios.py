"""Downtime and demand what-ifs from the plant's current state (Monte Carlo with the twin).

A production planner enters an outage (unit, local start date and time, duration), a
demand change and the other levers, and reads which lots slip and by how many days, each
lever's effect alone and together, and the expected good lots. The starting point (the
plant state read from the historian) is pinned for the session, so that every scenario of
a study starts from the same state and shares one baseline; the baseline of the current
sweep settings is computed ahead while the user fills in the form (dashboard/whatif.py).
Runs are saved under DATA_DIR/scenarios/ with their results and their author
(dashboard/saved.py), under a new name checked before the run, can be shown again and
compared side by side. Only a signed-in user with one of the roles of
``whatif.RUN_ROLES`` runs and saves (and only for them is a baseline computed ahead);
viewers read the saved scenarios.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pandas as pd
import plotly.express as px
import streamlit as st

from biotwin.execution import ExecutionError
from dashboard import saved as saved_mod
from dashboard.plant import data_dir, live_state
from dashboard.session import config, historian, roles
from dashboard.whatif import (
    DASH,
    PLANNER_KPIS,
    RISK_THRESHOLD,
    RUN_ROLES,
    Author,
    BaselineCache,
    Horizon,
    batch_outcomes,
    good_rate,
    kpi_changes,
    lever_runs,
    lot_kpis,
    lot_schedule,
    may_run,
    plant_now,
    plant_tz,
    predicted_failure_events,
    read_scores,
    run_study,
    scenario_events,
    show_lot_schedule,
    twin_good_rate,
    tz_name,
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

NONE = "(none)"
ACTIVITY = {
    "batch": "Batch step",
    "holding": "Holding (waiting for the next unit)",
    "cip": "Cleaning (CIP)",
    "sip": "Sterilising (SIP)",
    "down": "Down (failure or outage)",
    "pm": "Planned maintenance",
}


@st.cache_resource
def baselines() -> BaselineCache:
    """Baselines shared by the sessions of this server."""
    return BaselineCache()


st.title("Downtime scenarios")
plant = config()
store = data_dir()
saved_dir = store / "scenarios"
ss = st.session_state
author = Author(ss.get("user") or "", ss.get("full_name") or ss.get("user") or "", tuple(roles()))
can_run = bool(author.user) and may_run(author.roles)
CANNOT_RUN = (
    f"Running and saving scenarios needs a signed-in user with the role "
    f"{', '.join(RUN_ROLES)}; "
    + (f"{author.user} has {', '.join(author.roles) or 'none'}" if author.user else "nobody is")
    + ". Saved scenarios can be shown and compared below."
)
tz, tz_problem = plant_tz()
TZ = tz_name(tz)
if tz_problem:
    st.warning(tz_problem)

# ------------------------------------------------------------------ the starting point
if "sc_start" not in ss:
    state0, notes0 = live_state(historian(), plant)
    ss["sc_start"] = (state0, notes0, time.time())
state0, notes0, taken = ss["sc_start"]
batch_scores, batch_msg = read_scores(store, "batch")
asset_scores, asset_msg = read_scores(store, "asset")
outcomes = batch_outcomes(store)
if outcomes.attrs.get("integrity"):  # the audit trail does not verify: edited data unused
    st.error(outcomes.attrs["integrity"])
state = with_batch_risk(state0, batch_scores)
state_json = state.model_dump_json()
n_scored = sum(b.risk is not None for b in state.batches)
now = plant_now(state, plant)

with st.expander(f"Starting point: the plant at {Horizon(now, 0, tz).show(now)} ({TZ})"):
    st.write(
        f"{len(state.batches)} batches on units, {len(state.assets)} assets; the plant's "
        f"now is the historian's newest sample, read {(time.time() - taken) / 60:.0f} min "
        "ago (kept for the session, so scenarios share it and its baseline)"
    )
    for note in notes0:
        st.caption(note)
    st.caption(
        f"Expected good lots: {n_scored} of {len(state.batches)} batches in progress have a "
        "predicted deviation risk; the others, and lots not started yet, count the good rate "
        f"(the twin's, updated by {len(outcomes)} known outcomes)"
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


def _name_of(ss) -> str:
    """A scenario's name from what it changes ("BR-201 down 96 h from 08 Dec 05:00, demand
    +10 %"), when the user gives none: the heading must say what was run."""
    parts = []
    if ss.get("sc_outage_unit") not in (None, NONE) and ss.get("sc_outage_hours", 0) > 0:
        parts.append(
            f"{ss['sc_outage_unit']} down {ss['sc_outage_hours']:g} h from "
            f"{ss['sc_outage_date']:%d %b} {ss['sc_outage_time']:%H:%M}"
        )
    if ss.get("sc_risk_asset") not in (None, NONE):
        parts.append(f"{ss['sc_risk_asset']} fails ({ss['sc_risk_p']:.0%})")
    if ss.get("sc_demand"):
        parts.append(f"demand {ss['sc_demand']:+d} %")
    if ss.get("sc_pm_asset") not in (None, NONE):
        parts.append(f"PM of {ss['sc_pm_asset']} moved to {ss['sc_pm_date']:%d %b}")
    if ss.get("sc_shift_hours", 0) > 0:
        parts.append(f"operators off {ss['sc_shift_hours']:g} h")
    return ", ".join(parts) or "baseline only"


local_now = now.tz_convert(tz)
soon = (local_now + pd.Timedelta(hours=24)).ceil("h")
DEFAULTS = {
    "sc_name": "",
    "sc_horizon": 30,
    "sc_reps": 200,
    "sc_seed": 0,
    "sc_outage_unit": "BR-202",
    "sc_outage_date": soon.date(),
    "sc_outage_time": soon.time(),
    "sc_outage_hours": 72.0,
    "sc_risk_asset": NONE,
    "sc_risk_p": 0.3,
    "sc_risk_days": 30.0,
    "sc_demand": 0,
    "sc_pm_asset": NONE,
    "sc_pm_date": (soon + pd.Timedelta(hours=24)).date(),
    "sc_pm_time": soon.time(),
    "sc_shift_date": soon.date(),
    "sc_shift_time": soon.time(),
    "sc_shift_hours": 0.0,
    "sc_predicted": False,
    "sc_threshold": RISK_THRESHOLD,
}
for k, v in DEFAULTS.items():
    ss.setdefault(k, v)


def sweep_key(horizon_days, reps, seed) -> tuple:
    """What a baseline depends on besides the plant: starting point and sweep."""
    return (saved_mod.state_key(state_json), float(horizon_days) * 24, int(reps), int(seed), None)


# compute the baseline of the current settings ahead (the user is still typing)
if can_run and os.environ.get("BIOTWIN_PREFETCH_BASELINE", "1") != "0":
    h, r, s = ss["sc_horizon"], ss["sc_reps"], ss["sc_seed"]
    baselines().prefetch(
        sweep_key(h, r, s),
        plant,
        state,
        horizon_h=float(h) * 24,
        replications=int(r),
        seed=int(s),
    )

# the form's values are checked before it is drawn, so each problem shows beside its field
horizon = Horizon(now, float(ss["sc_horizon"]) * 24, tz)
events_in, problems = scenario_events(ss, horizon, none=NONE)


def problem(where, *keys: str) -> None:
    for key in keys:
        if key in problems:
            where.error(problems[key])


day_bounds = {
    "min_value": (local_now - pd.Timedelta(days=365)).date(),
    "max_value": (local_now + pd.Timedelta(days=365)).date(),
}
with st.form("scenario"):
    st.text_input("Scenario name", key="sc_name", placeholder="empty: named after what it changes")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Horizon (days from now)", 1, 180, key="sc_horizon")
    c2.number_input("Replications", 10, 2000, step=10, key="sc_reps")
    c3.number_input("Seed", 0, 10_000, key="sc_seed")
    st.caption(
        f"From now, {horizon.show(now)}, to {horizon.show(horizon.end)}; dates and times are "
        f"the plant's local time ({TZ})"
    )
    st.markdown("**Outage**")
    o1, o2, o3, o4 = st.columns(4)
    o1.selectbox("Unit down", [NONE, *units], key="sc_outage_unit")
    o2.date_input("Starts on", key="sc_outage_date", **day_bounds)
    o3.time_input("at", key="sc_outage_time", step=timedelta(minutes=15))
    o4.number_input("for (h)", step=1.0, format="%.1f", key="sc_outage_hours")
    problem(o2, "sc_outage_date")
    problem(o4, "sc_outage_hours")
    st.markdown("**Failure risk**")
    p1, p2 = st.columns([2, 1])
    p1.checkbox(
        "Use predicted failure risk (maintenance model)",
        key="sc_predicted",
        help="From scores/asset_scores.parquet: every asset at or above the threshold "
        "fails within 7 days with its P(fail in 7 d), in place of its wear-out life; the "
        "others keep the twin's wear model (docs/dashboard.md).",
    )
    p2.number_input("Threshold P(fail in 7 days)", 0.0, 1.0, step=0.01, key="sc_threshold")
    if asset_scores is None:
        st.caption(f"No predicted failure risk available: {asset_msg}.")
    r1, r2, r3 = st.columns(3)
    r1.selectbox("Asset (by hand)", [NONE, *assets], key="sc_risk_asset")
    r2.slider("P(failure)", 0.0, 1.0, key="sc_risk_p")
    r3.number_input("within (days)", 1.0, 180.0, key="sc_risk_days")
    problem(r3, "sc_risk_days")
    st.markdown("**Demand and planned maintenance**")
    d1, d2, d3, d4 = st.columns(4)
    d1.number_input("Demand change (%)", -50, 200, key="sc_demand")
    d2.selectbox("Move the PM of", [NONE, *pm_assets], key="sc_pm_asset")
    d3.date_input("to", key="sc_pm_date", **day_bounds)
    d4.time_input("at ", key="sc_pm_time", step=timedelta(minutes=15))
    problem(d1, "sc_demand")
    problem(d3, "sc_pm_date")
    st.markdown("**Operators off the roster**")
    s1, s2, s3 = st.columns(3)
    s1.date_input("From", key="sc_shift_date", **day_bounds)
    s2.time_input("at  ", key="sc_shift_time", step=timedelta(minutes=15))
    s3.number_input("for (h, 0 = nobody off)", step=1.0, format="%.1f", key="sc_shift_hours")
    problem(s1, "sc_shift_date")
    problem(s3, "sc_shift_hours")
    submitted = st.form_submit_button(
        "Run baseline and scenario", key="sc_run", disabled=not can_run
    )
if not can_run:
    st.caption(CANNOT_RUN)

name, refusal = "", None
if submitted:  # every check before the run: who, the inputs, the name
    if not can_run:
        refusal = f"Not run and not saved: {CANNOT_RUN}"
    elif problems:
        refusal = f"Not run and not saved: {len(problems)} input(s) to fix. " + " ".join(
            problems.values()
        )
    else:
        given = ss["sc_name"].strip()
        try:
            name = (
                saved_mod.check_new_name(saved_dir, given)
                if given
                else saved_mod.unique_name(saved_dir, _name_of(ss))
            )
        except ValueError as exc:
            refusal = f"Not run and not saved: {exc}"
if refusal:
    st.error(refusal)
elif submitted:
    t_click = time.perf_counter()
    events = list(events_in)
    options: dict = {"predicted_risk": bool(ss["sc_predicted"]), "threshold": ss["sc_threshold"]}
    predicted_assets: list[str] = []
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
            predicted_assets = [e.asset for e in predicted]
            options["predicted_assets"] = predicted_assets
            options["notes"] = risk_notes
    horizon_days, reps, seed = ss["sc_horizon"], int(ss["sc_reps"]), int(ss["sc_seed"])
    scenario = Scenario(name=name, horizon_h=horizon_days * 24, events=events)
    levers = lever_runs(events, horizon, predicted_assets)
    key = sweep_key(horizon_days, reps, seed)
    bar = st.progress(0.0, text="starting")
    shown = [0.0]  # when the bar last moved

    def advance(done: int, total: int) -> None:
        """Move the bar at most every 0.4 s (and at the end): each move is a message the
        browser re-renders while the replications need both cores."""
        t = time.perf_counter()
        if done == total or t - shown[0] >= 0.4:
            shown[0] = t
            bar.progress(done / total, text=f"replications {done} of {total}")

    base = baselines().get(key, wait=True)
    try:  # on the local pool, or the Dask cluster of $DASK_SCHEDULER_ADDRESS (`up --scheduler`)
        base, what, parts = run_study(
            plant,
            state,
            scenario.events,
            author=author,
            levers=levers,
            horizon_h=scenario.horizon_h,
            replications=reps,
            seed=seed,
            name=name,
            baseline=base,
            progress=advance,
        )
    except ExecutionError as exc:
        bar.empty()
        st.error(f"Not run and not saved: {exc}")
        st.stop()
    baselines().put(key, base)
    ran_on = what.meta.get("ran_on", "local pool")
    bar.progress(1.0, text=f"done: {what.seconds:.1f} s of replications on the {ran_on}")
    prior = twin_good_rate(base)
    rate = good_rate(outcomes, 1.0 if prior is None else prior)
    options["good_rate"] = {
        "rate": rate.rate,
        "prior": rate.prior,
        "prior_weight": rate.prior_weight,
        "good": rate.good,
        "known": rate.known,
        "low": rate.low,
        "high": rate.high,
        "batches_scored": n_scored,
    }
    options["plant_now"] = now.isoformat()
    options["time_zone"] = TZ
    options["levers"] = list(levers)
    path = saved_mod.save_scenario(
        saved_dir,
        scenario,
        author=author,
        baseline=base,
        result=what,
        replications=reps,
        seed=seed,
        state_json=state_json,
        options=options,
        levers=parts,
    )
    ss["sc_view"] = {
        "scenario": scenario,
        "baseline": base,
        "result": what,
        "levers": parts,
        "options": options,
        "start": {"state": state.model_dump(mode="json")},
        "source": f"run now by {saved_mod.author_text(author.to_dict())}, saved as {path.name}",
        "clicked": t_click,
    }


def saved_now(data: dict) -> pd.Timestamp:
    """The plant's now of a saved run (its dates are counted from it)."""
    if data.get("options", {}).get("plant_now"):
        return pd.Timestamp(data["options"]["plant_now"])
    start = data.get("start", {}).get("state") or {}
    origin = pd.Timestamp(start.get("start") or plant.plant.start)
    origin = origin.tz_localize("UTC") if origin.tzinfo is None else origin
    return origin + pd.Timedelta(hours=float(start.get("clock_h", 0.0)))


def load_into_view() -> None:
    """Callback of "Show it": the saved run in view, its settings in the form."""
    file = ss["sc_load_file"]
    data = saved_mod.load_saved(saved_dir, file)
    by = saved_mod.author_text(data.get("author"))
    ss["sc_view"] = {
        **data,
        "source": f"saved {show_saved_at(data.get('saved_at'))}"
        + (f" by {by}" if by else "")
        + f" in {file}",
    }
    sc, opts = data["scenario"], data.get("options", {})
    then = Horizon(saved_now(data), sc.horizon_h, tz)

    def put(prefix: str, hours: float) -> None:
        t = then.at(hours)
        ss[f"{prefix}_date"], ss[f"{prefix}_time"] = t.date(), t.time().replace(tzinfo=None)

    ss["sc_name"] = sc.name
    ss["sc_horizon"] = max(1, min(180, round(sc.horizon_h / 24)))
    if data.get("replications"):
        ss["sc_reps"] = int(data["replications"])
    if data.get("seed") is not None:
        ss["sc_seed"] = int(data["seed"])
    for k in ("sc_outage_unit", "sc_risk_asset", "sc_pm_asset"):
        ss[k] = NONE
    ss["sc_demand"], ss["sc_shift_hours"] = 0, 0.0
    ss["sc_predicted"] = bool(opts.get("predicted_risk"))
    ss["sc_threshold"] = float(opts.get("threshold", RISK_THRESHOLD))
    predicted = set(opts.get("predicted_assets", []))
    for e in sc.events:
        if isinstance(e, AssetOutage) and e.target in units and ss["sc_outage_unit"] == NONE:
            ss["sc_outage_unit"], ss["sc_outage_hours"] = e.target, float(e.end_h - e.start_h)
            put("sc_outage", e.start_h)
        elif isinstance(e, FailureRisk) and e.asset not in predicted:
            ss["sc_risk_asset"], ss["sc_risk_p"] = e.asset, e.probability
            ss["sc_risk_days"] = max(1.0, min(180.0, e.within_h / 24))
        elif isinstance(e, DemandChange):
            ss["sc_demand"] = max(-50, min(200, round((e.factor - 1) * 100)))
        elif isinstance(e, PMMove):
            ss["sc_pm_asset"] = e.asset
            put("sc_pm", e.to_h)
        elif isinstance(e, ShiftRemoved):
            ss["sc_shift_hours"] = float(e.end_h - e.start_h)
            put("sc_shift", e.start_h)


def show_saved_at(value) -> str:
    if not value:
        return DASH
    return pd.Timestamp(value).tz_convert(tz).strftime("%a %d %b %Y %H:%M")


def spread(values: pd.Series, kpi) -> str:
    """Mean (P10 – P90) with the KPI's unit."""
    lo, hi = values.quantile(0.1), values.quantile(0.9)
    return f"{kpi.show(values.mean())} ({lo:.{kpi.decimals}f} – {hi:.{kpi.decimals}f})"


def change(row: pd.Series, kpi) -> str:
    """Paired change with its 95 % interval, in the KPI's unit."""
    return (
        f"{kpi.show(row['mean'], sign=True)} "
        f"[{row['low']:+.{kpi.decimals}f} to {row['high']:+.{kpi.decimals}f}]"
    )


def change_colour(table: pd.DataFrame, changes: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Green where a change is clearly (95 % interval) in the KPI's good direction, red
    where clearly in its bad one."""
    css = pd.DataFrame("", index=table.index, columns=table.columns)
    labels = {k.label: (name, k) for name, k in PLANNER_KPIS.items()}
    for col, ch in changes.items():
        for label in table.index:
            name, k = labels[label]
            lo, hi = ch.loc[name, "low"], ch.loc[name, "high"]
            sign = 1 if lo > 0 else -1 if hi < 0 else 0
            if sign and k.better:
                css.loc[label, col] = "color: #0a7d32" if sign == k.better else "color: #c62828"
    return css


# ------------------------------------------------------------------ the run in view
view = ss.get("sc_view")
if view is not None and view.get("result") is not None:
    scenario, base, what = view["scenario"], view["baseline"], view["result"]
    parts = view.get("levers") or {}
    opts = view.get("options", {})
    shown_h = Horizon(saved_now(view), scenario.horizon_h, tz)
    st.subheader(f"{scenario.name} vs baseline ({len(what.kpis)} paired replications)")
    st.caption(
        f"{view['source']}; from {shown_h.show(shown_h.now)} to {shown_h.show(shown_h.end)} ({TZ})"
    )
    rate_info = opts.get("good_rate")
    if base is None or base.lots is None or what.lots is None or not rate_info:
        st.info(
            "This run was saved before lot records were kept: rerun it for its lot schedule "
            "and the planner's figures."
        )
    else:
        rate = float(rate_info["rate"])
        kb, ks = lot_kpis(base, rate), lot_kpis(what, rate)
        diff = kpi_changes(kb, ks)
        cols = st.columns(5)
        for col, name in zip(
            cols,
            ["expected_good", "expected_rejected", "lost", "late", "delay_days"],
            strict=True,
        ):
            k = PLANNER_KPIS[name]
            col.metric(
                f"{k.label} (scenario)",
                k.show(ks[name].mean()),
                f"{k.show(diff.loc[name, 'mean'], sign=True)} vs baseline",
                delta_color=k.delta_color,
                help=f"Baseline {k.show(kb[name].mean())}; mean over the replications. "
                f"Green: better for the plan, red: worse.",
            )
        m = ks.mean()
        st.caption(
            f"Lots finished in the horizon (filled or lost), scenario: "
            f"{m['expected_good']:.1f} expected good + {m['expected_rejected']:.1f} expected "
            f"rejected + {m['lost']:.1f} lost = {m['finished']:.1f} lots (baseline "
            f"{kb['finished'].mean():.1f} lots). Good rate of new lots: "
            f"{rate:.1%}; the twin's {rate_info['prior']:.1%} weighted as "
            f"{rate_info['prior_weight']:g} batches, updated by {rate_info['good']} good of "
            f"{rate_info['known']} finished batches (QA dispositions and outcomes); "
            f"{rate_info.get('batches_scored', 0)} batches in progress count 1 - their "
            "predicted deviation risk."
        )

        # each lever alone and together
        runs = {"Baseline": kb, **{f"{k} alone": lot_kpis(r, rate) for k, r in parts.items()}}
        together = f"All together: {scenario.name}" if parts else f"Scenario: {scenario.name}"
        runs[together] = ks
        index = [k.label for k in PLANNER_KPIS.values()]
        levels = pd.DataFrame(
            {
                run: [spread(t[name], k) for name, k in PLANNER_KPIS.items()]
                for run, t in runs.items()
            },
            index=index,
        )
        st.markdown("**Each lever alone and together**" if parts else "**Scenario and baseline**")
        st.caption(
            "Mean over the replications (10th – 90th percentile of the replications). Lots "
            "late: due in the horizon and not released by their due date (lost ones "
            "included); delay counted to the horizon's end for lots still unfinished"
            + (
                "; each lever run alone against the same baseline with the same random draws"
                if parts
                else ""
            )
        )
        st.dataframe(levels, width="stretch")
        changes = {run: kpi_changes(kb, t) for run, t in runs.items() if run != "Baseline"}
        deltas = pd.DataFrame(
            {
                run: [change(ch.loc[name], k) for name, k in PLANNER_KPIS.items()]
                for run, ch in changes.items()
            },
            index=index,
        )
        st.caption(
            "Change vs baseline, paired replications [95 % interval]; green: clearly better "
            "for the plan, red: clearly worse"
        )
        st.dataframe(deltas.style.apply(change_colour, axis=None, changes=changes), width="stretch")

        # the lots, dated
        st.markdown("**Lots: when they finish and which slip**")
        which = together
        if parts:
            which = st.radio(
                "Lot schedule of", [together, *[f"{k} alone" for k in parts]], horizontal=True
            )
        chosen = what if which == together else parts[which.removesuffix(" alone")]
        lots = show_lot_schedule(lot_schedule(base, chosen), shown_h)
        st.caption(
            "Finish: the lot's QA disposition (fill, then QC release testing), what its due "
            "date is held against; median and 10th – 90th percentile over the replications, "
            f"local time ({TZ}). Slip: scenario finish - baseline finish in the same "
            "replication (a finish after the horizon counted at its end). Late by: days after "
            "the due date; '> n' when still unfinished at the horizon's end. Largest delay first."
        )
        st.dataframe(lots, hide_index=True, width="stretch")

    # the Gantt, in dates
    gantt = pd.concat(
        [base.schedule.assign(run="Baseline"), what.schedule.assign(run=scenario.name)]
    )
    gantt["Start"] = [shown_h.at(x).tz_localize(None) for x in gantt["start_h"]]
    gantt["End"] = [shown_h.at(x).tz_localize(None) for x in gantt["end_h"]]
    gantt["Activity"] = (
        gantt["activity"]
        .map(ACTIVITY)
        .fillna(gantt["activity"].str.replace("_", " ").str.capitalize())
    )
    gantt["Lot"] = gantt["batch_id"].fillna(DASH)
    gantt["Step"] = gantt["step"].fillna(DASH).str.replace("_", " ")
    gantt["Unit"] = gantt["unit"]
    fig = px.timeline(
        gantt,
        x_start="Start",
        x_end="End",
        y="Unit",
        color="Activity",
        facet_row="run",
        hover_data=["Lot", "Step"],
        height=720,
    )
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_xaxes(title=f"Date and time ({TZ}), replication 1")
    fig.update_yaxes(title="Unit", categoryorder="category descending")
    st.plotly_chart(fig, width="stretch")
    units_table = pd.DataFrame(
        {
            "Utilization, baseline (%)": base.unit_summary()["utilization"] * 100,
            "Utilization, scenario (%)": what.unit_summary()["utilization"] * 100,
            "Availability, baseline (%)": base.unit_summary()["availability"] * 100,
            "Availability, scenario (%)": what.unit_summary()["availability"] * 100,
        }
    ).round(1)
    units_table.index.name = "Unit"
    st.dataframe(units_table, width="stretch")
    pred = opts.get("predicted_assets")
    if pred:
        st.caption(f"Predicted failure risk used for: {', '.join(pred)}")
    if "clicked" in view:
        st.caption(f"computed and drawn in {time.perf_counter() - view.pop('clicked'):.2f} s")

# ------------------------------------------------------------------ saved scenarios
listing = saved_mod.list_saved(saved_dir)
if len(listing):
    st.subheader("Saved scenarios")
    shown_list = pd.DataFrame(
        {
            "Name": listing["name"],
            "File": listing["file"],
            f"Saved at ({TZ})": listing["saved_at"].map(show_saved_at),
            "Saved by": listing["author"].map(lambda a: a or DASH),
            "Horizon (days)": listing["horizon_d"].map(lambda d: f"{d:.0f}"),
            "Events": listing["events"],
            "Replications": listing["replications"].map(
                lambda v: DASH if pd.isna(v) else f"{int(v)}"
            ),
            "Seed": listing["seed"].map(lambda v: DASH if pd.isna(v) else f"{int(v)}"),
        }
    )
    st.dataframe(shown_list, hide_index=True, width="stretch")
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
        mean = numbers.xs("mean", level="stat")
        p10, p90 = numbers.xs("p10", level="stat"), numbers.xs("p90", level="stat")
        cells = mean.round(1).astype(str) + " (" + p10.round(1).astype(str)
        cells = cells + " – " + p90.round(1).astype(str) + ")"
        cells = cells.where(mean.notna(), DASH)
        cells.index.name = "KPI"
        st.caption("Mean over the replications (10th – 90th percentile of the replications)")
        st.dataframe(cells, width="stretch")
        long = numbers.stack().rename("value").reset_index()
        long = long.rename(columns={"level_2": "scenario"})
        wide = long.pivot_table(index=["kpi", "scenario"], columns="stat", values="value")
        wide = wide.reset_index()
        wide["plus"], wide["minus"] = wide["p90"] - wide["mean"], wide["mean"] - wide["p10"]
        fig = px.bar(
            wide,
            x="scenario",
            y="mean",
            error_y="plus",
            error_y_minus="minus",
            color="scenario",
            facet_col="kpi",
            facet_col_wrap=4,
            height=560,
            labels={"scenario": "Scenario", "mean": "Mean"},
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
                f"Paired changes against {first['scenario'].name} (same starting point, "
                "horizon and seeds: replication i of each saw the same random draws) "
                "[95 % interval]"
            )
            columns = {}
            for r in paired:
                rate_a = (first["options"].get("good_rate") or {}).get("rate")
                rate_b = (r["options"].get("good_rate") or {}).get("rate")
                if first["result"].lots is not None and r["result"].lots is not None and rate_a:
                    ch = kpi_changes(
                        lot_kpis(first["result"], float(rate_a)),
                        lot_kpis(r["result"], float(rate_b or rate_a)),
                    )
                    columns[r["scenario"].name] = {
                        f"{k.label} ({k.unit})": change(ch.loc[name], k)
                        for name, k in PLANNER_KPIS.items()
                    }
                else:
                    old = compare(first["result"], r["result"])
                    columns[r["scenario"].name] = {
                        label: f"{old.loc[kpi, 'difference']:+.2f} "
                        f"[{old.loc[kpi, 'ci95_low']:+.2f} to {old.loc[kpi, 'ci95_high']:+.2f}]"
                        for label, kpi in saved_mod.COMPARED_KPIS.items()
                    }
            diffs = pd.DataFrame(columns).fillna(DASH)
            diffs.index.name = "KPI"
            st.dataframe(diffs, width="stretch")
