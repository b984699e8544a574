"""Alarms and events: one list, newest first, acknowledged by QA, engineers or maintenance."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from connectors.historian import Historian
from connectors.push_sources import read_statuses
from dashboard.audit import AuditTrail, SignatureError
from dashboard.events import (
    ACK_ROLES,
    SEVERITIES,
    TYPES,
    acknowledge,
    event_list,
    shown,
    with_state,
)
from dashboard.localtime import tz_problem
from dashboard.plant import data_dir, plant_now
from dashboard.push import push_table
from dashboard.session import historian, roles
from dashboard.trends import TIME_RANGES, freshness, local_text, local_tz, tz_name


@st.cache_data(ttl=30, show_spinner="reading alarms and events")
def events(store: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The events of the window, without their state (cached for 30 s)."""
    return event_list(Historian(f"{store}/historian"), store, start, end)


def paint(row: pd.Series) -> list[str]:
    colour = SEVERITIES.get(row["Severity"].lower(), ("#888888", ""))[0]
    return [f"color: {colour}; font-weight: 600" if c == "Severity" else "" for c in row.index]


st.title("Alarms and events")
tz = local_tz()
if problem := tz_problem():
    st.warning(problem)
store = data_dir()
trail = AuditTrail(store / "audit", store / "users.toml")
h = historian()
tags = h.tags()
fresh = freshness(h, tags, tz=tz)
(st.success if fresh.live else st.warning)(f"Data: {fresh.text} · times in {tz_name(tz)}")

end = plant_now(h.batch_context(), tags)
left, right = st.columns([2, 3])
window = left.radio("Window", list(TIME_RANGES), index=2, horizontal=True, key="ev_window")
start = end - TIME_RANGES[window]
kinds = right.multiselect("Types", [t.capitalize() for t in TYPES], key="ev_types")
st.caption(
    f"From {local_text(start, tz)} to the newest sample, {local_text(end, tz)}; ongoing "
    "alarms and the latest model scores are always listed."
)

pushed = read_statuses(store)
if pushed:
    st.subheader("Push sources")
    st.dataframe(push_table(pushed), hide_index=True, width="stretch", key="ev_push")
    st.caption(
        "What OT systems push into `biotwin receive` (OPC UA writes and history updates, "
        f"PubSub over MQTT); last value: its source time, in {tz_name(tz)}."
    )

base = with_state(events(str(store), start, end), trail, tz=tz)  # states read fresh
if kinds:
    base = base[base["type"].str.capitalize().isin(kinds)].reset_index(drop=True)

active = int((base["state"] == "active").sum())
m1, m2, m3 = st.columns(3)
m1.metric("Events", len(base))
m2.metric("Active (not acknowledged)", active)
m3.metric(
    "High severity, active", int(((base["severity"] == "high") & (base["state"] == "active")).sum())
)

legend = " · ".join(
    f"<span style='color:{colour}; font-weight:600'>■ {name.capitalize()}</span>: {meaning}"
    for name, (colour, meaning) in SEVERITIES.items()
)
st.markdown(f"Severity: {legend}", unsafe_allow_html=True)

if base.empty:
    st.info("No alarms or events in this window.")
    st.stop()
table = shown(base, tz)
st.dataframe(
    table.style.apply(paint, axis=1),
    hide_index=True,
    width="stretch",
    column_config={"Message": st.column_config.TextColumn("Message", width="large")},
    key="ev_table",
)

st.subheader("Acknowledge")
if done := st.session_state.pop("ev_done", None):
    st.success(done)
user = st.session_state.get("user")
mine = roles()
if not user or not set(mine) & set(ACK_ROLES):
    st.caption(
        "Acknowledging needs a signed-in user with the role QA, engineer or maintenance; "
        "viewers see the list only."
    )
else:
    pending = base[base["state"] == "active"]
    if pending.empty:
        st.success("Every event in view is acknowledged.")
    else:
        labels = [
            f"{i + 1}. {local_text(r['time'], tz)} · {r['unit']} · {r['type']} · "
            f"{r['message'][:90]}"
            for i, (_, r) in enumerate(pending.iterrows())
        ]
        label = st.selectbox("Event", labels, key="ev_pick")
        if st.button("Acknowledge", key="ev_ack"):
            try:
                row = pending.iloc[labels.index(label)].to_dict()
                record = acknowledge(trail, row, user=user, roles=mine)
                st.session_state["ev_done"] = (
                    f"Acknowledged by {record['user']} at {local_text(record['time'], tz)} "
                    f"(audit record {record['seq']}): {row['message']}"
                )
                st.rerun()
            except (SignatureError, ValueError) as exc:
                st.error(str(exc))
