"""The batch deviation model: early warning for QA triage.

One LightGBM classifier sees a batch at several progress points (progress is a feature), so
the same model scores a batch at 10 % and at 90 %. Probabilities are calibrated with a
logistic (Platt) map of the raw score whose slope and offset depend on progress, fitted on
blocked out-of-fold scores of the training batches (never on the test batches); strictly
monotone at each progress, it keeps the ranking (ROC AUC) there intact.
A second classifier names the likely deviation class; one regressor per CQA predicts its
value, with an interval per progress point.

Intended use: rank batches in progress for QA review ("review by exception"). A QA reviewer
decides; the model never dispositions a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd

from quality.calibration import Platt
from quality.data import BatchHistory
from quality.errors import InputError, SchemaError
from quality.explain import reasons
from quality.features import BatchFeaturizer
from quality.sensors import SensorCheck

__all__ = ["PROGRESS_GRID", "DeviationModel"]

logger = logging.getLogger(__name__)

PROGRESS_GRID = (0.1, 0.25, 0.4, 0.5, 0.65, 0.8, 1.0)
N_FOLDS = 3
CONFORMAL_LEVEL = 0.9
CLASS_MIN_COUNT = 3
#: numbers of boosting rounds the blocked cross-validation chooses among (up to the cap,
#: ``n_estimators``) by out-of-fold log loss
ROUND_CANDIDATES = (10, 15, 20, 30, 40, 60, 80, 120, 160)


def _log_loss(y: np.ndarray, raw: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 outcomes under raw scores (log-odds)."""
    return float(np.mean(np.logaddexp(0.0, raw) - y * raw))


def _params(seed: int, **extra) -> dict:
    params = dict(
        n_estimators=200,
        learning_rate=0.07,
        num_leaves=15,
        min_child_samples=20,
        colsample_bytree=0.3,
        max_bin=63,
        subsample=0.8,
        subsample_freq=1,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=2,
        verbose=-1,
    )
    params.update(extra)
    return params


def _feature_matrix(X: pd.DataFrame) -> np.ndarray:
    """Feature rows as LightGBM's pandas path hands them to the booster, without its per-call
    dtype checks and conversions (most of the time of a small prediction): floats, and a
    categorical column as its category code (missing: NaN). The featurizer fixes the
    categories at fit time, so the codes are the training codes (tested: same scores)."""
    is_cat = np.array([isinstance(dt, pd.CategoricalDtype) for dt in X.dtypes])
    if not is_cat.any():
        return X.to_numpy(dtype=np.float64)
    out = np.empty(X.shape, dtype=np.float64)
    out[:, ~is_cat] = X.iloc[:, np.flatnonzero(~is_cat)].to_numpy(dtype=np.float64)
    for j in np.flatnonzero(is_cat):
        codes = X.iloc[:, j].cat.codes.to_numpy().astype(np.float64)
        codes[codes < 0] = np.nan
        out[:, j] = codes
    return out


