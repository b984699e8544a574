"""Plain baselines the product is compared with, each trained on the training split only.

Batch data sets, one model per progress point ``p`` (data with ``time_h <= p * nominal``,
nominal = median training batch duration):

- ``lightgbm``: LightGBM on per-tag mean, standard deviation, OLS slope and last value;
- ``logistic``: standardised L2 logistic regression (C = 1) on the same features, median
  imputation;
- ``envelope``: per tag and time bin, the 5-95 % band of the normal training batches; the score
  is the number of (tag, bin) points outside the band so far.

Degradation data sets: a LightGBM regressor on rolling mean / standard deviation / slope over
5, 10, 20 and 30 rows of every sensor plus the time since the run started, target RUL capped at
``rul_cap``; predicted at each test asset's last row.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "PROGRESS",
    "WINDOWS",
    "batch_baselines",
    "brier",
    "degradation_baseline",
    "nominal_duration_h",
    "roc_auc",
    "trajectory_features",
    "window_features",
]

PROGRESS = (0.25, 0.5, 0.75, 1.0)
WINDOWS = (5, 10, 20, 30)
BATCH_NAMES = ("lightgbm", "logistic", "envelope")


# ----------------------------------------------------------------------------- metrics


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC, or None when only one class is present or a score is missing."""
    y, score = np.asarray(y), np.asarray(score, dtype=float)
    if len(np.unique(y)) < 2 or not np.isfinite(score).all():
        return None
    return float(roc_auc_score(y, score))


def brier(y: np.ndarray, p: np.ndarray) -> float | None:
    """Mean squared error of probabilities, or None when a probability is missing."""
    p = np.asarray(p, dtype=float)
    if not np.isfinite(p).all():
        return None
    return float(np.mean((p - np.asarray(y, dtype=float)) ** 2))


# ----------------------------------------------------------------------------- batches


def nominal_duration_h(series: pd.DataFrame) -> float:
    """Median over batches of the last sample time (hours since the batch's start)."""
    return float(series.groupby("batch_id")["time_h"].max().median())


def trajectory_features(series: pd.DataFrame, cutoff_h: float, batch_ids) -> pd.DataFrame:
    """Per tag: mean, standard deviation, OLS slope (per hour) and last value up to ``cutoff_h``.

    Returns one row per batch of ``batch_ids`` (NaN where a tag has no sample yet).
    """
    s = series.loc[series["time_h"] <= cutoff_h + 1e-9, ["batch_id", "tag", "time_h", "value"]]
    s = s.dropna(subset=["value"]).sort_values(["batch_id", "tag", "time_h"], kind="stable")
    t, v = s["time_h"].to_numpy(), s["value"].to_numpy()
    parts = pd.DataFrame(
        {"batch_id": s["batch_id"].to_numpy(), "tag": s["tag"].to_numpy(), "n": 1.0, "t": t}
        | {"v": v, "tt": t * t, "tv": t * v, "vv": v * v}
    )
    g = parts.groupby(["batch_id", "tag"], sort=False)
    sums = g[["n", "t", "v", "tt", "tv", "vv"]].sum()
    n = sums["n"]
    mean = sums["v"] / n
    var = (sums["vv"] / n - mean**2).clip(lower=0.0) * n / (n - 1).where(n > 1)
    denom = n * sums["tt"] - sums["t"] ** 2
    slope = (n * sums["tv"] - sums["t"] * sums["v"]) / denom.where(denom > 1e-9 * n**2)
    stats = pd.DataFrame({"mean": mean, "std": np.sqrt(var), "slope": slope, "last": g["v"].last()})
    wide = stats.unstack("tag")
    wide.columns = [f"{tag}|{stat}" for stat, tag in wide.columns]
    return wide.reindex(index=pd.Index(batch_ids, name="batch_id"))


def _envelope(train: pd.DataFrame, normal_ids, bin_h: float) -> pd.DataFrame:
    """5 and 95 % quantiles of the bin means of the normal training batches, per tag and bin."""
    s = train[train["batch_id"].isin(set(normal_ids))]
    means = _bin_means(s, bin_h)
    band = means.groupby(["tag", "bin"])["value"].agg(
        lo=lambda x: x.quantile(0.05), hi=lambda x: x.quantile(0.95), count="count"
    )
    return band[band["count"] >= 5]


