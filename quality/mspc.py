"""Batch multivariate statistical process control on the trajectory so far.

The classical family for batch processes (Nomikos & MacGregor 1994, 1995): batches aligned on
batch time, unfolded batch-wise (one row per batch, one column per tag and time slice),
scaled against the *normal* batches' mean trajectory and spread, and a principal component
model of the normal batches. A batch in progress is judged on the part of the trajectory it
has: Hotelling's T2 (how far along the normal directions of variation it is) and the squared
prediction error SPE (how much of it the normal correlation structure cannot explain: a probe
drifting away from what the other tags say, a fault that breaks the usual pattern), overall,
per tag and in the latest time slice, each against limits from the normal batches (F and
scaled chi-square approximations).

One model per point of a progress grid (an *evolving* model: each sees only the slices up to
its cut-off); a batch at progress ``p`` is scored by the model of the largest grid point not
after ``p``, on its data up to that point, so nothing recorded after ``p`` can change it.

Two classifiers sit on top, both regularised logistic regressions (few batches are normal in
biopharma):

- ``mspc``: on the monitoring statistics (log T2, log SPE overall, latest slice and per tag,
  and each tag's mean scaled deviation over the whole trajectory so far and the latest slices);
- ``unfolded``: on the scaled unfolded trajectory itself plus those statistics (in the spirit
  of PLS-DA, with an L2 penalty instead of latent variables);
- ``summary``: on the statistics plus each tag's standard deviation, slope and latest value
  of its scaled trajectory so far (the plain per-tag summaries, measured against the normal
  batches' mean trajectory).

And one that learns nothing from the labels but the direction of its scale:

- ``monitor``: how far a batch is from the normal batches, as a monitoring chart says it: the
  mean of four statistics, each standardised against the normal batches' (cross-fitted)
  values: SPE overall, SPE in the latest slice, the largest per-tag SPE against its typical
  value and the largest recent deviation of a tag from the normal mean trajectory. A
  one-input logistic regression (slope kept positive) turns it into log-odds. It ranks a
  batch whose fault has just begun above the others when too few labelled faults have shown
  for a classifier to learn from (early in a batch, few batches).

The training batches' own statistics are cross-fitted (each normal batch is judged by a PCA
model fitted without it), so that a normal batch in training looks as normal as a new one.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

__all__ = ["KINDS", "Trajectories", "TrajectoryModel", "count_seen", "running_time"]

logger = logging.getLogger(__name__)

MAX_SLICES = 24
#: scaled values and classifier inputs are clipped to this many standard deviations, so that
#: a tag that hardly varies in the normal batches cannot dominate by division alone
CLIP_SD = 10.0
MAX_COMPONENTS = 8
EXPLAINED = 0.8
INNER_FOLDS = 5
LIMIT = 0.99
#: BLAS threads for the small matrix products here: one. Two threads on matrices of tens of
#: rows cost more than they save, and spin-waiting threads make scoring 4-5 times slower on
#: a machine whose other core is busy (the live plant: twin, ingest and pages beside it)
BLAS_THREADS = 1
#: per-tag summaries the ``summary`` classifier adds (standard deviation, slope, latest)
N_SUMMARIES = 3
KINDS = ("mspc", "unfolded", "summary", "monitor")
#: the ``monitor`` score's statistics: SPE, SPE in the latest slice, largest per-tag SPE
#: against its typical value, largest recent deviation of a tag (all as logarithms)
N_MONITOR = 4
#: smallest slope of the ``monitor`` score's log-odds: the statistic is a distance from the
#: normal batches, so farther never means less likely to deviate
MONITOR_MIN_SLOPE = 1e-3


@dataclass
class Trajectories:
    """Running sums of a batch x tag x bin cube, so that slice means up to any cut-off are
    a gather, not a pass over the bins.

    Within a batch and tag the bins follow batch time, so the bins seen by a cut-off are a
    prefix of them: their count is the number of bins whose (running maximum) time is not
    after the cut-off, and each slice's sum is a difference of running sums.
    """

    #: batch x (bins + 1) x tag (a batch's tags at one bin are neighbours for the gathers):
    cs: np.ndarray  # running sums of the values (NaN as 0)
    cn: np.ndarray  # running counts of the values
    tacc: np.ndarray  # batch x tag x bins: running maximum of the bins' batch time
    #: the last cut-off asked and its answer (shared with the cube's featurizer statistics)
    memo: dict = field(default_factory=dict)

    @classmethod
    def of(
        cls, value: np.ndarray, t_h: np.ndarray, tacc: np.ndarray | None = None, memo=None
    ) -> Trajectories:
        value = value.transpose(0, 2, 1)  # batch x bin x tag
        n_b, n_k, n_t = value.shape
        ok = ~np.isnan(value)
        cs = np.zeros((n_b, n_k + 1, n_t))
        cn = np.zeros((n_b, n_k + 1, n_t), dtype=np.int32)
        np.cumsum(np.where(ok, value, 0.0), axis=1, out=cs[:, 1:])
        np.cumsum(ok, axis=1, out=cn[:, 1:])
        tacc = running_time(t_h) if tacc is None else tacc
        return cls(cs=cs, cn=cn, tacc=tacc, memo={} if memo is None else memo)

    def take(self, rows) -> Trajectories:
        return Trajectories(cs=self.cs[rows], cn=self.cn[rows], tacc=self.tacc[rows])

    def __len__(self) -> int:
        return len(self.cs)

    def seen(self, cut: np.ndarray) -> np.ndarray:
        """Batch x tag: how many bins each batch has seen by its ``cut``."""
        return count_seen(self.tacc, cut, self.memo)

    def slice_means(self, seen: np.ndarray, rows: np.ndarray, n_bins: int, S: int) -> np.ndarray:
        """``rows`` x tag x slice means of the first ``n_bins`` bins, cut into ``S`` slices,
        of the bins each row has ``seen`` (a gather from the running sums)."""
        width, n_t = self.cs.shape[1], self.cs.shape[2]
        edges = np.floor(np.arange(S + 1) * n_bins / S).astype(np.int64)
        # the running sums at every edge (a block copy of each edge's row of tags), and at
        # each (batch, tag)'s last seen bin, which stands for the edges beyond it
        sums = self.cs[rows[:, None], edges[None, :]]  # rows x edges x tag
        counts = self.cn[rows[:, None], edges[None, :]]
        m = np.minimum(seen[rows], n_bins)  # rows x tag
        flat = (rows[:, None] * width + m) * n_t + np.arange(n_t)[None, :]
        beyond = edges[None, :, None] > m[:, None, :]
        np.copyto(sums, np.take(self.cs, flat)[:, None, :], where=beyond)
        np.copyto(counts, np.take(self.cn, flat)[:, None, :], where=beyond)
        total = np.diff(sums, axis=1).transpose(0, 2, 1)
        count = np.diff(counts, axis=1).transpose(0, 2, 1)
        # a slice without values has a sum of exactly 0 (NaN adds 0): 0 / 0 is its NaN
        with np.errstate(all="ignore"):
            return total / count


def _summaries(z3: np.ndarray, seen: np.ndarray, last: np.ndarray) -> list[np.ndarray]:
    """Per tag, over the slices seen so far of the scaled trajectory (0 where not seen):
    standard deviation, least-squares slope per slice and the latest slice's value."""
    n = np.maximum(seen.sum(axis=2), 1)
    s = np.arange(z3.shape[2], dtype=float)
    w = seen.astype(float)
    sz, szz = z3.sum(axis=2), (z3 * z3).sum(axis=2)
    sx, sxx, sxz = w @ s, w @ (s * s), z3 @ s
    mean = sz / n
    sd = np.sqrt(np.maximum(szz / n - mean * mean, 0.0))
    den = n * sxx - sx * sx
    slope = np.where(den > 1e-9, (n * sxz - sx * sz) / np.where(den > 1e-9, den, 1.0), 0.0)
    latest = z3[np.arange(len(z3)), :, last]
    return [sd, slope, latest]


