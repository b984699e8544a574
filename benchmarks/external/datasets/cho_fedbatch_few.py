"""The CHO fed-batch data set with few training batches (48 of the 120; 20 for ``"small"``).

Same batches, same test split as :mod:`cho_fedbatch`: only the training side is thinned
(stratified), so the two results side by side show what tens of batches, the usual history
in biopharma, cost against a hundred or more.
"""

from __future__ import annotations

import numpy as np

from . import _common, cho_fedbatch

__all__ = ["DESCRIPTION", "make"]

N_TRAIN = {"full": 48, "small": 20}
DESCRIPTION = cho_fedbatch.DESCRIPTION + " Few-batch variant: {n} training batches."


def make(seed: int = 0, size: str = "full") -> dict:
    """:func:`cho_fedbatch.make` with the training batches thinned to ``N_TRAIN[size]``.

    Raises
    ------
    ValueError
        If ``size`` is not "full" or "small".
    """
    _common.check_size(size)
    _, _, series, outcomes, r_split = cho_fedbatch.generate(seed, cho_fedbatch.N_BATCHES[size])
    labels = outcomes["label"].to_numpy()
    test = _common.split_batches(r_split, labels)
    keep = _thin(np.random.default_rng(seed + 7), labels, ~test, N_TRAIN[size])
    return _common.batch_result(
        series,
        outcomes,
        test,
        _common.batch_fit_args(1.0),
        DESCRIPTION.format(n=int(keep.sum())),
        train=keep,
    )


def _thin(rng: np.random.Generator, labels: np.ndarray, train: np.ndarray, n: int) -> np.ndarray:
    """A stratified subset of ``n`` training batches (the class shares kept)."""
    keep = np.zeros(len(labels), dtype=bool)
    idx = np.flatnonzero(train)
    share = labels[idx].mean()
    n_pos = max(2, round(share * n))
    for cls, k in ((1, n_pos), (0, n - n_pos)):
        pool = rng.permutation(idx[labels[idx] == cls])
        keep[pool[:k]] = True
    return keep
