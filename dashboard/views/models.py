"""Models: registry versions, who approved them, held-out performance, calibration, feature
importance, drift, and QA's e-signed approval.

Numbers are shown to 3 significant digits with labels in words; dates in the plant's local
time. An approval made by the demo set-up at first start says so: it is not a QA decision.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from connectors.security import DEMO_SIGNER, load_users
from dashboard.disposition import local_time
from dashboard.plant import data_dir
from dashboard.session import roles
from quality.errors import RegistryError
from quality.registry import Registry

_STATS = {
    "max_z": "largest distance from the golden envelope (envelope widths)",
    "z_recent": "distance from the golden envelope lately (envelope widths)",
    "z_mean": "mean distance from the golden envelope (envelope widths)",
    "mean": "mean",
    "std": "spread (standard deviation)",
    "last": "latest value",
    "slope": "trend (per h)",
    "below_h": "hours below the golden envelope",
    "above_h": "hours above the golden envelope",
    "at_max_h": "hours at its upper limit (controller saturated)",
    "bad_h": "hours of bad-quality data",
}
_COLUMNS = {
    "progress": "progress (%)",
    "n": "test batches",
    "positives": "deviating",
    "roc_auc": "ROC AUC",
    "envelope_rule_auc": "ROC AUC of the envelope rule",
    "pr_auc": "PR AUC",
    "brier": "Brier score",
    "brier_constant_rate": "Brier score of the base rate",
    "ece": "calibration error (ECE)",
    "flagged_share": "share flagged",
    "recall_at_0.5": "recall at 0.5",
    "positives_started": "deviations begun by then",
    "onset_oracle_auc": "ROC AUC knowing the onset",
    "auc_p25": "ROC AUC at 25 % progress",
    "auc_p50": "ROC AUC at 50 % progress",
    "auc_p100": "ROC AUC at the end",
    "envelope_auc_p50": "ROC AUC of the envelope rule at 50 %",
    "test_batches": "test batches",
    "chosen_pipeline": "pipeline",
    "auc_fail_within_horizon": "ROC AUC of failure within the horizon",
    "rul_rmse": "remaining-life RMSE",
    "test_runs": "test runs",
}


def sig3(value):
    """A number to 3 significant digits (anything else unchanged)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return value
    return float(f"{value:.3g}") if isinstance(value, float) else value


def label(name: str) -> str:
    """A metric or column name in words."""
    return _COLUMNS.get(name, name.replace("_", " "))


