"""Plant overview, live: unit states, batches and phases, key tags, availability."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.localtime import local, local_text, plant_tz
from dashboard.plant import availability, plant_now, unit_status
from dashboard.session import config, historian
from dashboard.trends import eng_unit_label, freshness

KEY_TAGS = {  # unit kind -> the signals shown as sparklines
    "bioreactor": ["temperature", "do", "ph"],
    "homogenizer": ["pressure"],
    "sterile_filter": ["differential_pressure"],
    "filler": ["fill_weight"],
}
#: unit states in words, with a colour each (the legend under the table)
STATES = {
    "running": ("Running a batch", "#c8ebd0"),
    "idle": ("Idle", "#eeeeee"),
    "cip": ("Cleaning (CIP)", "#cfe3f7"),
    "sip": ("Sterilising (SIP)", "#cfe3f7"),
    "pm": ("Planned maintenance", "#fbeec2"),
    "repair": ("Down for repair", "#f6c9c9"),
}
COLOUR = {words: colour for words, colour in STATES.values()}

st.title("Plant overview")


def _state(code: str) -> str:
    return STATES.get(code, (str(code).replace("_", " ").capitalize(), ""))[0]


@st.fragment(run_every="10s")
def live() -> None:
    plant = config()
    h = historian()
    ctx, tags = h.batch_context(), h.tags()  # read once for the status, table and tags
    now = plant_now(ctx, tags)
    fresh = freshness(h, tags)
    (st.success if fresh.live else st.warning)(
        f"Data: {fresh.text}. Plant time {local_text(now)} (newest sample in the historian)."
    )
    status = unit_status(h, plant, now, ctx=ctx)
    if status["since"].isna().all():
        st.info(
            "The historian has no batch context yet. Start `biotwin up`, or load history with "
            "`biotwin history import-sim DIR`."
        )
    cols = st.columns(4)
    counts = status["state"].value_counts()
    for col, (state, label) in zip(
        cols,
        (("running", "Units running"), ("idle", "Units idle"), ("cip", "Units cleaning"),
         ("repair", "Units down")),
        strict=True,
    ):  # fmt: skip
        col.metric(label, f"{int(counts.get(state, 0))} of {len(status)}")
    avail = availability(h, plant, days=7, ctx=ctx, now=now)
    table = status.merge(avail, on="unit")
    names = {u.id: f"{u.id} ({u.unit_class.replace('_', ' ')})" for u in plant.units}
    shown = pd.DataFrame(
        {
            "Unit": table["unit"].map(lambda u: names.get(u, u)),
            "State": table["state"].map(_state),
            "Batch": table["batch_id"].fillna("—"),
            "Phase": table["phase"].fillna("—").str.replace("_", " "),
            "Since": [local_text(t) for t in table["since"]],
            "Utilisation, last 7 days": table["utilization"],
            "Availability, last 7 days": [f"{v:.1%}" for v in table["availability"]],
        }
    )
    styled = shown.style.map(
        lambda v: f"background-color: {COLOUR[v]}" if v in COLOUR else "", subset=["State"]
    )
    st.dataframe(
        styled,
        hide_index=True,
        width="stretch",
        column_config={
            "Utilisation, last 7 days": st.column_config.ProgressColumn(
                "Utilisation, last 7 days (%)",
                min_value=0,
                max_value=1,
                format="percent",
                help="Share of the last 7 days (plant time) the unit was running a batch",
            ),
        },
    )
    st.caption(
        "States (cell colour): green running a batch · grey idle · blue cleaning or "
        f"sterilising · yellow planned maintenance · red down for repair. Times in {plant_tz()}."
    )  # fmt: skip
    if len(tags) and tags["last_time"].notna().any():
        end = pd.Timestamp(tags["last_time"].max())
        wanted = []
        for unit in plant.units:
            spec = plant.unit_classes[unit.unit_class]
            for sig in spec.signals:
                if sig.name in KEY_TAGS.get(spec.kind, []):
                    tag = sig.tag.format(n=unit.loop_number)
                    unit_label = eng_unit_label(sig.eng_unit, sig.description)
                    wanted.append((unit.id, tag, f"{unit.id} {sig.description} ({unit_label})"))
        present = set(tags["tag"])
        names = [t for _, t, _ in wanted if t in present]
        if names:
            data = h.query(names, end - pd.Timedelta(hours=12), end, resample="10min")
            label = {t: text for _, t, text in wanted}
            data["series"] = data["tag"].map(label)
            data["time"] = local(data["time"])
            fig = px.line(
                data,
                x="time",
                y="value",
                facet_col="series",
                facet_col_wrap=3,
                facet_row_spacing=0.08,
                height=170 * (len(names) // 3 + 1),
            )
            fig.update_yaxes(matches=None, title=None)
            fig.update_xaxes(title=None)
            fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
            st.subheader("Key tags, last 12 h of plant time (10-minute means)")
            st.plotly_chart(fig, width="stretch")


live()
