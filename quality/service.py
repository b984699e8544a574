"""Training, validation and scoring, as the commands run them.

Validation protocol (what a reviewer checks): labelled batches are ordered by start time; the
latest 30 % are the test set and are never seen in fitting, calibration or envelope learning
(each batch is in exactly one set). Assets: runs that start after the time cut-off are the test
set, runs that end before it train (runs that straddle it are left out), or whole assets are
held out when the data has no common clock (cycles). Metrics are computed on the test set only.
"""

from __future__ import annotations

import hashlib
import logging
import platform
from datetime import UTC, datetime

import lightgbm
import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from quality.calibration import calibration_report
from quality.data import BatchHistory, RunHistory
from quality.deviation import DeviationModel
from quality.drift import reference
from quality.maintenance import MaintenanceModel, phm_score, split_runs

__all__ = [
    "EVAL_PROGRESS",
    "evaluate_deviation",
    "evaluate_maintenance",
    "frame_fingerprint",
    "model_fingerprint",
    "split_batches",
    "train_deviation",
    "train_maintenance",
]

logger = logging.getLogger(__name__)

EVAL_PROGRESS = (0.1, 0.25, 0.5, 0.75, 1.0)
TEST_SHARE = 0.3
FLAG_THRESHOLD = 0.5

DEVIATION_USE = (
    "Rank batches in progress by the calibrated probability that they end out of specification "
    "or with a deviation, so that QA reviews the riskiest first (review by exception), with the "
    "likely deviation class, predicted CQAs with intervals, and the reasons in words. Advisory: "
    "a QA reviewer decides every disposition; the score never releases or rejects a batch."
)
DEVIATION_LIMITS = (
    "Trained on the data named below; valid for the same recipe, units and tags. Deviations "
    "without precursors before the cut-off (random QC results, damaged filters) cannot be "
    "foreseen early. Batches with a suspect sensor are flagged low-confidence. Raw-material "
    "lot attributes and equipment hour meters are inputs: without them the score is weaker."
)
MAINTENANCE_USE = (
    "Estimate, per asset, the probability of failure within the horizon and the remaining "
    "useful life with an interval, to plan maintenance windows. Advisory: planners decide."
)
MAINTENANCE_LIMITS = (
    "Learned from the failures in the training runs; assets without condition signals are "
    "predicted from their age alone. RUL beyond the longest training run is extrapolation."
)


def frame_fingerprint(*frames: pd.DataFrame) -> str:
    """sha256 of the content of data frames (row order and values)."""
    h = hashlib.sha256()
    for frame in frames:
        h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
        h.update(",".join(map(str, frame.columns)).encode())
    return h.hexdigest()


def _booster_text(model) -> str:
    return "" if model is None else model.booster_.model_to_string()


def model_fingerprint(model) -> str:
    """sha256 over the trees, linear models, calibration map and conformal widths: equal
    models, equal sha."""
    h = hashlib.sha256()
    h.update(_booster_text(model.classifier).encode())
    h.update(type(model.calibrator).__name__.encode())
    h.update(np.asarray(model.calibrator.state(), dtype=np.float64).tobytes())
    h.update(",".join(model.features).encode())
    if isinstance(model, DeviationModel):
        h.update(model.chosen.encode())
        h.update((getattr(model, "tie", None) or "").encode())
        for name in sorted(getattr(model, "linear", {})):
            h.update(model.linear[name].state())
        h.update(_booster_text(model.class_model).encode())
        for col in model.cqa_cols:
            h.update(_booster_text(model.cqa_models[col]).encode())
            h.update(repr(sorted(model.cqa_halfwidth[col].items())).encode())
    else:
        for reg in getattr(model, "regressors", [model.regressor]):
            h.update(_booster_text(reg[1] if isinstance(reg, tuple) else reg).encode())
        h.update(repr(model.rul_halfwidth).encode())
        h.update(repr(getattr(model, "rul_offset", None)).encode())
    return h.hexdigest()


def _libraries() -> dict:
    return {
        "python": platform.python_version(),
        "lightgbm": lightgbm.__version__,
        "scikit-learn": sklearn.__version__,
    }


def split_batches(history: BatchHistory, test_share: float = TEST_SHARE):
    """Labelled batches split by start time: (earlier ids, later ids)."""
    ids = history.labelled()
    n_test = max(1, round(test_share * len(ids)))
    return ids[:-n_test], ids[-n_test:]


def _auc(y, s) -> float | None:
    y = np.asarray(y, dtype=bool)
    if y.all() or (~y).all():
        return None
    return float(roc_auc_score(y, s))


