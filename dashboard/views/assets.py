"""Asset health: failure risk and remaining life by asset, condition trends, and the PM
window the twin says hurts production least, dated, with its uncertainty."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from biotwin.execution import ExecutionError
from dashboard.localtime import local, local_text, plant_tz
from dashboard.maintenance import best_pm_window, reason_in_words
from dashboard.plant import data_dir, live_state, plant_now
from dashboard.session import config, historian, roles
from dashboard.trends import eng_unit_label
from dashboard.whatif import RUN_ROLES, may_run


def _hours(value) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):,.0f}"


st.title("Asset health")
plant = config()
h = historian()
ctx, tags = h.batch_context(), h.tags()
now = plant_now(ctx, tags)
st.caption(f"Plant time {local_text(now)} (newest data in the historian); times in {plant_tz()}.")
scores_file = data_dir() / "scores" / "asset_scores.parquet"
if scores_file.exists():
    scores = pd.read_parquet(scores_file).sort_values("p_fail_7d", ascending=False)
    for col in ("rul_h", "rul_lo_h", "rul_hi_h", "reasons"):
        if col not in scores:
            scores[col] = None
    due = [
        local_text(now + pd.Timedelta(hours=float(v)), "%Y-%m-%d") if pd.notna(v) else "—"
        for v in scores["rul_h"]
    ]
    shown = pd.DataFrame(
        {
            "Asset": scores["asset"].str.replace("/", " · ").str.replace("_", " "),
            "Failure risk, next 7 days": [f"{p:.1%}" for p in scores["p_fail_7d"]],
            "Remaining life (h)": [_hours(v) for v in scores["rul_h"]],
            "90 % interval (h)": [
                f"{_hours(lo)} – {_hours(hi)}" if pd.notna(lo) and pd.notna(hi) else "—"
                for lo, hi in zip(scores["rul_lo_h"], scores["rul_hi_h"], strict=True)
            ],
            "Expected end of life": due,
            "Why": [reason_in_words(r) for r in scores["reasons"].fillna("")],
        }
    )
    st.dataframe(shown, hide_index=True, width="stretch")
    when = "plant_time" if "plant_time" in scores else "scored_at"  # plant clock if known
    scored_at = scores[when].max() if when in scores else None
    st.caption(
        "Highest failure risk first. Remaining life in operating hours from the plant time "
        "above, with a 90 % interval from the model's out-of-fold errors (a wide interval: "
        f"the data say little yet). Scored at plant time {local_text(scored_at)} by "
        f"{scores['model_version'].iloc[0] if 'model_version' in scores else 'the model'}."
    )
else:
    st.info(
        "No failure-probability / remaining-life scores yet (the maintenance model is not "
        "built): condition trends and the twin's PM window are shown."
    )

condition = []
for unit in plant.units:
    for sig in plant.unit_classes[unit.unit_class].signals:
        if sig.name in ("vibration", "motor_current"):
            label = eng_unit_label(sig.eng_unit, sig.description)
            condition.append((unit.id, sig.tag.format(n=unit.loop_number), sig.description, label))
if len(tags) and tags["last_time"].notna().any():
    end = pd.Timestamp(tags["last_time"].max())
    names = [t for _, t, _, _ in condition if t in set(tags["tag"])]
    if names:
        data = h.query(names, end - pd.Timedelta(days=30), end, resample="6h")
        info = {t: (u, f"{d} ({lab})") for u, t, d, lab in condition}
        data["unit"] = data["tag"].map(lambda t: info[t][0])
        data["signal"] = data["tag"].map(lambda t: info[t][1])
        data["time"] = local(data["time"])
        first = local_text(data["time"].min()) if len(data) else "—"
        fig = px.line(
            data,
            x="time",
            y="value",
            color="unit",
            facet_row="signal",
            height=260 * max(1, data["signal"].nunique()),
        )
        fig.update_yaxes(matches=None, title=None)
        fig.update_xaxes(title=None)
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
        st.subheader("Condition tags, last 30 days of plant time (6-hour means)")
        st.plotly_chart(fig, width="stretch")
        st.caption(f"Data from {first} to {local_text(end)}; one panel per signal and unit.")

st.subheader("Recommended PM window")
pm_assets = [
    f"{u.id}/{a.name}"
    for u in plant.units
    for a in plant.unit_classes[u.unit_class].assets
    if a.pm_interval_h
]
with st.form("pm-window"):
    asset = st.selectbox("Asset", pm_assets, index=pm_assets.index("BR-201/agitator"))
    c1, c2, c3 = st.columns(3)
    days = c1.number_input("Look ahead (days)", 1, 60, 7)
    step = c2.number_input("Candidate every (h)", 6, 168, 24)
    reps = c3.number_input("Replications per candidate", 10, 500, 30)
    can_run = bool(st.session_state.get("user")) and may_run(roles())
    go = st.form_submit_button("Find the window", disabled=not can_run)
if not can_run:
    st.caption(
        f"Searching a PM window runs the twin: it needs a signed-in user with the role "
        f"{', '.join(RUN_ROLES)}."
    )
if go and can_run:
    state, _notes = live_state(h, plant)
    bar = st.progress(0.0)
    try:  # on the local pool, or the Dask cluster of $DASK_SCHEDULER_ADDRESS (`up --scheduler`)
        table = best_pm_window(
            plant,
            state,
            asset,
            days=days,
            step_h=step,
            replications=int(reps),
            progress=lambda d, n: bar.progress(d / n, text=f"replications {d} of {n}"),
        )
    except ExecutionError as exc:
        bar.empty()
        st.error(f"No window searched: {exc}")
        st.stop()
    best = table.iloc[0]
    when = now + pd.Timedelta(hours=float(best["start_h"]))
    close = table.iloc[1:][~table.iloc[1:]["clearly_worse"]]
    st.success(
        f"Start the PM of {asset.replace('/', ' ')} on {local_text(when, '%a %d %b %Y %H:%M %Z')} "
        f"(in {best['start_h']:.0f} h): {best['due_dates_missed']:.1f} due dates missed on "
        f"average over the next 30 days (10–90 % of replications: "
        f"{best['missed_p10']:.0f}–{best['missed_p90']:.0f}), "
        f"{best['completed']:.1f} batches completed; {int(reps)} paired replications."
    )
    if len(close):
        st.info(
            f"{len(close)} other start(s) are not clearly worse (their 90 % interval of the "
            "difference includes 0): "
            + ", ".join(
                local_text(now + pd.Timedelta(hours=float(h_)), "%a %d %b %H:%M")
                for h_ in close["start_h"]
            )
            + ". Choose among them on other grounds (staffing, parts)."
        )
    st.dataframe(
        pd.DataFrame(
            {
                "PM start": [
                    local_text(now + pd.Timedelta(hours=float(v)), "%a %d %b %H:%M")
                    for v in table["start_h"]
                ],
                "In (h)": [f"{v:.0f}" for v in table["start_h"]],
                "Due dates missed (mean)": [f"{v:.2f}" for v in table["due_dates_missed"]],
                "vs best (90 % interval)": [
                    f"{m:+.2f} ({lo:+.2f} to {hi:+.2f})"
                    for m, lo, hi in zip(
                        table["vs_best"], table["vs_best_lo"], table["vs_best_hi"], strict=True
                    )
                ],
                "Batches completed": [f"{v:.1f}" for v in table["completed"]],
                "Unit availability": [f"{v:.1%}" for v in table["availability"]],
            }
        ),
        hide_index=True,
        width="stretch",
    )
