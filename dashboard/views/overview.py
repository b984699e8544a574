"""Plant overview, live: unit states, batches and phases, key tags, availability."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.plant import availability, plant_now, unit_status
from dashboard.session import config, historian

KEY_TAGS = {  # unit kind -> the signals shown as sparklines
    "bioreactor": ["temperature", "do", "ph"],
    "homogenizer": ["pressure"],
    "sterile_filter": ["differential_pressure"],
    "filler": ["fill_weight"],
}

st.title("Plant overview")


@st.fragment(run_every="10s")
def live() -> None:
    plant = config()
    h = historian()
    ctx, tags = h.batch_context(), h.tags()  # read once for the status, table and tags
    now = plant_now(ctx, tags)
    status = unit_status(h, plant, now, ctx=ctx)
    if status["since"].isna().all():
        st.info(
            "The historian has no batch context yet. Start `biotwin up`, or load history with "
            "`biotwin history import-sim DIR`."
        )
    cols = st.columns(4)
    counts = status["state"].value_counts()
    for col, state in zip(cols, ("running", "idle", "cip", "repair"), strict=True):
        col.metric(f"units {state}", int(counts.get(state, 0)))
    avail = availability(h, plant, days=7, ctx=ctx, now=now)
    table = status.merge(avail, on="unit")
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "utilization": st.column_config.ProgressColumn(
                "utilization (7 d)", min_value=0, max_value=1
            ),
            "availability": st.column_config.NumberColumn("availability (7 d)", format="%.3f"),
        },
    )
    if len(tags) and tags["last_time"].notna().any():
        end = pd.Timestamp(tags["last_time"].max())
        wanted = []
        for unit in plant.units:
            spec = plant.unit_classes[unit.unit_class]
            for sig in spec.signals:
                if sig.name in KEY_TAGS.get(spec.kind, []):
                    wanted.append((unit.id, sig.tag.format(n=unit.loop_number), sig.name))
        names = [t for _, t, _ in wanted if t in set(tags["tag"])]
        if names:
            data = h.query(names, end - pd.Timedelta(hours=12), end, resample="10min")
            label = {t: f"{u} {n}" for u, t, n in wanted}
            data["series"] = data["tag"].map(label)
            fig = px.line(
                data,
                x="time",
                y="value",
                facet_col="series",
                facet_col_wrap=4,
                height=120 * (len(names) // 4 + 1),
            )
            fig.update_yaxes(matches=None, title=None)
            fig.update_xaxes(title=None)
            fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
            st.subheader("Key tags, last 12 h")
            st.plotly_chart(fig, width="stretch")


live()
