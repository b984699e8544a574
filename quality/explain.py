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

__all__ = ["describe", "reasons"]


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
    }.get(stat, f"{name} {stat} {_fmt(v)}")


def reasons(contrib: np.ndarray, X: pd.DataFrame, model, top: int = 3) -> list[str]:
    """For each row, its ``top`` risk-raising contributions in words, ``; ``-separated.

    Rows where nothing raised the risk list what lowered it most, marked as such.
    """
    names = model.featurizer.tag_names
    cols = list(X.columns)
    out = []
    values = X.to_numpy(dtype=object)
    for i in range(len(X)):
        c = contrib[i]
        order = np.argsort(-c)[:top]
        picked = [j for j in order if c[j] > 0]
        if picked:
            parts = [f"{describe(cols[j], values[i, j], names)} (+{c[j]:.2f})" for j in picked]
        else:
            low = np.argsort(c)[:top]
            parts = [f"lowers risk: {describe(cols[j], values[i, j], names)}" for j in low]
        out.append("; ".join(parts))
    return out
