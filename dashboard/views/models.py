"""Models: registry versions, held-out metrics, drift flags, model cards and approval."""

from __future__ import annotations

import json

import streamlit as st

from dashboard.plant import data_dir
from dashboard.session import roles
from quality.errors import RegistryError
from quality.registry import Registry

st.title("Models")
store = data_dir()
registry = Registry(store / "models")
versions = registry.versions()
if versions.empty:
    st.info("No model in the registry yet: `biotwin train` (or `biotwin up` on first start).")
    st.stop()

ok, problem = registry.verify()
if ok:
    st.caption(f"Registry event log intact ({len(registry.events())} hash-chained events).")
else:
    st.error(f"Registry event log failed verification: {problem}")

st.subheader("Versions")
st.dataframe(versions, hide_index=True, width="stretch")

drift_file = store / "scores" / "drift.json"
st.subheader("Drift")
if drift_file.exists():
    drift = json.loads(drift_file.read_text())
    for family, d in drift.items():
        if not isinstance(d, dict):
            continue
        text = (
            f"{family} ({d['model_version']}): {d['features_drifting']} of "
            f"{d['features_checked']} features drifting (PSI above 0.25 and above what "
            f"chance gives for the sample)"
        )
        (st.warning if d["flag"] else st.success)(text)
        if d["worst"]:
            st.dataframe(d["worst"], hide_index=True)
        perf = d.get("performance")
        if perf is None:
            continue
        if perf["auc"] is None:
            st.info(
                f"{family} ({perf['model_version']}) performance: not checked yet. {perf['note']}"
            )
        else:
            validation = perf["validation_auc"]
            text = (
                f"{family} ({perf['model_version']}) performance at {perf['progress']:.0%} "
                f"progress: ROC AUC "
                f"{perf['auc']:.3f} on the {perf['batches']} latest batches with an outcome "
                f"({perf['positives']} deviating, {perf['first_batch']} .. "
                f"{perf['last_batch']}), validation "
                + (f"{validation:.3f}" if validation is not None else "unknown")
                + f"; mean predicted {perf['mean_predicted']:.2f}, observed "
                f"{perf['observed']:.2f}"
            )
            (st.warning if perf["flag"] else st.success)(text)
else:
    st.caption(
        "No drift check yet: `biotwin score --twin DIR` compares recent batches with the "
        "training reference (population stability index per feature) and, once outcomes "
        "arrive, the model's ROC AUC on batches it never trained on with its validation AUC."
    )

st.subheader("Model card")
version = st.selectbox("Version", list(versions["version"]))
card = store / "models" / version / "card.md"
if card.exists():
    with st.expander("Card", expanded=True):
        st.markdown(card.read_text())

st.subheader("Approve for scoring")
if "qa" not in roles():
    st.caption("Only QA can approve a model version: sign in as a QA user.")
else:
    with st.form("approve", clear_on_submit=True):
        reason = st.text_area("Reason (evidence reviewed)")
        password = st.text_input("Password (signature)", type="password")
        if st.form_submit_button(f"Approve {version}"):
            try:
                record = registry.approve(
                    version,
                    user=st.session_state["user"],
                    password=password,
                    reason=reason,
                    users_file=store / "users.toml",
                )
                st.success(f"{version} approved by {record['user']} at {record['time']}")
            except RegistryError as exc:
                st.error(str(exc))
