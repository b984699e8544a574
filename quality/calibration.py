"""Probability calibration that keeps the ranking: Platt scaling of raw scores.

Isotonic regression maps scores to plateaus, which ties batches that the model ranked apart
(and lowers ROC AUC); a logistic map of the raw log-odds is strictly monotone. Fitted on
data the model did not train on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

__all__ = ["Platt"]


@dataclass
class Platt:
    """``p = 1 / (1 + exp(-(a * raw + b)))`` fitted by logistic regression."""

    a: float = 1.0
    b: float = 0.0

    def fit(self, raw: np.ndarray, y: np.ndarray) -> Platt:
        """Fit on raw scores (log-odds) and 0/1 outcomes; identity if one outcome only."""
        y = np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            return self
        lr = LogisticRegression(C=1e4).fit(np.asarray(raw, dtype=float).reshape(-1, 1), y)
        self.a, self.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return self

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw scores."""
        return 1.0 / (1.0 + np.exp(-(self.a * np.asarray(raw, dtype=float) + self.b)))

    @property
    def X_thresholds_(self) -> np.ndarray:  # fingerprinting, like IsotonicRegression's
        return np.array([self.a])

    @property
    def y_thresholds_(self) -> np.ndarray:
        return np.array([self.b])
