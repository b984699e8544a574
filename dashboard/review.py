"""The QA review queue of the triage page, computed without Streamlit.

Only the live plant's batches (:mod:`connectors.batch_states`): those in progress and those
awaiting disposition (finished within the live window, no QA decision yet), ranked by their
calibrated risk, each with its risk trend over the batch so far (scores/
batch_risk_trend.parquet, written by ``biotwin score``), the likely deviation class in words
and its root cause, and how fresh its data are. Finished batches without a decision in
biotwin that left the live window are listed apart (a QA backlog, not the live plant).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from connectors.batch_states import AWAITING, FINISHED, LIVE, batch_states, live_window_days
from connectors.historian import Historian
from dashboard.trends import eng_unit_label
from twin.config import PlantConfig

__all__ = ["ReviewQueue", "class_in_words", "named_signals", "review_queue", "signal_label"]

ACRONYMS = {"ph": "pH", "do": "DO", "cqa": "CQA", "oos": "OOS"}


@dataclass
class ReviewQueue:
    """What the triage page shows."""

    queue: pd.DataFrame  # the live plant's batches, by risk (index batch_id)
    backlog: pd.DataFrame  # finished earlier, no decision in biotwin
    clock: pd.Timestamp  # the plant's clock (newest sample)
    window_days: float
    scored_at: pd.Timestamp | None  # plant time of the scores (None: no scores)
    note: str | None  # why there is no risk, if there is none


def class_in_words(code, config: PlantConfig) -> str:
    """A deviation class code as words with its usual root cause ("pH drift (pH probe
    calibration drift)"); "—" when there is none."""
    if not isinstance(code, str) or not code:
        return "—"
    words = " ".join(ACRONYMS.get(w, w) for w in code.split("_"))
    if words[:1].islower() and not words.startswith(tuple(ACRONYMS.values())):
        words = words[:1].upper() + words[1:]
    spec = config.deviations.get(code) if isinstance(config.deviations, dict) else None
    cause = getattr(spec, "root_cause", None)
    return f"{words} ({cause})" if cause else words


def _read(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(path) if path.exists() else None
    except (OSError, ValueError):
        return None


def review_queue(
    store: Path,
    historian: Historian,
    config: PlantConfig,
    decisions: dict,
    *,
    ctx: pd.DataFrame | None = None,
) -> ReviewQueue:
    """The review queue of the store at the plant's clock.

    ``decisions``: the audit trail's latest disposition per batch
    (:meth:`dashboard.audit.AuditTrail.decisions`).
    """
    from quality.live import plant_clock

    ctx = historian.batch_context() if ctx is None else ctx
    clock = plant_clock(historian, ctx)
    window = live_window_days()
    states = batch_states(ctx, config, clock, window)
    decided = pd.Series({b: r.get("decision") for b, r in decisions.items()}, dtype=object).reindex(
        states.index
    )
    states["decision"] = decided
    before = _read(Path(store) / "simulation" / "batches.parquet")  # the plant's records
    if before is not None and {"batch_id", "disposition"} <= set(before.columns):
        done = before.dropna(subset=["disposition"]).set_index("batch_id")["disposition"]
        done = done.map({"released": "release", "rejected": "reject"}).dropna()
        fill = states["decision"].isna() & states.index.isin(done.index)
        states.loc[fill, "decision"] = done.reindex(states.index[fill]).to_numpy()
    live = states[states["state"].isin(LIVE)]
    # a decided batch has left the queue once it finished (a hold in progress stays)
    live = live[~((live["state"] == AWAITING) & live["decision"].isin(["release", "reject"]))]
    backlog = states[(states["state"] == FINISHED) & states["decision"].isna()]
    scores = _read(Path(store) / "scores" / "batch_scores.parquet")
    trend = _read(Path(store) / "scores" / "batch_risk_trend.parquet")
    note, scored_at = None, None
    queue = live.copy()
    for col in ("progress", "p_deviation", "p_class", "titer_pred"):
        queue[col] = float("nan")
    queue["likely_class"], queue["reasons"], queue["suspect_sensors"] = None, "", ""
    queue["reason_tags"] = ""
    queue["low_confidence"] = pd.NA
    queue["trend"] = [[] for _ in range(len(queue))]
    if scores is None or "p_deviation" not in scores:
        note = "no model scores in the store yet (the models are being built)"
    else:
        scores = scores.drop_duplicates("batch_id", keep="last").set_index("batch_id")
        # the plant's clock when scored (the served twin runs ahead of the wall clock)
        when = "plant_time" if "plant_time" in scores else "scored_at"
        scored_at = pd.Timestamp(scores[when].max()) if when in scores else None
        for col in scores.columns.intersection(
            ["progress", "p_deviation", "p_class", "titer_pred", "likely_class", "reasons",
             "suspect_sensors", "low_confidence", "model_version", "reason_tags"]
        ):  # fmt: skip
            queue[col] = scores[col].reindex(queue.index)
        if trend is not None and len(trend):
            series = trend.sort_values("progress").groupby("batch_id")["p_deviation"].apply(list)
            queue["trend"] = [series.get(b, []) for b in queue.index]
    queue["class_words"] = [class_in_words(c, config) for c in queue["likely_class"]]
    queue = queue.sort_values(["p_deviation", "last_seen"], ascending=[False, False])
    return ReviewQueue(
        queue=queue,
        backlog=backlog.sort_values("finished_time", ascending=False),
        clock=clock,
        window_days=window,
        scored_at=scored_at,
        note=note,
    )


def named_signals(reason_tags, plant) -> list[tuple[str, str]]:
    """(step, signal) of each process tag the reasons name ("production.do, ..."), for the
    steps of the recipe."""
    if not isinstance(reason_tags, str) or not reason_tags.strip():
        return []
    steps = {s.name for s in plant.recipe.steps}
    out = []
    for tag in reason_tags.split(","):
        step, _, signal = tag.strip().partition(".")
        if step in steps and signal and (step, signal) not in out:
            out.append((step, signal))
    return out[:3]


def signal_label(plant, step: str, signal: str) -> str:
    """ "Broth dissolved oxygen (%), production" from the plant configuration."""
    unit_class = next((s.unit_class for s in plant.recipe.steps if s.name == step), None)
    spec = (
        next((g for g in plant.unit_classes[unit_class].signals if g.name == signal), None)
        if unit_class in plant.unit_classes
        else None
    )
    if spec is None:
        return f"{signal.replace('_', ' ')} ({step.replace('_', ' ')})"
    unit = eng_unit_label(spec.eng_unit, spec.description)
    where = step.replace("_", " ")
    if not unit or unit.lower() in spec.description.lower():
        return f"{spec.description}, {where}"
    return f"{spec.description} ({unit}), {where}"
