"""Batch triage for QA: batches ranked by predicted risk, dispositions with e-signatures."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from connectors.historian import Historian, HistorianError
from dashboard.audit import AuditTrail
from dashboard.disposition import disposition_form
from dashboard.envelope import KEY_SIGNALS, LABELS, golden_envelope, trajectory
from dashboard.plant import data_dir
from dashboard.session import config, historian, roles
from dashboard.whatif import batch_outcomes, read_scores


@st.cache_data(ttl=600, show_spinner="golden-batch envelope")
def envelope(store: str, batch_ids: tuple[str, ...], stamp: int) -> pd.DataFrame:
    """The envelope of these batches (cached; ``stamp`` changes when batches finish)."""
    del stamp
    return golden_envelope(Historian(f"{store}/historian"), config(), batch_ids)


def confidence(row) -> str:
    if row.get("low_confidence") is True or row.get("low_confidence") == 1:
        sensors = row.get("suspect_sensors") or "unnamed sensors"
        return f"low: {sensors}"
    return "ok" if pd.notna(row.get("low_confidence")) else ""


st.title("Batch triage")
store = data_dir()
trail = AuditTrail(store / "audit", store / "users.toml")

h = historian()
ctx = h.batch_context()
batches = (
    ctx.dropna(subset=["batch_id"])
    .groupby("batch_id")
    .agg(
        first_seen=("start_time", "min"),
        last_seen=("start_time", "max"),
        unit=("unit", "last"),
        phase=("phase", "last"),
    )
)
scores, scores_msg = read_scores(store, "batch")
if scores is not None:
    scores = scores.drop_duplicates("batch_id", keep="last").set_index("batch_id")
    scores = scores.drop(columns=[c for c in ("unit",) if c in scores.columns])
    scores["confidence"] = [confidence(r) for _, r in scores.iterrows()]
    batches = batches.join(scores, how="left").sort_values(
        ["p_deviation", "last_seen"], ascending=[False, False], na_position="last"
    )
else:
    st.info(
        "No model scores in the store yet (the predictive-quality models are being built): "
        "batches are listed most recent first, without a predicted risk."
    )
    batches = batches.sort_values("last_seen", ascending=False)
decided = trail.decisions()
batches["decision"] = [decided.get(b, {}).get("decision") for b in batches.index]
shown = [
    c
    for c in (
        "unit",
        "phase",
        "last_seen",
        "p_deviation",
        "likely_class",
        "p_class",
        "confidence",
        "reasons",
        "titer_pred",
        "decision",
        "model_version",
    )
    if c in batches.columns
]
st.dataframe(
    batches.reset_index()[["batch_id", *shown]],
    hide_index=True,
    width="stretch",
    column_config={
        "p_deviation": st.column_config.ProgressColumn(
            "P(deviation)", min_value=0.0, max_value=1.0, format="%.2f"
        ),
        "likely_class": "predicted class",
        "p_class": st.column_config.NumberColumn("P(class)", format="%.2f"),
    },
)

st.subheader("Batch detail")
pick = st.selectbox("Batch", list(batches.index), key="tr_batch")
if pick is not None:
    row = batches.loc[pick]
    if scores is not None and pd.notna(row.get("p_deviation")):
        m1, m2, m3 = st.columns(3)
        m1.metric("P(deviation)", f"{row['p_deviation']:.2f}")
        cls = row.get("likely_class")
        p_cls = row.get("p_class")
        m2.metric(
            "Predicted class",
            cls if isinstance(cls, str) and cls else "none likely",
            f"P(class) {p_cls:.2f}" if pd.notna(p_cls) else None,
            delta_color="off",
        )
        low = row.get("low_confidence") in (True, 1)
        m3.metric("Confidence", "low" if low else "ok")
        if low:
            st.warning(
                "Low confidence: an input sensor looks faulty "
                f"({row.get('suspect_sensors') or 'not named'}); check it before trusting "
                "the score."
            )
        reasons = [r.strip() for r in str(row.get("reasons") or "").split(";") if r.strip()]
        if reasons:
            st.markdown("**Why**\n" + "\n".join(f"- {r}" for r in reasons))
    elif scores is None:
        st.caption(f"No predicted risk: {scores_msg}.")
    outcomes = batch_outcomes(store)
    good = outcomes.loc[outcomes["good"].astype(bool), "batch_id"]
    good = tuple(sorted(set(good) - {pick}))
    if good:
        band_of = f"{len(good)} batches that ended good"
    else:  # no outcomes known: every other batch that went through production
        good = tuple(sorted(set(batches.index) - {pick}))
        band_of = f"{len(good)} other batches (no outcomes known, so not only good ones)"
    try:
        traj = trajectory(h, config(), pick)
    except HistorianError as exc:
        traj = pd.DataFrame()
        st.caption(str(exc))
    if traj.empty:
        st.caption(f"{pick} has no data on a production bioreactor yet (historian).")
    else:
        band = envelope(str(store), good, len(ctx))
        fig = make_subplots(rows=len(KEY_SIGNALS), cols=1, shared_xaxes=True, vertical_spacing=0.04)
        for i, sig in enumerate(KEY_SIGNALS, start=1):
            b = band[band["signal"] == sig]
            t = traj[traj["signal"] == sig]
            first = i == 1
            fig.add_trace(
                go.Scatter(
                    x=b["batch_time_h"],
                    y=b["hi"],
                    line={"width": 0},
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=i,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=b["batch_time_h"],
                    y=b["lo"],
                    line={"width": 0},
                    fill="tonexty",
                    fillcolor="rgba(60,160,90,0.25)",
                    name="golden batch 5-95 %",
                    showlegend=first,
                    legendgroup="band",
                ),
                row=i,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=b["batch_time_h"],
                    y=b["median"],
                    line={"dash": "dot", "color": "green"},
                    name="golden median",
                    showlegend=first,
                    legendgroup="median",
                ),
                row=i,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=t["batch_time_h"],
                    y=t["value"],
                    line={"color": "crimson"},
                    name=pick,
                    showlegend=first,
                    legendgroup="batch",
                    customdata=t[["phase"]],
                    hovertemplate="%{y:.3f} (%{customdata[0]})",
                ),
                row=i,
                col=1,
            )
            fig.update_yaxes(title_text=LABELS.get(sig, sig), row=i, col=1)
        fig.update_xaxes(
            title_text="batch time on the production bioreactor (h)", row=len(KEY_SIGNALS), col=1
        )
        fig.update_layout(height=220 * len(KEY_SIGNALS), margin={"t": 30})
        st.plotly_chart(fig, width="stretch")
        st.caption(
            f"{pick} on {traj['unit'].iloc[0]} against the envelope of {band_of}: "
            "per 1-hour bin of batch time, 5-95 % of their bin means (bins with at least "
            "3 batches)."
        )

st.subheader("Disposition")
disposition_form(trail, batches, user=st.session_state.get("user"), roles=roles())

st.subheader("Audit trail")
check = trail.verify()
if check.ok:
    st.success(f"Chain verified: {check.records} records intact")
else:
    st.error(f"Audit trail tampered: {check.problem}")
records = pd.DataFrame(trail.records())
if len(records):
    st.dataframe(records.drop(columns=["prev_hash"]), hide_index=True, width="stretch")
    st.download_button("Export CSV", records.to_csv(index=False), "audit-trail.csv", "text/csv")
