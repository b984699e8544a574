"""Probability calibration that keeps the ranking, chosen by cross-validation.

Fitted on out-of-fold scores (data the model did not train on). The methods: none (the
pipeline's own probability), Platt (a logistic map of the raw log-odds, optionally with slope
and offset linear in progress), beta calibration (Kull et al. 2017: a logistic map of
``ln p`` and ``-ln(1 - p)``, monotone when both slopes are positive) and isotonic regression
(with a vanishing tie-break so that batches the model ranked apart stay apart).
:func:`choose_calibrator` picks one by grouped cross-validated log loss on the out-of-fold
scores, under two guards: the mean calibrated probability must equal the base rate within
tolerance, and the map must not send a whole data set to one value.

One model scores a batch at every progress, and its raw scores do not spread alike early
and late (early, little is known and the trees' log-odds overstate it; late, they understate
it). With ``progress`` given, the map's slope and offset are linear in progress, so each
progress gets its own calibration while the ranking at any one progress stays the model's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

__all__ = [
    "Beta",
    "EvidenceGate",
    "Identity",
    "Isotonic",
    "Platt",
    "PlattGrid",
    "calibration_report",
    "choose_calibrator",
]

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
    name: str = "platt"

    def state(self) -> np.ndarray:
        """The map's parameters (fingerprinting)."""
        return np.array([self.a, self.b, self.a_p, self.b_p])

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
            lr = LogisticRegression(C=1e4, max_iter=1000).fit(np.column_stack([raw, raw * t, t]), y)
            a, a_p, b_p = (float(c) for c in lr.coef_[0])
            if a > 0 and a + a_p > 0:
                self.a, self.a_p, self.b, self.b_p = a, a_p, float(lr.intercept_[0]), b_p
                return self
            logger.info(
                "progress-dependent calibration would reverse the ranking (slope %.3g at 0, "
                "%.3g at 1); one map for all progress instead",
                a,
                a + a_p,
            )
        lr = LogisticRegression(C=1e4, max_iter=1000).fit(raw.reshape(-1, 1), y)
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


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, dtype=float), -50, 50)))


@dataclass
class Identity:
    """No calibration: the pipeline's own probability ``sigmoid(raw)``."""

    name: str = "none"

    def fit(self, raw, y, progress=None) -> Identity:
        return self

    def predict(self, raw, progress=None) -> np.ndarray:
        return _sigmoid(raw)

    def state(self) -> np.ndarray:
        return np.zeros(0)