def evaluate_deviation(
    model: DeviationModel, history: BatchHistory, test_ids, progress=EVAL_PROGRESS
) -> dict:
    """Metrics on ``test_ids``: per progress AUC (model and envelope rule), PR AUC, Brier,
    calibration, lead time, CQA interval coverage, class accuracy, feature importance."""
    ids = pd.Index(test_ids)
    y = history.outcomes.loc[ids, "label"].astype(bool).to_numpy()
    per_p, predictions, calibration = [], [], []
    cube = model.featurizer.cube(history, ids)
    onset = (
        history.outcomes.loc[ids, "onset_h"].to_numpy(dtype=float)
        if "onset_h" in history.outcomes
        else None
    )
    all_scores, all_y = [], []
    for p in progress:
        X = model.featurizer.transform(history, ids, p, cube)
        score = model.score(history, ids, p, cube)
        all_scores.append(score)
        all_y.append(y)
        env = model.featurizer.envelope_hours(X).to_numpy()
        row = {
            "progress": p,
            "n": len(ids),
            "positives": int(y.sum()),
            "roc_auc": _auc(y, score),
            "envelope_rule_auc": _auc(y, env),
            "pr_auc": float(average_precision_score(y, score)) if y.any() else None,
            "brier": float(brier_score_loss(y, score)),
            "brier_constant_rate": float(brier_score_loss(y, np.full(len(y), model.base_rate))),
            "ece": calibration_report(y, score)["ece"],
            "flagged_share": float(np.mean(score >= FLAG_THRESHOLD)),
            "recall_at_0.5": float(np.mean(score[y] >= FLAG_THRESHOLD)) if y.any() else None,
        }
        if onset is not None:  # simulator truth: deviations already under way at p
            started = onset <= p * model.featurizer.nominal_h
            row["positives_started"] = int(np.sum(started & y))
            row["onset_oracle_auc"] = _auc(y, started.astype(float))
        for col in model.cqa_cols:
            truth = history.outcomes.loc[ids, col].to_numpy(dtype=float)
            ok = np.isfinite(truth)
            pred = model.cqa_models[col].predict(X[model.features])
            grid = np.array(sorted(model.cqa_halfwidth[col]))
            half = model.cqa_halfwidth[col][grid[np.abs(grid - p).argmin()]]
            row[f"{col}_rmse"] = float(np.sqrt(np.mean((pred[ok] - truth[ok]) ** 2)))
            row[f"{col}_coverage"] = float(np.mean(np.abs(pred[ok] - truth[ok]) <= half))
        per_p.append(row)
        predictions.append(
            pd.DataFrame({"batch_id": ids, "progress": p, "score": score, "label": y})
        )
        if p == 0.5:
            bins = np.clip((score * 10).astype(int), 0, 9)
            for b in range(10):
                m = bins == b
                if m.any():
                    calibration.append(
                        {
                            "bin": b,
                            "mean_predicted": float(score[m].mean()),
                            "observed": float(y[m].mean()),
                            "n": int(m.sum()),
                        }
                    )
    classes = {}
    if model.class_model is not None:
        X = model.featurizer.transform(history, ids, 1.0, cube)[model.features]
        truth = history.outcomes.loc[ids, "dev_class"]
        known = truth.notna().to_numpy() & y & truth.isin(model.classes).to_numpy()
        if known.any():
            pred = model.class_model.predict(X[known])
            classes = {"class_accuracy_at_100%": float(np.mean(pred == truth[known].to_numpy()))}
    gain = pd.Series(
        model.classifier.booster_.feature_importance("gain"), index=model.features
    ).sort_values(ascending=False)
    importance = [{"feature": f, "gain": float(g)} for f, g in gain.head(20).items()]
    at = {r["progress"]: r for r in per_p}
    headline = {
        "chosen_pipeline": model.chosen,
        "auc_p25": at.get(0.25, {}).get("roc_auc"),
        "auc_p50": at.get(0.5, {}).get("roc_auc"),
        "auc_p100": at.get(1.0, {}).get("roc_auc"),
        "envelope_auc_p50": at.get(0.5, {}).get("envelope_rule_auc"),
        "test_batches": len(ids),
    }
    pooled = calibration_report(np.concatenate(all_y), np.concatenate(all_scores))
    return {
        "headline": headline,
        "by_progress": per_p,
        "calibration_p50": calibration,
        "reliability_all_progress": pooled.pop("reliability"),
        "calibration_all_progress": pooled,
        "importance": importance,
        **classes,
        "_predictions": pd.concat(predictions, ignore_index=True),
    }


