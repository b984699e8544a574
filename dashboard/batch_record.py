"""The batch record of one batch, for the QA reviewer, computed without Streamlit.

Everything biotwin knows of a batch, in words, units and the plant's local time:

- where it stands (:func:`connectors.batch_states.batch_states`) and its ISA-88 phases on
  each unit, with the recipe step the unit carries out (the historian's batch context);
- its deviations and CQA results against the plant's specifications (``[specs.*]`` of the
  plant file), from the plant's batch records (``<data dir>/simulation/batches.parquet``:
  QC results and dispositions taken before biotwin);
- its dispositions and e-signatures (the audit trail, :mod:`dashboard.audit`);
- its predicted risk over the batch and its latest score (``<data dir>/scores/``, written
  by ``biotwin score``).

Stored times stay UTC; the tables here carry them as text in the plant's zone
(:mod:`dashboard.localtime`). Missing values are shown as "—".
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dashboard.localtime import local, local_text
from dashboard.review import ACRONYMS, class_in_words
from twin.config import PlantConfig, SpecLimit

__all__ = [
    "DASH",
    "batch_choices",
    "cqa_table",
    "deviation_lines",
    "disposition_records",
    "duration_text",
    "latest_score",
    "local_wall_time",
    "pick_batch",
    "plant_record",
    "qc_note",
    "record_facts",
    "risk_trend",
    "spec_text",
    "timeline",
    "timeline_table",
    "words",
]

DASH = "—"
#: the plant record's batch status in words
STATUS_WORDS = {
    "queued": "queued, not started",
    "in_progress": "in production",
    "qc": "in QC release testing",
    "released": "released",
    "rejected": "rejected",
    "lost": "lost",
}
#: spec units written before the number ("pH 7.08"); "1" means dimensionless
_PREFIX_UNITS = {"pH"}


def words(name) -> str:
    """A snake_case name in words ("pre_use_integrity" -> "pre use integrity"; "ph" -> "pH");
    "—" when there is none."""
    if not isinstance(name, str) or not name.strip():
        return DASH
    return " ".join(ACRONYMS.get(w, w) for w in name.strip().split("_"))


def _missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _number(value: float) -> str:
    """A measured value to a sensible precision (3 to 4 significant digits)."""
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{value:.0f}"
    size = abs(value)
    digits = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 0.1 else 3
    return f"{value:.{digits}f}"


def _with_unit(text: str, unit: str) -> str:
    if unit in ("", "1"):
        return text
    if unit in _PREFIX_UNITS:
        return f"{unit} {text}"
    return f"{text} {unit}"


# ------------------------------------------------------------------ choosing the batch
def batch_choices(ctx: pd.DataFrame) -> list[str]:
    """The batches of the batch context, newest first (by their first running record)."""
    running = ctx[ctx["batch_id"].notna() & (ctx["state"] == "running")]
    if running.empty:
        return []
    first = running.groupby("batch_id")["start_time"].min()
    return [str(b) for b in first.sort_values(ascending=False, kind="stable").index]


def pick_batch(choices: list[str], requested) -> str | None:
    """The batch to show: ``requested`` (a query parameter) when it is one of ``choices``,
    else the newest; None when there is no batch."""
    if isinstance(requested, list | tuple):
        requested = requested[0] if requested else None
    if isinstance(requested, str) and requested.strip().upper() in choices:
        return requested.strip().upper()
    return choices[0] if choices else None


# ------------------------------------------------------------------ ISA-88 phase timeline
def timeline(ctx: pd.DataFrame, batch_id: str, config: PlantConfig, now) -> pd.DataFrame:
    """The running records of one batch, oldest first, one row per phase on a unit.

    Parameters
    ----------
    ctx : pandas.DataFrame
        ``Historian.batch_context()``.
    batch_id : str
        The batch.
    config : PlantConfig
        The plant: each unit's class and the recipe step of each class.
    now : timestamp-like
        The plant's clock: a record still open ends there (and is marked open); records
        that start after it are left out.

    Returns
    -------
    pandas.DataFrame
        unit, unit_class (in words), label ("BR-201 (production bioreactor)"), step and
        phase (in words), start and end (UTC), open (bool) and duration_h; empty (with
        those columns) when the batch has no running record.
    """
    now = pd.Timestamp(now)
    columns = ["unit", "unit_class", "label", "step", "phase", "start", "end", "open"]
    rows = ctx[(ctx["batch_id"] == batch_id) & (ctx["state"] == "running")]
    rows = rows[rows["start_time"] <= now]
    if rows.empty:
        return pd.DataFrame(columns=[*columns, "duration_h"])
    class_of = {u.id: u.unit_class for u in config.units}
    step_of = {s.unit_class: s.name for s in config.recipe.steps}
    rows = rows.sort_values(["start_time", "end_time"], kind="stable")
    is_open = rows["end_time"].isna() | (rows["end_time"] > now)
    out = pd.DataFrame(
        {
            "unit": rows["unit"].astype(str),
            "unit_class": [words(class_of.get(u)) for u in rows["unit"]],
            "step": [words(step_of.get(class_of.get(u))) for u in rows["unit"]],
            "phase": [words(p) for p in rows["phase"]],
            "start": pd.to_datetime(rows["start_time"], utc=True),
            "end": pd.to_datetime(rows["end_time"].where(~is_open, now), utc=True),
            "open": is_open.to_numpy(),
        }
    ).reset_index(drop=True)
    out.insert(
        2,
        "label",
        [
            u if c == DASH else f"{u} ({c})"
            for u, c in zip(out["unit"], out["unit_class"], strict=True)
        ],
    )
    out["duration_h"] = (out["end"] - out["start"]).dt.total_seconds() / 3600.0
    return out


def timeline_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The timeline as the page's table: Unit, Step, Phase, Start, End (local time; an open
    phase "running"), Duration (h)."""
    return pd.DataFrame(
        {
            "Unit": rows["label"],
            "Step": rows["step"],
            "Phase": rows["phase"],
            "Start": [local_text(t) for t in rows["start"]],
            "End": [
                "running" if o else local_text(t)
                for t, o in zip(rows["end"], rows["open"], strict=True)
            ],
            "Duration (h)": [f"{h:.1f}" for h in rows["duration_h"]],
        }
    )