def _bin_means(series: pd.DataFrame, bin_h: float) -> pd.DataFrame:
    s = series.dropna(subset=["value"])
    return (
        s.assign(bin=np.floor(s["time_h"].to_numpy() / bin_h).astype(int))
        .groupby(["batch_id", "tag", "bin"], sort=False)["value"]
        .mean()
        .reset_index()
    )


def _envelope_score(series, band, cutoff_h: float, bin_h: float, batch_ids) -> np.ndarray:
    """Count of (tag, bin) means outside the band among the samples up to ``cutoff_h``."""
    means = _bin_means(series[series["time_h"] <= cutoff_h + 1e-9], bin_h)
    j = means.join(band, on=["tag", "bin"], how="inner")
    out = (j["value"] < j["lo"]) | (j["value"] > j["hi"])
    counts = out.groupby(j["batch_id"]).sum()
    return counts.reindex(pd.Index(batch_ids), fill_value=0).to_numpy(dtype=float)


def _lightgbm_classifier(n: int, seed: int) -> lgb.LGBMClassifier:
    return lgb.LGBMClassifier(
        n_estimators=200,
        learning_rate=0.05,
        num_leaves=7,
        min_child_samples=max(5, n // 10),
        deterministic=True,
        force_col_wise=True,
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )


def _logistic() -> object:
    return make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=5000),
    )


def batch_baselines(
    data: dict, *, bin_h: float = 1.0, seed: int = 0, progress=PROGRESS
) -> dict[str, dict[float, np.ndarray]]:
    """Scores of every batch baseline on the test batches at every progress point.

    Parameters
    ----------
    data : dict
        What a batch data set's ``make`` returns.
    bin_h : float
        Bin width of the envelope rule (the product's ``--bin-h``).

    Returns
    -------
    dict
        ``{"lightgbm" | "logistic" | "envelope": {p: scores aligned with outcomes_test}}``;
        the first two are probabilities, the envelope a count.
    """
    train, test = data["series_train"], data["series_test"]
    o_train, o_test = data["outcomes_train"], data["outcomes_test"]
    y = o_train["label"].to_numpy()
    train_ids, test_ids = o_train["batch_id"].to_numpy(), o_test["batch_id"].to_numpy()
    nominal = nominal_duration_h(train)
    band = _envelope(train, train_ids[y == 0], bin_h)
    out: dict[str, dict[float, np.ndarray]] = {name: {} for name in BATCH_NAMES}
    for p in progress:
        cut = p * nominal
        X = trajectory_features(train, cut, train_ids)
        X = X.loc[:, X.notna().any()]
        X_test = trajectory_features(test, cut, test_ids).reindex(columns=X.columns)
        gbm = _lightgbm_classifier(len(y), seed).fit(X, y)
        out["lightgbm"][p] = gbm.predict_proba(X_test)[:, 1]
        logit = _logistic().fit(X, y)
        out["logistic"][p] = logit.predict_proba(X_test)[:, 1]
        out["envelope"][p] = _envelope_score(test, band, cut, bin_h, test_ids)
    return out


# ----------------------------------------------------------------------------- degradation


