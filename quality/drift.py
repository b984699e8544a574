"""Drift monitoring: has the data moved away from what the model was trained on?

- Population stability index (PSI) per feature between the training reference (decile bins
  stored with the model) and recent data. PSI < 0.1 stable, 0.1-0.25 moderate, > 0.25 a
  flag (the usual credit-scoring thresholds, used in process monitoring too), but never
  below what sampling alone gives: two samples of one distribution have
  ``PSI ~ chi2(bins - 1) * (1/n + 1/n_ref)`` (PSI is a symmetrised chi-square), so 60 recent
  batches in 10 bins reach 0.25 by chance for one feature in ten. A feature drifts when its
  PSI exceeds both 0.25 and the point of that null that all features of the model together
  pass by chance only once in twenty checks (Bonferroni: level 1 - 0.05 / features);
  "watch" is 0.10 and the 99 % point of one feature. Hour meters (``asset.*`` features) are
  not checked: PM and repairs reset them, so a few months of batches see part of a cycle
  whose whole the training data saw (their PSI over 120 batches reaches 3 without any
  change of the process); the maintenance model watches them.
- Performance once outcomes arrive: ROC AUC at 50 % progress on the latest batches with an
  outcome that started after the model's training data, against the validation AUC; a drop
  of more than 0.10 raises a flag. Too few outcomes (fewer than 20 batches, or fewer than 5
  of either outcome) give no AUC and say so, instead of a flag from noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2
from sklearn.metrics import roc_auc_score

__all__ = [
    "AUC_DROP_FLAG",
    "PSI_FLAG",
    "deviation_performance",
    "performance_drift",
    "psi",
    "psi_table",
    "reference",
]

PSI_FLAG = 0.25
PSI_WATCH = 0.10
#: features that cycle by design (hour meters, reset by PM): not checked for drift
CYCLIC_PREFIXES = ("asset.",)
AUC_DROP_FLAG = 0.10
#: the latest batches with outcomes the performance check looks at, and the least it needs
PERFORMANCE_WINDOW = 120
PERFORMANCE_MIN_BATCHES = 20
PERFORMANCE_MIN_EACH = 5
PERFORMANCE_PROGRESS = 0.5
_EPS = 1e-4


def reference(X: pd.DataFrame, bins: int = 10) -> dict:
    """Decile edges and shares of each numeric feature, and the share missing."""
    ref = {}
    for col in X.columns:
        s = X[col]
        if not pd.api.types.is_numeric_dtype(s):
            continue
        v = s.to_numpy(dtype=float)
        finite = v[np.isfinite(v)]
        if len(finite) < 2 * bins or np.unique(finite).size < 2:
            continue
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
        ref[col] = {
            "edges": edges.tolist(),
            "shares": (counts / counts.sum()).tolist(),
            "missing": float(np.mean(~np.isfinite(v))),
            "n": len(finite),
        }
    return ref


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors."""
    e = np.clip(np.asarray(expected, dtype=float), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _smoothed(shares: np.ndarray, n: float) -> np.ndarray:
    """Shares with half a count added to every bin: an empty bin of a small sample does not
    weigh ``log(1e-4)``, and the PSI of two samples of one law then follows its chi-square
    approximation (checked by simulation for 20-260 samples in 10 bins)."""
    if not np.isfinite(n):
        return shares
    return (shares * n + 0.5) / (n + 0.5 * len(shares))


def null_limit(bins: int, n: int, n_ref: float, level: float) -> float:
    """The ``level`` quantile of the PSI of two samples (sizes ``n``, ``n_ref``) of one law."""
    return float(chi2.ppf(level, max(bins - 1, 1)) * (1.0 / n + 1.0 / n_ref))


def psi_table(ref: dict, X: pd.DataFrame, false_alarm: float = 0.05) -> pd.DataFrame:
    """PSI of every referenced feature present in ``X``, worst first, with its flag.

    ``limit`` is the PSI above which the feature is flagged "drift": 0.25, or more when the
    samples are small enough for chance to reach 0.25 (see the module's docstring), so that
    data of the training distribution raises a flag on any feature in at most
    ``false_alarm`` of the checks. A
    reference without its sample size (models trained before 2026-12-02) counts as a large
    one.
    """
    rows = []
    checked = [c for c in ref if c in X.columns and not c.startswith(CYCLIC_PREFIXES)]
    level = 1.0 - false_alarm / max(len(checked), 1)
    for col in checked:
        r = ref[col]
        v = X[col].to_numpy(dtype=float)
        finite = v[np.isfinite(v)]
        if len(finite) == 0:
            continue
        edges = np.asarray(r["edges"])
        counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
        n_ref = r.get("n", np.inf)
        bins = len(r["shares"])
        value = psi(
            _smoothed(np.asarray(r["shares"]), n_ref), _smoothed(counts / len(finite), len(finite))
        )
        limit = max(PSI_FLAG, null_limit(bins, len(finite), n_ref, level))
        watch = max(PSI_WATCH, null_limit(bins, len(finite), n_ref, 0.99))
        rows.append(
            {
                "feature": col,
                "psi": value,
                "limit": limit,
                "flag": "drift" if value > limit else "watch" if value > watch else "",
                "n": len(finite),
            }
        )
    out = pd.DataFrame(rows, columns=["feature", "psi", "limit", "flag", "n"])
    return out.sort_values("psi", ascending=False, ignore_index=True)


def performance_drift(y_true, y_score, validation_auc: float) -> dict:
    """Recent AUC against validation; ``flag`` when it dropped by more than 0.10."""
    y = np.asarray(y_true, dtype=bool)
    if y.all() or (~y).all():
        return {"auc": None, "validation_auc": validation_auc, "flag": False, "n": len(y)}
    auc = float(roc_auc_score(y, y_score))
    return {
        "auc": auc,
        "validation_auc": validation_auc,
        "flag": bool(validation_auc - auc > AUC_DROP_FLAG),
        "n": len(y),
    }


def deviation_performance(model, meta: dict, history, *, same_source: bool = True) -> dict:
    """The deviation model's ROC AUC on batches with outcomes that it never trained on.

    Parameters
    ----------
    model : DeviationModel
        The scoring model.
    meta : dict
        Its registry record: ``training_data.train_until_order`` (the start of its last
        training batch) and ``metrics.headline.auc_p50`` (the validation AUC).
    history : BatchHistory or None
        Batches with their outcomes so far (unknown outcomes are not counted); None when
        no batch has an outcome yet.
    same_source : bool
        Whether ``history`` is the data the model was trained on (then only batches that
        started after its last training batch count); batches of another source (a model
        trained on a twin history scoring the plant's historian) all count.

    Returns
    -------
    dict
        ``batches`` and ``positives`` counted, ``auc`` (None when too few), ``validation_auc``,
        ``flag`` (AUC fell by more than :data:`AUC_DROP_FLAG`), mean predicted probability
        against the observed rate, the first and last batch, and a ``note`` when no AUC.
    """
    validation = meta.get("metrics", {}).get("headline", {}).get("auc_p50")
    out = {
        "model_version": meta.get("version"),
        "progress": PERFORMANCE_PROGRESS,
        "validation_auc": validation,
        "batches": 0,
        "positives": 0,
        "auc": None,
        "flag": False,
        "note": "",
    }
    cut = meta.get("training_data", {}).get("train_until_order")
    if not same_source:
        cut = -np.inf
    elif cut is None:
        out["note"] = "the model's record has no training cut-off; retrain to monitor it"
        return out
    if history is None:  # no outcome after the training data
        since, y = pd.Index([]), np.zeros(0, dtype=bool)
    else:
        labelled = history.labelled()
        order = history.outcomes.loc[labelled, "order"].to_numpy(dtype=float)
        since = labelled[order > float(cut)][-PERFORMANCE_WINDOW:]
        y = history.outcomes.loc[since, "label"].astype(bool).to_numpy()
    out.update(batches=len(since), positives=int(y.sum()))
    if len(since) < PERFORMANCE_MIN_BATCHES or min(y.sum(), (~y).sum()) < PERFORMANCE_MIN_EACH:
        out["note"] = (
            f"{len(since)} batches with an outcome since the training data ({int(y.sum())} "
            f"deviating); the check needs {PERFORMANCE_MIN_BATCHES}, with at least "
            f"{PERFORMANCE_MIN_EACH} of either outcome"
        )
        return out
    score = model.score(history, since, PERFORMANCE_PROGRESS)
    result = performance_drift(y, score, validation if validation is not None else float("nan"))
    out.update(
        auc=result["auc"],
        flag=result["flag"],
        mean_predicted=float(np.mean(score)),
        observed=float(np.mean(y)),
        first_batch=str(since[0]),
        last_batch=str(since[-1]),
    )
    return out
