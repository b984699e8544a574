"""The asset model: failure within a horizon and remaining useful life, for planners.

From run-to-failure histories (:class:`quality.data.RunHistory`), every observation gets
features an engineer reads (each sensor's value, its mean and slope over the last 7
observations, the time since the run began) and two targets:

- *fails within the horizon*: true when the run ends in a failure within ``horizon`` time
  units; false when the asset is seen working beyond the horizon; unknown (left out of the
  classifier's training, never guessed) when the run was censored (preventive renewal, end of
  data) before the horizon;
- *remaining useful life*: time to failure, learned from runs that end in a failure, capped
  at ``rul_cap`` if given (the usual assumption that health does not degrade early in life).

The classifier's probabilities are calibrated (isotonic) on the latest runs; the RUL gets a
split-conformal interval from the same runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from quality.data import RunHistory
from quality.errors import InputError, SchemaError
from quality.explain import _fmt

__all__ = ["MaintenanceModel", "phm_score", "run_features", "split_runs"]

logger = logging.getLogger(__name__)

WINDOW = 7
CALIBRATION_SHARE = 0.25
CONFORMAL_LEVEL = 0.9


def run_features(history: RunHistory) -> pd.DataFrame:
    """Per-observation features: sensors, rolling mean and slope, time in run."""
    rows = history.rows
    g = rows.groupby("run", sort=False)
    feats = {"t_in_run": rows["t"] - g["t"].transform("min")}
    dt = rows["t"] - g["t"].shift(WINDOW - 1)
    for col in history.sensors:
        if col in history.categorical:
            continue
        s = rows[col].astype(float)
        feats[col] = s
        feats[f"{col}|mean{WINDOW}"] = (
            g[col].rolling(WINDOW, min_periods=1).mean().reset_index(level=0, drop=True)
        )
        feats[f"{col}|slope{WINDOW}"] = (s - g[col].shift(WINDOW - 1)) / dt.where(dt > 0)
    X = pd.DataFrame(feats, index=rows.index)
    for col in history.categorical:
        X[col] = rows[col].astype("category")
    return X


def split_runs(history: RunHistory, test_share: float = 0.3, seed: int = 0):
    """Train and test run ids: by time for timestamped data, else by asset.

    With timestamps, the runs that start after the cut-off time are the test set and the runs
    that end before it are the training set (runs that straddle it are left out of both). With
    cycles (no common clock), whole assets are held out at random (``seed``).
    """
    rows = history.rows
    spans = rows.groupby("run").agg(start=("t", "min"), end=("t", "max"), asset=("asset", "first"))
    if history.time_is_datetime:
        cut = rows["t"].quantile(1 - test_share)
        train = spans.index[spans["end"] <= cut]
        test = spans.index[spans["start"] > cut]
        return train, test
    assets = np.array(sorted(spans["asset"].unique()))
    rng = np.random.default_rng(seed)
    n_test = max(1, round(test_share * len(assets)))
    held = set(rng.choice(assets, size=n_test, replace=False))
    test = spans.index[spans["asset"].isin(held)]
    train = spans.index[~spans["asset"].isin(held)]
    return train, test


def phm_score(error: np.ndarray) -> float:
    """PHM08 asymmetric score of RUL errors (predicted - true): late predictions cost more."""
    d = np.asarray(error, dtype=float)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


@dataclass
class MaintenanceModel:
    """Failure-within-horizon probability and remaining useful life per asset.

    Parameters
    ----------
    horizon : float
        In the time unit of the data (hours for timestamps, else cycles).
    rul_cap : float, optional
        Cap of the RUL target.
    seed : int
    """

    horizon: float = 168.0
    rul_cap: float | None = None
    seed: int = 0
    features: list[str] = field(default_factory=list)
    sensors: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    time_is_datetime: bool = True

    def targets(self, history: RunHistory) -> tuple[pd.Series, pd.Series]:
        """Failure-within-horizon label (NaN when unknown) and RUL (NaN for censored runs)."""
        rows = history.rows
        soon = rows["rul"] <= self.horizon
        label = pd.Series(np.nan, index=rows.index)
        label[rows["failed_run"] & soon] = 1.0
        label[~soon] = 0.0
        rul = rows["rul"].where(rows["failed_run"])
        if self.rul_cap is not None:
            rul = rul.clip(upper=self.rul_cap)
        return label, rul

    def _params(self, **extra) -> dict:
        params = dict(
            n_estimators=400,
            learning_rate=0.03,
            num_leaves=7,
            min_child_samples=50,
            colsample_bytree=0.7,
            subsample=0.8,
            subsample_freq=1,
            random_state=self.seed,
            deterministic=True,
            force_row_wise=True,
            n_jobs=2,
            verbose=-1,
        )
        params.update(extra)
        return params

    def fit(self, history: RunHistory, run_ids=None) -> MaintenanceModel:
        """Fit on ``run_ids`` (default: all runs); the latest quarter calibrates.

        Raises
        ------
        InputError
            No failure within the horizon to learn from, or too few runs.
        """
        rows = history.rows
        runs = pd.Index(rows["run"].unique() if run_ids is None else run_ids)
        order = rows[rows["run"].isin(runs)].groupby("run")["t"].min().sort_values()
        if not history.time_is_datetime:
            order = order.sample(frac=1.0, random_state=self.seed)
        n_cal = max(1, round(CALIBRATION_SHARE * len(order)))
        fit_runs, cal_runs = order.index[:-n_cal], order.index[-n_cal:]
        X = run_features(history)
        label, rul = self.targets(history)
        self.sensors, self.categorical = list(history.sensors), list(history.categorical)
        self.time_is_datetime = history.time_is_datetime
        self.features = list(X.columns)
        self.categories = {c: list(X[c].cat.categories) for c in self.categorical}
        fit_rows = rows["run"].isin(fit_runs).to_numpy()
        cal_rows = rows["run"].isin(cal_runs).to_numpy()
        known = label.notna().to_numpy()
        y = label.to_numpy()
        if y[fit_rows & known].sum() < 3:
            raise InputError(
                f"failure: fewer than 3 observations within {self.horizon:g} of a failure in the "
                "training runs; the horizon is too short or there are too few failures"
            )
        self.classifier = lgb.LGBMClassifier(**self._params()).fit(
            X[fit_rows & known], y[fit_rows & known].astype(int)
        )
        self.calibrator = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        cal = cal_rows & known
        if cal.sum() and len(np.unique(y[cal])) == 2:
            self.calibrator.fit(self.classifier.predict_proba(X[cal])[:, 1], y[cal])
        else:
            logger.warning("calibration runs have one outcome only: probabilities uncalibrated")
            self.calibrator.fit([0.0, 1.0], [0.0, 1.0])
        has_rul = rul.notna().to_numpy()
        if (fit_rows & has_rul).sum() < 10:
            raise InputError("failure: fewer than 10 observations of runs that end in a failure")
        self.regressor = lgb.LGBMRegressor(**self._params()).fit(
            X[fit_rows & has_rul], rul.to_numpy()[fit_rows & has_rul]
        )
        # normalised split conformal: |error| / (predicted RUL + offset), so that the
        # interval is narrow near the end of life and wide early on
        rows_cal = cal_rows & has_rul
        if not rows_cal.any():
            rows_cal = fit_rows & has_rul
        truth = rul.to_numpy()[rows_cal]
        pred = np.maximum(self.regressor.predict(X[rows_cal]), 0.0)
        self.rul_offset = float(max(np.median(rul.to_numpy()[fit_rows & has_rul]) / 4, 1e-9))
        r = np.sort(np.abs(truth - pred) / (pred + self.rul_offset))
        k = min(len(r) - 1, int(np.ceil((len(r) + 1) * CONFORMAL_LEVEL)) - 1)
        self.rul_halfwidth = float(r[k])
        return self

    def rul_interval(self, rul: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The conformal interval around predicted RULs (90 % on exchangeable data)."""
        offset = getattr(self, "rul_offset", None)
        half = self.rul_halfwidth if offset is None else self.rul_halfwidth * (rul + offset)
        return np.maximum(rul - half, 0.0), rul + half

    def _check(self, history: RunHistory) -> pd.DataFrame:
        missing = [s for s in self.sensors if s not in history.rows.columns]
        if missing:
            raise SchemaError(
                f"runs: columns {missing} that the model was trained on are missing "
                f"(model sensors: {self.sensors})"
            )
        X = run_features(history)
        for c in self.categorical:
            X[c] = pd.Categorical(history.rows[c].astype(str), categories=self.categories[c])
        return X[self.features]

    def predict_rows(self, history: RunHistory) -> pd.DataFrame:
        """Probability, RUL and interval for every observation."""
        X = self._check(history)
        p = self.calibrator.predict(self.classifier.predict_proba(X)[:, 1])
        rul = np.maximum(self.regressor.predict(X), 0.0)
        lo, hi = self.rul_interval(rul)
        out = pd.DataFrame(
            {
                "run": history.rows["run"],
                "asset": history.rows["asset"],
                "t": history.rows["t"],
                "p_fail": p,
                "rul": rul,
                "rul_lo": lo,
                "rul_hi": hi,
            },
            index=history.rows.index,
        )
        return out

    def predict(self, history: RunHistory, *, explain: bool = True, top: int = 3) -> pd.DataFrame:
        """One row per asset at its last observation: RUL, interval, failure probability."""
        rows = self.predict_rows(history)
        last = rows.groupby("asset")["t"].idxmax()
        out = rows.loc[last].reset_index(drop=True)
        out["reasons"] = ""
        if explain and len(out):
            X = self._check(history).loc[last]
            contrib = self.classifier.predict(X, pred_contrib=True)[:, :-1]
            words = []
            for i in range(len(X)):
                order = [j for j in np.argsort(-contrib[i])[:top] if contrib[i, j] > 0]
                words.append(
                    "; ".join(
                        f"{self.features[j].replace('|', ' ')} = {_val(X.iloc[i, j])} "
                        f"(+{contrib[i, j]:.2f})"
                        for j in order
                    )
                )
            out["reasons"] = words
        return out


def _val(v) -> str:
    try:
        return _fmt(float(v))
    except (TypeError, ValueError):
        return str(v)
