"""The asset model: failure within a horizon and remaining useful life, for planners.

From run-to-failure histories (:class:`quality.data.RunHistory`), every observation gets
causal features in the data's own time base (cycles, hours or timestamps):

- per sensor: its value, and its mean, standard deviation and least-squares slope (per time
  unit) over trailing windows of the last ``w`` observations, the window lengths chosen by
  cross-validation on a grid reaching about 100 observations;
- health relative to the asset's early life: the recent mean minus the mean of the run's
  first observations (each asset starts from its own baseline);
- operating-regime normalisation when the user names the operating-setting columns
  (``setting_cols``): the settings are clustered (k-means, the number of regimes by
  silhouette), and each sensor is standardised within its regime on the training rows;
- the time since the run began.

Two targets: *fails within the horizon* (unknown, never guessed, for observations of runs
censored within the horizon) and *remaining useful life*, learned from failed runs and
capped at ``rul_cap`` (with a cap, also from the rows of censored runs observed at least
the cap before their censoring; the piecewise-linear target: health does not degrade early in life;
the cap is the user's, or chosen by cross-validation). Candidates (window sets, then cap and
loss: squared error or Huber) are compared by grouped cross-validation (whole assets, or runs
in time order for timestamped data) on the RUL RMSE of every observation of the held-out
failed runs (every cut-off point equally); the chosen one is refitted on all runs, averaged
over ``n_seeds`` seeds if asked. The RUL interval is a normalised conformal interval from the
out-of-fold errors; the failure probability is calibrated on out-of-fold scores by the
method the cross-validation prefers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from quality.calibration import choose_calibrator
from quality.data import RunHistory
from quality.errors import InputError, SchemaError
from quality.explain import _fmt
from quality.folds import fold_pool, run_folds
from quality.selection import CandidateResult, bootstrap_interval, choose, group_folds

__all__ = ["MaintenanceModel", "phm_score", "run_features", "split_runs"]

logger = logging.getLogger(__name__)

CONFORMAL_LEVEL = 0.9
#: folds of the cross-validation: 5, or 4 beyond 100 runs (enough to rank candidates)
N_FOLDS = 5
#: window sets (in observations) the cross-validation chooses among
WINDOW_SETS = ((5, 10, 20), (10, 30), (5, 10, 20, 30, 50), (10, 20, 50, 100))
EARLY_OBS = 20
#: cross-validation fits see at most this many rows (every k-th of a run: neighbouring
#: observations of a run carry nearly the same information); the final fit sees all
CV_MAX_ROWS = 5000
#: boosting rounds the cross-validation reads each candidate at (one fit per fold)
ROUNDS = (50, 100, 150, 200)
#: tree shapes the second stage compares (LightGBM parameters)
TREES = {
    "15 leaves": {"num_leaves": 15},
    "31 leaves": {"num_leaves": 31},
    "31 leaves, leaves of 100+, 30 % of features": {
        "num_leaves": 31,
        "min_child_samples": 100,
        "colsample_bytree": 0.3,
    },
}
#: Huber's threshold as a share of the RUL cap (or of the median RUL without one)
HUBER_SHARE = 0.15
MAX_REGIMES = 8


def _group_starts(run: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's run (rows sorted by run, then time)."""
    change = np.r_[True, run[1:] != run[:-1]]
    return np.maximum.accumulate(np.where(change, np.arange(len(run)), 0))


