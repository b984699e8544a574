"""Reasons in words: LightGBM feature contributions translated for a QA reviewer.

Each prediction's log-odds is split into per-feature contributions (SHAP values computed by
LightGBM with ``pred_contrib=True``); the features that raised the risk most are written as
a sentence about the tag, e.g. ``Dissolved oxygen (production) below the golden-batch
envelope for 3.2 h``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = [
    "describe",
    "format_reasons",
    "linear_reason_pairs",
    "reason_pairs",
    "reason_tags",
    "reasons",
]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e5 else f"{v:.0f}"


def describe(feature: str, value, names: dict[str, str]) -> str:
    """One feature and its value as a sentence fragment."""
    if feature == "progress":
        return f"batch {float(value):.0%} through its nominal duration"
    if feature == "elapsed_h":
        return f"{float(value):.0f} h into the batch"
    if feature.startswith("ctx|"):
        col = feature[4:].replace("_", " ")
        if (isinstance(value, float) and math.isnan(value)) or value is None or value is pd.NA:
            return f"{col} unknown"
        return f"{col} = {_fmt(value) if isinstance(value, int | float) else value}"
    tag, stat = feature.rsplit("|", 1)
    name = names.get(tag, tag)
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if math.isnan(v):
        return f"{name}: no data yet"
    if tag.startswith("asset."):
        return f"{name} {v:.0f}"
    return {
        "below_h": f"{name} below the golden-batch envelope for {v:.1f} h",
        "above_h": f"{name} above the golden-batch envelope for {v:.1f} h",
        "at_max_h": f"{name} at its upper limit for {v:.1f} h (controller saturation)",
        "max_z": f"{name} up to {v:.1f} envelope widths away from the golden batch",
        "mean": f"{name} averaging {_fmt(v)}",
        "std": f"{name} unsteady (spread {_fmt(v)})",
        "last": f"{name} now {_fmt(v)}",
        "slope": f"{name} {'rising' if v > 0 else 'falling'} ({v:+.3g} per h)",
        "bad_h": f"{name}: {v:.1f} h of bad-quality data",
        "z_mean": f"{name} {abs(v):.1f} envelope widths {'above' if v > 0 else 'below'} the "
        "golden batch on average so far",
        "z_recent": f"{name} {abs(v):.1f} envelope widths {'above' if v > 0 else 'below'} the "
        "golden batch lately",
    }.get(stat, f"{name} {stat} {_fmt(v)}")


def _tag_of(feature: str) -> str | None:
    """The process tag a feature is computed from (None: progress, context, ages)."""
    if "|" not in feature or feature.startswith("ctx|"):
        return None
    tag = feature.rsplit("|", 1)[0]
    return None if tag.startswith("asset.") else tag


def reason_pairs(contrib: np.ndarray, X: pd.DataFrame, model) -> list[list[tuple]]:
    """Each row's non-zero feature contributions as (log-odds, words, tag or None)."""
    names = model.featurizer.tag_names
    cols = list(X.columns)
    values = X.to_numpy(dtype=object)
    out = []
    for i in range(len(X)):
        c = contrib[i]
        order = np.argsort(-np.abs(c))[:12]
        out.append(
            [
                (float(c[j]), describe(cols[j], values[i, j], names), _tag_of(cols[j]))
                for j in order
                if c[j]
            ]
        )
    return out


def linear_reason_pairs(contrib, z_recent, spe_ratio, traj, names) -> list:
    """Per-tag contributions of a trajectory (MSPC) pipeline as (log-odds, words) pairs.

    ``contrib`` has one column per tag and a last one for the multivariate statistics; a tag
    is described by its recent distance from the normal batches' mean trajectory (in their
    standard deviations) when that is 1 or more, else by its share of the squared prediction
    error against what is typical of normal batches (it disagrees with the other tags).
    """
    tags = traj.tags
    out = []
    for i in range(len(contrib)):
        row = []
        for j in np.argsort(-np.abs(contrib[i]))[:12]:
            c = float(contrib[i, j])
            if not c:
                continue
            if j == len(tags):
                row.append((c, "tags together off the normal batches' correlation (T2 / SPE)", ""))
                continue
            name = names.get(tags[j], tags[j])
            z, r = float(z_recent[i, j]), float(spe_ratio[i, j])
            if abs(z) >= 1 or r < 1.5:
                side = "above" if z > 0 else "below"
                text = f"{name} {abs(z):.1f} sd {side} the normal batches' trajectory lately"
            else:
                text = f"{name} out of step with the other tags (SPE {r:.1f}x typical)"
            row.append((c, text, None if tags[j].startswith("asset.") else tags[j]))
        out.append(row)
    return out


def _shown(pairs: list[tuple], top: int) -> tuple[list[tuple], bool]:
    """The pairs a reason text shows: the ``top`` risk-raising ones, else the ``top`` that
    lowered it most (and whether they raise)."""
    up = sorted((p for p in pairs if p[0] > 0), key=lambda p: -p[0])[:top]
    if up:
        return up, True
    return sorted(pairs, key=lambda p: p[0])[:top], False


def format_reasons(pairs: list[tuple], top: int = 3) -> str:
    """The ``top`` risk-raising pairs, ``; ``-separated; else what lowered the risk most."""
    shown, raises = _shown(pairs, top)
    if raises:
        return "; ".join(f"{p[1]} (+{p[0]:.2f})" for p in shown)
    return "; ".join(f"lowers risk: {p[1]}" for p in shown)


def reason_tags(pairs: list[tuple], top: int = 3) -> str:
    """The process tags the reasons of :func:`format_reasons` name, in the same order,
    ``, ``-separated (without repeats; reasons about no single tag are left out)."""
    tags = []
    for p in _shown(pairs, top)[0]:
        if p[2] and p[2] not in tags:
            tags.append(p[2])
    return ", ".join(tags)


def reasons(contrib: np.ndarray, X: pd.DataFrame, model, top: int = 3) -> list[str]:
    """For each row, its ``top`` risk-raising contributions in words, ``; ``-separated.

    Rows where nothing raised the risk list what lowered it most, marked as such.
    """
    return [format_reasons(row, top) for row in reason_pairs(contrib, X, model)]
