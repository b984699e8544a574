"""The ``monitor`` score of batch MSPC (quality.mspc): a distance from the normal batches.

Synthetic cubes built here (not the twin): batches of four correlated tags at 1 h bins, a
share of them with a probe drifting on one tag from a random hour. The monitor uses the
labels only to pick the normal batches it measures against and to scale its log-odds, so it
ranks a fault that has begun even when most labelled faults have not shown yet.
"""

from __future__ import annotations

import numpy as np
import pytest

from quality.mspc import Trajectories, TrajectoryModel
from quality.selection import fast_auc

HOURS = 60
TAGS = ["a", "b", "c", "d"]


def _cube(n: int, seed: int, onset: np.ndarray | None = None):
    """value, t_h (batch x tag x bin) and the drift onset per batch (inf: none)."""
    rng = np.random.default_rng(seed)
    t = np.arange(HOURS, dtype=float) + 0.5
    base = 1.0 - np.exp(-t / 20.0)
    gain = rng.normal(1.0, 0.05, n)[:, None]
    value = np.empty((n, len(TAGS), HOURS))
    value[:, 0] = gain * base + rng.normal(0, 0.02, (n, HOURS))
    value[:, 1] = 7.0 - 0.2 * value[:, 0] + rng.normal(0, 0.01, (n, HOURS))
    value[:, 2] = 37.0 + rng.normal(0, 0.05, (n, HOURS))
    value[:, 3] = 2.0 * value[:, 0] + rng.normal(0, 0.03, (n, HOURS))
    onset = np.full(n, np.inf) if onset is None else onset
    drift = np.clip(t[None, :] - onset[:, None], 0, None) * 0.01
    value[:, 1] += drift  # a pH probe drifting away from what the other tags say
    t_h = np.broadcast_to(t, value.shape).copy()
    return value, t_h


def _model(kind: str, value, t_h, y) -> TrajectoryModel:
    tr = Trajectories.of(value, t_h)
    return TrajectoryModel(kind=kind, seed=0).fit(tr, y, tags=TAGS, nominal_h=HOURS, bin_h=1.0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n_train, n_test = 40, 60
    y = np.zeros(n_train + n_test, dtype=int)
    y[rng.permutation(n_train)[:12]] = 1
    y[n_train + rng.permutation(n_test)[:20]] = 1
    # faults from a random hour: by 40 % progress (24 h) about a quarter have begun
    onset = np.where(y == 1, rng.uniform(10, 55, len(y)), np.inf)
    value, t_h = _cube(len(y), seed=5, onset=onset)
    return value, t_h, y, onset, n_train


def test_the_monitor_ranks_a_fault_that_has_begun_with_few_labelled_faults(data):
    value, t_h, y, onset, n = data
    model = _model("monitor", value[:n], t_h[:n], y[:n])
    test = Trajectories.of(value[n:], t_h[n:])
    p = 0.4
    score = model.raw(test, p)
    begun = onset[n:] < p * HOURS - 3  # three hours of drift: 0.03 pH, 3 sd of the probe
    normal = y[n:] == 0
    assert begun.sum() >= 3
    keep = begun | normal
    assert fast_auc(begun[keep], score[keep]) > 0.9
    # what it says is about the drifting tag: the largest per-tag share is pH's
    contrib, _, _ = model.contributions(test, p)
    worst = begun & (score > np.quantile(score[normal], 0.95))
    assert worst.any()
    assert (contrib[worst, :4].argmax(axis=1) == TAGS.index("b")).all()


def test_the_monitor_contributions_add_up_to_its_log_odds(data):
    value, t_h, y, _, n = data
    model = _model("monitor", value[:n], t_h[:n], y[:n])
    test = Trajectories.of(value[n:], t_h[n:])
    for p in (0.25, 0.6, 1.0):
        contrib, _, _ = model.contributions(test, p)
        g = model.models[model._grid_index(np.array([p]))[0]]
        np.testing.assert_allclose(contrib.sum(axis=1) + g.mon_line[1], model.raw(test, p))
        assert g.mon_line[0] > 0  # farther from normal never lowers the risk


def test_an_mspc_model_gives_the_same_monitor_score_as_a_monitor_model(data):
    """Cross-validation scores the monitor from the fold's mspc fit: it must be the score
    the refitted monitor pipeline gives."""
    value, t_h, y, _, n = data
    mspc = _model("mspc", value[:n], t_h[:n], y[:n])
    monitor = _model("monitor", value[:n], t_h[:n], y[:n])
    test = Trajectories.of(value[n:], t_h[n:])
    for p in (0.1, 0.5, 1.0):
        np.testing.assert_array_equal(mspc.raw(test, p, kind="monitor"), monitor.raw(test, p))
    with pytest.raises(ValueError, match="kind"):
        monitor.raw(test, 0.5, kind="mspc")


def test_the_monitor_keeps_a_positive_slope_when_labels_say_nothing(data):
    """Labels with no relation to the data: the log-odds still rise with the distance (at
    the smallest slope, i.e. nearly the base rate), never fall."""
    n = data[-1]
    rng = np.random.default_rng(11)
    y = np.zeros(n, dtype=int)
    y[rng.permutation(n)[:10]] = 1
    clean, t_clean = _cube(n, seed=9)
    model = _model("monitor", clean, t_clean, y)
    assert all(g.mon_line[0] > 0 for g in model.models)


def test_bins_seen_by_a_cut_off_are_counted_as_the_plain_count():
    """count_seen reads the count as the first bin not seen (the running maximum of bin
    times makes the seen bins a prefix): it must equal the plain count, empty bins, cut-offs
    before the first bin and after the last included."""
    from quality.mspc import count_seen, running_time

    rng = np.random.default_rng(2)
    t_h = np.cumsum(rng.uniform(0.5, 1.5, (30, 5, 40)), axis=2)
    t_h[rng.random(t_h.shape) < 0.2] = np.inf  # bins without a sample
    t_h[4, 2] = np.inf  # a tag without any
    tacc = running_time(t_h)
    for cut in (np.full(30, -1.0), rng.uniform(0, 50, 30), np.full(30, 1e9)):
        plain = (tacc <= cut[:, None, None]).sum(axis=2)
        np.testing.assert_array_equal(count_seen(tacc, cut), plain)
        assert 0 < plain.mean() < 40 or cut[0] in (-1.0, 1e9)
