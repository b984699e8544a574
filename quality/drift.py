"""Drift monitoring: has the data moved away from what the model was trained on?

- Population stability index (PSI) per feature between the training reference (decile bins
  stored with the model) and recent data. PSI < 0.1 stable, 0.1-0.25 moderate, > 0.25 a
  flag (the usual credit-scoring thresholds, used in process monitoring too).
- Performance once outcomes arrive: ROC AUC on recent labelled predictions against the
  validation AUC; a drop of more than 0.10 raises a flag.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

__all__ = ["AUC_DROP_FLAG", "PSI_FLAG", "performance_drift", "psi", "psi_table", "reference"]

PSI_FLAG = 0.25
PSI_WATCH = 0.10
AUC_DROP_FLAG = 0.10
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
        }
    return ref


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors."""
    e = np.clip(np.asarray(expected, dtype=float), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_table(ref: dict, X: pd.DataFrame) -> pd.DataFrame:
    """PSI of every referenced feature present in ``X``, worst first, with its flag."""
    rows = []
    for col, r in ref.items():
        if col not in X.columns:
            continue
        v = X[col].to_numpy(dtype=float)
        finite = v[np.isfinite(v)]
        if len(finite) == 0:
            continue
        edges = np.asarray(r["edges"])
        counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
        value = psi(r["shares"], counts / counts.sum())
        rows.append(
            {
                "feature": col,
                "psi": value,
                "flag": "drift" if value > PSI_FLAG else "watch" if value > PSI_WATCH else "",
                "n": len(finite),
            }
        )
    out = pd.DataFrame(rows, columns=["feature", "psi", "flag", "n"])
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