def in_words(value) -> str:
    """A value for a key/value table: numbers rounded, lists and dicts as plain text."""
    if isinstance(value, dict):
        return "; ".join(f"{label(str(k))}: {in_words(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(in_words(v) for v in value)
    if value is None:
        return "—"
    rounded = sig3(value)
    return f"{rounded:g}" if isinstance(rounded, float) else str(rounded)


def feature_label(feature: str) -> tuple[str, str]:
    """(signal, statistic) in words for a model feature such as ``production.ph|max_z``."""
    if feature == "progress":
        return "batch progress", "share of the nominal duration"
    if feature == "elapsed_h":
        return "time into the batch", "hours"
    if feature.startswith("ctx|"):
        return feature[4:].replace("_", " "), "batch context"
    tag, _, stat = feature.partition("|")
    parts = tag.split(".")
    if parts[0] == "asset" and len(parts) >= 3:
        what = " ".join(parts[2:]).replace("age_h", "age (h)").replace("_", " ")
        signal = f"{what} ({parts[1].replace('_', ' ')})"
    elif len(parts) >= 2:
        signal = f"{' '.join(parts[1:]).replace('_', ' ')} ({parts[0].replace('_', ' ')})"
    else:
        signal = tag.replace("_", " ")
    return signal[:1].upper() + signal[1:], _STATS.get(stat, stat.replace("_", " "))


def importance_table(rows: list[dict]) -> pd.DataFrame:
    """Feature importance: signal and statistic in words, numeric gain and share."""
    table = pd.DataFrame(rows)
    if table.empty or "feature" not in table or "gain" not in table:
        return pd.DataFrame()
    gain = pd.to_numeric(table["gain"], errors="coerce")
    words = [feature_label(str(f)) for f in table["feature"]]
    return pd.DataFrame(
        {
            "signal": [w[0] for w in words],
            "statistic": [w[1] for w in words],
            "gain": gain.map(sig3),
            "share of gain (%)": (100 * gain / gain.sum()).map(sig3),
            "feature (model name)": table["feature"].astype(str),
        }
    )


def _wilson(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of an observed rate over ``n`` batches."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def reliability(rows: list[dict]) -> tuple[pd.DataFrame, str]:
    """Reliability table (predicted vs observed per bin, with the observed rate's 95 %
    interval) and one sentence on where they differ by more than that interval."""
    table = pd.DataFrame(rows)
    if table.empty or not {"mean_predicted", "observed", "n"} <= set(table.columns):
        return pd.DataFrame(), ""
    out = []
    for r in table.itertuples():
        lo, hi = _wilson(float(r.observed), int(r.n))
        pred = float(r.mean_predicted)
        verdict = "within" if lo <= pred <= hi else ("under" if pred < lo else "over")
        out.append(
            {
                "bin": str(getattr(r, "bin", "")),
                "mean predicted": sig3(pred),
                "observed": sig3(float(r.observed)),
                "batches": int(r.n),
                "observed, 95 % low": sig3(lo),
                "observed, 95 % high": sig3(hi),
                "predicted vs observed": {
                    "within": "agree",
                    "under": "predicted too low",
                    "over": "predicted too high",
                }[verdict],
                "_gap": abs(float(r.observed) - pred) if verdict != "within" else 0.0,
            }
        )
    frame = pd.DataFrame(out)
    off = frame[frame["_gap"] > 0]
    if off.empty:
        comment = (
            "Predicted and observed deviation rates agree in every bin, within the 95 % "
            "interval that the bin's number of batches allows."
        )
    else:
        parts = []
        for verdict, words in (
            ("predicted too low", "under-states the risk"),
            ("predicted too high", "over-states the risk"),
        ):
            part = off[off["predicted vs observed"] == verdict]
            if part.empty:
                continue
            worst = part.loc[part["_gap"].idxmax()]
            parts.append(
                f"the model {words} in {len(part)} bin{'s' if len(part) > 1 else ''} "
                f"(worst: {worst['mean predicted']:.2f} predicted against "
                f"{worst['observed']:.2f} observed over {worst['batches']} batches)"
            )
        comment = (
            f"In {len(off)} of {len(frame)} bins predicted and observed differ by more than "
            f"the bin's 95 % interval: {'; '.join(parts)}, so read scores there with care."
        )
    return frame.drop(columns="_gap"), comment


def reliability_chart(frame: pd.DataFrame, title: str) -> go.Figure:
    """Observed against predicted, with the observed rate's 95 % interval, and the diagonal."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"},
            name="perfectly calibrated",
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=frame["mean predicted"],
            y=frame["observed"],
            mode="markers",
            name="observed (95 % interval)",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": frame["observed, 95 % high"] - frame["observed"],
                "arrayminus": frame["observed"] - frame["observed, 95 % low"],
            },
            customdata=frame[["batches"]],
            hovertemplate="predicted %{x:.2f}, observed %{y:.2f} (%{customdata[0]} batches)",
        )
    )
    fig.update_layout(
        title=title,
        height=360,
        margin={"t": 40},
        xaxis_title="mean predicted probability",
        yaxis_title="observed rate",
    )
    return fig


def approvals(registry: Registry) -> dict[str, dict]:
    """The latest approval event of each version."""
    return {ev["version"]: ev for ev in registry.events() if ev["event"] == "approved"}


def approval_text(event: dict | None, users: dict[str, dict]) -> str:
    """Who approved and when, in words; an approval by the demo set-up says what it is."""
    if not event:
        return ""
    when = local_time(event["time"])
    if event.get("user") == DEMO_SIGNER:
        return f"approved automatically by the demo set-up on {when} — not a QA decision"
    user = event.get("user") or "unknown"
    name = (users.get(user) or {}).get("full_name") or user
    return f"approved by {name} ({user}) on {when}"


def _when(text) -> str:
    """A stored time stamp in local time ('' when absent, as stored when unreadable)."""
    if not isinstance(text, str) or not text:
        return ""
    try:
        return local_time(text)
    except ValueError:
        return text


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.apply(lambda col: col.map(sig3) if col.dtype.kind == "f" else col)


def _key_values(items: dict, *, skip=()) -> pd.DataFrame:
    rows = [
        {"item": label(str(k)), "value": in_words(v)} for k, v in items.items() if k not in skip
    ]
    return pd.DataFrame(rows)


def _approve(registry: Registry, version: str, users_file) -> None:
    """Approve button: sign; the reason is kept on an error, the password never."""
    state = st.session_state
    password = state.get("approve_password") or ""
    state["approve_password"] = ""
    try:
        record = registry.approve(
            version,
            user=state["user"],
            password=password,
            reason=state.get("approve_reason") or "",
            users_file=users_file,
        )
    except RegistryError as exc:
        state["approve_error"] = str(exc)
        return
    state["approve_reason"] = ""
    state["approve_done"] = (version, record)


st.title("Models")
store = data_dir()
registry = Registry(store / "models")
versions = registry.versions()
if versions.empty:
    st.info("No model in the registry yet: `biotwin train` (or `biotwin up` on first start).")
    st.stop()
users = load_users(store / "users.toml")

ok, problem = registry.verify()
if ok:
    st.caption(f"Registry event log intact ({len(registry.events())} hash-chained events).")
else:
    st.error(f"Registry event log failed verification: {problem}")

st.subheader("Versions")
approved = approvals(registry)
shown = versions.drop(columns=["approved_by"], errors="ignore").copy()
shown["created"] = [_when(c) for c in shown["created"]]
shown.insert(4, "approval", [approval_text(approved.get(v), users) for v in shown["version"]])
shown = _rounded(shown).rename(columns=label)
st.dataframe(shown, hide_index=True, width="stretch")
for row in versions[versions["status"] == "approved"].itertuples():
    text = f"{row.family}: {row.version} {approval_text(approved.get(row.version), users)}"
    if approved.get(row.version, {}).get("user") == DEMO_SIGNER:
        st.warning(text + ". A QA reviewer still has to review and approve it.")
    else:
        st.caption(text + ".")

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
            st.dataframe(_rounded(pd.DataFrame(d["worst"])).rename(columns=label), hide_index=True)
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
meta = registry.meta(version)
metrics = meta.get("metrics") or {}
st.markdown(
    f"**Intended use.** {meta.get('intended_use', '')}\n\n"
    f"**Limitations.** {meta.get('limitations', '')}"
)
created = _when(meta.get("created")) or "?"
st.caption(
    f"{meta.get('family')} model, created {created}; {len(meta.get('features', []))} "
    f"features; seed {meta.get('seed')}."
)

headline = metrics.get("headline") or {}
if headline:
    st.markdown("**Held-out performance** (data never used in training)")
    st.dataframe(_key_values(headline), hide_index=True)
by_progress = metrics.get("by_progress")
if by_progress:
    table = pd.DataFrame(by_progress)
    if "progress" in table:
        table["progress"] = (100 * table["progress"]).round(0).astype(int)
    st.dataframe(_rounded(table).rename(columns=label), hide_index=True, width="stretch")
scalars = {k: v for k, v in metrics.items() if not isinstance(v, list | dict)}
if scalars:
    st.dataframe(_key_values(scalars), hide_index=True)

curves = {
    k: v
    for k, v in metrics.items()
    if isinstance(v, list) and v and isinstance(v[0], dict) and "mean_predicted" in v[0]
}
if curves:
    st.markdown("**Calibration** (does a predicted 0.3 mean 3 in 10 batches deviate?)")
    for name, rows in curves.items():
        if name.startswith("calibration_p"):
            title = f"at {name.removeprefix('calibration_p')} % progress"
        else:
            title = "over all progress points" if name.endswith("all_progress") else label(name)
        frame, comment = reliability(rows)
        if frame.empty:
            continue
        st.markdown(f"*Reliability {title}*")
        left, right = st.columns([3, 2])
        left.dataframe(frame, hide_index=True, width="stretch")
        right.plotly_chart(reliability_chart(frame, f"Reliability {title}"), width="stretch")
        st.caption(comment)
CALIBRATION_WORDS = {  # quality/calibration.py METHODS
    "platt_per_progress": "Platt scaling, one per progress point",
    "platt_progress": "Platt scaling with progress",
    "platt": "Platt scaling",
    "isotonic": "isotonic regression",
    "beta": "beta calibration",
    "none": "none (raw scores)",
}
cal = meta.get("calibration") or {}
if cal.get("chosen"):
    method = CALIBRATION_WORDS.get(cal["chosen"], str(cal["chosen"]).replace("_", " "))
    rule = str(cal.get("rule", ""))
    for code, words in CALIBRATION_WORDS.items():
        rule = rule.replace(code, words)
    st.caption(f"Calibration method: {method} ({rule}).")

importance = importance_table(metrics.get("importance") or [])
if not importance.empty:
    st.markdown("**What the model relies on** (LightGBM gain: larger, more used)")
    st.dataframe(importance, hide_index=True, width="stretch")

with st.expander("Training data and model selection"):
    st.dataframe(_key_values(meta.get("training_data") or {}), hide_index=True, width="stretch")
    selection = meta.get("selection") or {}
    if selection.get("candidates"):
        candidates = pd.DataFrame(selection["candidates"])
        keep = [c for c in ("name", "description", "cv_mean", "cv_sd") if c in candidates]
        st.dataframe(
            _rounded(candidates[keep]).rename(
                columns={"cv_mean": "cross-validated mean", "cv_sd": "spread over folds"}
            ),
            hide_index=True,
            width="stretch",
        )
        st.caption(f"Chosen: {selection.get('chosen')} ({selection.get('why', '')}).")
card = store / "models" / version / "card.md"
if card.exists():
    st.download_button("Model card as filed (Markdown)", card.read_text(), f"{version}.md")

st.subheader("Approve for scoring")
if "qa" not in roles():
    st.caption("Only QA can approve a model version: sign in as a QA user.")
else:
    with st.form("approve"):
        st.text_area("Reason (evidence reviewed)", key="approve_reason")
        st.text_input("Password (signature)", type="password", key="approve_password")
        st.form_submit_button(
            f"Approve {version}",
            on_click=_approve,
            args=(registry, version, store / "users.toml"),
        )
    error = st.session_state.pop("approve_error", None)
    if error:
        st.error(error)
    done = st.session_state.pop("approve_done", None)
    if done:
        done_version, record = done
        st.success(f"{done_version} {approval_text(record, load_users(store / 'users.toml'))}")
