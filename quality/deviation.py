"""The batch deviation model: early warning for QA triage.

The pipeline is chosen on the user's data by grouped cross-validation (folds of whole
batches, in time order where the batches have one), among:

- ``lgbm``: LightGBM on per-tag trajectory summaries (whole trajectory so far, a recent
  window, the golden-batch envelope), one model for every progress (progress is a feature),
  with complexity scaled to the number of batches and the number of boosting rounds chosen by
  the same folds' out-of-fold log loss;
- ``mspc``, ``unfolded`` and ``summary``: batch multivariate statistical process control
  (:mod:`quality.mspc`: multiway PCA, Hotelling T2 and SPE against limits from the normal
  batches) with a regularised logistic regression on the statistics; on the scaled
  unfolded trajectory and the statistics; or on the statistics and plain per-tag summaries
  (mean, standard deviation, slope, latest) of the scaled trajectory so far;
- ``average``: the mean log-odds of ``lgbm`` and the best of the linear ones.

The choice is made on the cross-validated ROC AUC (mean over progress 25-100 %) alone; the
same folds may choose another pipeline for the early part of a batch (progress before 50 %,
by the ROC AUC over the grid points there), since what ranks the few faults that show early
differs from what ranks the whole batch. The chosen pipelines are refitted on all batches.
Probabilities are calibrated on the chosen pipelines' out-of-fold scores, by the method the
same cross-validation prefers
(:func:`quality.calibration.choose_calibrator`). A second classifier names the likely
deviation class; one regressor per CQA predicts its value, with an interval per progress.

Intended use: rank batches in progress for QA review ("review by exception"). A QA reviewer
decides; the model never dispositions a batch.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.stats
from threadpoolctl import threadpool_limits

from quality.calibration import EvidenceGate, choose_calibrator
from quality.data import BatchHistory
from quality.errors import InputError, SchemaError
from quality.explain import format_reasons, linear_reason_pairs, reason_pairs, reason_tags
from quality.features import BatchFeaturizer, Cube
from quality.folds import fold_pool, run_folds
from quality.mspc import Trajectories, TrajectoryModel
from quality.selection import (
    CandidateResult,
    Selection,
    bootstrap_interval,
    choose,
    fast_auc,
    group_folds,
)
from quality.sensors import SensorCheck

__all__ = ["CANDIDATES", "PROGRESS_GRID", "DeviationModel"]

logger = logging.getLogger(__name__)

PROGRESS_GRID = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)
#: threads of BLAS and OpenMP while scoring: one. Scoring works on tens to hundreds of rows,
#: where a second thread costs more than it saves, and spin-waiting threads make it several
#: times slower when the machine's other core is busy, as it is in the live plant. (With
#: explanations only BLAS is held to one: LightGBM's SHAP values use both cores well.)
SCORING_THREADS = 1
#: the reasons of a batch at a progress where cross-validation showed no ranking evidence
NO_EVIDENCE = (
    "no evidence yet at this progress: in cross-validation the model did not rank faulted "
    "batches above normal ones this early; the score is the base rate (batches ordered "
    "among themselves by their distance from the normal batches)"
)
#: progress points whose cross-validated ROC AUC (mean) chooses the pipeline
SELECTION_PROGRESS = (0.25, 0.5, 0.75, 1.0)
#: before this progress the pipeline may be another one, chosen by the same folds' ROC AUC
#: over the grid points before it (early on, few faults show and what ranks them differs)
EARLY_END = 0.5
#: the evidence gate's one-sided level, shared by the candidates compared (Bonferroni)
GATE_ALPHA = 0.05
CANDIDATES = ("lgbm", "mspc", "unfolded", "summary", "monitor", "average")
LINEAR = ("mspc", "unfolded", "summary", "monitor")
N_FOLDS = 5
CONFORMAL_LEVEL = 0.9
#: what scoring works out once per fitted model and keeps (not part of the model's file)
_SCORING_CACHE = ("_tags_used", "_renamed_cache")
CLASS_MIN_COUNT = 3
#: numbers of boosting rounds the cross-validation chooses among (up to the cap,
#: ``n_estimators``) by out-of-fold log loss
ROUND_CANDIDATES = (10, 15, 20, 30, 40, 60, 80, 100)
DESCRIPTIONS = {
    "lgbm": "LightGBM on per-tag trajectory summaries (whole so far, recent window, envelope)",
    "mspc": "batch MSPC: multiway PCA T2 / SPE vs normal-batch limits + logistic regression",
    "unfolded": "logistic regression (L2) on the scaled unfolded trajectory + T2 / SPE",
    "summary": "logistic regression (L2) on per-tag mean / sd / slope / latest of the scaled "
    "trajectory so far + T2 / SPE",
    "monitor": "batch MSPC distance from the normal batches (SPE, latest SPE, largest per-tag "
    "SPE and recent deviation, standardised and averaged); labels only scale it",
    "average": "mean log-odds of lgbm and the better linear pipeline",
}


def _log_loss(y: np.ndarray, raw: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 outcomes under raw scores (log-odds)."""
    return float(np.mean(np.logaddexp(0.0, raw) - y * raw))