def local_wall_time(times: pd.Series) -> pd.Series:
    """UTC times as the plant's wall-clock times without a zone (what a chart axis shows)."""
    return local(times).dt.tz_localize(None)


# ------------------------------------------------------------------ deviations and CQAs
def plant_record(store: str | Path, batch_id: str) -> dict | None:
    """The plant's record of the batch (``simulation/batches.parquet``), None without one."""
    path = Path(store) / "simulation" / "batches.parquet"
    if not path.exists():
        return None
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError):
        return None
    if "batch_id" not in table:
        return None
    rows = table[table["batch_id"] == batch_id]
    return None if rows.empty else rows.iloc[-1].to_dict()


def _has_cqa(record: dict | None, config: PlantConfig) -> bool:
    return record is not None and any(not _missing(record.get(n)) for n in config.specs)


def qc_note(record: dict | None, config: PlantConfig) -> str | None:
    """One line when the batch has no QC results in biotwin (None when it has some)."""
    if _has_cqa(record, config):
        return None
    if record is None:
        return (
            "The QC results of this batch are not in biotwin yet: the plant's batch records "
            "have no entry for it."
        )
    status = STATUS_WORDS.get(record.get("status"), words(record.get("status")))
    return f"The QC results of this batch are not in biotwin yet (plant record: {status})."


def spec_text(spec: SpecLimit) -> str:
    """A specification in words with its unit ("140 to 180 nm", "≥ 6.5 g/L", "≤ 0 CFU/100 mL")."""
    low = None if spec.low is None else f"{spec.low:g}"  # as the plant file writes it
    high = None if spec.high is None else f"{spec.high:g}"
    if low is not None and high is not None:
        return _with_unit(f"{low} to {high}", spec.unit)
    if low is not None:
        return f"≥ {_with_unit(low, spec.unit)}"
    return f"≤ {_with_unit(high, spec.unit)}"


def cqa_table(record: dict | None, config: PlantConfig) -> pd.DataFrame:
    """The batch's CQA results against the plant's specifications.

    One row per ``[specs.*]`` attribute: Attribute (its description), Result (value with
    unit), Specification, Within specification ("yes" / "no" / "—" when not measured).
    Empty when the batch has no QC result (see :func:`qc_note`).
    """
    columns = ["Attribute", "Result", "Specification", "Within specification"]
    if not _has_cqa(record, config):
        return pd.DataFrame(columns=columns)
    rows = []
    for name, spec in config.specs.items():
        value = record.get(name)
        if _missing(value):
            result, within = DASH, DASH
        else:
            value = float(value)
            bad = (spec.low is not None and value < spec.low) or (
                spec.high is not None and value > spec.high
            )
            result, within = _with_unit(_number(value), spec.unit), "no" if bad else "yes"
        label = spec.description or words(name).capitalize()
        rows.append((label, result, spec_text(spec), within))
    return pd.DataFrame(rows, columns=columns)


