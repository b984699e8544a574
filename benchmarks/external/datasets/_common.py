"""Helpers shared by the generators: fault draws, splits, noise, dropouts, long tables.

Nothing here knows a process; the process modules hold the mechanisms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "SIZES",
    "assign_faults",
    "batch_fit_args",
    "batch_result",
    "check_size",
    "drop_samples",
    "long_frame",
    "outcomes_frame",
    "spawn",
    "split_batches",
]

#: The two sizes every ``make`` accepts.
SIZES = ("full", "small")


def spawn(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from one seed (one per purpose).

    Drawing process parameters, measurement noise and dropouts from separate streams keeps a
    batch's process identical when only, say, a sensor fault is switched off.
    """
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def check_size(size: str) -> None:
    """Raise ``ValueError`` unless ``size`` is one of :data:`SIZES`."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}; got {size!r}")


def assign_faults(rng: np.random.Generator, n: int, fault_share: float, n_types: int) -> np.ndarray:
    """Fault type code per batch: 0 = normal, 1..n_types = a fault, in shuffled order.

    Exactly ``round(fault_share * n)`` batches (at least two) are faulted, the types taking
    turns so that each appears about equally often.
    """
    n_fault = max(2, round(fault_share * n))
    codes = np.zeros(n, dtype=int)
    codes[:n_fault] = np.arange(n_fault) % n_types + 1
    return rng.permutation(codes)


def split_batches(
    rng: np.random.Generator, labels: np.ndarray, test_share: float = 0.4
) -> np.ndarray:
    """Boolean test mask: a stratified split by batch with both classes on both sides."""
    labels = np.asarray(labels)
    test = np.zeros(len(labels), dtype=bool)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        if len(idx) < 2:
            raise ValueError(f"labels: class {cls} needs at least 2 batches; got {len(idx)}")
        k = min(len(idx) - 1, max(1, round(test_share * len(idx))))
        test[idx[:k]] = True
    return test


def drop_samples(
    rng: np.random.Generator,
    values: np.ndarray,
    share: float = 0.02,
    gap_share: float = 0.1,
    gap_len: tuple[int, int] = (4, 16),
) -> np.ndarray:
    """A copy of ``values`` (batches x samples) with random dropouts and tag outages as NaN.

    Each sample is lost with probability ``share``; a share ``gap_share`` of batches also has
    one outage of ``gap_len`` consecutive samples (a transmitter or gateway that went silent).
    """
    out = np.array(values, dtype=float, copy=True)
    n_b, n_s = out.shape
    out[rng.random((n_b, n_s)) < share] = np.nan
    has_gap = rng.random(n_b) < gap_share
    lengths = rng.integers(gap_len[0], gap_len[1] + 1, n_b)
    starts = rng.integers(0, max(1, n_s - gap_len[1]), n_b)
    cols = np.arange(n_s)[None, :]
    gap = has_gap[:, None] & (cols >= starts[:, None]) & (cols < (starts + lengths)[:, None])
    out[gap] = np.nan
    return out


def long_frame(
    batch_ids: np.ndarray, tags: dict[str, tuple[np.ndarray, np.ndarray]], end_h: np.ndarray
) -> pd.DataFrame:
    """Long table ``batch_id, time_h, tag, value`` from per-tag sample grids.

    Parameters
    ----------
    batch_ids : numpy.ndarray
        One id per batch (row of every value array).
    tags : dict
        Tag name -> ``(times, values)``; ``times`` is a grid shared by all batches (1-D) or one
        per batch (2-D, batches x samples); ``values`` is batches x samples with NaN for samples
        that were not recorded.
    end_h : numpy.ndarray
        Each batch's end (hours since its start): later samples are not part of the batch.
    """
    parts = []
    n_b = len(batch_ids)
    for tag, (times, values) in tags.items():
        t = np.broadcast_to(times if times.ndim == 2 else times[None, :], values.shape)
        keep = np.isfinite(values) & (t <= end_h[:, None] + 1e-9) & (t >= 0)
        rows, cols = np.nonzero(keep)
        parts.append(
            pd.DataFrame(
                {
                    "batch_id": np.asarray(batch_ids)[rows],
                    "time_h": np.round(t[rows, cols], 6),
                    "tag": tag,
                    "value": values[rows, cols],
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.sort_values(["batch_id", "time_h", "tag"], kind="stable").reset_index(drop=True)
    if frame["batch_id"].nunique() != n_b:
        raise ValueError(
            f"batch_ids: every batch needs samples; {n_b - frame['batch_id'].nunique()} have none"
        )
    return frame


def outcomes_frame(
    batch_ids: np.ndarray, codes: np.ndarray, names: tuple[str, ...], start_h: np.ndarray
) -> pd.DataFrame:
    """One row per batch: ``batch_id, label, fault_type, fault_start_h`` (NaN when normal)."""
    codes = np.asarray(codes)
    return pd.DataFrame(
        {
            "batch_id": np.asarray(batch_ids),
            "label": (codes > 0).astype(int),
            "fault_type": np.asarray(("none", *names), dtype=object)[codes],
            "fault_start_h": np.where(codes > 0, np.round(start_h, 4), np.nan),
        }
    )


def batch_result(
    series: pd.DataFrame,
    outcomes: pd.DataFrame,
    test: np.ndarray,
    fit_args: list[str],
    description: str,
    train: np.ndarray | None = None,
) -> dict:
    """The dict every batch ``make`` returns (train = not test unless ``train`` is given)."""
    ids = outcomes["batch_id"].to_numpy()
    train = ~test if train is None else train
    train_ids, test_ids = set(ids[train]), set(ids[test])
    return {
        "series_train": series[series["batch_id"].isin(train_ids)].reset_index(drop=True),
        "outcomes_train": outcomes[train].reset_index(drop=True),
        "series_test": series[series["batch_id"].isin(test_ids)].reset_index(drop=True),
        "outcomes_test": outcomes[test].reset_index(drop=True),
        "fit_args": list(fit_args),
        "description": description,
    }


def batch_fit_args(bin_h: float) -> list[str]:
    """The product's CLI arguments for the long tables written by :func:`long_frame`."""
    return [
        "--batch-col",
        "batch_id",
        "--time-col",
        "time_h",
        "--tag-col",
        "tag",
        "--value-col",
        "value",
        "--label-col",
        "label",
        "--bin-h",
        f"{bin_h:g}",
    ]
