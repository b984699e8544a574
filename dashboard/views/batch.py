"""Batch record: everything biotwin knows of one batch, for the QA reviewer.

Open with ``/batch?batch=B00019`` to show that batch; the logic is in
dashboard/batch_record.py.
"""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from connectors.batch_states import batch_states
from dashboard.audit import AuditTrail
from dashboard.batch_record import (
    batch_choices,
    cqa_table,
    deviation_lines,
    disposition_records,
    duration_text,
    latest_score,
    local_wall_time,
    pick_batch,
    plant_record,
    qc_note,
    record_facts,
    risk_trend,
    timeline,
    timeline_table,
)
from dashboard.disposition import signature_lines
from dashboard.localtime import local_text, plant_tz, tz_name
from dashboard.plant import data_dir
from dashboard.session import config, historian
from quality.live import plant_clock

st.title("Batch record")
store = data_dir()
plant = config()
h = historian()
ctx = h.batch_context()
choices = batch_choices(ctx)
if not choices:
    st.info("The historian has no batch yet: nothing to show.")
    st.stop()
now = plant_clock(h, ctx)
default = pick_batch(choices, st.query_params.get("batch"))
pick = st.selectbox("Batch (newest first)", choices, index=choices.index(default), key="br_batch")
if st.query_params.get("batch") != pick:
    st.query_params["batch"] = pick  # the address names the batch shown (to share or link)
zone = tz_name(plant_tz())
states = batch_states(ctx, plant, now)
state = states.loc[pick] if pick in states.index else None
recipe = ctx.loc[(ctx["batch_id"] == pick) & ctx["recipe"].notna(), "recipe"]
st.caption(
    f"{pick}"
    + (f", recipe {recipe.iloc[0]}" if len(recipe) else "")
    + (
        f": {state['state']}, first data {local_text(state['first_seen'])}, last data "
        f"{local_text(state['last_seen'])}, last on {state['unit']}"
        if state is not None
        else ""
    )
    + f". Plant time {local_text(now)}; times in the plant's zone ({zone})."
)

# ------------------------------------------------------------------ ISA-88 phases
st.subheader("ISA-88 phase timeline")
phases = timeline(ctx, pick, plant, now)
if phases.empty:
    st.caption(f"{pick} has no running record in the historian before plant time.")
else:
    chart = phases.assign(
        Start=local_wall_time(phases["start"]),
        End=local_wall_time(phases["end"]),
        Unit=phases["label"],
        Step=phases["step"],
        Phase=phases["phase"],
        Duration=[f"{d:.1f} h" for d in phases["duration_h"]],
    )
    order = list(dict.fromkeys(chart["Unit"]))
    fig = px.timeline(
        chart,
        x_start="Start",
        x_end="End",
        y="Unit",
        color="Phase",
        hover_data={"Step": True, "Duration": True, "Unit": False},
        color_discrete_sequence=px.colors.qualitative.Alphabet,
        category_orders={"Unit": order},
    )
    fig.update_xaxes(title_text=f"plant local time ({zone})")
    fig.update_yaxes(title_text="unit (unit class)")
    fig.update_layout(height=120 + 45 * len(order), margin={"t": 30}, legend_title_text="Phase")
    st.plotly_chart(fig, width="stretch")
    total = (phases["end"].max() - phases["start"].min()).total_seconds() / 3600
    st.caption(
        f"{len(phases)} phases on {len(order)} units over {duration_text(total)}"
        + (" (a phase is still running)" if phases["open"].any() else "")
        + "; step: the master recipe's unit procedure carried out on that unit."
    )
    st.dataframe(timeline_table(phases), hide_index=True, width="stretch")

# ------------------------------------------------------------------ deviations and CQAs
st.subheader("Deviations and CQAs")
record = plant_record(store, pick)
facts = record_facts(record)
if facts:
    st.markdown("\n".join(f"- **{k}**: {v}" for k, v in facts.items()))
deviations = deviation_lines(record, plant)
if deviations:
    st.markdown(
        "**Deviations recorded** (with their usual root cause)\n"
        + "\n".join(f"- {d}" for d in deviations)
    )
elif record is not None:
    st.caption("No deviation recorded for this batch in the plant's records.")
note = qc_note(record, plant)
if note:
    st.info(note)
else:
    cqas = cqa_table(record, plant)
    out = (cqas["Within specification"] == "no").sum()
    st.dataframe(cqas, hide_index=True, width="stretch")
    st.caption(
        "Specifications from the plant file; "
        + (
            f"{out} attribute(s) out of specification."
            if out
            else "all measured attributes within."
        )
    )

# ------------------------------------------------------------------ dispositions
st.subheader("Dispositions and signatures")
trail = AuditTrail(store / "audit", store / "users.toml")
signed = disposition_records(trail.records(), pick)
if signed:
    for rec in signed:
        lines = signature_lines(rec)
        st.markdown(
            "\n".join(f"- {line}" for line in lines)
            + (f"\n  - Reason: {rec['reason']}" if rec.get("reason") else "")
        )
else:
    st.caption("No disposition signed in biotwin for this batch.")

# ------------------------------------------------------------------ scores
st.subheader("Predicted risk over the batch")
score = latest_score(store, pick, plant)
trend = risk_trend(store, pick)
if score is None and trend.empty:
    st.caption(
        "No predicted risk for this batch: biotwin scores the batches in progress or "
        "awaiting disposition (biotwin score)."
    )
else:
    if score is not None:
        m1, m2, m3 = st.columns(3)
        m1.metric("Risk of deviation (calibrated)", score["risk"])
        m2.metric("Progress", score["progress"])
        m3.metric("Likely deviation", score["likely"].split(" (")[0])
        st.caption(
            f"Latest score at plant time {score['scored_at']}, model {score['model']}; "
            f"likely deviation: {score['likely']}."
        )
        if score["reasons"]:
            st.markdown("**Why**\n" + "\n".join(f"- {r}" for r in score["reasons"]))
    if not trend.empty:
        fig = px.line(
            trend.rename(columns={"batch_time_h": "Batch time (h)", "risk_pct": "Risk (%)"}),
            x="Batch time (h)",
            y="Risk (%)",
            markers=True,
        )
        fig.update_yaxes(range=[0, 100], title_text="risk of deviation (%)")
        fig.update_xaxes(title_text="batch time on the production bioreactor (h)")
        fig.update_layout(height=300, margin={"t": 30})
        st.plotly_chart(fig, width="stretch")