def window_features(
    runs: pd.DataFrame, *, asset_col: str, time_col: str, sensors: list[str]
) -> pd.DataFrame:
    """Rolling mean, standard deviation and slope (per row) over :data:`WINDOWS` rows.

    ``runs`` must be sorted by asset and time; missing sensor values are carried forward
    within an asset. Adds ``elapsed`` (time since the asset's first row, in hours for
    timestamps).
    """
    t = _time_units(runs[time_col])
    asset = runs[asset_col].to_numpy()
    start = np.r_[0, np.flatnonzero(asset[1:] != asset[:-1]) + 1]
    first = np.repeat(start, np.diff(np.r_[start, len(asset)]))
    feats = {"elapsed": t - t[first]}
    values = runs[sensors].groupby(runs[asset_col].to_numpy(), sort=False).ffill().bfill()
    idx = np.arange(len(runs), dtype=float)
    csum = lambda x: np.r_[0.0, np.cumsum(x)]  # noqa: E731
    c_i, c_ii = csum(idx), csum(idx * idx)
    rows = np.arange(len(runs))
    for col in sensors:
        v = values[col].to_numpy(dtype=float)
        c_v, c_vv, c_iv = csum(v), csum(v * v), csum(idx * v)
        for w in WINDOWS:
            a = np.maximum(first, rows - w + 1)
            n = rows - a + 1.0
            s_v = c_v[rows + 1] - c_v[a]
            s_i = c_i[rows + 1] - c_i[a]
            mean = s_v / n
            var = np.maximum((c_vv[rows + 1] - c_vv[a]) / n - mean**2, 0.0)
            cov = (c_iv[rows + 1] - c_iv[a]) / n - mean * s_i / n
            var_i = (c_ii[rows + 1] - c_ii[a]) / n - (s_i / n) ** 2
            feats[f"{col}|mean{w}"] = mean
            feats[f"{col}|std{w}"] = np.sqrt(var)
            feats[f"{col}|slope{w}"] = np.where(var_i > 1e-9, cov / np.maximum(var_i, 1e-9), 0.0)
    return pd.DataFrame(feats, index=runs.index)


def _time_units(values: pd.Series) -> np.ndarray:
    """Cycles as they are; timestamps as hours since the epoch."""
    if pd.api.types.is_datetime64_any_dtype(values):
        origin = pd.Timestamp(0, tz=values.dt.tz)
        return ((values - origin) / pd.Timedelta(hours=1)).to_numpy(dtype=float)
    return values.to_numpy(dtype=float)


def _targets(runs: pd.DataFrame, asset_col: str, t: np.ndarray, failure_col, cap):
    """RUL target per row and a mask of rows whose capped target is known."""
    end = pd.Series(t).groupby(runs[asset_col].to_numpy()).transform("max").to_numpy()
    rul = end - t
    if failure_col is None:
        failed = np.ones(len(runs), dtype=bool)
    else:
        failed = runs.groupby(asset_col)[failure_col].transform("max").to_numpy().astype(bool)
    if cap is None:
        return rul, failed
    # a censored run's RUL is at least its time to censoring: known once capped if that's >= cap
    return np.minimum(rul, cap), failed | (rul >= cap)


def degradation_baseline(data: dict, *, seed: int = 0) -> pd.DataFrame:
    """RUL predicted at each test asset's last row: ``asset, rul``.

    Parameters
    ----------
    data : dict
        What a degradation data set's ``make`` returns.
    """
    asset_col, time_col, failure_col = _columns(data["fit_args"])
    train = data["runs_train"].sort_values([asset_col, time_col]).reset_index(drop=True)
    test = data["runs_test"].sort_values([asset_col, time_col]).reset_index(drop=True)
    sensors = [c for c in train.columns if c not in (asset_col, time_col, failure_col)]
    X = window_features(train, asset_col=asset_col, time_col=time_col, sensors=sensors)
    target, known = _targets(
        train, asset_col, _time_units(train[time_col]), failure_col, data["rul_cap"]
    )
    model = lgb.LGBMRegressor(
        n_estimators=300,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.5,
        deterministic=True,
        force_col_wise=True,
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    ).fit(X[known], target[known])
    X_test = window_features(test, asset_col=asset_col, time_col=time_col, sensors=sensors)
    last = test.groupby(asset_col, sort=False).tail(1).index
    pred = np.maximum(model.predict(X_test.loc[last]), 0.0)
    return pd.DataFrame({"asset": test.loc[last, asset_col].to_numpy(), "rul": pred})


def _columns(fit_args: list[str]) -> tuple[str, str, str | None]:
    """Asset, time and failure column names from a data set's CLI arguments."""
    opts = dict(zip(fit_args[::2], fit_args[1::2], strict=False))
    return opts["--asset-col"], opts["--time-col"], opts.get("--failure-col")
