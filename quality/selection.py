"""Model selection by grouped cross-validation, shared by both model families.

Every candidate pipeline is scored on the same folds; a fold holds whole groups (batches or
assets), never a part of one, so no batch or asset is on both sides. Where the groups have a
time order the folds are contiguous blocks of it; where they have none (batch-relative time,
cycles) the groups are shuffled with the seed, stratified by outcome when there is one, so
that each fold sees both outcomes. The choice is made on the cross-validated metric alone,
and the chosen pipeline is then refitted on all data by its family.

What the selection records (model card, ``meta["selection"]``): the metric, each
candidate's pooled out-of-fold figure with the spread over folds and a bootstrap interval
over groups, what was chosen and why, and warnings when the data are too few for the claim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "CandidateResult",
    "Selection",
    "bootstrap_interval",
    "choose",
    "fast_auc",
    "group_folds",
]

logger = logging.getLogger(__name__)

#: a cross-validated interval wider than this (half-width) is flagged as too few data
WIDE_INTERVAL = 0.1
BOOTSTRAP = 200


def fast_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; None if one class.

    The same figure as scikit-learn's ``roc_auc_score`` without its input checks, which
    dominate when thousands of bootstrap resamples are scored.
    """
    y = np.asarray(y, dtype=bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    s = np.asarray(score, dtype=float)
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s))
    # average ranks of ties
    bounds = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(s)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def group_folds(
    groups: pd.Index,
    n_folds: int,
    *,
    ordered: bool,
    seed: int = 0,
    labels: np.ndarray | None = None,
) -> pd.Series:
    """Fold number (0..n_folds-1) of each group.

    Parameters
    ----------
    groups : pandas.Index
        Group ids; in time order when ``ordered``.
    n_folds : int
        Number of folds (reduced to the number of groups if larger).
    ordered : bool
        True: contiguous blocks of the given order. False: shuffled with ``seed``.
    labels : numpy.ndarray, optional
        Per-group 0/1 outcome; unordered folds are then stratified by it.

    Returns
    -------
    pandas.Series
        Indexed by group, integer fold numbers.
    """
    n = len(groups)
    k = max(2, min(n_folds, n))
    if ordered:
        return pd.Series(np.arange(n) * k // n, index=groups)
    rng = np.random.default_rng(seed)
    fold = np.empty(n, dtype=int)
    strata = np.zeros(n, dtype=int) if labels is None else np.asarray(labels, dtype=int)
    start = 0
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        members = members[rng.permutation(len(members))]
        fold[members] = (start + np.arange(len(members))) % k
        start += len(members)
    return pd.Series(fold, index=groups)


def bootstrap_interval(
    metric: Callable[[np.ndarray], float | None],
    n_groups: int,
    *,
    seed: int = 0,
    n: int = BOOTSTRAP,
    level: float = 0.9,
) -> tuple[float | None, float | None]:
    """Percentile interval of ``metric(sample)`` over group resamples (with replacement).

    ``metric`` takes an array of group positions (with repeats) and returns the figure, or
    None when the resample cannot give one (e.g. one outcome only).
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        v = metric(rng.integers(0, n_groups, n_groups))
        if v is not None and np.isfinite(v):
            values.append(v)
    if len(values) < n // 2:
        return None, None
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass
class CandidateResult:
    """One candidate's cross-validated figures."""

    name: str
    description: str
    cv_mean: float
    cv_sd: float
    folds: list[float]
    interval: tuple[float | None, float | None] = (None, None)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "cv_mean": round(self.cv_mean, 4),
            "cv_sd": round(self.cv_sd, 4),
            "cv_folds": [round(v, 4) for v in self.folds],
            "cv_interval_90": [None if v is None else round(v, 4) for v in self.interval],
            **self.extra,
        }