def _params(seed: int, **extra) -> dict:
    params = dict(
        n_estimators=120,
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


def _scaled_params(seed: int, n_batches: int) -> dict:
    """LightGBM complexity that follows the number of batches (tens are normal in pharma)."""
    if n_batches < 100:
        leaves, lr = 4, 0.05
    elif n_batches < 300:
        leaves, lr = 7, 0.06
    else:
        leaves, lr = 15, 0.07
    rows = n_batches * len(PROGRESS_GRID)
    return _params(
        seed,
        num_leaves=leaves,
        learning_rate=lr,
        min_child_samples=int(max(10, min(20, rows // 40))),
        reg_lambda=1.0 if n_batches < 300 else 0.0,
    )


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


def _sub_cube(cube: Cube, rows: np.ndarray) -> Cube:
    return Cube(
        ids=cube.ids[rows],
        value=cube.value[rows],
        t_h=cube.t_h[rows],
        sd=cube.sd[rows],
        bad=cube.bad[rows],
    )


def _fold_scores(payload: tuple):
    """A cross-validation fold as a task (:mod:`quality.folds`): ``DeviationModel._fold``."""
    model, *args = payload
    return model._fold(*args)


def _trajectories(cube: Cube) -> Trajectories:
    """The cube's running sums for the MSPC pipelines, computed once and kept on it."""
    if getattr(cube, "trajectories", None) is None:
        cube.trajectories = Trajectories.of(
            cube.value, cube.t_h, tacc=cube.running_time(), memo=cube.memo
        )
    return cube.trajectories


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    return fast_auc(y, s)


def _mean_auc(y: np.ndarray, oof: np.ndarray, cols: list[int]) -> float | None:
    """Mean over progress columns of the ROC AUC of batch x progress scores."""
    values = [_auc(y, oof[:, j]) for j in cols]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


@dataclass
class DeviationModel:
    """Probability of deviation / OOS, likely class and CQA predictions at any progress.

    Parameters
    ----------
    seed : int
        Seeds the folds, LightGBM's bagging and the calibration's folds; the same data and
        seed give the same model.
    progress_grid : tuple of float
        Progress points the training batches are seen at.
    candidates : tuple of str
        Pipelines compared by cross-validation (:data:`CANDIDATES`).
    """

    seed: int = 0
    progress_grid: tuple[float, ...] = PROGRESS_GRID
    candidates: tuple[str, ...] = CANDIDATES
    params: dict = field(default_factory=dict)
    featurizer: BatchFeaturizer | None = None
    features: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    cqa_cols: list[str] = field(default_factory=list)
    base_rate: float = 0.0
    rounds: int = 0
    rounds_cv_log_loss: dict = field(default_factory=dict)
    chosen: str = "lgbm"
    early: str | None = None
    average_of: str | None = None
    #: the fitted trajectory model whose ``monitor`` score orders batches where the evidence
    #: gate is closed (None: the gate is open everywhere)
    tie: str | None = None
    selection: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ fit
    def fit(self, history: BatchHistory, batch_ids=None, *, scheduler=None) -> DeviationModel:
        """Choose a pipeline by grouped cross-validation, refit it on all batches, calibrate.

        ``scheduler``: a Dask scheduler address for the cross-validation folds (default:
        ``$DASK_SCHEDULER_ADDRESS``, else this process; :mod:`quality.folds`); the same
        model either way.

        Raises
        ------
        InputError
            Too few labelled batches, or one outcome only.
        """
        for key in _SCORING_CACHE:
            self.__dict__.pop(key, None)
        ids = history.labelled() if batch_ids is None else pd.Index(batch_ids)
        ids = history.outcomes.loc[ids].sort_values("order", kind="stable").index
        labels = history.outcomes.loc[ids, "label"]
        if labels.isna().any():
            raise InputError("label: batches given for fitting must have a known outcome")
        if len(ids) < 20 or labels.astype(bool).nunique() < 2:
            raise InputError(
                f"label: need at least 20 labelled batches with both outcomes; got {len(ids)} "
                f"({int(labels.astype(bool).sum())} with a deviation)"
            )
        y_b = labels.astype(bool).to_numpy()
        self.base_rate = float(y_b.mean())
        self.featurizer = BatchFeaturizer().fit(history, ids)
        self.sensor_check = SensorCheck().fit(self.featurizer, history, ids)
        cube = self.featurizer.cube(history, ids)
        ordered = bool(getattr(history, "time_ordered", True))
        n_folds = N_FOLDS if len(ids) < 300 else 3
        fold_b = group_folds(
            ids, n_folds, ordered=ordered, seed=self.seed, labels=None if ordered else y_b
        ).to_numpy()
        self.params = {**_scaled_params(self.seed, len(ids)), **self.params}
        with fold_pool(scheduler) as pool:
            oof = self._cross_validate(history, ids, cube, y_b, fold_b, n_folds, pool)
        sel = self._select(oof, y_b, fold_b, n_folds, ordered)
        self.chosen = sel.chosen
        self.selection = sel.as_dict()
        for line in sel.lines():
            logger.info("%s", line)
        # refit on all batches: LightGBM always (class, CQA and drift use its features)
        X, y, rows = self._stack(history, ids)
        self.features = list(X.columns)
        self.classifier = lgb.LGBMClassifier(**{**self.params, "n_estimators": self.rounds})
        self.classifier.fit(X, y)
        self.linear = {}
        for name in self._members():
            if name != "lgbm":
                self.linear[name] = self._trajectory(name).fit(
                    _trajectories(cube), y_b, **self._cube_meta()
                )
        raw = oof[self.chosen].copy()
        if self.early is not None:
            early_cols = np.asarray(self.progress_grid) < EARLY_END
            raw[:, early_cols] = oof[self.early][:, early_cols]
        grid = np.tile(np.asarray(self.progress_grid), len(ids))
        groups = np.repeat(np.arange(len(ids)), len(self.progress_grid))
        y_rows = np.repeat(y_b, len(self.progress_grid)).astype(int)
        inner, self.calibration = choose_calibrator(
            raw.reshape(-1), y_rows, groups, progress=grid, seed=self.seed
        )
        # no claim where the out-of-fold scores show no ranking evidence (base rate there)
        # the evidence must survive the choice: the scores are the best of the candidates
        # compared on these same folds, so the test is at 5 % over their number (Bonferroni)
        k = max(1, len(self.selection.get("candidates", [])))
        z = float(scipy.stats.norm.ppf(1.0 - GATE_ALPHA / k))
        self.calibrator = EvidenceGate.fit(inner, raw.reshape(-1), y_rows, grid, z=z)
        closed = [
            p for p, o in zip(self.calibrator.points, self.calibrator.open, strict=True) if not o
        ]
        self.calibration["no_evidence_at_progress"] = closed
        self.calibration["evidence_z"] = round(z, 4)
        self._fit_tie(cube, y_b, closed)
        position = pd.Series(fold_b, index=ids)
        self._fit_classes(history, X, rows)
        self._fit_cqas(history, X, rows, position.reindex(rows).to_numpy())
        return self

    def _fit_tie(self, cube: Cube, y_b: np.ndarray, closed: list[float]) -> None:
        """Where the evidence gate is closed, batches are ordered by their distance from the
        normal batches (the ``monitor`` score, from the fitted ``mspc`` or ``monitor``
        pipeline, else one fitted here): a supervised model without evidence orders them by
        noise, a distance puts a batch whose fault has begun first."""
        self.tie = None
        if not closed:
            return
        self.tie = next((n for n in ("monitor", "mspc") if n in self.linear), "monitor")
        if self.tie not in self.linear:
            self.linear["monitor"] = self._trajectory("monitor").fit(
                _trajectories(cube), y_b, **self._cube_meta()
            )
        self.calibration["no_evidence_order"] = (
            f"distance from the normal batches (monitor score of the {self.tie} pipeline)"
        )

    def _tie_raw(self, cube: Cube, progress: np.ndarray) -> np.ndarray | None:
        """The tie-break log-odds of the rows where the evidence gate is not fully open
        (NaN elsewhere), or None."""
        tie = getattr(self, "tie", None)
        if tie is None:
            return None
        rows = np.flatnonzero(self.calibrator.openness(progress) < 1.0)
        out = np.full(len(progress), np.nan)
        if len(rows):
            traj = self.linear[tie]
            out[rows] = traj.raw(_trajectories(cube), progress, kind="monitor", rows=rows)
        return out

    def __getstate__(self) -> dict:
        # what scoring caches is not part of the model (its file, its bytes)
        return {k: v for k, v in self.__dict__.items() if k not in _SCORING_CACHE}

    def _renamed(self) -> bool:
        """Whether the classifier's features are not the featurizer's columns as they are
        (then scoring builds the feature table; cached: both are fixed once fitted)."""
        cached = self.__dict__.get("_renamed_cache")
        if cached is None:
            cached = self.featurizer.feature_names() != self.features
            self.__dict__["_renamed_cache"] = cached
        return cached

    def _booster_tags(self) -> np.ndarray:
        """Positions of the tags whose statistics the classifier's trees split on: scoring
        without explanations computes only theirs (the other columns cannot change a tree's
        answer; tests check the scores are the same)."""
        cached = self.__dict__.get("_tags_used")
        if cached is not None:
            return cached
        used = self.classifier.booster_.feature_importance("split") > 0
        names = {f.split("|", 1)[0] for f, u in zip(self.features, used, strict=True) if u}
        tags = np.array([j for j, t in enumerate(self.featurizer.tags) if t in names], int)
        self.__dict__["_tags_used"] = tags
        return tags

    def _cube_meta(self) -> dict:
        f = self.featurizer
        return {"tags": f.tags, "nominal_h": f.nominal_h, "bin_h": f.bin_h}

    def _trajectory(self, name: str) -> TrajectoryModel:
        C = 0.01 if name == "unfolded" else 0.1
        return TrajectoryModel(kind=name, C=C, grid=self.progress_grid, seed=self.seed)

    def _members(self, pipeline: str | None = None) -> list[str]:
        """The fitted pipelines whose mean log-odds is ``pipeline`` (default: both phases')."""
        if pipeline is None:
            names = self._members(self.chosen)
            extra = self._members(self.early) if self.early is not None else []
            return names + [n for n in extra if n not in names]
        if pipeline == "average":
            return ["lgbm", self.average_of]
        return [pipeline]

    def _early_rows(self, progress: np.ndarray) -> np.ndarray:
        """Rows scored by the early pipeline (none when it is the chosen one)."""
        if getattr(self, "early", None) is None:
            return np.zeros(len(progress), dtype=bool)
        return np.asarray(progress) < EARLY_END

    def _cross_validate(self, history, ids, cube, y_b, fold_b, n_folds, pool=None) -> dict:
        """Out-of-fold log-odds, batch x progress grid, of every candidate pipeline (the
        folds in ``pool``: :mod:`quality.folds`)."""
        n_p = len(self.progress_grid)
        cap = int(self.params["n_estimators"])
        rounds = [r for r in ROUND_CANDIDATES if r < cap] + [cap]
        linear = [c for c in LINEAR if c in self.candidates]
        for k in range(n_folds):
            train, held = fold_b != k, fold_b == k
            if not held.any() or len(np.unique(y_b[train])) < 2:
                raise InputError(
                    "label: a cross-validation fold's training batches have one outcome only; "
                    "more batches of each outcome are needed"
                )
        _trajectories(cube)  # computed once, here, and shipped with the cube
        payloads = [
            (self, history, ids, cube, y_b, fold_b, k, rounds, linear) for k in range(n_folds)
        ]
        lgbm_oof = np.zeros((len(rounds), len(ids), n_p))
        oof = {c: np.zeros((len(ids), n_p)) for c in linear}
        for held, lgbm_held, linear_held in run_folds(pool, _fold_scores, payloads):
            lgbm_oof[:, held] = lgbm_held
            for name in linear:
                oof[name][held] = linear_held[name]
        y_rows = np.repeat(y_b[:, None], n_p, axis=1)
        loss = [_log_loss(y_rows.ravel(), lgbm_oof[r].ravel()) for r in range(len(rounds))]
        best = int(np.argmin(loss))  # the first minimum: the fewest rounds among equals
        self.rounds = rounds[best]
        self.rounds_cv_log_loss = {r: round(v, 5) for r, v in zip(rounds, loss, strict=True)}
        logger.info("boosting rounds chosen by grouped CV: %d of %d", self.rounds, cap)
        oof["lgbm"] = lgbm_oof[best]
        return oof

    def _fold(self, history, ids, cube, y_b, fold_b, k, rounds, linear):
        """Fold ``k``: the held-out rows, their LightGBM log-odds (rounds x rows x progress)
        and each linear pipeline's (rows x progress), every model fitted without them."""
        train, held = np.flatnonzero(fold_b != k), np.flatnonzero(fold_b == k)
        n_p = len(self.progress_grid)
        # the envelope is re-learned without the held-out batches
        feat = copy.copy(self.featurizer)
        train_cube = _sub_cube(cube, train)  # one cube: its running sums are kept on it
        feat.learn_envelope(train_cube, ~y_b[train])
        Xtr = pd.concat(
            [feat.transform(history, ids[train], p, train_cube) for p in self.progress_grid]
        )
        ytr = np.tile(y_b[train], n_p)
        model = lgb.LGBMClassifier(**self.params).fit(Xtr, ytr)
        held_cube = _sub_cube(cube, held)
        lgbm = np.zeros((len(rounds), len(held), n_p))
        for j, p in enumerate(self.progress_grid):
            M = _feature_matrix(feat.transform(history, ids[held], p, held_cube))
            for r, n_rounds in enumerate(rounds):
                lgbm[r, :, j] = model.booster_.predict(M, raw_score=True, num_iteration=n_rounds)
        all_tr = _trajectories(cube)
        held_tr = all_tr.take(held)
        out, fitted = {}, {}
        for name in linear:
            # an mspc model gives the monitor score too: one fit for both
            source = "mspc" if name == "monitor" and "mspc" in linear else name
            if source not in fitted:
                fitted[source] = self._trajectory(source).fit(
                    all_tr.take(train), y_b[train], **self._cube_meta()
                )
            traj = fitted[source]
            out[name] = np.column_stack(
                [traj.raw(held_tr, p, kind=name) for p in self.progress_grid]
            )
        return held, lgbm, out

    def _select(self, oof: dict, y_b, fold_b, n_folds, ordered) -> Selection:
        cols = [j for j, p in enumerate(self.progress_grid) if p in SELECTION_PROGRESS]
        linear = [c for c in LINEAR if c in oof]
        extra = {}
        if "average" in self.candidates and "lgbm" in oof and linear:
            partner = max(linear, key=lambda c: _mean_auc(y_b, oof[c], cols) or 0.0)
            oof["average"] = (oof["lgbm"] + oof[partner]) / 2
            extra["average"] = {"average_of": partner}
        results = []
        for name in [c for c in self.candidates if c in oof]:
            score = oof[name]
            folds = [_mean_auc(y_b[fold_b == k], score[fold_b == k], cols) for k in range(n_folds)]
            folds = [f for f in folds if f is not None]
            pooled = _mean_auc(y_b, score, cols) or 0.5
            interval = bootstrap_interval(
                lambda s, sc=score: _mean_auc(y_b[s], sc[s], cols), len(y_b), seed=self.seed
            )
            per_p = {
                f"cv_auc_{int(self.progress_grid[j] * 100)}": round(
                    _auc(y_b, score[:, j]) or 0.5, 4
                )
                for j in cols
            }
            results.append(
                CandidateResult(
                    name=name,
                    description=DESCRIPTIONS[name],
                    cv_mean=pooled,
                    cv_sd=float(np.std(folds)) if len(folds) > 1 else float("nan"),
                    folds=folds,
                    interval=interval,
                    extra={**per_p, **extra.get(name, {})},
                )
            )
        sel = choose(
            results,
            metric="ROC AUC (out-of-fold, mean over progress 25-100 %)",
            higher_is_better=True,
            folds=n_folds,
            fold_kind="grouped by batch, "
            + ("blocked in time order" if ordered else "shuffled, stratified (no time order)"),
            groups=len(y_b),
        )
        self.average_of = extra.get("average", {}).get("average_of")
        if sel.chosen == "average":
            sel.why += f" (lgbm with {self.average_of})"
        self.early, sel.early = self._select_early(oof, y_b, sel)
        return sel

    def _select_early(self, oof: dict, y_b, sel: Selection) -> tuple[str | None, dict]:
        """The pipeline for progress before :data:`EARLY_END`: the best out-of-fold ROC AUC
        over the grid points there (the chosen one unless another is better to 4 decimals).
        """
        cols = [j for j, p in enumerate(self.progress_grid) if p < EARLY_END]
        if not cols:
            return None, {}
        names = [c.name for c in sel.candidates]
        auc = {n: round(_mean_auc(y_b, oof[n], cols) or 0.5, 4) for n in names}
        for c in sel.candidates:
            c.extra["cv_auc_early"] = auc[c.name]
        best = max(names, key=lambda n: (auc[n], n == sel.chosen))
        record = {
            "before_progress": EARLY_END,
            "metric": "ROC AUC (out-of-fold, mean over progress "
            + ", ".join(f"{self.progress_grid[j]:.0%}" for j in cols)
            + ")",
            "chosen": best,
            "cv_auc": auc,
        }
        if best == sel.chosen:
            record["why"] = f"the chosen pipeline is also the best early ({auc[best]:.4f})"
            return None, record
        record["why"] = (
            f"best early: {auc[best]:.4f} against {auc[sel.chosen]:.4f} for {sel.chosen}"
        )
        return best, record

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
        params = _params(self.seed, n_estimators=50, learning_rate=0.15)
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

    def _raw(self, history, ids, progress, cube: Cube, *, once: bool = False, frame=True):
        """Log-odds of the chosen pipeline (the early one before :data:`EARLY_END`), and the
        LightGBM feature rows (or None).

        ``frame=False`` (scoring without explanations) reads the features as the booster's
        float matrix directly, without building the feature table.
        """
        early = self._early_rows(progress)
        phases = [(self.chosen, ~early), (self.early, early)] if early.any() else []
        if not early.any() or early.all():
            phases = [(self.early if early.any() else self.chosen, np.ones(len(ids), bool))]
        raw, X = {}, None
        frame = frame or self._renamed()
        for name in {m for pipeline, _ in phases for m in self._members(pipeline)}:
            if name == "lgbm" and not frame:
                M = self.featurizer.matrix(history, ids, progress, cube, self._booster_tags())
                raw[name] = self.classifier.booster_.predict(M, raw_score=True)
            elif name == "lgbm":
                X = self.featurizer.transform(history, ids, progress, cube, once=once)
                X = X[self.features]
                M = _feature_matrix(X)
                raw[name] = self.classifier.booster_.predict(M, raw_score=True)
            else:
                raw[name] = self.linear[name].raw(_trajectories(cube), progress)
        out = np.zeros(len(ids))
        for pipeline, rows in phases:
            members = self._members(pipeline)
            out[rows] = np.mean([raw[m] for m in members], axis=0)[rows]
        return out, X

    @threadpool_limits.wrap(limits=SCORING_THREADS)
    def score(self, history: BatchHistory, batch_ids, progress, cube: Cube | None = None):
        """Calibrated probability of a deviation of ``batch_ids`` at ``progress``.

        ``progress`` is a fraction of the nominal duration, or one per batch; only data
        recorded up to it are used.
        """
        ids = pd.Index(batch_ids)
        cube = cube if cube is not None else self.featurizer.cube(history, ids)
        progress = np.broadcast_to(np.asarray(progress, dtype=float), (len(ids),))
        raw, _ = self._raw(history, ids, progress, cube, frame=False)
        return self.calibrator.predict(raw, progress, tie=self._tie_raw(cube, progress))

    @threadpool_limits.wrap(limits=SCORING_THREADS, user_api="blas")
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
        raw, X_chosen = self._raw(history, ids, progress, cube, once=True)
        X = X_chosen
        if X is None:
            X = self.featurizer.transform(history, ids, progress, cube, once=True)[self.features]
        out = pd.DataFrame(index=ids)
        out.index.name = "batch_id"
        out["progress"] = progress
        M = _feature_matrix(X)
        out["p_deviation"] = self.calibrator.predict(
            raw, progress, tie=self._tie_raw(cube, progress)
        )
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
        out["reasons"], out["reason_tags"] = "", ""
        if explain:
            pairs = self._reason_pairs(M, X, cube, progress)
            out["reasons"] = [format_reasons(row, top) for row in pairs]
            out["reason_tags"] = [reason_tags(row, top) for row in pairs]
        gate = getattr(self.calibrator, "openness", None)
        closed = (gate(progress) < 0.5) & ~no_data if gate is not None else np.zeros(len(ids), bool)
        if closed.any():
            out.loc[closed, "reasons"] = NO_EVIDENCE
            out.loc[closed, "reason_tags"] = ""
            out.loc[closed, "low_confidence"] = True
        out.loc[no_data, "reasons"] = "no data for this batch yet: the score is the base rate"
        out.loc[no_data, "reason_tags"] = ""
        return out

    def _reason_pairs(self, M, X, cube: Cube, progress) -> list[list[tuple]]:
        """The chosen pipeline's contributions as (log-odds, words, tag) for each batch (a
        mean of pipelines: both, halved; before :data:`EARLY_END`, the early pipeline's)."""
        early = self._early_rows(progress)
        parts = {}
        for name in self._members():
            if name == "lgbm":
                contrib = self.classifier.booster_.predict(M, pred_contrib=True)[:, :-1]
                parts[name] = reason_pairs(contrib, X, self)
            else:
                traj = self.linear[name]
                contrib, z, ratio = traj.contributions(_trajectories(cube), progress)
                parts[name] = linear_reason_pairs(
                    contrib, z, ratio, traj, self.featurizer.tag_names
                )
        pairs = []
        for i in range(len(X)):
            members = self._members(self.early if early[i] else self.chosen)
            w = 1.0 / len(members)
            pairs.append([(v * w, *rest) for m in members for v, *rest in parts[m][i]])
        return pairs
