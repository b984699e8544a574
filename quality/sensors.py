"""Sensor-health gating: tell a bad sensor from a bad process before trusting a score.

A tag is suspect at the prediction's cut-off when, over its latest bins:

- it is *frozen*: zero within-bin variation for 3 bins while the tag normally varies;
- it has *bad status*: at least half of its recent samples had a bad or uncertain quality
  (OPC UA StatusCode) or were not numbers;
- it *drifts against the other tags*: a ridge model fitted on good batches predicts each tag
  from the other tags of the same step; a mean residual over the last 4 bins beyond 6
  standard deviations (of single-bin residuals in training) means the tag disagrees with
  what the others imply. When several tags of a step disagree at once, the process moved,
  not a sensor: none is flagged.

A suspect input makes the prediction low-confidence and names the sensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

__all__ = ["SensorCheck"]

FROZEN_BINS = 3
DRIFT_BINS = 4
DRIFT_SIGMAS = 6.0
BAD_SHARE = 0.5


@dataclass
class SensorCheck:
    """Fitted per-tag expectations (typical noise, cross-tag ridge models)."""

    typical_sd: np.ndarray | None = None
    groups: list[tuple[np.ndarray, list]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def fit(self, featurizer, history, batch_ids) -> SensorCheck:
        """Learn from the good batches of ``batch_ids``."""
        ids = pd.Index(batch_ids)
        cube = featurizer.cube(history, ids)
        good = history.outcomes.loc[ids, "label"].eq(False).fillna(False).to_numpy()
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self.typical_sd = np.nanmedian(cube.sd[good], axis=(0, 2))
                seen = np.isfinite(cube.t_h[good])
                self.typical_bad = np.nansum(np.where(seen, cube.bad[good], 0.0), axis=(0, 2)) / (
                    np.maximum(seen.sum(axis=(0, 2)), 1)
                )
        self.names = [featurizer.tag_names.get(t, t) for t in featurizer.tags]
        steps: dict[str, list[int]] = {}
        for j, tag in enumerate(featurizer.tags):
            if not tag.startswith("asset."):
                steps.setdefault(tag.split(".", 1)[0], []).append(j)
        self.groups = []
        v = cube.value[good]
        for idx in steps.values():
            if len(idx) < 3:
                continue
            idx = np.array(idx)
            rows = v[:, idx, :].transpose(0, 2, 1).reshape(-1, len(idx))
            rows = rows[np.isfinite(rows).all(axis=1)]
            if len(rows) < 50:
                continue
            mu, sd = rows.mean(axis=0), rows.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            z = (rows - mu) / sd
            models = []
            for a in range(len(idx)):
                others = np.delete(np.arange(len(idx)), a)
                m = Ridge(alpha=1.0).fit(z[:, others], z[:, a])
                resid = z[:, a] - m.predict(z[:, others])
                # spread of a 4-bin mean, assuming some autocorrelation: no sqrt(4) shrink
                models.append((a, others, m.coef_.copy(), float(m.intercept_), float(resid.std())))
            self.groups.append((idx, mu, sd, models))
        return self

    def check(self, cube, cut_h: np.ndarray) -> list[list[str]]:
        """Suspect sensors of each batch at its cut-off, as ``name: reason`` strings."""
        n_b, n_t, n_k = cube.value.shape
        cut_h = np.broadcast_to(np.asarray(cut_h, dtype=float), (n_b,))
        seen = cube.t_h <= cut_h[:, None, None]
        valid = seen & np.isfinite(cube.value)
        k = np.arange(n_k)[None, None, :]
        last_k = np.where(seen, k, -1).max(axis=2)
        recent = seen & (k > last_k[..., None] - FROZEN_BINS)
        n_recent = recent.sum(axis=2)
        frozen_bins = (recent & valid & (cube.sd == 0)).sum(axis=2)
        varies = np.nan_to_num(self.typical_sd, nan=0.0) > 0
        frozen = (n_recent >= FROZEN_BINS) & (frozen_bins >= FROZEN_BINS) & varies[None, :]
        bad_share = np.where(recent, cube.bad, 0.0).sum(axis=2) / np.maximum(n_recent, 1)
        usually_good = self.typical_bad < BAD_SHARE / 2
        bad = (n_recent > 0) & (bad_share >= BAD_SHARE) & usually_good[None, :]
        drift = np.zeros((n_b, n_t), dtype=bool)
        for idx, mu, sd, models in self.groups:
            z = (cube.value[:, idx, :] - mu[None, :, None]) / sd[None, :, None]
            z = np.where(seen[:, idx, :], z, np.nan)
            complete = np.isfinite(z).all(axis=1)
            lk = np.where(complete, k[0], -1).max(axis=1)
            window = complete & (k[0] > lk[:, None] - DRIFT_BINS) & (lk[:, None] >= DRIFT_BINS)
            z0 = np.nan_to_num(z)  # once per step, not once per tag
            n_window = np.maximum(window.sum(axis=1), 1)
            for a, others, coef, icpt, rsd in models:
                pred = np.einsum("bok,o->bk", z0[:, others, :], coef) + icpt
                resid = np.where(window, z0[:, a, :] - pred, 0.0)
                mean = np.where(window.any(axis=1), resid.sum(axis=1) / n_window, 0.0)
                drift[:, idx[a]] = np.abs(mean) > DRIFT_SIGMAS * max(rsd, 1e-6)
            # one tag against all the others is a sensor; several together are the process
            several = drift[:, idx].sum(axis=1) > 1
            drift[np.ix_(several, idx)] = False
        out = []
        for b in range(n_b):
            flags = []
            for j in np.flatnonzero(frozen[b] | bad[b] | drift[b]):
                why = (
                    "frozen"
                    if frozen[b, j]
                    else "bad status"
                    if bad[b, j]
                    else "drifting vs the other tags"
                )
                flags.append(f"{self.names[j]}: {why}")
            out.append(flags)
        return out
