"""Trends: historian tags by unit or search, over a time range, in the plant's local time."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from connectors.historian import Historian, HistorianError
from dashboard.localtime import tz_problem
from dashboard.plant import data_dir, plant_now
from dashboard.session import config, historian
from dashboard.trends import (
    MAX_TAGS,
    TIME_RANGES,
    duration_text,
    envelope_batches,
    envelope_tags,
    find_tags,
    freshness,
    local_text,
    local_tz,
    overlay_envelope,
    overlay_trajectory,
    tag_catalog,
    time_window,
    trend_data,
    tz_name,
)

ALL_UNITS = "All units"
CUSTOM = "Custom range"
COLOURS = (
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
    "#e377c2",
    "#393b79",
    "#637939",
)  # fmt: skip  (no orange or red: those mark quality)


@st.cache_data(ttl=600, show_spinner="golden-batch envelope")
def envelope(store: str, batch_ids: tuple[str, ...], tag: str, stamp: int) -> pd.DataFrame:
    """The envelope of a tag over these batches (cached; ``stamp``: batch context size)."""
    del stamp
    return overlay_envelope(Historian(f"{store}/historian"), config(), tag, batch_ids)


def naive_local(times: pd.Series) -> pd.Series:
    """Local tz-aware times as the wall-clock times plotly draws."""
    return times.dt.tz_localize(None)


st.title("Trends")
tz = local_tz()
if problem := tz_problem():
    st.warning(problem)
store = data_dir()
h = historian()
tags = h.tags()
fresh = freshness(h, tags, tz=tz)
(st.success if fresh.live else st.warning)(
    f"Data: {fresh.text}"
    + (f" · newest sample {local_text(fresh.newest_sample, tz)}" if fresh.newest_sample else "")
    + f" · times in {tz_name(tz)}"
)
catalog = tag_catalog(tags)
if catalog.empty:
    st.info("The historian has no tags yet: start `biotwin up` or `biotwin history import-sim`.")
    st.stop()

# ------------------------------------------------------------------ tags
left, right = st.columns([1, 2])
units = sorted(u for u in catalog["unit"].unique() if u != "—")
unit = left.selectbox("Unit", [ALL_UNITS, *units], key="tr_unit")
text = right.text_input("Search tag name or description", key="tr_search", placeholder="e.g. DO")
found = find_tags(catalog, unit=None if unit == ALL_UNITS else unit, text=text)
labels = dict(zip(catalog["tag"], catalog["label"], strict=True))
tag_of = {label: tag for tag, label in labels.items()}
chosen = [c for c in st.session_state.get("tr_tags", []) if c in tag_of]
options = list(dict.fromkeys([*chosen, *found["label"]]))  # labels: "TIC-201.PV · Broth ..."
st.caption(f"{len(found)} tags found; choose up to {MAX_TAGS}.")
picked = [
    tag_of[label]
    for label in st.multiselect("Tags", options, key="tr_tags", max_selections=MAX_TAGS)
]

# ------------------------------------------------------------------ time range
end_of_data = plant_now(h.batch_context(), tags)
preset = st.radio("Time range", [*TIME_RANGES, CUSTOM], index=1, horizontal=True, key="tr_range")
try:
    if preset == CUSTOM:
        stop_local = end_of_data.tz_convert(tz).tz_localize(None)
        c1, c2, c3, c4 = st.columns(4)
        d0 = c1.date_input("From (date)", stop_local.date() - timedelta(days=1), key="tr_d0")
        t0 = c2.time_input("From (time)", time(stop_local.hour), key="tr_t0")
        d1 = c3.date_input("To (date)", stop_local.date(), key="tr_d1")
        t1 = c4.time_input("To (time)", time(stop_local.hour), key="tr_t1")
        start, end = time_window(
            start_local=datetime.combine(d0, t0), end_local=datetime.combine(d1, t1), tz=tz
        )
    else:
        start, end = time_window(preset, end=end_of_data, tz=tz)
        st.caption(f"Up to the newest sample, {local_text(end_of_data, tz)} ({tz_name(tz)}).")
except ValueError as exc:
    st.error(str(exc))
    st.stop()

# ------------------------------------------------------------------ chart
eu_scale = st.checkbox("Scale each axis to the instrument range (EU low to high)", key="tr_eu")
if not picked:
    st.info("Choose one or more tags above to draw their trend.")
else:
    try:
        trend = trend_data(h, picked, start, end + pd.Timedelta(microseconds=1), tz=tz)
    except (HistorianError, ValueError) as exc:
        st.error(str(exc))
        st.stop()
    meta = catalog.set_index("tag").loc[picked]
    axes = list(dict.fromkeys(meta["eng_unit"].replace("", "no unit")))
    fig = make_subplots(rows=len(axes), cols=1, shared_xaxes=True, vertical_spacing=0.03)
    for i, tag in enumerate(picked):
        row = axes.index(meta.loc[tag, "eng_unit"] or "no unit") + 1
        eu = meta.loc[tag, "eng_unit"]
        colour = COLOURS[i % len(COLOURS)]
        line = trend.lines[trend.lines["tag"] == tag]
        fig.add_trace(
            go.Scattergl(
                x=naive_local(line["time"]),
                y=line["value"],
                mode="lines",
                connectgaps=False,
                line={"color": colour, "width": 1.5},
                name=labels.get(tag, tag),
                legendgroup=tag,
                hovertemplate=f"{tag}: %{{y:.4g}} {eu}<br>%{{x}}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        for quality, symbol, mark in (("uncertain", "triangle-up", "orange"), ("bad", "x", "red")):
            flags = trend.flagged[
                (trend.flagged["tag"] == tag) & (trend.flagged["quality"] == quality)
            ]
            if flags.empty:
                continue
            floor = line["value"].min() if line["value"].notna().any() else 0.0
            fig.add_trace(
                go.Scattergl(
                    x=naive_local(flags["time"]),
                    y=flags["value"].fillna(floor),
                    mode="markers",
                    marker={"symbol": symbol, "color": mark, "size": 7},
                    name=f"{tag}: {quality} quality",
                    legendgroup=tag,
                    customdata=flags[["samples"]].assign(
                        v=flags["value"].map(
                            lambda v, eu=eu: "no value" if pd.isna(v) else f"{v:.4g} {eu}"
                        )
                    )[["v", "samples"]],
                    hovertemplate=(
                        f"{tag}: {quality} quality, %{{customdata[0]}}"
                        "<br>%{x} (%{customdata[1]} samples)<extra></extra>"
                    ),
                ),
                row=row,
                col=1,
            )
        if eu_scale and pd.notna(meta.loc[tag, "eu_low"]) and pd.notna(meta.loc[tag, "eu_high"]):
            fig.update_yaxes(
                range=[meta.loc[tag, "eu_low"], meta.loc[tag, "eu_high"]], row=row, col=1
            )
    for row, eu in enumerate(axes, start=1):
        fig.update_yaxes(title_text=eu, row=row, col=1)
    fig.update_xaxes(title_text=f"local time ({tz_name(tz)})", row=len(axes), col=1)
    fig.update_layout(
        height=max(320, 230 * len(axes)) + 20 * ((len(picked) + 2) // 3),
        margin={"t": 20 + 22 * ((len(picked) + 2) // 3), "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0},
        hovermode="closest",
    )
    st.plotly_chart(fig, width="stretch", key="tr_chart")
    st.caption(
        f"{trend.samples:,} samples, drawn as the minimum and maximum of each "
        f"{duration_text(trend.bucket)} bucket. Orange triangles: uncertain quality; red "
        "crosses: bad quality "
        "(at the bottom of the line when the sample carried no value). A break in a line: no "
        "data (or only bad samples) there."
    )
    gaps = trend.gaps
    summary = pd.DataFrame(
        {
            "Tag": picked,
            "Description": [meta.loc[t, "description"] for t in picked],
            "Unit of measure": [meta.loc[t, "eng_unit"] or "—" for t in picked],
            "Uncertain samples": [
                int(trend.flagged.query("tag == @t and quality == 'uncertain'")["samples"].sum())
                for t in picked
            ],
            "Bad samples": [
                int(trend.flagged.query("tag == @t and quality == 'bad'")["samples"].sum())
                for t in picked
            ],
            "Data gaps": [int((gaps["tag"] == t).sum()) for t in picked],
        }
    )
    st.dataframe(summary, hide_index=True, width="stretch")

# ------------------------------------------------------------------ batch overlay
st.subheader("Overlay a batch on its envelope")
known = envelope_tags(config())
ctx = h.batch_context()
on_production = ctx[ctx["unit"].isin({u for u, _ in known.values()}) & ctx["batch_id"].notna()]
batches = list(on_production.sort_values("start_time", ascending=False)["batch_id"].unique())
if not batches:
    st.caption("No batch has run on a production bioreactor yet (historian batch context).")
elif st.toggle("Overlay a batch on its envelope", key="tr_overlay"):
    c1, c2 = st.columns(2)
    pick = c1.selectbox("Batch", batches, key="tr_batch")
    tag_options = sorted(known, key=lambda t: (known[t][0], t))
    default = next((t for t in picked if t in known), None)
    env_labels = [labels.get(t, t) for t in tag_options]
    tag = tag_options[
        env_labels.index(
            c2.selectbox(
                "Tag",
                env_labels,
                index=tag_options.index(default) if default else 0,
                key="tr_env_tag",
            )
        )
    ]
    good, band_of = envelope_batches(store, ctx, pick)
    traj = overlay_trajectory(h, config(), pick, tag)
    band = envelope(str(store), good, tag, len(ctx))
    if traj.empty:
        st.caption(f"{pick} has no {tag} data on {known[tag][0]} (it ran on another bioreactor).")
    else:
        eu = catalog.set_index("tag").loc[tag, "eng_unit"] if tag in labels else ""
        fig = go.Figure()
        fig.add_trace(
            go.Scatter(
                x=band["batch_time_h"],
                y=band["hi"],
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=band["batch_time_h"],
                y=band["lo"],
                line={"width": 0},
                fill="tonexty",
                fillcolor="rgba(60,160,90,0.25)",
                name="golden batches, 5 to 95 %",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=band["batch_time_h"],
                y=band["median"],
                line={"dash": "dot", "color": "green"},
                name="golden median",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=traj["batch_time_h"],
                y=traj["value"].where(traj["quality"] < 2),
                line={"color": "#1f77b4"},
                name=f"{pick} on {traj['unit'].iloc[0]}",
                customdata=traj[["phase"]].fillna("—"),
                hovertemplate=(
                    f"%{{y:.4g}} {eu} at %{{x:.1f}} h (%{{customdata[0]}})<extra></extra>"
                ),
            )
        )
        bad = traj[traj["quality"] >= 2]
        if len(bad):
            fig.add_trace(
                go.Scatter(
                    x=bad["batch_time_h"],
                    y=bad["value"].fillna(traj["value"].min()),
                    mode="markers",
                    marker={"symbol": "x", "color": "red"},
                    name="bad quality",
                )
            )
        fig.update_layout(
            height=380,
            margin={"t": 30},
            xaxis_title="batch time on the production bioreactor (h)",
            yaxis_title=f"{labels.get(tag, tag).split(' · ')[-1]}",
        )
        st.plotly_chart(fig, width="stretch", key="tr_overlay_chart")
        st.caption(
            f"{pick} against the envelope of {band_of}: per 1-hour bin of batch time, 5 to "
            "95 % of their bin means (bins with at least 3 batches)."
        )