def _window_sums(x: np.ndarray, start: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum over the last ``w`` rows of each row's run (rows x cols), and the row count."""
    cs = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    i = np.arange(len(x))
    lo = np.maximum(i - w + 1, start)
    return cs[i + 1] - cs[lo], (i - lo + 1).astype(float)


def run_features(
    history: RunHistory,
    windows=(5, 10, 20),
    regimes=None,
    sensors: list[str] | None = None,
) -> pd.DataFrame:
    """Per-observation causal features (see the module docstring).

    Parameters
    ----------
    windows : tuple of int
        Trailing window lengths in observations.
    regimes : _Regimes, optional
        Fitted operating-regime normalisation.
    sensors : list of str, optional
        Numeric sensor columns to use (default: the history's numeric sensors).
    """
    rows = history.rows
    run = rows["run"].to_numpy()
    start = _group_starts(run)
    t = rows["t"].to_numpy(dtype=float)
    t_in = t - t[start]
    if sensors is None:
        sensors = [c for c in history.sensors if c not in history.categorical]
    V = rows[sensors].to_numpy(dtype=float) if sensors else np.zeros((len(rows), 0))
    if regimes is not None:
        V = regimes.normalise(rows, sensors, V)
    feats = {"t_in_run": t_in}
    ok = np.isfinite(V)
    Vz = np.where(ok, V, 0.0)
    # early life: mean over the run's first EARLY_OBS observations (so far, if fewer)
    _n_early, _ = _window_sums(ok.astype(float), start, 10**9)
    i = np.arange(len(rows))
    k_early = np.minimum(i - start + 1, EARLY_OBS)
    cs = np.vstack([np.zeros((1, V.shape[1])), np.cumsum(Vz, axis=0)])
    cn = np.vstack([np.zeros((1, V.shape[1])), np.cumsum(ok, axis=0)])
    with np.errstate(all="ignore"):
        early = (cs[start + k_early] - cs[start]) / (cn[start + k_early] - cn[start])
    tt = np.where(ok, t_in[:, None], 0.0)
    for j, col in enumerate(sensors):
        feats[col] = V[:, j]
    short = min(windows)
    # the trailing windows, and the whole run so far (expanding: its mean and trend)
    for w in (*windows, None):
        span = 10**9 if w is None else w
        tag = "all" if w is None else str(w)
        s, _ = _window_sums(Vz, start, span)
        n, _ = _window_sums(ok.astype(float), start, span)
        ss, _ = _window_sums(Vz * Vz, start, span)
        st, _ = _window_sums(tt, start, span)
        stt, _ = _window_sums(tt * tt, start, span)
        stv, _ = _window_sums(tt * Vz, start, span)
        with np.errstate(all="ignore"):
            mean = np.where(n > 0, s / n, np.nan)
            sd = np.sqrt(np.maximum(ss / n - mean**2, 0.0))
            den = n * stt - st**2
            slope = np.where((n > 2) & (den > 1e-12), (n * stv - st * s) / den, np.nan)
        for j, col in enumerate(sensors):
            feats[f"{col}|slope{tag}"] = slope[:, j]
            if w is None:
                continue
            feats[f"{col}|mean{tag}"] = mean[:, j]
            feats[f"{col}|sd{tag}"] = np.where(n[:, j] > 1, sd[:, j], np.nan)
            if w == short:
                feats[f"{col}|vs_early"] = mean[:, j] - early[:, j]
    X = pd.DataFrame(feats, index=rows.index)
    for col in history.categorical:
        X[col] = rows[col].astype("category")
    return X


@dataclass
class _Regimes:
    """Operating regimes (k-means of the setting columns) and per-regime sensor scaling."""

    setting_cols: list[str]
    seed: int = 0
    k: int = 1

    def fit(self, rows: pd.DataFrame, sensors: list[str]) -> _Regimes:
        S = rows[self.setting_cols].to_numpy(dtype=float)
        S = np.where(np.isfinite(S), S, np.nanmedian(S, axis=0))
        self.mu, self.sd = S.mean(axis=0), np.where(S.std(axis=0) > 0, S.std(axis=0), 1.0)
        Z = (S - self.mu) / self.sd
        rng = np.random.default_rng(self.seed)
        sample = Z[rng.choice(len(Z), size=min(len(Z), 4000), replace=False)]
        best, self.km, self.silhouettes = (0.5, 1), None, {}
        for k in range(2, MAX_REGIMES + 1):
            if len(np.unique(sample.round(6), axis=0)) <= k:
                break
            km = KMeans(n_clusters=k, n_init=4, random_state=self.seed).fit(sample)
            score = float(silhouette_score(sample, km.labels_))
            self.silhouettes[k] = round(score, 3)
            if score > best[0]:
                best, self.km = (score, k), km
        self.k = best[1]
        label = self._label(rows)
        V = rows[sensors].to_numpy(dtype=float)
        self.stats = {}
        for r in range(self.k):
            m = label == r
            mu = np.nanmean(V[m], axis=0) if m.any() else np.zeros(V.shape[1])
            sd = np.nanstd(V[m], axis=0) if m.any() else np.ones(V.shape[1])
            self.stats[r] = (np.nan_to_num(mu), np.where(sd > 1e-12, sd, 1.0))
        return self

    def _label(self, rows: pd.DataFrame) -> np.ndarray:
        if self.km is None:
            return np.zeros(len(rows), dtype=int)
        S = rows[self.setting_cols].to_numpy(dtype=float)
        S = np.where(np.isfinite(S), S, self.mu)
        return self.km.predict((S - self.mu) / self.sd)

    def normalise(self, rows: pd.DataFrame, sensors: list[str], V: np.ndarray) -> np.ndarray:
        label = self._label(rows)
        out = V.copy()
        for r, (mu, sd) in self.stats.items():
            m = label == r
            out[m] = (V[m] - mu) / sd
        return out


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


def _rul_fold(payload: tuple) -> np.ndarray:
    """A cross-validation fold as a task (:mod:`quality.folds`): the RUL regressor fitted on
    the fold's training rows, its predictions of the held-out rows at each of
    :data:`ROUNDS`."""
    params, X_train, y_train, X_held = payload
    m = lgb.LGBMRegressor(**params).fit(X_train, y_train)
    return np.array([np.maximum(m.predict(X_held, num_iteration=n), 0.0) for n in ROUNDS])


def _known_target(failed: np.ndarray, rul: np.ndarray, cap: float | None) -> np.ndarray:
    """Rows whose (capped) RUL target is known: every row of a failed run, and the rows of
    a censored run observed at least ``cap`` before its censoring (their capped RUL is the
    cap: the run went on that long at least, and the target does not look further)."""
    if cap is None:
        return failed
    return failed | (np.asarray(rul) >= cap)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@dataclass
class MaintenanceModel:
    """Failure-within-horizon probability and remaining useful life per asset.

    Parameters
    ----------
    horizon : float, optional
        In the time unit of the data (hours for timestamps, else cycles). Default: a tenth
        of the median failed-run length (at least one observation step).
    rul_cap : float, optional
        Cap of the RUL target; default: chosen by cross-validation (none, or 50 % / 65 % of
        the median failed-run length).
    setting_cols : list of str
        Operating-setting columns for regime normalisation.
    n_seeds : int
        Final regressors averaged over this many seeds.
    seed : int
    """

    horizon: float | None = None
    rul_cap: float | None = None
    seed: int = 0
    setting_cols: list[str] = field(default_factory=list)
    n_seeds: int = 1
    features: list[str] = field(default_factory=list)
    sensors: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    time_is_datetime: bool = True
    windows: tuple[int, ...] = (5, 10, 20)
    loss: str = "l2"
    trees: str = "15 leaves"
    rounds: int = 200
    selection: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)

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

    def _params(self, n_rows: int, **extra) -> dict:
        params = dict(
            n_estimators=max(ROUNDS),
            learning_rate=0.1,
            num_leaves=15,
            max_bin=63,
            min_child_samples=max(20, n_rows // 500),
            colsample_bytree=0.5,
            subsample=0.8,
            subsample_freq=1,
            reg_lambda=1.0,
            random_state=self.seed,
            deterministic=True,
            # one thread for the many small cross-validation fits (robust when the machine is
            # busy: LightGBM's threads spin-wait), both cores for the final fits
            n_jobs=1 if n_rows <= CV_MAX_ROWS else 2,
            verbose=-1,
        )
        params.update(extra)
        return params

    def _features(self, history: RunHistory, windows=None) -> pd.DataFrame:
        return run_features(
            history,
            windows=windows or self.windows,
            regimes=getattr(self, "regimes", None),
            sensors=self.numeric,
        )

    # ------------------------------------------------------------------ fit
    def fit(self, history: RunHistory, run_ids=None, *, scheduler=None) -> MaintenanceModel:
        """Choose features, cap and loss by grouped cross-validation; refit on ``run_ids``.

        ``scheduler``: a Dask scheduler address for the cross-validation folds (default:
        ``$DASK_SCHEDULER_ADDRESS``, else this process; :mod:`quality.folds`); the same
        model either way.

        Raises
        ------
        InputError
            No failure to learn from, too few runs, or an unknown setting column.
        """
        rows = history.rows
        runs = pd.Index(rows["run"].unique() if run_ids is None else run_ids)
        keep = rows["run"].isin(runs).to_numpy()
        sub = RunHistory(
            rows=rows[keep].reset_index(drop=True),
            sensors=history.sensors,
            time_is_datetime=history.time_is_datetime,
            categorical=history.categorical,
        )
        r = sub.rows
        missing = [c for c in self.setting_cols if c not in r.columns]
        if missing:
            raise InputError(f"setting_cols: column {missing[0]!r} is not in the runs table")
        self.sensors, self.categorical = list(history.sensors), list(history.categorical)
        self.time_is_datetime = history.time_is_datetime
        numeric = [c for c in self.sensors if c not in self.categorical]
        spread = r[numeric].std() if numeric else pd.Series(dtype=float)
        self.numeric = [c for c in numeric if np.isfinite(spread[c]) and spread[c] > 0]
        self.dropped_constant = [c for c in numeric if c not in self.numeric]
        failed = r[r["failed_run"]].groupby("run")["t"].agg(lambda t: t.max() - t.min())
        if len(failed) < 3:
            raise InputError(
                f"failure: {len(failed)} runs end in a failure; at least 3 are needed to fit"
            )
        median_life = float(failed.median())
        step = float(r.groupby("run")["t"].diff().median())
        self.step = step if np.isfinite(step) and step > 0 else 1.0
        if self.horizon is None:
            # the data's own time base: a tenth of the median life (hours or cycles alike)
            self.horizon = max(self.step, 0.1 * median_life)
        self.regimes = None
        if self.setting_cols:
            self.regimes = _Regimes(list(self.setting_cols), self.seed).fit(r, self.numeric)
        max_obs = max(5, int(failed.max() / self.step))
        window_sets = [tuple(w for w in ws if w <= max_obs) for ws in WINDOW_SETS]
        window_sets = list(dict.fromkeys(ws for ws in window_sets if ws))
        # folds: whole assets (cycles), or runs in time order (timestamps)
        if self.time_is_datetime:
            order = r.groupby("run")["t"].min().sort_values()
            groups = pd.Series(order.index, index=order.index)
            n_folds = N_FOLDS if len(order) <= 100 else N_FOLDS - 1
            fold_of = group_folds(order.index, n_folds, ordered=True)
        else:
            assets = pd.Index(sorted(r["asset"].unique()))
            fold_a = group_folds(assets, N_FOLDS, ordered=False, seed=self.seed)
            groups = r.groupby("run")["asset"].first()
            fold_of = fold_a.reindex(groups.to_numpy()).set_axis(groups.index)
        fold = fold_of.reindex(r["run"]).to_numpy()
        with fold_pool(scheduler) as pool:
            self._select(sub, window_sets, fold, median_life, pool)
        self._final_fit(sub, fold)
        return self

    def _loss_params(self, loss: str, cap, truth) -> dict:
        if loss != "huber":
            return {}
        scale = cap if cap is not None else float(np.nanmedian(truth))
        return {"objective": "huber", "alpha": HUBER_SHARE * scale}

    def _cv_rul(
        self, X, truth, has, fold, *, cap, loss, trees="15 leaves", pool=None
    ) -> np.ndarray:
        """Out-of-fold RUL predictions at each of :data:`ROUNDS` (rounds x rows; NaN outside
        failed runs); the folds in ``pool`` (:mod:`quality.folds`)."""
        y = truth if cap is None else np.minimum(truth, cap)
        learn = _known_target(has, truth, cap)
        out = np.full((len(ROUNDS), len(X)), np.nan)
        extra = self._loss_params(loss, cap, truth[has])
        stride = _stride(len(X), int(learn.sum()))
        payloads, targets = [], []
        for k in np.unique(fold):
            tr, te = learn & (fold != k) & stride, has & (fold == k)
            if not tr.any() or not te.any():
                continue
            params = self._params(int(tr.sum()), **{**TREES[trees], **extra})
            payloads.append((params, X[tr], y[tr], X[te]))
            targets.append(te)
        for te, preds in zip(targets, run_folds(pool, _rul_fold, payloads), strict=True):
            out[:, te] = preds
        return out

    def _result(self, name, desc, preds, truth_eval, has, fold, extra):
        """The candidate's figures at its best number of rounds, and those predictions."""
        ok = has & np.isfinite(preds[0])
        best = int(np.argmin([_rmse(p[ok], truth_eval[ok]) for p in preds]))
        pred = preds[best]
        per_fold = [
            _rmse(pred[ok & (fold == k)], truth_eval[ok & (fold == k)])
            for k in np.unique(fold)
            if (ok & (fold == k)).any()
        ]
        idx = np.flatnonzero(ok)
        interval = bootstrap_interval(
            lambda s: _rmse(pred[idx[s]], truth_eval[idx[s]]), len(idx), seed=self.seed, n=100
        )
        result = CandidateResult(
            name=name,
            description=desc,
            cv_mean=_rmse(pred[ok], truth_eval[ok]),
            cv_sd=float(np.std(per_fold)),
            folds=per_fold,
            interval=interval,
            extra={**extra, "rounds": ROUNDS[best]},
        )
        return result, pred

    def _select(self, sub: RunHistory, window_sets, fold, median_life, pool=None) -> None:
        r = sub.rows
        truth = r["rul"].to_numpy(dtype=float)
        has = r["failed_run"].to_numpy()
        truth_eval = truth if self.rul_cap is None else np.minimum(truth, self.rul_cap)
        results, oof = [], {}
        first_cap = self.rul_cap if self.rul_cap is not None else 0.65 * median_life
        # stage 1: window sets (squared error; the user's cap, else 65 % of the median life)
        for ws in window_sets:
            X = self._features(sub, ws)
            name = "windows " + ",".join(map(str, ws))
            preds = self._cv_rul(X, truth, has, fold, cap=first_cap, loss="l2", pool=pool)
            res, pred = self._result(
                name,
                f"trailing windows of {ws} observations",
                preds,
                truth_eval,
                has,
                fold,
                {"windows": list(ws), "rul_cap": first_cap, "loss": "l2", "trees": "15 leaves"},
            )
            results.append(res)
            oof[name] = pred
        best_ws = min(results, key=lambda c: c.cv_mean).extra["windows"]
        X = self._features(sub, tuple(best_ws))
        # stage 2 on the best windows: cap (if not the user's), Huber loss, larger trees
        caps = [self.rul_cap] if self.rul_cap is not None else [None, 0.5 * median_life]
        variants = [(cap, "huber", "15 leaves") for cap in caps]
        variants += [(first_cap, "l2", t) for t in TREES if t != "15 leaves"]
        variants += [(cap, "l2", "15 leaves") for cap in caps if cap != first_cap]
        for cap, loss, trees in variants:
            name = f"windows {','.join(map(str, best_ws))}, cap {_cap_text(cap)}, {loss}, {trees}"
            preds = self._cv_rul(X, truth, has, fold, cap=cap, loss=loss, trees=trees, pool=pool)
            res, pred = self._result(
                name,
                f"windows {best_ws}, RUL cap {_cap_text(cap)}, {loss} loss, {trees}",
                preds,
                truth_eval,
                has,
                fold,
                {"windows": list(best_ws), "rul_cap": cap, "loss": loss, "trees": trees},
            )
            results.append(res)
            oof[name] = pred
        # the mean of the three best: averaging window sets, losses and tree shapes
        top = sorted(results, key=lambda c: c.cv_mean)[:3]
        if len(top) == 3:
            preds = np.mean([oof[c.name] for c in top], axis=0)[None, :]
            res, pred = self._result(
                "mean of the best three",
                "mean prediction of the three best candidates above",
                preds,
                truth_eval,
                has,
                fold,
                {"members": [c.name for c in top]},
            )
            results.append(res)
            oof[res.name] = pred
        sel = choose(
            results,
            metric="RUL RMSE (out-of-fold, every observation of held-out failed runs)",
            higher_is_better=False,
            folds=len(np.unique(fold)),
            fold_kind="grouped by asset" if not self.time_is_datetime else "runs in time order",
            groups=int(sub.rows["run"].nunique()),
        )
        for line in sel.lines():
            logger.info("%s", line)
        chosen = sel.result(sel.chosen).extra
        names = chosen.get("members", [sel.chosen])
        self.members = []
        for name in names:
            m = sel.result(name).extra
            self.members.append(
                {
                    "windows": tuple(m["windows"]),
                    "rul_cap": m["rul_cap"],
                    "loss": m["loss"],
                    "trees": m["trees"],
                    "rounds": m["rounds"],
                }
            )
        first = self.members[0]
        self.windows, self.rul_cap, self.loss = first["windows"], first["rul_cap"], first["loss"]
        self.trees, self.rounds = first["trees"], first["rounds"]
        self.oof_rul = oof[sel.chosen]
        self.selection = sel.as_dict()
        self.selection["time_unit"] = "hours" if self.time_is_datetime else "cycles"
        self.selection["observation_step"] = self.step

    def _final_fit(self, sub: RunHistory, fold) -> None:
        X = self._features(sub)
        self.features = list(X.columns)
        self.categories = {c: list(X[c].cat.categories) for c in self.categorical}
        label, rul = self.targets(sub)
        has = rul.notna().to_numpy()
        truth_all = sub.rows["rul"].to_numpy(dtype=float)
        self.regressors = []
        for j, m in enumerate(self.members):
            Xm = X if m["windows"] == self.windows else self._features(sub, m["windows"])
            y = truth_all if m["rul_cap"] is None else np.minimum(truth_all, m["rul_cap"])
            learn = _known_target(has, truth_all, m["rul_cap"])
            extra = self._loss_params(m["loss"], m["rul_cap"], truth_all[has])
            extra.update(TREES[m["trees"]], n_estimators=m["rounds"])
            for i in range(max(1, self.n_seeds)):
                params = self._params(int(learn.sum()), random_state=self.seed + i, **extra)
                self.regressors.append((j, lgb.LGBMRegressor(**params).fit(Xm[learn], y[learn])))
        self.regressor = self.regressors[0][1]
        # normalised conformal interval from the out-of-fold errors of the chosen candidate
        truth = rul.to_numpy()
        ok = has & np.isfinite(self.oof_rul)
        self.rul_offset = float(max(np.nanmedian(truth[has]) / 4, 1e-9))
        r = np.sort(np.abs(truth[ok] - self.oof_rul[ok]) / (self.oof_rul[ok] + self.rul_offset))
        k = min(len(r) - 1, int(np.ceil((len(r) + 1) * CONFORMAL_LEVEL)) - 1)
        self.rul_halfwidth = float(r[k]) if len(r) else float("inf")
        del self.oof_rul
        # failure within the horizon: out-of-fold scores calibrate the final classifier
        known = label.notna().to_numpy()
        y = label.to_numpy()
        if y[known].sum() < 3:
            raise InputError(
                f"failure: fewer than 3 observations within {self.horizon:g} of a failure; "
                "the horizon is too short or there are too few failures"
            )
        params = self._params(int(known.sum()), n_estimators=150)
        raw = np.full(len(X), np.nan)
        stride = _stride(len(X), int(known.sum()))
        for k in np.unique(fold):
            tr, te = known & (fold != k) & stride, known & (fold == k)
            if not te.any() or len(np.unique(y[tr])) < 2:
                continue
            m = lgb.LGBMClassifier(**params).fit(X[tr], y[tr].astype(int))
            raw[te] = m.predict(X[te], raw_score=True)
        self.classifier = lgb.LGBMClassifier(**params).fit(X[known], y[known].astype(int))
        ok = known & np.isfinite(raw)
        self.calibrator, self.calibration = choose_calibrator(
            raw[ok], y[ok].astype(int), sub.rows["run"].to_numpy()[ok], seed=self.seed
        )

    def rul_interval(self, rul: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The conformal interval around predicted RULs (90 % on exchangeable data)."""
        offset = getattr(self, "rul_offset", None)
        half = self.rul_halfwidth if offset is None else self.rul_halfwidth * (rul + offset)
        return np.maximum(rul - half, 0.0), rul + half

    def _check(self, history: RunHistory, windows=None) -> pd.DataFrame:
        missing = [s for s in self.sensors if s not in history.rows.columns]
        missing += [s for s in self.setting_cols if s not in history.rows.columns]
        if missing:
            raise SchemaError(
                f"runs: columns {missing} that the model was trained on are missing "
                f"(model sensors: {self.sensors})"
            )
        X = self._features(history, windows)
        for c in self.categorical:
            X[c] = pd.Categorical(history.rows[c].astype(str), categories=self.categories[c])
        return X if windows is not None else X[self.features]

    def predict_rows(self, history: RunHistory) -> pd.DataFrame:
        """Probability, RUL and interval for every observation."""
        X = self._check(history)
        p = self.calibrator.predict(self.classifier.predict(X, raw_score=True))
        per_member = []
        for j, m in enumerate(self.members):
            Xm = X if m["windows"] == self.windows else self._check(history, m["windows"])
            preds = [np.maximum(r.predict(Xm), 0.0) for k, r in self.regressors if k == j]
            per_member.append(np.mean(preds, axis=0))
        rul = np.mean(per_member, axis=0)
        lo, hi = self.rul_interval(rul)
        return pd.DataFrame(
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

    def predict(self, history: RunHistory, *, explain: bool = True, top: int = 3) -> pd.DataFrame:
        """One row per asset at its last observation: RUL, interval, failure probability."""
        rows = self.predict_rows(history)
        last = rows.groupby("asset")["t"].idxmax()
        out = rows.loc[last].reset_index(drop=True)
        out["reasons"] = ""
        if explain and len(out):
            X = self._check(history).loc[last]
            contrib = self.classifier.predict(X, pred_contrib=True)[:, :-1]
            unit = "h" if self.time_is_datetime else "cycles"
            words = []
            for i in range(len(X)):
                order = [j for j in np.argsort(-contrib[i])[:top] if contrib[i, j] > 0]
                words.append(
                    "; ".join(
                        f"{_describe(self.features[j], X.iloc[i, j], unit)} (+{contrib[i, j]:.2f})"
                        for j in order
                    )
                )
            out["reasons"] = words
        return out


def _stride(n_rows: int, n_used: int) -> np.ndarray:
    """Mask of every k-th row, k such that about CV_MAX_ROWS of the ``n_used`` remain."""
    step = max(1, int(np.ceil(n_used / CV_MAX_ROWS)))
    return (np.arange(n_rows) % step) == 0


def _cap_text(cap) -> str:
    return "none" if cap is None else f"{cap:g}"


def _describe(feature: str, value, unit: str) -> str:
    """A maintenance feature and its value in words, in the data's time unit."""
    v = _val(value)
    if feature == "t_in_run":
        return f"{v} {unit} since the run began"
    if "|" not in feature:
        return f"{feature} = {v}"
    col, stat = feature.split("|", 1)
    if stat.startswith("mean"):
        return f"{col} mean over the last {stat[4:]} observations = {v}"
    if stat.startswith("sd"):
        return f"{col} spread over the last {stat[2:]} observations = {v}"
    if stat == "slopeall":
        return f"{col} trend since the run began = {v} per {unit.rstrip('s')}"
    if stat.startswith("slope"):
        return f"{col} trend over the last {stat[5:]} observations = {v} per {unit.rstrip('s')}"
    if stat == "vs_early":
        return f"{col} {v} from its early-life level"
    return f"{col} {stat} = {v}"


def _val(v) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "unknown" if not np.isfinite(x) else _fmt(x)