def last_true(mask: np.ndarray) -> np.ndarray:
    """Index of the last True along the last axis (-1 where none): each (batch, tag)'s
    last bin with a value, or seen."""
    last = mask.shape[-1] - 1 - mask[..., ::-1].argmax(axis=-1)
    return np.where(mask.any(axis=-1), last, -1)


def latest_bins(last_k: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The bins ``last_k - width + 1 .. last_k`` along a new last axis: their indices
    (clipped at 0, for gathers) and whether each exists."""
    k = last_k[..., None] - np.arange(width - 1, -1, -1)
    return np.maximum(k, 0), k >= 0


def running_time(t_h: np.ndarray) -> np.ndarray:
    """Running maximum over bins of the bins' batch time (empty bins: -inf)."""
    return np.maximum.accumulate(np.where(np.isfinite(t_h), t_h, -np.inf), axis=2)


def count_seen(tacc: np.ndarray, cut, memo: dict | None = None) -> np.ndarray:
    """Batch x tag: how many bins each batch has seen by its ``cut`` (batch hours).

    ``memo`` keeps the last answer: the pipelines of one snapshot ask the same question.
    """
    cut = np.asarray(cut, dtype=float)
    key = cut.tobytes()
    if memo is not None and memo.get("key") == key:
        return memo["seen"]
    # tacc is a running maximum: the bins seen are a prefix, and their count is the
    # position of the first one not seen (argmin of a boolean: half the time of a sum)
    mask = tacc <= cut[:, None, None]
    if mask.shape[2] == 0:
        seen = np.zeros(mask.shape[:2], dtype=np.int64)
    else:
        seen = np.where(mask[..., -1], mask.shape[2], mask.argmin(axis=2))
    if memo is not None:
        memo["key"], memo["seen"] = key, seen
    return seen


@dataclass
class _PCA:
    mean: np.ndarray
    scale: np.ndarray
    loadings: np.ndarray  # columns x k
    variance: np.ndarray  # k
    t2_limit: float = 1.0
    spe_limit: float = 1.0


def _fit_pca(X: np.ndarray, n_normal_min: int = 3) -> _PCA:
    """Scaling and principal components of normal batches' unfolded rows (NaN = missing)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(X, axis=0)
        sd = np.nanstd(X, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    floor = 1e-6 + 1e-3 * np.abs(mean)
    sd = np.where(np.isfinite(sd) & (sd > floor), sd, np.maximum(floor, 1e-6))
    Z = np.clip(np.nan_to_num((X - mean) / sd), -CLIP_SD, CLIP_SD)
    n = len(Z)
    k_max = max(1, min(MAX_COMPONENTS, n - 2, Z.shape[1]))
    if n < n_normal_min:
        return _PCA(mean, sd, np.zeros((Z.shape[1], 1)), np.ones(1))
    vt, var = _components(Z - Z.mean(axis=0), k_max)
    share = np.cumsum(var) / max(var.sum(), 1e-12)
    k = int(min(k_max, np.searchsorted(share, EXPLAINED) + 1))
    pca = _PCA(mean, sd, vt[:k].T, np.maximum(var[:k], 1e-9))
    # limits from the normal batches: Hotelling's T2 (F) and SPE (Box's scaled chi-square)
    t2_lim = k * (n - 1) * (n + 1) / max(n * (n - k), 1) * sps.f.ppf(LIMIT, k, max(n - k, 1))
    spe = _stats(pca, Z)[1]
    m, v = float(np.mean(spe)), float(np.var(spe))
    spe_lim = v / (2 * m) * sps.chi2.ppf(LIMIT, 2 * m * m / v) if m > 0 and v > 0 else 1.0
    pca.t2_limit, pca.spe_limit = float(t2_lim), float(max(spe_lim, 1e-9))
    return pca


def _components(Zc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All variances and the first ``k`` principal axes of centred rows.

    With fewer rows than columns (the usual case: tens of batches, hundreds of tag x slice
    columns) from the eigenvectors of the n x n Gram matrix, which is much cheaper than an
    SVD of the whole matrix and gives the same axes.
    """
    n = len(Zc)
    if n >= Zc.shape[1]:
        _, s, vt = np.linalg.svd(Zc, full_matrices=False)
        return vt[:k], s**2 / max(n - 1, 1)
    w, u = np.linalg.eigh(Zc @ Zc.T)
    order = np.argsort(w)[::-1]
    w, u = np.maximum(w[order], 0.0), u[:, order]
    s = np.sqrt(w[:k])
    vt = (u[:, :k].T @ Zc) / np.where(s > 1e-12, s, 1.0)[:, None]
    return vt, w / max(n - 1, 1)


def _stats(pca: _PCA, Z: np.ndarray):
    """T2, SPE and the squared residuals of scaled rows."""
    T = Z @ pca.loadings
    t2 = np.sum(T**2 / pca.variance, axis=1)
    resid = Z - T @ pca.loadings.T
    r2 = np.multiply(resid, resid, out=resid)
    return t2, r2.sum(axis=1), r2


@dataclass
class _GridModel:
    progress: float
    n_bins: int
    slices: int
    pca: _PCA
    feat_mean: np.ndarray | None = None
    feat_sd: np.ndarray | None = None
    lr: LogisticRegression | None = None
    spe_tag_typical: np.ndarray | None = None
    #: ``monitor``: the normal batches' mean and spread of its statistics, and the
    #: (slope, intercept) of its log-odds
    mon_mean: np.ndarray | None = None
    mon_sd: np.ndarray | None = None
    mon_line: tuple[float, float] = (MONITOR_MIN_SLOPE, 0.0)


@dataclass
class TrajectoryModel:
    """Evolving batch MSPC with a regularised logistic classifier on top.

    Parameters
    ----------
    kind : {"mspc", "unfolded", "summary", "monitor"}
        Classifier inputs: the monitoring statistics; the scaled unfolded trajectory and
        the statistics; or the statistics and per-tag summaries of the scaled trajectory
        so far (standard deviation, slope and latest slice, beside the mean the statistics
        hold). ``monitor``: no classifier, the combined monitoring statistic (module
        docstring); an ``mspc`` model can give it too (``raw(..., kind="monitor")``).
    C : float
        Inverse L2 penalty of the logistic regression (on standardised inputs).
    grid : tuple of float
        Progress points with a model each.
    seed : int
    """

    kind: str = "mspc"
    C: float = 0.1
    grid: tuple[float, ...] = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)
    seed: int = 0
    models: list[_GridModel] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    nominal_h: float = 1.0
    bin_h: float = 1.0

    # ------------------------------------------------------------------ features
    def _unfold(self, tr: Trajectories, seen, rows, g: _GridModel) -> np.ndarray:
        X = tr.slice_means(seen, rows, g.n_bins, g.slices)
        return X.reshape(len(X), -1)

    def _features(self, g: _GridModel, pca: _PCA, X: np.ndarray, inplace=False) -> np.ndarray:
        """Monitoring statistics (and, for ``unfolded``, the scaled trajectory) of rows
        (``inplace``: ``X`` is scaled where it is, a scoring call's own array)."""
        n_t, S = len(self.tags), g.slices
        Z = np.subtract(X, pca.mean, out=X if inplace else None)
        Z *= 1.0 / pca.scale
        np.clip(Z, -CLIP_SD, CLIP_SD, out=Z)
        missing = np.isnan(Z)
        np.copyto(Z, 0.0, where=missing)  # a slice not seen (yet) sits on the normal mean
        t2, spe, r2 = _stats(pca, Z)
        r3 = r2.reshape(len(Z), n_t, S)
        z3 = Z.reshape(len(Z), n_t, S)
        seen = ~missing.reshape(len(Z), n_t, S)
        has = seen.any(axis=1)  # batch x slice
        last = np.maximum(last_true(has), 0)
        spe_last = r3[np.arange(len(Z)), :, last].sum(axis=1)
        R = max(1, round(S / 6))  # the latest sixth of the trajectory so far
        slices = np.arange(S)[None, :]
        # per tag, sums over all slices and over the recent ones, as one product per batch
        # (z3 is 0 where a slice is not seen: sums over seen slices are plain sums)
        W = np.empty((len(Z), S, 2))
        W[:, :, 0] = 1.0
        W[:, :, 1] = (slices > (last[:, None] - R)) & (slices <= last[:, None])
        counts = seen.astype(float) @ W
        sums = z3 @ W
        n_seen = np.maximum(counts[..., 0], 1)
        z_mean = sums[..., 0] / n_seen
        z_recent = sums[..., 1] / np.maximum(counts[..., 1], 1)
        spe_tag = r3.sum(axis=2) / n_seen
        cols = [
            np.log1p(t2 / pca.t2_limit)[:, None],
            np.log1p(spe / pca.spe_limit)[:, None],
            np.log1p(spe_last / max(pca.spe_limit / S, 1e-9))[:, None],
            np.log1p(spe_tag),
            z_mean,
            z_recent,
        ]
        if self.kind == "unfolded":
            cols.append(Z)
        elif self.kind == "summary":
            cols += _summaries(z3, seen, last)
        return np.column_stack(cols)

    def feature_groups(self) -> list[tuple[str, int]]:
        """(meaning, tag index or -1) of each statistic column, in order."""
        n_t = len(self.tags)
        groups = [("t2", -1), ("spe", -1), ("spe_now", -1)]
        groups += [("spe_tag", j) for j in range(n_t)]
        groups += [("z_mean", j) for j in range(n_t)]
        groups += [("z_recent", j) for j in range(n_t)]
        return groups

    # ------------------------------------------------------------------ fit
    @threadpool_limits.wrap(limits=BLAS_THREADS, user_api="blas")
    def fit(self, tr: Trajectories, y: np.ndarray, *, tags, nominal_h, bin_h) -> TrajectoryModel:
        """Fit one PCA and classifier per grid point.

        Parameters
        ----------
        tr : Trajectories
            Running sums of the batch x tag x bin cube.
        y : numpy.ndarray
            0/1 outcome per batch.
        """
        self.tags, self.nominal_h, self.bin_h = list(tags), float(nominal_h), float(bin_h)
        y = np.asarray(y, dtype=int)
        normal = np.flatnonzero(y == 0)
        rng = np.random.default_rng(self.seed)
        inner = np.empty(len(normal), dtype=int)
        n_inner = INNER_FOLDS if len(normal) < 200 else 3
        inner[rng.permutation(len(normal))] = np.arange(len(normal)) % n_inner
        self.models = []
        for p in self.grid:
            cut = np.full(len(y), p * self.nominal_h)
            n_bins = int(min(tr.tacc.shape[2], max(1, np.ceil(p * self.nominal_h / self.bin_h))))
            # the unfolded classifier sees every tag x slice: half the slices keep it small
            full = self.kind in ("mspc", "monitor")
            S = int(min(MAX_SLICES if full else MAX_SLICES // 2, n_bins))
            g = _GridModel(progress=p, n_bins=n_bins, slices=S, pca=None)
            X = self._unfold(tr, tr.seen(cut), np.arange(len(y)), g)
            g.pca = _fit_pca(X[normal])
            F = self._features(g, g.pca, X)
            # cross-fitted statistics for the normal batches themselves
            for k in range(n_inner):
                held = normal[inner == k]
                if len(held) == 0 or len(normal) - len(held) < 3:
                    continue
                pca_k = _fit_pca(X[normal[inner != k]])
                F[held] = self._features(g, pca_k, X[held])
            n_t = len(self.tags)
            typical = np.median(np.expm1(F[normal, 3 : 3 + n_t]), axis=0)
            g.spe_tag_typical = np.maximum(typical, 1e-9)
            if self.kind in ("mspc", "monitor"):
                self._fit_monitor(g, F, y, normal)
            if self.kind != "monitor":
                g.feat_mean = F.mean(axis=0)
                g.feat_sd = np.where(F.std(axis=0) > 1e-9, F.std(axis=0), 1.0)
                g.lr = LogisticRegression(C=self.C, max_iter=2000)
                g.lr.fit(self._standard(g, F), y)
            self.models.append(g)
        return self

    def _monitor_stats(self, g: _GridModel, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``monitor`` statistics of statistic rows ``F`` (rows x :data:`N_MONITOR`) and
        the tags that give the per-tag ones (rows x 2: largest SPE share, largest recent
        deviation)."""
        n_t = len(self.tags)
        spe_ratio = np.expm1(F[:, 3 : 3 + n_t]) / g.spe_tag_typical
        z_recent = np.abs(F[:, 3 + 2 * n_t : 3 + 3 * n_t])
        which = np.column_stack([spe_ratio.argmax(axis=1), z_recent.argmax(axis=1)])
        U = np.column_stack(
            [
                F[:, 1],
                F[:, 2],
                np.log(np.maximum(spe_ratio.max(axis=1), 1e-6)),
                np.log(np.maximum(z_recent.max(axis=1), 1e-6)),
            ]
        )
        return U, which

    def _fit_monitor(self, g: _GridModel, F: np.ndarray, y: np.ndarray, normal) -> None:
        """Standardise the ``monitor`` statistics on the normal batches' cross-fitted values
        and fit their mean's log-odds (one input, slope at least :data:`MONITOR_MIN_SLOPE`)."""
        U, _ = self._monitor_stats(g, F)
        g.mon_mean = U[normal].mean(axis=0)
        sd = U[normal].std(axis=0)
        g.mon_sd = np.where(sd > 1e-9, sd, 1.0)
        s = self._monitor_score(g, U)
        lr = LogisticRegression(C=1.0, max_iter=1000).fit(s[:, None], y)
        slope = float(lr.coef_[0, 0])
        if slope >= MONITOR_MIN_SLOPE:
            g.mon_line = (slope, float(lr.intercept_[0]))
        else:  # no slope: the base rate, the statistic's order kept as a tie-break
            rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
            logit = float(np.log(rate / (1.0 - rate)))
            g.mon_line = (MONITOR_MIN_SLOPE, logit - MONITOR_MIN_SLOPE * float(s.mean()))

    @staticmethod
    def _monitor_score(g: _GridModel, U: np.ndarray) -> np.ndarray:
        return np.clip((U - g.mon_mean) / g.mon_sd, -CLIP_SD, CLIP_SD).mean(axis=1)

    # ------------------------------------------------------------------ score
    def _grid_index(self, progress: np.ndarray) -> np.ndarray:
        grid = np.array([g.progress for g in self.models])
        idx = np.searchsorted(grid, progress + 1e-9, side="right") - 1
        return np.clip(idx, 0, len(grid) - 1)

    def _seen(self, tr: Trajectories, progress: np.ndarray):
        """Each batch's grid model and the bins it has seen by the cut-off that model reads:
        its progress, or the grid point if that is earlier."""
        which = self._grid_index(progress)
        grid = np.array([g.progress for g in self.models])
        cut = np.minimum(progress, grid[which]) * self.nominal_h
        return which, tr.seen(cut)

    @threadpool_limits.wrap(limits=BLAS_THREADS, user_api="blas")
    def raw(self, tr: Trajectories, progress, kind: str | None = None, rows=None) -> np.ndarray:
        """Log-odds of a deviation for each batch at its progress (array, one per batch, or
        one per batch of ``rows``: those only are computed).

        ``kind="monitor"`` gives the ``monitor`` score of an ``mspc`` model (both are fitted
        on the same statistics).
        """
        kind = kind or self.kind
        if kind != self.kind and not (kind == "monitor" and self.kind == "mspc"):
            raise ValueError(f"kind: a {self.kind!r} model cannot score as {kind!r}")
        progress = np.broadcast_to(np.asarray(progress, dtype=float), (len(tr),))
        out = np.zeros(len(tr))
        which, seen = self._seen(tr, progress)
        asked = np.ones(len(tr), bool) if rows is None else np.isin(np.arange(len(tr)), rows)
        for i in np.unique(which[asked]):
            g = self.models[i]
            at = np.flatnonzero((which == i) & asked)
            F = self._features(g, g.pca, self._unfold(tr, seen, at, g), inplace=True)
            if kind == "monitor":
                slope, intercept = g.mon_line
                out[at] = slope * self._monitor_score(g, self._monitor_stats(g, F)[0]) + intercept
            else:
                # the linear model's decision function, without scikit-learn's input checks
                # (a third of this call's time on a few hundred rows)
                out[at] = self._standard(g, F) @ g.lr.coef_[0] + g.lr.intercept_[0]
        return out if rows is None else out[rows]

    @threadpool_limits.wrap(limits=BLAS_THREADS, user_api="blas")
    def contributions(self, tr: Trajectories, progress) -> tuple[np.ndarray, np.ndarray]:
        """Per-tag contributions to the log-odds and each tag's recent scaled deviation.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray, numpy.ndarray)
            batch x (tags + 1) contributions (the last column: the multivariate statistics T2
            and SPE together); batch x tags mean deviation in normal-batch standard
            deviations over the latest slices; batch x tags SPE over its typical value in
            normal batches.
        """
        progress = np.broadcast_to(np.asarray(progress, dtype=float), (len(tr),))
        n_t = len(self.tags)
        contrib = np.zeros((len(tr), n_t + 1))
        z_recent = np.zeros((len(tr), n_t))
        spe_ratio = np.ones((len(tr), n_t))
        which, seen = self._seen(tr, progress)
        groups = self.feature_groups()
        for i in np.unique(which):
            g = self.models[i]
            rows = np.flatnonzero(which == i)
            X = self._unfold(tr, seen, rows, g)
            F = self._features(g, g.pca, X)
            z_recent[rows] = F[:, 3 + 2 * n_t : 3 + 3 * n_t]
            spe_ratio[rows] = np.expm1(F[:, 3 : 3 + n_t]) / g.spe_tag_typical
            if self.kind == "monitor":
                contrib[rows] = self._monitor_contributions(g, F)
                continue
            c = self._standard(g, F) * g.lr.coef_[0]
            for col, (_kind, j) in enumerate(groups):
                contrib[rows, n_t if j < 0 else j] += c[:, col]
            if self.kind == "unfolded":
                extra = c[:, len(groups) :].reshape(len(rows), n_t, g.slices).sum(axis=2)
                contrib[rows, :n_t] += extra
            elif self.kind == "summary":
                extra = c[:, len(groups) :].reshape(len(rows), N_SUMMARIES, n_t).sum(axis=1)
                contrib[rows, :n_t] += extra
        return contrib, z_recent, spe_ratio

    def _monitor_contributions(self, g: _GridModel, F: np.ndarray) -> np.ndarray:
        """The ``monitor`` log-odds above the normal batches' mean split by tag: SPE overall
        and latest to the multivariate column, the per-tag terms to the tag that gives them."""
        n_t = len(self.tags)
        U, which = self._monitor_stats(g, F)
        z = np.clip((U - g.mon_mean) / g.mon_sd, -CLIP_SD, CLIP_SD) * (g.mon_line[0] / N_MONITOR)
        contrib = np.zeros((len(F), n_t + 1))
        contrib[:, n_t] = z[:, 0] + z[:, 1]
        rows = np.arange(len(F))
        np.add.at(contrib, (rows, which[:, 0]), z[:, 2])
        np.add.at(contrib, (rows, which[:, 1]), z[:, 3])
        return contrib

    @staticmethod
    def _standard(g: _GridModel, F: np.ndarray) -> np.ndarray:
        return np.clip((F - g.feat_mean) / g.feat_sd, -CLIP_SD, CLIP_SD)

    def state(self) -> bytes:
        """Parameters as bytes (fingerprinting)."""
        parts = []
        for g in self.models:
            parts += [g.pca.mean, g.pca.scale, g.pca.loadings]
            if g.lr is not None:
                parts += [g.lr.coef_, g.lr.intercept_]
            if g.mon_mean is not None:
                parts += [g.mon_mean, g.mon_sd, np.array(g.mon_line)]
        return b"".join(np.ascontiguousarray(p, dtype=np.float64).tobytes() for p in parts)
