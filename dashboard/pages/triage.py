"""Batch triage for QA: batches ranked by predicted risk, dispositions with e-signatures."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.audit import DECISIONS, AuditTrail, SignatureError
from dashboard.plant import data_dir
from dashboard.session import historian, roles

st.title("Batch triage")
store = data_dir()
trail = AuditTrail(store / "audit", store / "users.toml")
scores_file = store / "scores" / "batch_scores.parquet"

ctx = historian().batch_context()
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
if scores_file.exists():
    scores = pd.read_parquet(scores_file).set_index("batch_id")
    batches = batches.join(scores, how="left").sort_values("p_deviation", ascending=False)
else:
    st.info(
        "No model scores in the store yet (the predictive-quality models are being built): "
        "batches are listed most recent first, without a predicted risk."
    )
    batches = batches.sort_values("last_seen", ascending=False)
decided = trail.decisions()
batches["decision"] = [decided.get(b, {}).get("decision") for b in batches.index]
st.dataframe(batches.reset_index(), hide_index=True, width="stretch")

st.subheader("Disposition")
if "qa" not in roles():
    st.warning("Only QA can disposition batches: sign in as a QA user.")
else:
    with st.form("disposition", clear_on_submit=True):
        batch_id = st.selectbox("Batch", list(batches.index))
        decision = st.radio("Decision", DECISIONS, horizontal=True)
        reason = st.text_area("Reason")
        meaning = st.selectbox(
            "Meaning of the signature",
            [
                "I reviewed the batch record and approve this decision",
                "I reviewed the batch record and request an investigation",
            ],
        )
        password = st.text_input("Password (signature)", type="password")
        if st.form_submit_button("Sign"):
            row = batches.loc[batch_id] if batch_id in batches.index else None
            try:
                record = trail.sign(
                    user=st.session_state["user"],
                    password=password,
                    batch_id=batch_id,
                    decision=decision,
                    reason=reason,
                    meaning=meaning,
                    model_version=row.get("model_version")
                    if row is not None and "model_version" in row
                    else None,
                    score=row.get("p_deviation")
                    if row is not None and "p_deviation" in row
                    else None,
                )
                st.success(f"Signed: {record['decision']} {batch_id} (record {record['seq']})")
            except (SignatureError, ValueError) as exc:
                st.error(str(exc))

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