@dataclass
class DeviationModel:
    """Probability of deviation / OOS, likely class and CQA predictions at any progress.

    Parameters
    ----------
    seed : int
        Seeds LightGBM's bagging; the same data and seed give the same model.
    progress_grid : tuple of float
        Progress points the training batches are seen at.
    """

    seed: int = 0
    progress_grid: tuple[float, ...] = PROGRESS_GRID
    params: dict = field(default_factory=dict)
    featurizer: BatchFeaturizer | None = None
    features: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    cqa_cols: list[str] = field(default_factory=list)
    base_rate: float = 0.0
    rounds: int = 0
    rounds_cv_log_loss: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ fit
    def fit(self, history: BatchHistory, batch_ids=None) -> DeviationModel:
        """Fit on labelled batches (default: all); calibration and intervals by cross-fitting.

        Raises
        ------
        InputError
            Too few labelled batches, or one outcome only.
        """
        ids = history.labelled() if batch_ids is None else pd.Index(batch_ids)
        ids = history.outcomes.loc[ids].sort_values("order").index
        labels = history.outcomes.loc[ids, "label"]
        if labels.isna().any():
            raise InputError("label: batches given for fitting must have a known outcome")
        if len(ids) < 20 or labels.astype(bool).nunique() < 2:
            raise InputError(
                f"label: need at least 20 labelled batches with both outcomes; got {len(ids)} "
                f"({int(labels.astype(bool).sum())} with a deviation)"
            )
        self.featurizer = BatchFeaturizer().fit(history, ids)
        self.sensor_check = SensorCheck().fit(self.featurizer, history, ids)
        X, y, rows = self._stack(history, ids)
        self.features = list(X.columns)
        self.base_rate = float(labels.astype(bool).mean())
        self.params = _params(self.seed, **self.params)
        # blocked cross-fitting: each batch's out-of-fold score comes from a model that did
        # not see it; those scores fit the calibration and the conformal widths, and choose
        # the number of boosting rounds (more than the data support fit noise in ~900 features)
        position = pd.Series(np.arange(len(ids)) * N_FOLDS // len(ids), index=ids)
        fold = position.reindex(rows).to_numpy()
        cap = int(self.params["n_estimators"])
        candidates = [r for r in ROUND_CANDIDATES if r < cap] + [cap]
        oof = np.zeros((len(candidates), len(X)))
        for k in range(N_FOLDS):
            train = fold != k
            model = lgb.LGBMClassifier(**self.params).fit(X[train], y[train])
            M = _feature_matrix(X[~train])
            for j, rounds in enumerate(candidates):
                oof[j, ~train] = model.booster_.predict(M, raw_score=True, num_iteration=rounds)
        loss = [_log_loss(y, raw) for raw in oof]
        best = int(np.argmin(loss))  # the first minimum: the fewest rounds among equals
        self.rounds = candidates[best]
        self.rounds_cv_log_loss = {r: round(v, 5) for r, v in zip(candidates, loss, strict=True)}
        logger.info("boosting rounds chosen by blocked CV: %d of %d", self.rounds, cap)
        self.classifier = lgb.LGBMClassifier(**{**self.params, "n_estimators": self.rounds})
        self.classifier.fit(X, y)
        self.calibrator = Platt().fit(oof[best], y, progress=X["progress"].to_numpy())
        self._fit_classes(history, X, rows)
        self._fit_cqas(history, X, rows, fold)
        return self

    def _stack(self, history: BatchHistory, ids) -> tuple[pd.DataFrame, np.ndarray, pd.Index]:
        cube = self.featurizer.cube(history, ids)
        parts = [self.featurizer.transform(history, ids, p, cube) for p in self.progress_grid]
        X = pd.concat(parts)
        y = history.outcomes.loc[X.index, "label"].astype(bool).to_numpy()
        return X, y, X.index

    def _fit_classes(self, history: BatchHistory, X: pd.DataFrame, rows: pd.Index) -> None:
        cls = history.outcomes.loc[rows, "dev_class"]
        known = cls.notna().to_numpy() & history.outcomes.loc[rows, "label"].astype(bool).to_numpy()
        counts = cls[known].value_counts() / len(self.progress_grid)
        self.classes = sorted(counts[counts >= CLASS_MIN_COUNT].index)
        self.class_model = None
        if len(self.classes) >= 2:
            keep = known & cls.isin(self.classes).to_numpy()
            self.class_model = lgb.LGBMClassifier(
                **_params(self.seed, n_estimators=60, min_child_samples=10)
            ).fit(X[keep], cls[keep].astype(str).to_numpy())

    def _fit_cqas(self, history, X, rows, fold) -> None:
        self.cqa_cols, self.cqa_models, self.cqa_halfwidth = [], {}, {}
        prog = X["progress"].to_numpy()
        params = _params(self.seed, n_estimators=80, learning_rate=0.1)
        for col in history.cqa_cols:
            y = history.outcomes.loc[rows, col].to_numpy(dtype=float)
            ok = np.isfinite(y)
            if ok.sum() < 20:
                continue
            resid = np.full(len(X), np.nan)
            for k in range(N_FOLDS):
                train, held = ok & (fold != k), ok & (fold == k)
                if train.sum() < 20 or not held.any():
                    continue
                part = lgb.LGBMRegressor(**params).fit(X[train], y[train])
                resid[held] = np.abs(y[held] - part.predict(X[held]))
            width = {}
            for p in self.progress_grid:
                r = np.sort(resid[np.isclose(prog, p) & np.isfinite(resid)])
                if len(r) == 0:
                    continue
                k = min(len(r) - 1, int(np.ceil((len(r) + 1) * CONFORMAL_LEVEL)) - 1)
                width[p] = float(r[k])
            if not width:
                continue
            self.cqa_cols.append(col)
            self.cqa_models[col] = lgb.LGBMRegressor(**params).fit(X[ok], y[ok])
            self.cqa_halfwidth[col] = width

    # ------------------------------------------------------------------ predict
    def check_schema(self, history: BatchHistory) -> list[str]:
        """Tags the model needs that the data lacks (a defined result: they become missing).

        Raises
        ------
        SchemaError
            If none of the model's tags is present (data of another process or model).
        """
        present = set(history.bins["tag"].unique())
        needed = [t for t in self.featurizer.tags if not t.startswith("asset.")]
        missing = [t for t in needed if t not in present]
        if needed and len(missing) == len(needed) and len(history.bins):
            raise SchemaError(
                f"tags: none of the {len(needed)} tags this model was trained on is in the data "
                f"(e.g. {needed[0]!r}); data tags: {sorted(present)[:5]}"
            )
        return missing

    def features_at(self, history: BatchHistory, batch_ids, progress) -> pd.DataFrame:
        """Feature rows of ``batch_ids`` at ``progress`` (a fraction or one per batch)."""
        X = self.featurizer.transform(history, batch_ids, progress)
        return X[self.features]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of a deviation for feature rows."""
        if list(X.columns) != self.features:
            raise SchemaError(
                "features: the columns differ from the model's feature list "
                f"({len(X.columns)} given, {len(self.features)} expected)"
            )
        return self._probability(_feature_matrix(X))

    def _probability(self, M: np.ndarray) -> np.ndarray:
        raw = self.classifier.booster_.predict(M, raw_score=True)
        return self.calibrator.predict(raw, progress=M[:, self.features.index("progress")])

    def predict(
        self,
        history: BatchHistory,
        batch_ids=None,
        progress=None,
        *,
        explain: bool = True,
        top: int = 3,
    ) -> pd.DataFrame:
        """Score batches: probability, class, CQA intervals, reasons, sensor flags.

        Parameters
        ----------
        progress : float or array, optional
            Default: each batch's own progress (elapsed batch time / nominal duration,
            capped at 1) from its data.
        """
        ids = pd.Index(history.outcomes.index if batch_ids is None else batch_ids)
        missing = self.check_schema(history)
        ctx_cols = [*self.featurizer.context_numeric, *self.featurizer.context_categories]
        missing += [f"context {c}" for c in ctx_cols if c not in history.outcomes.columns]
        cube = self.featurizer.cube(history, ids)
        if progress is None:
            seen = np.where(np.isfinite(cube.t_h), cube.t_h, -np.inf).max(axis=(1, 2))
            progress = np.clip(seen / self.featurizer.nominal_h, 0.0, 1.0)
            progress = np.where(np.isfinite(progress), progress, 0.0)
        progress = np.broadcast_to(np.asarray(progress, dtype=float), (len(ids),))
        X = self.featurizer.transform(history, ids, progress, cube, once=True)[self.features]
        out = pd.DataFrame(index=ids)
        out.index.name = "batch_id"
        out["progress"] = progress
        if list(X.columns) != self.features:
            raise SchemaError("features: the columns differ from the model's feature list")
        M = _feature_matrix(X)
        out["p_deviation"] = self._probability(M)
        no_data = np.isinf(cube.t_h).all(axis=(1, 2)) | (progress <= 0)
        if self.class_model is not None:
            pc = self.class_model.booster_.predict(M)
            if pc.ndim == 1:  # two classes: the booster gives P(second class)
                pc = np.column_stack([1.0 - pc, pc])
            best = pc.argmax(axis=1)
            out["likely_class"] = np.asarray(self.class_model.classes_)[best]
            out["p_class"] = pc[np.arange(len(ids)), best]
        else:
            out["likely_class"], out["p_class"] = None, np.nan
        for col in self.cqa_cols:
            pred = self.cqa_models[col].booster_.predict(M)
            grid = np.array(sorted(self.cqa_halfwidth[col]))
            near = grid[np.abs(grid[None, :] - progress[:, None]).argmin(axis=1)]
            half = np.array([self.cqa_halfwidth[col][p] for p in near])
            out[f"{col}_pred"], out[f"{col}_lo"], out[f"{col}_hi"] = pred, pred - half, pred + half
        flags = self.sensor_check.check(cube, progress * self.featurizer.nominal_h)
        out["suspect_sensors"] = [", ".join(f) for f in flags]
        out["low_confidence"] = [bool(f) for f in flags] | no_data
        if missing:
            note = f"missing inputs: {', '.join(missing[:3])}" + ("..." if len(missing) > 3 else "")
            out["suspect_sensors"] = [f"{s}; {note}" if s else note for s in out["suspect_sensors"]]
            out["low_confidence"] = True
        out.loc[no_data, "p_deviation"] = self.base_rate
        out["reasons"] = ""
        if explain:
            contrib = self.classifier.booster_.predict(M, pred_contrib=True)
            out["reasons"] = reasons(contrib[:, :-1], X, self, top=top)
        out.loc[no_data, "reasons"] = "no data for this batch yet: the score is the base rate"
        return out
