"""Trajectory features of a batch at a given progress, as engineers read them.

For every tag, over the bins the prediction is allowed to see (batch time up to the
cut-off ``progress x nominal duration``): mean, spread, last value, recent slope, hours below
and above the golden-batch envelope (a per-alignment-time band learned from good batches),
largest deviation from the golden median in envelope widths, hours at the upper limit
(controller saturation), hours of bad-quality data, and the signed mean distance from the
golden median (in envelope widths) over the whole trajectory so far and over a recent window
(the latest 10 % of the nominal duration), so that a slow drift or a fault that started
recently shows as much as one that started at the beginning. Equipment ages
(``asset.*`` tags) contribute their last known value only. Context known at batch start
(raw-material lot attributes, unit) is passed through, categories fixed at fit time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quality.data import BatchHistory
from quality.mspc import count_seen, last_true, latest_bins, running_time

__all__ = ["STATS", "BatchFeaturizer"]

STATS = (
    "mean",
    "std",
    "last",
    "slope",
    "below_h",
    "above_h",
    "max_z",
    "at_max_h",
    "bad_h",
    "z_mean",
    "z_recent",
)
SLOPE_BINS = 6
#: the recent window of ``z_recent``, as a share of the nominal duration (at least 2 bins)
RECENT_SHARE = 0.1
MIN_GOOD_FOR_ENVELOPE = 5


@dataclass
class Cube:
    """Batch x tag x bin arrays of one history, on the featurizer's tags and bins."""

    ids: pd.Index
    value: np.ndarray
    t_h: np.ndarray
    sd: np.ndarray
    bad: np.ndarray
    prefix: dict | None = None
    #: running maximum of bin time and the last seen-bins answer, shared by the pipelines
    tacc: np.ndarray | None = None
    memo: dict = field(default_factory=dict)
    #: running sums for the MSPC pipelines (quality.mspc.Trajectories), made on first use
    trajectories: object | None = None

    def running_time(self) -> np.ndarray:
        """Batch x tag x bin running maximum of the bins' batch time (made once)."""
        if self.tacc is None:
            self.tacc = running_time(self.t_h)
        return self.tacc

    def seen(self, cut) -> np.ndarray:
        """Batch x tag: how many bins each batch has seen by its ``cut`` (batch hours)."""
        return count_seen(self.running_time(), cut, self.memo)


