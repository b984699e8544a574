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

from quality.mspc import last_true, latest_bins

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
        n_b, n_t, _ = cube.value.shape
        cut_h = np.broadcast_to(np.asarray(cut_h, dtype=float), (n_b,))
        seen = cube.t_h <= cut_h[:, None, None]
        last_k = last_true(seen)
        # the latest FROZEN_BINS bins up to each tag's last seen one
        idx, exists = latest_bins(last_k, FROZEN_BINS)
        recent = exists & np.take_along_axis(seen, idx, axis=2)
        n_recent = recent.sum(axis=2)
        sd = np.take_along_axis(cube.sd, idx, axis=2)
        value = np.take_along_axis(cube.value, idx, axis=2)
        frozen_bins = (recent & np.isfinite(value) & (sd == 0)).sum(axis=2)
        varies = np.nan_to_num(self.typical_sd, nan=0.0) > 0
        frozen = (n_recent >= FROZEN_BINS) & (frozen_bins >= FROZEN_BINS) & varies[None, :]
        bad = np.take_along_axis(cube.bad, idx, axis=2)
        bad_share = np.where(recent, bad, 0.0).sum(axis=2) / np.maximum(n_recent, 1)
        usually_good = self.typical_bad < BAD_SHARE / 2
        # "at least half": a share of exactly a half may add up to a hair below it
        bad = (n_recent > 0) & (bad_share >= BAD_SHARE - 1e-9) & usually_good[None, :]
        drift = np.zeros((n_b, n_t), dtype=bool)
        for idx_g, mu, sd_g, models in self.groups:
            drift[:, idx_g] = self._drifting(cube.value[:, idx_g, :], seen[:, idx_g, :], mu, sd_g,
                                             models)  # fmt: skip
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

    @staticmethod
    def _drifting(value, seen, mu, sd, models) -> np.ndarray:
        """Batch x tag of one step: does the tag's mean residual against what the other tags
        imply, over the last :data:`DRIFT_BINS` bins where all of them have a value, exceed
        :data:`DRIFT_SIGMAS` (and only one tag of the step does)?"""
        complete = (seen & np.isfinite(value)).all(axis=1)  # batch x bin
        lk = last_true(complete)
        at, exists = latest_bins(lk, DRIFT_BINS)  # batch x window
        window = exists & np.take_along_axis(complete, at, axis=1) & (lk[:, None] >= DRIFT_BINS)
        z = np.take_along_axis(value, np.broadcast_to(at[:, None, :], (len(value), value.shape[1],
                               at.shape[1])), axis=2)  # fmt: skip
        z = np.where(window[:, None, :], (z - mu[None, :, None]) / sd[None, :, None], 0.0)
        n_window = np.maximum(window.sum(axis=1), 1)
        any_window = window.any(axis=1)
        drift = np.zeros((len(value), value.shape[1]), dtype=bool)
        for a, others, coef, icpt, rsd in models:
            pred = np.einsum("bok,o->bk", z[:, others, :], coef) + icpt
            resid = np.where(window, z[:, a, :] - pred, 0.0)
            mean = np.where(any_window, resid.sum(axis=1) / n_window, 0.0)
            drift[:, a] = np.abs(mean) > DRIFT_SIGMAS * max(rsd, 1e-6)
        # one tag against all the others is a sensor; several together are the process
        drift[drift.sum(axis=1) > 1] = False
        return drift