def evaluate_maintenance(model: MaintenanceModel, runs: RunHistory, test_runs) -> dict:
    """Metrics on the observations of ``test_runs``."""
    rows = model.predict_rows(runs)
    label, rul = model.targets(runs)
    test = runs.rows["run"].isin(pd.Index(test_runs)).to_numpy()
    k = test & label.notna().to_numpy()
    r = test & rul.notna().to_numpy()
    y = label.to_numpy()[k].astype(bool)
    p = rows["p_fail"].to_numpy()[k]
    err = rows["rul"].to_numpy()[r] - rul.to_numpy()[r]
    scale = 24.0 if runs.time_is_datetime else 1.0
    covered = (rul.to_numpy()[r] >= rows["rul_lo"].to_numpy()[r]) & (
        rul.to_numpy()[r] <= rows["rul_hi"].to_numpy()[r]
    )
    headline = {
        "auc_fail_within_horizon": _auc(y, p),
        "rul_rmse": float(np.sqrt(np.mean(err**2))) if len(err) else None,
        "test_runs": len(pd.Index(test_runs)),
    }
    return {
        "headline": headline,
        "horizon": model.horizon,
        "time_unit": "hours" if runs.time_is_datetime else "cycles",
        "observations": int(k.sum()),
        "positives": int(y.sum()),
        "pr_auc": float(average_precision_score(y, p)) if y.any() else None,
        "brier": float(brier_score_loss(y, p)) if len(y) else None,
        "rul_mae": float(np.mean(np.abs(err))) if len(err) else None,
        "phm_score": phm_score(err / scale) if len(err) else None,
        "phm_score_unit": "days" if runs.time_is_datetime else "cycles",
        "rul_interval_coverage": float(np.mean(covered)) if len(err) else None,
        "rul_interval_mean_width": (
            float(np.mean(rows["rul_hi"].to_numpy()[r] - rows["rul_lo"].to_numpy()[r]))
            if len(err)
            else None
        ),
        "_predictions": pd.DataFrame(
            {"run": runs.rows["run"].to_numpy()[k], "p_fail": p, "label": y}
        ),
    }


def _meta(family, model, seed, fingerprint, training, metrics, use, limits, ref) -> dict:
    return {
        "family": family,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "params": model.classifier.get_params(),
        "features": list(model.features),
        "model_sha256": model_fingerprint(model),
        "training_data": dict(training, fingerprint=fingerprint),
        "metrics": {k: v for k, v in metrics.items() if not k.startswith("_")},
        "intended_use": use,
        "limitations": limits,
        "drift_reference": ref,
        "libraries": _libraries(),
    }


def train_deviation(
    history: BatchHistory,
    *,
    seed: int = 0,
    source: str = "",
    test_share: float = TEST_SHARE,
    scheduler: str | None = None,
):
    """Fit on the earlier batches, validate on the later ones.

    Returns
    -------
    (DeviationModel, dict, dict)
        The model, its registry metadata and the full metrics (with test predictions).
    """
    labelled = history.labelled()
    if test_share > 0:
        train_ids, test_ids = split_batches(history, test_share)
    else:
        train_ids, test_ids = labelled, pd.Index([])
    model = DeviationModel(seed=seed).fit(history, train_ids, scheduler=scheduler)
    if len(test_ids):
        metrics = evaluate_deviation(model, history, test_ids)
    else:
        metrics = {"headline": _cv_headline(model), "by_progress": _cv_by_progress(model)}
    metrics["selection"] = model.selection
    metrics["calibration"] = model.calibration
    X_ref = model.features_at(history, train_ids, 0.5)
    ordered = bool(getattr(history, "time_ordered", True))
    order = history.outcomes.loc[labelled, "order"]
    if test_share > 0:
        split = f"by start time: test = the latest {test_share:.0%} of labelled batches"
        if not ordered:
            split = f"the last {test_share:.0%} of labelled batches in file order (no time order)"
    else:
        split = "none: fitted on all labelled batches; figures are cross-validated"
    training = {
        "source": source,
        "batches_train": len(train_ids),
        "batches_test": len(test_ids),
        "first_batch": str(train_ids[0]),
        "last_batch": str(train_ids[-1]),
        # performance monitoring counts only batches that started after this one
        "train_until_order": float(history.outcomes.loc[train_ids[-1], "order"]),
        "split": split,
        "period": _period(order, history),
        "deviation_rate_train": float(history.outcomes.loc[train_ids, "label"].astype(bool).mean()),
        "pipeline": f"{model.chosen}: {model.selection.get('why', '')}",
        "calibration": model.calibration.get("chosen"),
        "boosting_rounds": (
            f"{model.rounds}, chosen by grouped cross-validated out-of-fold log loss "
            f"{model.rounds_cv_log_loss}"
        ),
    }
    report = getattr(history, "input_report", None)
    if report:
        training["input_report"] = report
    fp = frame_fingerprint(history.bins, history.outcomes.astype(str))
    meta = _meta(
        "deviation",
        model,
        seed,
        fp,
        training,
        metrics,
        DEVIATION_USE,
        DEVIATION_LIMITS,
        reference(X_ref),
    )
    meta["selection"] = model.selection
    meta["calibration"] = model.calibration
    return model, meta, metrics


