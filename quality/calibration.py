"""Probability calibration that keeps the ranking: Platt scaling of raw scores.

Isotonic regression maps scores to plateaus, which ties batches that the model ranked apart
(and lowers ROC AUC); a logistic map of the raw log-odds is strictly monotone. Fitted on
data the model did not train on.

One model scores a batch at every progress, and its raw scores do not spread alike early
and late (early, little is known and the trees' log-odds overstate it; late, they understate
it). With ``progress`` given, the map's slope and offset are linear in progress, so each
progress gets its own calibration while the ranking at any one progress stays the model's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

__all__ = ["Platt"]

logger = logging.getLogger(__name__)


@dataclass
class Platt:
    """``p = 1 / (1 + exp(-((a + a_p * t) * raw + b + b_p * t)))``, ``t`` the progress.

    Fitted by logistic regression; ``a_p = b_p = 0`` (one map for all progress) unless
    fitted with ``progress``.
    """

    a: float = 1.0
    b: float = 0.0
    a_p: float = 0.0
    b_p: float = 0.0

    def fit(self, raw: np.ndarray, y: np.ndarray, progress: np.ndarray | None = None) -> Platt:
        """Fit on raw scores (log-odds) and 0/1 outcomes; identity if one outcome only.

        With ``progress`` (fractions in [0, 1]), slope and offset vary linearly with it; if the
        slope so fitted would not stay positive over [0, 1] (the map would reverse the ranking
        somewhere), one map for all progress is fitted instead.
        """
        y = np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            return self
        raw = np.asarray(raw, dtype=float)
        if progress is not None:
            t = np.asarray(progress, dtype=float)
            lr = LogisticRegression(C=1e4).fit(np.column_stack([raw, raw * t, t]), y)
            a, a_p, b_p = (float(c) for c in lr.coef_[0])
            if a > 0 and a + a_p > 0:
                self.a, self.a_p, self.b, self.b_p = a, a_p, float(lr.intercept_[0]), b_p
                return self
            logger.warning(
                "progress-dependent calibration would reverse the ranking (slope %.3g at 0, "
                "%.3g at 1); one map for all progress instead",
                a,
                a + a_p,
            )
        lr = LogisticRegression(C=1e4).fit(raw.reshape(-1, 1), y)
        self.a, self.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        self.a_p = self.b_p = 0.0
        return self

    def predict(self, raw: np.ndarray, progress: np.ndarray | float | None = None) -> np.ndarray:
        """Calibrated probabilities of raw scores at ``progress``.

        Raises
        ------
        ValueError
            If the map depends on progress and none is given.
        """
        if progress is None:
            if self.a_p or self.b_p:
                raise ValueError("progress: this calibration depends on progress; give it")
            progress = 0.0
        t = np.asarray(progress, dtype=float)
        z = (self.a + self.a_p * t) * np.asarray(raw, dtype=float) + self.b + self.b_p * t
        return 1.0 / (1.0 + np.exp(-z))

    @property
    def X_thresholds_(self) -> np.ndarray:  # fingerprinting, like IsotonicRegression's
        return np.array([self.a, self.a_p])

    @property
    def y_thresholds_(self) -> np.ndarray:
        return np.array([self.b, self.b_p])