@dataclass
class Beta:
    """Beta calibration: ``p' = sigmoid(a ln p - b ln(1 - p) + c)`` with ``a, b >= 0``."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    name: str = "beta"

    @staticmethod
    def _design(raw) -> np.ndarray:
        raw = np.clip(np.asarray(raw, dtype=float), -50, 50)
        return np.column_stack([-np.logaddexp(0.0, -raw), np.logaddexp(0.0, raw)])

    def fit(self, raw, y, progress=None) -> Beta:
        y = np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            return self
        Z = self._design(raw)
        lr = LogisticRegression(C=1e4).fit(Z, y)
        a, b = (float(v) for v in lr.coef_[0])
        if a < 0 or b < 0:  # not monotone: refit on the one feature that keeps its sign
            j = 0 if a >= b else 1
            lr1 = LogisticRegression(C=1e4).fit(Z[:, [j]], y)
            coef = max(float(lr1.coef_[0, 0]), 1e-6)
            a, b = (coef, 0.0) if j == 0 else (0.0, coef)
            lr = lr1
        self.a, self.b, self.c = a, b, float(lr.intercept_[0])
        return self

    def predict(self, raw, progress=None) -> np.ndarray:
        Z = self._design(raw)
        return _sigmoid(self.a * Z[:, 0] + self.b * Z[:, 1] + self.c)

    def state(self) -> np.ndarray:
        return np.array([self.a, self.b, self.c])


@dataclass
class Isotonic:
    """Isotonic regression of ``sigmoid(raw)``, with a 1e-6 tie-break that keeps the ranking."""

    name: str = "isotonic"

    def fit(self, raw, y, progress=None) -> Isotonic:
        self.iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4)
        self.iso.fit(_sigmoid(raw), np.asarray(y, dtype=float))
        return self

    def predict(self, raw, progress=None) -> np.ndarray:
        p = _sigmoid(raw)
        return np.clip(self.iso.predict(p) + 1e-6 * (p - 0.5), 0.0, 1.0)

    def state(self) -> np.ndarray:
        return np.concatenate([self.iso.X_thresholds_, self.iso.y_thresholds_])


def _ranks_above_chance(y, raw, n1: int, n0: int, z: float) -> bool:
    """ROC AUC above 0.5 by ``z`` standard errors of the Mann-Whitney null."""
    from quality.selection import fast_auc

    auc = fast_auc(y, raw)
    se = np.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0))
    return auc is not None and auc > 0.5 + z * se


@dataclass
class PlattGrid:
    """A Platt map per progress point, parameters interpolated linearly between points.

    Each point's map is a mildly regularised logistic regression of the outcome on the raw
    score there. Where the scores there carry no evidence of ranking (their ROC AUC is not
    above 0.5 by more than 1.645 standard errors under the null, one-sided 5 %; early in a
    batch, before any fault can show) the slope is set to zero and the probability to the
    base rate, instead of inheriting the confidence the scores have late.
    """

    name: str = "platt_per_progress"
    C: float = 1.0
    z_gate: float = 1.645

    def fit(self, raw, y, progress=None) -> PlattGrid:
        raw = np.asarray(raw, dtype=float)
        y = np.asarray(y, dtype=int)
        t = np.zeros(len(raw)) if progress is None else np.round(np.asarray(progress, float), 6)
        self.points, self.a, self.b = [], [], []
        rate = min(max(float(y.mean()), 1e-4), 1 - 1e-4)
        for p in np.unique(t):
            m = t == p
            n1 = int(y[m].sum())
            n0 = int(m.sum()) - n1
            if n1 == 0 or n0 == 0:
                a, b = 0.0, float(np.log(rate / (1 - rate)))
            elif not _ranks_above_chance(y[m], raw[m], n1, n0, self.z_gate):
                r = min(max(n1 / (n1 + n0), 1e-4), 1 - 1e-4)
                a, b = 0.0, float(np.log(r / (1 - r)))
            else:
                lr = LogisticRegression(C=self.C, max_iter=1000).fit(raw[m, None], y[m])
                a, b = max(float(lr.coef_[0, 0]), 0.0), float(lr.intercept_[0])
            self.points.append(float(p))
            self.a.append(a)
            self.b.append(b)
        return self

    def predict(self, raw, progress=None) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        t = np.broadcast_to(np.asarray(0.0 if progress is None else progress, float), raw.shape)
        a = np.interp(t, self.points, self.a)
        b = np.interp(t, self.points, self.b)
        return _sigmoid(a * raw + b)

    def state(self) -> np.ndarray:
        return np.array([*self.points, *self.a, *self.b])


#: share of the distance from the base rate a closed evidence gate keeps: the probability
#: says "base rate, no evidence yet", the order among batches is a tie-break (the deviation
#: model's: each batch's distance from the normal batches, its ``monitor`` score)
GATE_LEAK = 0.05


@dataclass
class EvidenceGate:
    """A calibration map that says the base rate where the scores show no ranking evidence.

    At each progress point of the out-of-fold scores, the gate is open when their ROC AUC
    there exceeds 0.5 by ``z`` standard errors of the Mann-Whitney null (one-sided 5 %),
    closed otherwise; between points it is interpolated. A closed gate shrinks every batch's
    probability to the training base rate (keeping :data:`GATE_LEAK` of its distance from
    it, or from a tie-break score's probability, so that the batches keep an order and the
    probability says "no evidence yet"): early in a batch, before any fault can show, the
    model makes no claim.
    """

    inner: object
    points: list[float]
    open: list[float]
    rate: float
    name: str = "gate"

    @classmethod
    def fit(cls, inner, raw, y, progress, z: float = 1.645) -> EvidenceGate:
        raw, y = np.asarray(raw, float), np.asarray(y, int)
        t = np.round(np.asarray(progress, float), 6)
        points, opened = [], []
        for p in np.unique(t):
            m = t == p
            n1 = int(y[m].sum())
            n0 = int(m.sum()) - n1
            ok = n1 > 0 and n0 > 0 and _ranks_above_chance(y[m], raw[m], n1, n0, z)
            points.append(float(p))
            opened.append(1.0 if ok else 0.0)
        return cls(inner=inner, points=points, open=opened, rate=float(y.mean()))

    def openness(self, progress) -> np.ndarray:
        """How open the gate is at each ``progress`` (0 closed, 1 open; interpolated)."""
        progress = np.asarray(progress, float)
        if all(self.open):
            return np.ones(progress.shape)
        return np.interp(progress, self.points, self.open)

    def predict(self, raw, progress=None, tie=None) -> np.ndarray:
        """Calibrated probabilities; where the gate is closed, the base rate with
        :data:`GATE_LEAK` of the distance to the model's probability, or, with ``tie``
        (log-odds of a tie-break score; NaN where none), to its probability instead."""
        p = self.inner.predict(raw, progress)
        if progress is None or all(self.open):
            return p
        o = self.openness(progress)
        closed = p
        if tie is not None:
            tie = np.asarray(tie, dtype=float)
            closed = np.where(np.isfinite(tie), _sigmoid(np.nan_to_num(tie)), p)
        return o * p + (1.0 - o) * (self.rate + GATE_LEAK * (closed - self.rate))

    def state(self) -> np.ndarray:
        inner = np.asarray(self.inner.state(), dtype=float)
        return np.concatenate([inner, self.points, self.open, [self.rate]])


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _make(method: str):
    if method == "none":
        return Identity()
    if method == "platt":
        return Platt()
    if method == "platt_progress":
        c = Platt()
        c.name = "platt_progress"
        return c
    if method == "platt_per_progress":
        return PlattGrid()
    if method == "beta":
        return Beta()
    if method == "isotonic":
        return Isotonic()
    raise ValueError(f"calibration: unknown method {method!r}")


METHODS = ("none", "platt", "platt_progress", "platt_per_progress", "beta", "isotonic")


_USES_PROGRESS = ("platt_progress", "platt_per_progress")


def _fit(method, raw, y, progress):
    cal = _make(method)
    return cal.fit(raw, y, progress if method in _USES_PROGRESS else None)


def _predict(cal, raw, progress):
    return cal.predict(raw, progress if cal.name in _USES_PROGRESS else None)


def choose_calibrator(
    raw: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    progress: np.ndarray | None = None,
    seed: int = 0,
    n_folds: int = 5,
    methods: tuple[str, ...] = METHODS,
):
    """Choose and fit a calibration map on out-of-fold raw scores (log-odds).

    Parameters
    ----------
    raw, y : numpy.ndarray
        Out-of-fold raw scores and 0/1 outcomes (one row per batch and progress point, or per
        observation).
    groups : numpy.ndarray
        Group (batch / asset) of each row: the calibration's own cross-validation keeps a
        group's rows together.
    progress : numpy.ndarray, optional
        Progress of each row; enables ``platt_progress``.

    Returns
    -------
    (calibrator, dict)
        The chosen map fitted on all rows, and the record: each method's grouped CV log loss
        and Brier score, the guards, the choice.
    """
    raw = np.asarray(raw, dtype=float)
    y = np.asarray(y, dtype=int)
    if progress is None:
        methods = tuple(m for m in methods if m not in _USES_PROGRESS)
    uniq = pd.unique(np.asarray(groups))
    rng = np.random.default_rng(seed)
    fold_of = dict(
        zip(uniq[rng.permutation(len(uniq))], np.arange(len(uniq)) % n_folds, strict=True)
    )
    fold = np.array([fold_of[g] for g in groups])
    rate = float(y.mean())
    tol = float(max(0.02, 2.0 * np.sqrt(rate * (1 - rate) / max(len(uniq), 1))))
    record, scores = {}, {}
    for method in methods:
        cv = np.full(len(y), np.nan)
        for k in range(n_folds):
            train, held = fold != k, fold == k
            if not held.any() or len(np.unique(y[train])) < 2:
                continue
            cal = _fit(method, raw[train], y[train], None if progress is None else progress[train])
            cv[held] = _predict(cal, raw[held], None if progress is None else progress[held])
        ok = np.isfinite(cv)
        full = _fit(method, raw, y, progress)
        fitted = _predict(full, raw, progress)
        guards = []
        if abs(float(fitted.mean()) - rate) > tol:
            guards.append(f"mean {fitted.mean():.3f} against the base rate {rate:.3f}")
        if np.ptp(fitted) < 1e-3 or np.unique(np.round(fitted, 6)).size < 3:
            guards.append("maps the whole data set to (nearly) one value")
        loss = _log_loss(y[ok], cv[ok]) if ok.any() else np.inf
        brier = float(np.mean((cv[ok] - y[ok]) ** 2)) if ok.any() else np.inf
        record[method] = {
            "cv_log_loss": round(loss, 5),
            "cv_brier": round(brier, 5),
            "refused": "; ".join(guards),
        }
        if not guards:
            scores[method] = (loss, full)
    if not scores:  # every map refused: Platt on all rows is the safe default
        logger.warning("calibration: every method failed a guard; Platt scaling used")
        scores["platt"] = (np.inf, _fit("platt", raw, y, None))
    best = min(scores, key=lambda m: (round(scores[m][0], 4), methods.index(m)))
    chosen = scores[best][1]
    logger.info("calibration chosen by grouped CV log loss: %s", best)
    return chosen, {
        "chosen": best,
        "rule": "lowest grouped cross-validated log loss among methods passing the guards",
        "base_rate": round(rate, 4),
        "tolerance": round(tol, 4),
        "methods": record,
    }


def calibration_report(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict:
    """Reliability diagram (equal-width bins), Brier score and expected calibration error."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    edges = np.clip((p * bins).astype(int), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = edges == b
        if m.any():
            table.append(
                {
                    "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
                    "mean_predicted": round(float(p[m].mean()), 4),
                    "observed": round(float(y[m].mean()), 4),
                    "n": int(m.sum()),
                }
            )
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    rate = float(y.mean()) if len(y) else float("nan")
    return {
        "brier": round(float(np.mean((p - y) ** 2)), 5) if len(y) else None,
        "brier_constant_rate": round(float(np.mean((rate - y) ** 2)), 5) if len(y) else None,
        "ece": round(float(ece), 5),
        "mean_predicted": round(float(p.mean()), 4) if len(y) else None,
        "observed_rate": round(rate, 4),
        "reliability": table,
    }
