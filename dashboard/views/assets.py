"""Asset health: condition trends, and the PM window the twin says hurts production least."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.maintenance import best_pm_window
from dashboard.plant import data_dir, live_state
from dashboard.session import config, historian

st.title("Asset health")
plant = config()
h = historian()
scores_file = data_dir() / "scores" / "asset_scores.parquet"
if scores_file.exists():
    st.dataframe(pd.read_parquet(scores_file), hide_index=True, width="stretch")
else:
    st.info(
        "No failure-probability / remaining-life scores yet (the maintenance model is not "
        "built): condition trends and the twin's PM window are shown."
    )

condition = []
for unit in plant.units:
    for sig in plant.unit_classes[unit.unit_class].signals:
        if sig.name in ("vibration", "motor_current"):
            condition.append((unit.id, sig.tag.format(n=unit.loop_number), sig.name))
tags = h.tags()
if len(tags) and tags["last_time"].notna().any():
    end = pd.Timestamp(tags["last_time"].max())
    names = [t for _, t, _ in condition if t in set(tags["tag"])]
    if names:
        data = h.query(names, end - pd.Timedelta(days=30), end, resample="6h")
        label = {t: f"{u} {n}" for u, t, n in condition}
        data["series"] = data["tag"].map(label)
        fig = px.line(data, x="time", y="value", color="series", height=380)
        st.subheader("Condition tags, last 30 days (6-hour means)")
        st.plotly_chart(fig, width="stretch")

st.subheader("Recommended PM window")
pm_assets = [
    f"{u.id}/{a.name}"
    for u in plant.units
    for a in plant.unit_classes[u.unit_class].assets
    if a.pm_interval_h
]
with st.form("pm-window"):
    asset = st.selectbox("Asset", pm_assets, index=pm_assets.index("BR-201/agitator"))
    c1, c2, c3 = st.columns(3)
    days = c1.number_input("Look ahead (days)", 1, 60, 7)
    step = c2.number_input("Candidate every (h)", 6, 168, 24)
    reps = c3.number_input("Replications per candidate", 10, 500, 30)
    go = st.form_submit_button("Find the window")
if go:
    state, _notes = live_state(h, plant)
    bar = st.progress(0.0)
    table = best_pm_window(
        plant,
        state,
        asset,
        days=days,
        step_h=step,
        replications=int(reps),
        progress=lambda d, n: bar.progress(d / n, text=f"candidate {d}/{n}"),
    )
    best = table.iloc[0]
    st.success(
        f"Start the PM of {asset} in {best['start_h']:.0f} h: "
        f"{best['due_dates_missed']:.2f} due dates missed, "
        f"{best['completed']:.1f} batches completed "
        f"(mean of {int(reps)} paired replications over 30 days)"
    )
    st.dataframe(table.round(3), hide_index=True, width="stretch")
