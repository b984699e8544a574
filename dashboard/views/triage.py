"""Batch triage for QA: batches ranked by predicted risk, dispositions with e-signatures."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from connectors.historian import Historian, HistorianError
from dashboard.audit import AuditTrail, integrity_banner
from dashboard.disposition import disposition_form
from dashboard.envelope import KEY_SIGNALS, golden_envelope, trajectory
from dashboard.localtime import local_text
from dashboard.plant import data_dir
from dashboard.review import named_signals, review_queue, signal_label
from dashboard.session import config, historian, roles
from dashboard.whatif import batch_outcomes


@st.cache_data(ttl=600, show_spinner="golden-batch envelope")
def envelope(
    store: str, batch_ids: tuple[str, ...], stamp: int, signal: str, step: str
) -> pd.DataFrame:
    """The envelope of one signal of a step over these batches (cached; ``stamp`` changes
    when batches finish)."""
    del stamp
    return golden_envelope(
        Historian(f"{store}/historian"), config(), batch_ids, signals=(signal,), step=step
    )


def envelope_figure(traj: pd.DataFrame, band: pd.DataFrame, pick: str, label: str, step: str):
    """One signal of the batch (red) over the envelope band (green) and its median."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=band["batch_time_h"], y=band["hi"], line={"width": 0}, showlegend=False,
                   hoverinfo="skip")
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=band["batch_time_h"], y=band["lo"], line={"width": 0}, fill="tonexty",
            fillcolor="rgba(60,160,90,0.25)", name="golden batch 5-95 %",
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=band["batch_time_h"], y=band["median"], line={"dash": "dot", "color": "green"},
                   name="golden median")
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=traj["batch_time_h"], y=traj["value"], line={"color": "crimson"}, name=pick,
            customdata=traj[["phase"]], hovertemplate="%{y:.3f} (%{customdata[0]})",
        )
    )  # fmt: skip
    unit = traj["unit"].iloc[0] if len(traj) else ""
    fig.update_layout(
        title=f"{label} on {unit}", height=260, margin={"t": 40, "b": 30},
        xaxis_title=f"hours since the batch entered {unit} (h)", yaxis_title=label.split(",")[0],
    )  # fmt: skip
    return fig


def percent(value) -> str:
    """A fraction as a whole percentage ("—" when unknown)."""
    if value is None or pd.isna(value):
        return "—"
    if value > 0.995:
        return "> 99%"
    return "< 1%" if value < 0.005 else f"{value:.0%}"


def confidence(row) -> str:
    """Low (and why), ok, or "" when the batch has no score."""
    flag = row.get("low_confidence")
    if flag is None or pd.isna(flag):
        return ""
    if bool(flag):
        return f"low: {row.get('suspect_sensors') or 'unnamed sensors'}"
    return "ok"


st.title("Batch triage")
store = data_dir()
trail = AuditTrail(store / "audit", store / "users.toml")

h = historian()
ctx = h.batch_context()
decided = trail.decisions()
if (integrity := integrity_banner(decided.verification)) is not None:
    st.error(integrity)
review = review_queue(store, h, config(), decided, ctx=ctx)
batches = review.queue
now_text = local_text(review.clock)
fresh = (
    f"scored at plant time {local_text(review.scored_at)}"
    if review.scored_at is not None
    else "no scores yet"
)
st.caption(
    f"The live plant at {now_text} (newest data in the historian; {fresh}): batches in "
    f"progress and batches finished in the last {review.window_days:g} days that await a "
    "QA disposition, highest predicted risk first."
)
if review.note:
    st.info(f"No predicted risk: {review.note}. Batches are listed without one.")
if batches.empty:
    st.info("No batch of the live plant is in progress or awaiting disposition.")
table = pd.DataFrame(
    {
        "Batch": batches.index,
        "State": batches["state"].str.capitalize(),
        "Unit": batches["unit"],
        "Phase": batches["phase"].fillna("—").str.replace("_", " "),
        "Progress": [percent(v) for v in batches["progress"]],
        "Risk of deviation": [percent(v) for v in batches["p_deviation"]],
        "Risk over the batch": batches["trend"],
        "Likely deviation": batches["class_words"],
        "Confidence": [confidence(r) or "—" for _, r in batches.iterrows()],
        "Last data": [local_text(t) for t in batches["last_seen"]],
        "Decision": batches["decision"].fillna("—"),
    }
)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "Risk of deviation": st.column_config.TextColumn(
            "Risk of deviation (calibrated)",
            help="Calibrated probability that the batch ends with a deviation, from the "
            "approved model, on the data recorded so far",
        ),
        "Risk over the batch": st.column_config.LineChartColumn(
            "Risk over the batch (0-1)", y_min=0.0, y_max=1.0
        ),
    },
)
if len(review.backlog):
    with st.expander(
        f"{len(review.backlog)} earlier batches finished without a disposition in biotwin"
    ):
        st.caption(
            "Finished before the live window: dispositioned outside biotwin, or overdue. "
            "They can still be dispositioned below."
        )
        st.dataframe(
            pd.DataFrame(
                {
                    "Batch": review.backlog.index,
                    "Last unit": review.backlog["unit"],
                    "Finished": [local_text(t) for t in review.backlog["finished_time"]],
                }
            ),
            hide_index=True,
            width="stretch",
        )