@dataclass
class BatchFeaturizer:
    """Learns the envelope and nominal duration, then turns histories into feature tables."""

    envelope_quantiles: tuple[float, float] = (5.0, 95.0)
    tags: list[str] = field(default_factory=list)
    n_bins: int = 0
    bin_h: float = 1.0
    nominal_h: float = 0.0
    context_numeric: list[str] = field(default_factory=list)
    context_categories: dict[str, list[str]] = field(default_factory=dict)
    tag_names: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ fitting
    def fit(self, history: BatchHistory, batch_ids) -> BatchFeaturizer:
        """Learn tags, bins, nominal duration, envelope and context categories."""
        ids = pd.Index(batch_ids)
        bins = history.bins[history.bins["batch_id"].isin(ids)]
        counts = bins.groupby("tag")["batch_id"].nunique()
        self.tags = sorted(counts[counts >= max(2, len(ids) // 10)].index)
        self.bin_h = history.bin_h
        self.n_bins = int(bins["bin"].quantile(0.995)) + 1 if len(bins) else 1
        duration = history.duration_h.reindex(ids) if history.duration_h is not None else None
        if duration is None or duration.isna().all():
            duration = bins.groupby("batch_id")["t_h"].max()
        self.nominal_h = float(np.nanmedian(duration))
        self.tag_names = {t: history.tag_names.get(t, t) for t in self.tags}
        self.context_numeric, self.context_categories = [], {}
        for col in history.context_cols:
            values = history.outcomes.loc[ids, col]
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                self.context_numeric.append(col)
            else:
                self.context_categories[col] = sorted(values.dropna().astype(str).unique())
        cube = self.cube(history, ids)
        good = history.outcomes.loc[ids, "label"].eq(False).fillna(False).to_numpy()
        return self.learn_envelope(cube, good)

    def learn_envelope(self, cube: Cube, good: np.ndarray) -> BatchFeaturizer:
        """Learn the golden-batch envelope, saturation levels and centres from ``cube``.

        Separate from :meth:`fit` so that cross-validation can re-learn them on each fold's
        training batches only (the held-out batches must not shape their own envelope).
        """
        v = cube.value[good]
        n = len(cube.ids)
        enough = np.sum(~np.isnan(v), axis=0) >= MIN_GOOD_FOR_ENVELOPE
        with np.errstate(all="ignore"), _quiet():
            lo, med, hi = np.nanpercentile(
                v, [self.envelope_quantiles[0], 50, self.envelope_quantiles[1]], axis=0
            )
            upper = np.nanpercentile(cube.value.reshape(n, len(self.tags), -1), 99.5, axis=(0, 2))
            lower = np.nanpercentile(cube.value.reshape(n, len(self.tags), -1), 0.5, axis=(0, 2))
        width = np.maximum(hi - lo, 1e-9 + 1e-3 * np.abs(med))
        self.env_lo = np.where(enough, lo, np.nan)
        self.env_med = np.where(enough, med, np.nan)
        self.env_hi = np.where(enough, hi, np.nan)
        self.env_width = np.where(enough, width, np.nan)
        span = np.where(np.isfinite(upper - lower), upper - lower, 0.0)
        self.sat_level = upper - 0.01 * span
        self.is_state = np.array([t.startswith("asset.") for t in self.tags])
        with _quiet():
            center = np.nanmedian(cube.value, axis=(0, 2))
        self.center = np.where(np.isfinite(center), center, 0.0)
        return self

    # ------------------------------------------------------------------ arrays
    def cube(self, history: BatchHistory, batch_ids) -> Cube:
        """The history's bins as arrays on this featurizer's tags and bins."""
        ids = pd.Index(batch_ids)
        shape = (len(ids), len(self.tags), self.n_bins)
        value = np.full(shape, np.nan)
        t_h = np.full(shape, np.inf)
        sd = np.full(shape, np.nan)
        bad = np.zeros(shape)
        rows, codes, names, col = history.index()
        parts = [rows[b] for b in ids if b in rows]
        take = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        owner = (
            np.concatenate([np.full(len(rows[b]), n) for n, b in enumerate(ids) if b in rows])
            if parts
            else np.zeros(0, dtype=np.int64)
        )
        tag_of_code = pd.Index(self.tags).get_indexer(names)
        j = tag_of_code[codes[take]] if len(names) else np.zeros(0, dtype=np.int64)
        k = col["bin"][take]
        ok = (j >= 0) & (k < self.n_bins)
        i, j, k, take = owner[ok], j[ok], k[ok], take[ok]
        value[i, j, k] = col["value"][take]
        t_h[i, j, k] = col["t_h"][take]
        sd[i, j, k] = col["sd"][take]
        bad[i, j, k] = col["bad"][take]
        return Cube(ids=ids, value=value, t_h=t_h, sd=sd, bad=bad)

    # ------------------------------------------------------------------ features
    def _stat_mask(self) -> np.ndarray:
        mask = np.ones((len(self.tags), len(STATS)), dtype=bool)
        mask[self.is_state] = False
        mask[self.is_state, STATS.index("last")] = True
        return mask

    def feature_names(self) -> list[str]:
        """Column names of :meth:`transform`, in order."""
        names = ["progress", "elapsed_h"]
        for tag, state in zip(self.tags, self.is_state, strict=True):
            names += [f"{tag}|last"] if state else [f"{tag}|{s}" for s in STATS]
        names += [f"ctx|{c}" for c in self.context_numeric]
        names += [f"ctx|{c}" for c in self.context_categories]
        return names

    def transform(
        self,
        history: BatchHistory,
        batch_ids,
        progress,
        cube: Cube | None = None,
        *,
        once: bool = False,
    ) -> pd.DataFrame:
        """Feature table at ``progress`` (a fraction, or one per batch) of the nominal duration.

        ``once=True`` says the cube will not be cut again (scoring): the statistics are then
        computed directly instead of from running sums (same values, tested).

        Returns
        -------
        pandas.DataFrame
            One row per batch (index batch_id), columns :meth:`feature_names`; categorical
            context columns have the fitted categories (unseen values become missing).
        """
        ids = pd.Index(batch_ids)
        data, ctx = self._numeric(history, ids, progress, cube, once=once)
        names = self.feature_names()[: data.shape[1]]
        frame = pd.DataFrame(data, index=ids, columns=names)
        for col, cats in self.context_categories.items():
            values = ctx[col].astype("string") if col in ctx else pd.Series(pd.NA, index=ids)
            values = values.where(values.isin(cats))  # unseen categories become missing
            frame[f"ctx|{col}"] = pd.Categorical(values.to_numpy(dtype=object), categories=cats)
        return frame

    def matrix(
        self,
        history: BatchHistory,
        batch_ids,
        progress,
        cube: Cube | None = None,
        tags: np.ndarray | None = None,
    ) -> np.ndarray:
        """:meth:`transform` as the float matrix the booster reads (scoring's fast path).

        Columns in :meth:`feature_names` order; a categorical context column holds its
        category code (missing or unseen: NaN), which is how LightGBM reads a pandas
        categorical with the fitted categories. ``tags``: positions of the only tags whose
        statistics are computed (a booster's used tags); the others' columns are NaN.
        """
        ids = pd.Index(batch_ids)
        data, ctx = self._numeric(history, ids, progress, cube, tags=tags)
        codes = []
        for col, cats in self.context_categories.items():
            if col in ctx:
                code = pd.Index(cats).get_indexer(ctx[col].astype("string")).astype(float)
            else:
                code = np.full(len(ids), -1.0)
            codes.append(np.where(code >= 0, code, np.nan))
        return np.column_stack([data, *codes]) if codes else data

    def _numeric(self, history, ids: pd.Index, progress, cube, *, once=False, tags=None):
        """Progress, cut-off, tag statistics and numeric context of ``ids``, and the context
        (``tags``: only these tags' statistics, the others NaN)."""
        cube = cube if cube is not None else self.cube(history, ids)
        progress = np.broadcast_to(np.asarray(progress, dtype=float), (len(ids),))
        cut = progress * self.nominal_h
        # one cut-off per cube: a direct pass is cheaper than building the running sums
        if once and cube.prefix is None and tags is None:
            stats = self.stats_direct(cube, cut)
        else:
            stats = self.stats(cube, cut, tags)
        # one float block in feature_names() order (tag-major, STATS order; state tags:
        # last only), then the numeric context columns
        pos = self._stat_columns()  # tag x stat: column in the block (-1: none)
        n_block = int((pos >= 0).sum())
        out = np.empty((len(ids), 2 + n_block + len(self.context_numeric)))
        out[:, 0], out[:, 1] = progress, cut
        if tags is None:
            tags = slice(None)
        else:
            out[:, 2 : 2 + n_block] = np.nan
        for s, name in enumerate(STATS):
            col = pos[tags, s]
            has = col >= 0
            out[:, 2 + col[has]] = stats[name][:, has]
        wanted = [*self.context_numeric, *self.context_categories]
        present = [c for c in wanted if c in history.outcomes.columns]
        ctx = history.outcomes[present].reindex(ids) if present else pd.DataFrame(index=ids)
        for i, col in enumerate(self.context_numeric):
            out[:, 2 + n_block + i] = (
                pd.to_numeric(ctx[col], errors="coerce").to_numpy(dtype=float)
                if col in ctx
                else np.nan
            )
        return out, ctx

    def _stat_columns(self) -> np.ndarray:
        """Tag x statistic: the column of each in the statistics block (-1: not a feature)."""
        mask = self._stat_mask()
        pos = np.full(mask.shape, -1, dtype=np.int64)
        pos[mask] = np.arange(int(mask.sum()))
        return pos

    def stats_direct(self, cube: Cube, cut: np.ndarray) -> dict[str, np.ndarray]:
        """Per (batch, tag) statistics of the bins seen by ``cut``, computed directly.

        The reference for :meth:`stats` (prefix sums, what :meth:`transform` uses); tests
        check that both agree. Passes over all bins only where a statistic needs them; the
        slope and the recent mean read the few bins before each tag's last one.
        """
        seen = cube.t_h <= cut[:, None, None]
        value = cube.value
        valid = seen & ~np.isnan(value)
        n = valid.sum(axis=2)
        bh = self.bin_h
        with np.errstate(all="ignore"), _quiet():
            # sums instead of numpy's nan-functions (which copy the array for each call)
            vc = np.where(valid, value - self.center[None, :, None], 0.0)
            mean_c = vc.sum(axis=2) / n
            var = np.maximum(np.einsum("btk,btk->bt", vc, vc) / n - mean_c**2, 0.0)
            last_k = last_true(valid)
            last = np.take_along_axis(value, np.maximum(last_k, 0)[..., None], axis=2)[..., 0]
            last = np.where(last_k >= 0, last, np.nan)
            slope = self._window_slope(value, valid, last_k)
            below = (seen & (value < self.env_lo[None])).sum(axis=2) * bh
            above = (seen & (value > self.env_hi[None])).sum(axis=2) * bh
            zs = np.where(valid, value - self.env_med[None], np.nan)
            zs /= self.env_width[None]
            fin = np.isfinite(zs)
            zs0 = np.where(fin, zs, 0.0)
            max_z = np.where(fin, np.abs(zs0), -np.inf).max(axis=2)
            max_z = np.where(np.isfinite(max_z), max_z, np.nan)
            at_max = (seen & (value >= self.sat_level[None, :, None])).sum(axis=2) * bh
            bad_h = np.where(seen, cube.bad, 0.0).sum(axis=2) * bh
            z_mean = zs0.sum(axis=2) / fin.sum(axis=2)
            z_recent = self._window_mean(zs0, fin, last_k, self.recent_bins)
        no_data = n == 0
        return {
            "mean": mean_c + self.center[None, :],
            "std": np.where(n > 1, np.sqrt(var), np.nan),
            "last": last,
            "slope": slope,
            "below_h": np.where(no_data, np.nan, below),
            "above_h": np.where(no_data, np.nan, above),
            "max_z": max_z,
            "at_max_h": np.where(no_data, np.nan, at_max),
            "bad_h": np.where(no_data & (bad_h == 0), np.nan, bad_h),
            "z_mean": z_mean,
            "z_recent": z_recent,
        }

    def _window_slope(self, value, valid, last_k) -> np.ndarray:
        """Least-squares slope per hour over the valid bins among the last
        :data:`SLOPE_BINS` up to each (batch, tag)'s last valid bin."""
        idx, exists = latest_bins(last_k, SLOPE_BINS)
        w = exists & np.take_along_axis(valid, idx, axis=2)
        v = np.where(w, np.take_along_axis(value, idx, axis=2), 0.0)
        k = np.where(w, idx, 0).astype(float)
        nw = w.sum(axis=2)
        kbar = k.sum(axis=2) / nw
        vbar = v.sum(axis=2) / nw
        dk = np.where(w, k - kbar[..., None], 0.0)
        num = (dk * np.where(w, v - vbar[..., None], 0.0)).sum(axis=2)
        den = (dk * dk).sum(axis=2)
        return np.where(den > 0, num / den / self.bin_h, np.nan)

    def _window_mean(self, x0, ok, last_k, width: int) -> np.ndarray:
        """Mean of ``x0`` over the bins where ``ok`` among the last ``width`` up to each
        (batch, tag)'s last valid bin (``x0`` is 0 where not ``ok``)."""
        idx, exists = latest_bins(last_k, width)
        w = exists & np.take_along_axis(ok, idx, axis=2)
        return np.where(w, np.take_along_axis(x0, idx, axis=2), 0.0).sum(axis=2) / w.sum(axis=2)

    @property
    def recent_bins(self) -> int:
        """Length of the recent window in bins."""
        return max(2, round(RECENT_SHARE * self.nominal_h / max(self.bin_h, 1e-12)))

    def stats(
        self, cube: Cube, cut: np.ndarray, tags: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Per (batch, tag) statistics of the bins seen by ``cut`` (batch hours, per batch).

        Within a batch and tag, bins follow batch time, so the bins seen by a cut-off are a
        prefix: every statistic is read from running sums (computed once per cube and kept
        on it), which makes a snapshot cost a gather instead of a pass over all bins.
        ``tags``: positions of the tags wanted (default all); columns follow them.
        """
        p = self._prefix(cube)
        at = cube.seen(cut) - 1  # shared with the other pipelines of the snapshot

        n_b, n_t, n_k = cube.value.shape
        row = np.arange(n_b)[:, None] * n_k
        tags = np.arange(n_t) if tags is None else np.asarray(tags, dtype=np.int64)
        tag = tags[None, :]
        at = at[:, tags]

        flats: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def take(name: str, index: np.ndarray) -> np.ndarray:
            # running sums are batch x bin x tag: a batch's tags at one bin are neighbours
            if id(index) not in flats:  # the few cut-off arrays live through this call
                ok = index >= 0
                flats[id(index)] = ((row + np.maximum(index, 0)) * n_t + tag, ok, ok.all())
            flat, ok, all_ok = flats[id(index)]
            x = np.take(p[name], flat)
            return x if all_ok else np.where(ok, x, 0)

        bh = self.bin_h
        n = take("n", at)
        with np.errstate(all="ignore"):
            mean_c = take("s", at) / n
            var = np.maximum(take("ss", at) / n - mean_c**2, 0.0)
            last_k = np.where(at >= 0, take("last_k", at), -1)
            last = cube.value.reshape(-1)[(row * n_t + tag * n_k) + np.maximum(last_k, 0)]
            lo = last_k - SLOPE_BINS
            w = {q: take(q, last_k) - take(q, lo) for q in ("n", "k", "kk", "s", "kv")}
            den = w["n"] * w["kk"] - w["k"] ** 2
            num = w["n"] * w["kv"] - w["k"] * w["s"]
            slope = np.where((w["n"] > 1) & (den > 0), num / den / bh, np.nan)
            max_z = take("max_z", at)
            zn, zs = take("zn", at), take("zs", at)
            z_mean = np.where(zn > 0, zs / zn, np.nan)
            lo_r = last_k - self.recent_bins
            rn = take("zn", last_k) - take("zn", lo_r)
            z_recent = np.where(rn > 0, (take("zs", last_k) - take("zs", lo_r)) / rn, np.nan)
        no_data = n == 0
        bad_h = take("bad", at) * bh
        return {
            "mean": np.where(no_data, np.nan, mean_c + self.center[None, tags]),
            "std": np.where(n > 1, np.sqrt(var), np.nan),
            "last": np.where(last_k >= 0, last, np.nan),
            "slope": slope,
            "below_h": np.where(no_data, np.nan, take("below", at) * bh),
            "above_h": np.where(no_data, np.nan, take("above", at) * bh),
            "max_z": np.where(np.isfinite(max_z) & ~no_data, max_z, np.nan),
            "at_max_h": np.where(no_data, np.nan, take("at_max", at) * bh),
            "bad_h": np.where(no_data & (bad_h == 0), np.nan, bad_h),
            "z_mean": np.where(no_data, np.nan, z_mean),
            "z_recent": np.where(no_data, np.nan, z_recent),
        }

    def _prefix(self, cube: Cube) -> dict[str, np.ndarray]:
        """Running sums over bins of the per-bin statistics, laid out batch x bin x tag.

        The layout puts a batch's tags at one bin side by side, so the gather of a snapshot
        (one bin per batch, every tag) reads a few cache lines per batch, not one per tag.
        """
        if cube.prefix is not None:
            return cube.prefix
        value = np.ascontiguousarray(cube.value.transpose(0, 2, 1))
        t_h = cube.t_h.transpose(0, 2, 1)
        bad = cube.bad.transpose(0, 2, 1)
        k = np.arange(self.n_bins, dtype=float)[None, :, None]
        env_med, env_width = self.env_med.T[None], self.env_width.T[None]
        valid = np.isfinite(value)
        v = np.where(valid, value - self.center[None, None, :], 0.0)
        with np.errstate(all="ignore"):
            z = np.abs(value - env_med) / env_width
        zsigned = np.where(valid & np.isfinite(z), (value - env_med), 0.0)
        with np.errstate(all="ignore"):
            zsigned = np.where(zsigned != 0, zsigned / env_width, 0.0)
        zfin = valid & np.isfinite(z)
        z = np.where(zfin, z, -np.inf)
        cube.prefix = {
            "n": np.cumsum(valid, axis=1),
            "s": np.cumsum(v, axis=1),
            "ss": np.cumsum(v * v, axis=1),
            "k": np.cumsum(valid * k, axis=1),
            "kk": np.cumsum(valid * k * k, axis=1),
            "kv": np.cumsum(v * k, axis=1),
            "below": np.cumsum(valid & (value < self.env_lo.T[None]), axis=1),
            "above": np.cumsum(valid & (value > self.env_hi.T[None]), axis=1),
            "at_max": np.cumsum(valid & (value >= self.sat_level[None, None, :]), axis=1),
            "bad": np.cumsum(np.where(np.isfinite(t_h), bad, 0.0), axis=1),
            "max_z": np.maximum.accumulate(z, axis=1),
            "zs": np.cumsum(zsigned, axis=1),
            "zn": np.cumsum(zfin, axis=1),
            "last_k": np.maximum.accumulate(np.where(valid, k, -1.0), axis=1).astype(int),
        }
        cube.prefix = {name: np.ascontiguousarray(a) for name, a in cube.prefix.items()}
        return cube.prefix

    def envelope_hours(self, features: pd.DataFrame) -> pd.Series:
        """The golden-batch rule's score: total hours outside the envelope, over all tags."""
        cols = [c for c in features.columns if c.endswith("|below_h") or c.endswith("|above_h")]
        return features[cols].fillna(0.0).sum(axis=1)


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings inside a block."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
