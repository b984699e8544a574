"""Platt calibration: monotone at each progress, progress-dependent when the scores need it."""

import numpy as np
import pytest

from quality.calibration import Platt


def _scores(rng, n, spread_at):
    """Raw scores whose true log-odds are ``spread_at(t) * raw``: overconfident early."""
    t = rng.choice([0.1, 0.5, 1.0], size=n)
    raw = rng.normal(0.0, 2.0, size=n)
    truth = 1.0 / (1.0 + np.exp(-(spread_at(t) * raw - 1.0)))
    y = rng.random(n) < truth
    return raw, y, t, truth


def test_progress_dependent_map_recovers_a_spread_that_changes_with_progress():
    rng = np.random.default_rng(3)
    raw, y, t, truth = _scores(rng, 20_000, lambda t: 0.3 + 1.2 * t)
    pooled = Platt().fit(raw, y)
    by_progress = Platt().fit(raw, y, progress=t)
    assert by_progress.a_p > 0.5
    err_pooled = np.abs(pooled.predict(raw) - truth).mean()
    err = np.abs(by_progress.predict(raw, progress=t) - truth).mean()
    assert err < 0.5 * err_pooled
    assert err < 0.02


def test_map_keeps_the_ranking_at_every_progress():
    rng = np.random.default_rng(4)
    raw, y, t, _ = _scores(rng, 5_000, lambda t: 0.3 + 1.2 * t)
    cal = Platt().fit(raw, y, progress=t)
    grid = np.linspace(-6, 6, 101)
    for p in (0.0, 0.25, 0.5, 1.0):
        assert np.all(np.diff(cal.predict(grid, progress=p)) > 0)


def test_a_slope_that_would_reverse_falls_back_to_one_map(caplog):
    caplog.set_level("INFO", logger="quality.calibration")
    rng = np.random.default_rng(5)
    n = 6_000
    t = rng.choice([0.0, 1.0], size=n)
    raw = rng.normal(0.0, 2.0, size=n)
    sign = np.where(t > 0.5, -1.0, 1.0)  # at progress 1 the raw score is anti-informative
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-sign * raw))
    cal = Platt().fit(raw, y, progress=t)
    assert cal.a_p == 0.0 and cal.b_p == 0.0
    assert "reverse the ranking" in caplog.text


def test_progress_dependent_map_needs_the_progress():
    rng = np.random.default_rng(6)
    raw, y, t, _ = _scores(rng, 2_000, lambda t: 0.3 + 1.2 * t)
    cal = Platt().fit(raw, y, progress=t)
    with pytest.raises(ValueError, match="progress"):
        cal.predict(raw)


def test_one_outcome_leaves_the_identity():
    cal = Platt().fit(np.array([0.1, 0.2, 0.3]), np.array([0, 0, 0]))
    assert (cal.a, cal.b, cal.a_p, cal.b_p) == (1.0, 0.0, 0.0, 0.0)


def test_evidence_gate_holds_the_base_rate_where_scores_do_not_rank_and_ranks_where_they_do():
    from quality.calibration import EvidenceGate, Identity

    rng = np.random.default_rng(5)
    n = 400
    y = rng.random(n) < 0.3
    progress = np.repeat([[0.1, 0.9]], n, axis=0).ravel()
    y_rows = np.repeat(y, 2).astype(int)
    raw = rng.normal(size=2 * n)  # noise early ...
    raw[1::2] += 3.0 * y  # ... and a clear ranking late
    gate = EvidenceGate.fit(Identity(), raw, y_rows, progress)
    assert gate.open == [0.0, 1.0]
    early = gate.predict(raw[::2], np.full(n, 0.1))
    base = y_rows.mean()
    assert np.abs(early - base).max() < 0.05  # the base rate: no claim ...
    assert abs(early.mean() - base) < 0.01
    assert early.std() > 0  # ... but the model's order kept as a tie-break
    late = gate.predict(raw[1::2], np.full(n, 0.9))
    assert late[y].mean() > late[~y].mean() + 0.3
    assert 0.0 < gate.openness(0.5) < 1.0


def test_the_evidence_gate_asks_more_when_the_scores_are_the_best_of_several():
    """Scores whose AUC clears the one-sided 5 % test (z 1.645) but not its Bonferroni
    version for five candidates (z 2.326) open a plain gate and keep a model's closed."""
    from scipy.stats import norm

    from quality.calibration import EvidenceGate, Identity
    from quality.selection import fast_auc
    from tests.test_model_selection import _batches, _history

    n1 = n0 = 60
    y = np.r_[np.ones(n1), np.zeros(n0)].astype(int)
    se = np.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
    rng = np.random.default_rng(1)
    for _ in range(500):  # scores whose AUC falls between the two thresholds
        raw = rng.normal(0, 1, n1 + n0) + 0.45 * y
        auc = fast_auc(y, raw)
        if 0.5 + 1.75 * se < auc < 0.5 + 2.2 * se:
            break
    else:
        pytest.fail("no score set between the thresholds")
    progress = np.full(len(y), 0.5)
    assert EvidenceGate.fit(Identity(), raw, y, progress).open == [1.0]
    assert EvidenceGate.fit(Identity(), raw, y, progress, z=norm.ppf(1 - 0.05 / 5)).open == [0.0]

    from quality.deviation import CANDIDATES, DeviationModel

    series, outcomes = _batches(n=30, seed=4, hours=20)
    model = DeviationModel(seed=0).fit(_history(series, outcomes))
    k = len(model.selection["candidates"])
    assert k == len(CANDIDATES)
    assert model.calibration["evidence_z"] == pytest.approx(norm.ppf(1 - 0.05 / k), abs=1e-4)