def deviation_lines(record: dict | None, config: PlantConfig) -> list[str]:
    """The batch's deviations in words, each with its usual root cause."""
    if record is None:
        return []
    classes = record.get("deviation_classes")
    if not isinstance(classes, str):
        return []
    return [class_in_words(c.strip(), config) for c in classes.split(",") if c.strip()]


def record_facts(record: dict | None) -> dict[str, str]:
    """What the plant record says of the batch overall, label -> text (empty without one)."""
    if record is None:
        return {}
    status = record.get("status")
    facts = {"Status (plant record)": STATUS_WORDS.get(status, words(status))}
    n = record.get("n_deviations")
    facts["Deviations"] = DASH if _missing(n) else f"{int(n)}"
    oos = record.get("any_oos")
    facts["Any CQA out of specification"] = DASH if _missing(oos) else ("yes" if oos else "no")
    decision = record.get("disposition")
    if not _missing(decision):
        when = record.get("disposition_time")
        facts["Disposition before biotwin"] = (
            f"{words(decision)} on {local_text(when)}" if not _missing(when) else words(decision)
        )
    for key, label in (
        ("start_time", "Started on the line"),
        ("filled_time", "Filled"),
        ("qc_start_time", "QC testing started"),
    ):
        if not _missing(record.get(key)):
            facts[label] = local_text(record[key])
    if not _missing(record.get("lost_reason")):
        facts["Why lost"] = words(record["lost_reason"])
    return facts


# ------------------------------------------------------------------ dispositions
def disposition_records(records: list[dict], batch_id: str) -> list[dict]:
    """The audit trail's signed dispositions of the batch, oldest first."""
    return [
        r for r in records if r.get("action") == "disposition" and r.get("batch_id") == batch_id
    ]


# ------------------------------------------------------------------ scores
def _read(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(path) if path.exists() else None
    except (OSError, ValueError):
        return None


def risk_trend(store: str | Path, batch_id: str) -> pd.DataFrame:
    """The batch's predicted risk over the batch (``scores/batch_risk_trend.parquet``):
    batch_time_h and risk_pct (0-100), by progress; empty without scores."""
    trend = _read(Path(store) / "scores" / "batch_risk_trend.parquet")
    columns = ["batch_time_h", "risk_pct"]
    if trend is None or not {"batch_id", "progress", "p_deviation"} <= set(trend.columns):
        return pd.DataFrame(columns=columns)
    rows = trend[trend["batch_id"] == batch_id].sort_values("progress")
    if "plant_time" in rows and rows["plant_time"].notna().any():  # the latest scoring only
        rows = rows[rows["plant_time"] == rows["plant_time"].max()]
    hours = rows["batch_time_h"] if "batch_time_h" in rows else rows["progress"] * float("nan")
    return pd.DataFrame(
        {
            "batch_time_h": hours.astype(float).to_numpy(),
            "risk_pct": 100.0 * rows["p_deviation"].astype(float).to_numpy(),
        }
    ).dropna()


def _percent(value) -> str:
    if _missing(value):
        return DASH
    value = float(value)
    if value > 0.995:
        return "> 99 %"
    return "< 1 %" if value < 0.005 else f"{value:.0%}".replace("%", " %")


def latest_score(store: str | Path, batch_id: str, config: PlantConfig) -> dict | None:
    """The batch's latest score in words (``scores/batch_scores.parquet``), None without one.

    Returns
    -------
    dict or None
        risk, progress, likely (the class in words with its root cause), scored_at (plant
        time, local), model (version or "—") and reasons (a list of lines).
    """
    scores = _read(Path(store) / "scores" / "batch_scores.parquet")
    if scores is None or not {"batch_id", "p_deviation"} <= set(scores.columns):
        return None
    rows = scores[scores["batch_id"] == batch_id]
    if rows.empty:
        return None
    when = next((c for c in ("plant_time", "scored_at") if c in rows), None)
    row = (rows.sort_values(when, kind="stable") if when else rows).iloc[-1]
    reasons = row.get("reasons")
    version = row.get("model_version")
    return {
        "risk": _percent(row.get("p_deviation")),
        "progress": _percent(row.get("progress")),
        "likely": class_in_words(row.get("likely_class"), config),
        "scored_at": local_text(row[when]) if when else DASH,
        "model": version if isinstance(version, str) and version else DASH,
        "reasons": [r.strip() for r in reasons.split(";") if r.strip()]
        if isinstance(reasons, str)
        else [],
    }


def duration_text(hours: float) -> str:
    """Hours in words ("3.4 h", "2.1 days")."""
    if _missing(hours) or math.isinf(hours):
        return DASH
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"