@dataclass
class Selection:
    """The outcome of a selection: what was compared, what was chosen and why."""

    metric: str
    higher_is_better: bool
    candidates: list[CandidateResult]
    chosen: str
    why: str
    folds: int
    fold_kind: str
    groups: int
    warnings: list[str] = field(default_factory=list)
    #: a second choice for the early part of a batch (deviation model), if it made one
    early: dict = field(default_factory=dict)

    def result(self, name: str) -> CandidateResult:
        return next(c for c in self.candidates if c.name == name)

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "folds": self.folds,
            "fold_kind": self.fold_kind,
            "groups": self.groups,
            "chosen": self.chosen,
            "why": self.why,
            "candidates": [c.as_dict() for c in self.candidates],
            "warnings": list(self.warnings),
            **({"early": self.early} if self.early else {}),
        }

    def lines(self) -> list[str]:
        """Plain-text summary, one line per candidate, for the command line."""
        return Selection.lines_of(self.as_dict())

    @staticmethod
    def lines_of(d: dict) -> list[str]:
        """The summary of a selection record (``as_dict``), as stored in a model's metadata."""
        sign = "" if d["higher_is_better"] else " (lower is better)"
        out = [f"model selection: {d['metric']}{sign}, {d['folds']}-fold {d['fold_kind']}"]
        for c in d["candidates"]:
            lo, hi = c["cv_interval_90"]
            ci = f", 90 % [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
            mark = "*" if c["name"] == d["chosen"] else " "
            out.append(
                f" {mark} {c['name']:<28} {c['cv_mean']:.4f} ± {c['cv_sd']:.4f} over folds{ci}"
            )
        out.append(f"chosen: {d['chosen']} ({d['why']})")
        if d.get("early"):
            e = d["early"]
            out.append(
                f"before {e['before_progress']:.0%} progress: {e['chosen']} ({e['why']}; "
                f"{e['metric']})"
            )
        out += [f"warning: {w}" for w in d["warnings"]]
        return out


def choose(
    candidates: list[CandidateResult],
    *,
    metric: str,
    higher_is_better: bool,
    folds: int,
    fold_kind: str,
    groups: int,
    simpler_first: bool = True,
) -> Selection:
    """Pick the best cross-validated mean; among ties (equal to 4 decimals), the simpler.

    Candidates are given simplest first. Warnings: an interval wider than +-0.1 (too few
    data for the claim), and the chosen candidate's lead smaller than its own spread.
    """
    sign = 1.0 if higher_is_better else -1.0
    scores = np.array([sign * round(c.cv_mean, 4) for c in candidates])
    best = int(np.flatnonzero(scores == scores.max())[0] if simpler_first else scores.argmax())
    chosen = candidates[best]
    others = [c for c in candidates if c is not chosen]
    runner = max(others, key=lambda c: sign * c.cv_mean) if others else None
    why = f"best cross-validated {metric}: {chosen.cv_mean:.4f}"
    if runner is not None:
        why += f" against {runner.cv_mean:.4f} for {runner.name}"
    warnings = []
    lo, hi = chosen.interval
    # a probability-scale metric (AUC): +-0.1 absolute; an error (RMSE): +-10 % of itself
    limit = WIDE_INTERVAL if higher_is_better else WIDE_INTERVAL * abs(chosen.cv_mean)
    if lo is not None and (hi - lo) / 2 > limit:
        warnings.append(
            f"too few data for a firm claim: the 90 % interval of the cross-validated "
            f"{metric} is [{lo:.3f}, {hi:.3f}] (wider than ±{limit:.3g})"
        )
    if runner is not None and abs(chosen.cv_mean - runner.cv_mean) < chosen.cv_sd:
        why += "; the lead is within the spread over folds"
    return Selection(
        metric=metric,
        higher_is_better=higher_is_better,
        candidates=candidates,
        chosen=chosen.name,
        why=why,
        folds=folds,
        fold_kind=fold_kind,
        groups=groups,
        warnings=warnings,
    )