st.subheader("Batch detail")
pick = st.selectbox("Batch", list(batches.index), key="tr_batch")
if pick is not None:
    row = batches.loc[pick]
    st.markdown(
        f"[Open the batch record of {pick}](./batch?batch={pick}) (phases, QC results, "
        "signatures, risk over the batch)"
    )
    st.caption(
        f"{pick}: {row['state']}, last on {row['unit']} ({str(row['phase']).replace('_', ' ')}), "
        f"first data {local_text(row['first_seen'])}, last data {local_text(row['last_seen'])}."
    )
    if pd.notna(row.get("p_deviation")):
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Risk of deviation (calibrated)", percent(row["p_deviation"]))
        m2.metric("Progress", percent(row["progress"]))
        p_cls = row.get("p_class")
        m3.metric(
            "Likely deviation",
            row["class_words"].split(" (")[0],
            f"class probability {p_cls:.0%}" if pd.notna(p_cls) else None,
            delta_color="off",
        )
        low = confidence(row).startswith("low")
        m4.metric("Confidence", "low" if low else "ok")
        if row["class_words"] != "—":
            st.caption(f"Usual root cause: {row['class_words'].split(' (', 1)[-1].rstrip(')')}.")
        if low:
            st.warning(
                "Low confidence: an input sensor looks faulty "
                f"({row.get('suspect_sensors') or 'not named'}); check it before trusting "
                "the score."
            )
        reasons = [r.strip() for r in str(row.get("reasons") or "").split(";") if r.strip()]
        if reasons:
            st.markdown(
                "**Why** (each reason's share of the risk in log-odds)\n"
                + "\n".join(f"- {r}" for r in reasons)
            )
    else:
        st.caption(f"No predicted risk: {review.note or 'this batch has not been scored yet'}.")
    outcomes = batch_outcomes(store)
    good = outcomes.loc[outcomes["good"].astype(bool), "batch_id"]
    good = tuple(sorted(set(good) - {pick}))
    if good:
        band_of = f"{len(good)} batches that ended good"
    else:  # no outcomes known: every other batch that went through production
        good = tuple(sorted(set(batches.index) - {pick}))
        band_of = f"{len(good)} other batches (no outcomes known, so not only good ones)"
    charts = named_signals(row.get("reason_tags"), config())
    named = bool(charts)
    if not charts:
        charts = [("production", sig) for sig in KEY_SIGNALS]
    shown = 0
    for step, signal in charts:
        try:
            traj = trajectory(h, config(), pick, signals=(signal,), step=step)
        except HistorianError as exc:
            st.caption(str(exc))
            continue
        label = signal_label(config(), step, signal)
        if traj.empty:
            st.caption(f"{pick} has no data of {label} yet (it has not reached that step).")
            continue
        band = envelope(str(store), good, len(ctx), signal, step)
        st.plotly_chart(
            envelope_figure(traj, band, pick, label, step),
            width="stretch",
            key=f"env_{step}_{signal}",
        )
        shown += 1
    if shown:
        n_band = f"{band_of}"
        st.caption(
            ("The signals the reasons name" if named else "Key production signals")
            + f", {pick} (red) against the envelope of {n_band} (green band): per 1-hour "
            "bin of time on the unit, the 5-95 % range of those batches' bin means (bins "
            "with at least 3 batches). Batch time starts when the batch entered the unit."
        )

st.subheader("Disposition")
disposition_form(trail, batches, user=st.session_state.get("user"), roles=roles())

st.subheader("Audit trail")
check = decided.verification
if check.ok:
    st.success(f"Chain verified: {check.records} records intact (signed, anchored)")
else:
    st.error(f"Audit trail: {check.summary()}")
records = pd.DataFrame(trail.records())
if len(records):
    st.dataframe(
        records.drop(columns=["prev_hash", "mac"], errors="ignore"),
        hide_index=True,
        width="stretch",
    )
    st.download_button("Export CSV", records.to_csv(index=False), "audit-trail.csv", "text/csv")