def _period(order: pd.Series, history: BatchHistory) -> str:
    """The batches' time span as the data gives it: dates, numbers, or no order at all."""
    if not bool(getattr(history, "time_ordered", True)):
        return "no time order between batches (batch-relative time): folds shuffled by seed"
    if bool(getattr(history, "time_is_datetime", False)):
        return f"{pd.to_datetime(order.min(), unit='s')} .. {pd.to_datetime(order.max(), unit='s')}"
    return f"batch start {order.min():g} .. {order.max():g} (time units of the data)"


def _cv_headline(model: DeviationModel) -> dict:
    chosen = next(c for c in model.selection["candidates"] if c["name"] == model.chosen)
    out = {"chosen_pipeline": model.chosen, "cv_auc_mean": chosen["cv_mean"]}
    out["cv_auc_sd_over_folds"] = chosen["cv_sd"]
    for k, v in chosen.items():
        if k.startswith("cv_auc_"):
            out[k] = v
    return out


def _cv_by_progress(model: DeviationModel) -> list[dict]:
    rows = []
    for c in model.selection["candidates"]:
        row = {"candidate": c["name"], "cv_mean": c["cv_mean"], "cv_sd": c["cv_sd"]}
        row.update({k: v for k, v in c.items() if k.startswith("cv_auc_")})
        rows.append(row)
    return rows


def train_maintenance(
    runs: RunHistory,
    *,
    seed: int = 0,
    horizon: float | None = 168.0,
    rul_cap: float | None = None,
    setting_cols: list[str] | None = None,
    n_seeds: int = 1,
    source: str = "",
    test_share: float = TEST_SHARE,
    scheduler: str | None = None,
):
    """Choose and fit by grouped cross-validation; validate on held-out runs if asked.

    With ``test_share`` > 0 the later runs (timestamps) or some assets (cycles) are held out
    and measured; with 0 the model is fitted on all runs and its figures are the
    cross-validated ones.
    """
    if test_share > 0:
        train_runs, test_runs = split_runs(runs, test_share, seed)
    else:
        train_runs, test_runs = pd.Index(runs.rows["run"].unique()), pd.Index([])
    model = MaintenanceModel(
        horizon=horizon,
        rul_cap=rul_cap,
        seed=seed,
        setting_cols=list(setting_cols or []),
        n_seeds=n_seeds,
    ).fit(runs, train_runs, scheduler=scheduler)
    chosen = next(
        c for c in model.selection["candidates"] if c["name"] == model.selection["chosen"]
    )
    if len(test_runs):
        metrics = evaluate_maintenance(model, runs, test_runs)
    else:
        metrics = {
            "headline": {
                "cv_rul_rmse": chosen["cv_mean"],
                "cv_rul_rmse_sd_over_folds": chosen["cv_sd"],
                "runs": int(runs.rows["run"].nunique()),
            },
            "horizon": model.horizon,
            "time_unit": "hours" if runs.time_is_datetime else "cycles",
        }
    metrics["selection"] = model.selection
    metrics["calibration"] = model.calibration
    X = model._features(runs)
    training = {
        "source": source,
        "runs_train": len(train_runs),
        "runs_test": len(test_runs),
        "failures": int(runs.rows["failure"].sum()),
        "assets": int(runs.rows["asset"].nunique()),
        "split": (
            ("by time (runs after the cut-off)" if runs.time_is_datetime else "by asset")
            if len(test_runs)
            else "none: fitted on all runs; figures are cross-validated"
        ),
        "horizon": model.horizon,
        "time_unit": "hours" if runs.time_is_datetime else "cycles",
        "rul_cap": model.rul_cap,
        "windows": list(model.windows),
        "members": [dict(m, windows=list(m["windows"])) for m in model.members],
        "loss": model.loss,
        "regimes": None if model.regimes is None else model.regimes.k,
        "constant_sensors_dropped": model.dropped_constant,
        "pipeline": model.selection["why"],
        "calibration": model.calibration.get("chosen"),
    }
    report = getattr(runs, "input_report", None)
    if report:
        training["input_report"] = report
    fp = frame_fingerprint(runs.rows)
    meta = _meta(
        "maintenance",
        model,
        seed,
        fp,
        training,
        metrics,
        MAINTENANCE_USE,
        MAINTENANCE_LIMITS,
        reference(X[runs.rows["run"].isin(train_runs).to_numpy()]),
    )
    meta["selection"] = model.selection
    meta["calibration"] = model.calibration
    return model, meta, metrics
