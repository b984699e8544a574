"""Model selection, calibration guards, leakage and determinism on small synthetic data.

The data here are made in the test (not by the twin): batches of a few tags in batch-relative
hours, where a faulted batch's tag drifts away from its normal trajectory from a random time
on; run-to-failure units in cycles with three operating regimes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quality.calibration import calibration_report, choose_calibrator
from quality.data import batch_history, run_history
from quality.deviation import DeviationModel
from quality.maintenance import MaintenanceModel
from quality.selection import fast_auc, group_folds
from quality.service import model_fingerprint, train_deviation


def _batches(n: int = 48, seed: int = 0, hours: int = 40):
    rng = np.random.default_rng(seed)
    label = np.zeros(n, dtype=int)
    label[rng.permutation(n)[: n // 3]] = 1
    rows = []
    t = np.arange(0, hours, 0.5)
    for b in range(n):
        gain = rng.normal(1.0, 0.05)
        onset = rng.uniform(0.1, 0.6) * hours
        temp = 37 + rng.normal(0, 0.1) + rng.normal(0, 0.05, len(t))
        growth = gain * (1 - np.exp(-t / 15)) + rng.normal(0, 0.02, len(t))
        ph = 7.0 - 0.2 * growth + rng.normal(0, 0.01, len(t))
        if label[b]:
            ph = ph + np.where(t > onset, 0.01 * (t - onset), 0.0)  # a probe drift
        for name, values in (("temp", temp), ("growth", growth), ("ph", ph)):
            rows.append(pd.DataFrame({"batch": f"B{b:03d}", "hours": t, "tag": name, "v": values}))
    series = pd.concat(rows, ignore_index=True)
    outcomes = pd.DataFrame({"batch": [f"B{b:03d}" for b in range(n)], "bad": label})
    return series, outcomes


def _history(series, outcomes, label_col="bad"):
    return batch_history(
        series,
        outcomes,
        batch_col="batch",
        time_col="hours",
        label_col=label_col,
        tag_col="tag",
        value_col="v",
        context_cols=[],
    )


@pytest.fixture(scope="module")
def fitted():
    series, outcomes = _batches()
    history = _history(series, outcomes)
    model, meta, _ = train_deviation(history, seed=0, test_share=0)
    return model, meta, series, outcomes


def test_folds_keep_groups_whole_and_see_both_outcomes():
    groups = pd.Index([f"g{i}" for i in range(30)])
    labels = np.r_[np.ones(6), np.zeros(24)]
    fold = group_folds(groups, 5, ordered=False, seed=3, labels=labels)
    assert fold.index.equals(groups)
    for k in range(5):
        assert labels[fold.to_numpy() == k].sum() >= 1
    ordered = group_folds(groups, 3, ordered=True)
    assert (np.diff(ordered.to_numpy()) >= 0).all()


def test_fast_auc_equals_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        s = np.round(rng.normal(size=40), 1)  # with ties
        if 0 < y.sum() < 40:
            assert fast_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert fast_auc(np.ones(5), np.arange(5)) is None


def test_selection_is_recorded_and_chooses_the_best_cross_validated_candidate(fitted):
    model, meta, _, _ = fitted
    sel = meta["selection"]
    names = [c["name"] for c in sel["candidates"]]
    assert set(names) >= {"lgbm", "mspc", "unfolded"}
    best = max(sel["candidates"], key=lambda c: round(c["cv_mean"], 4))
    assert sel["chosen"] == best["name"] == model.chosen
    for c in sel["candidates"]:
        lo, hi = c["cv_interval_90"]
        assert lo <= c["cv_mean"] + 1e-9 and c["cv_mean"] <= hi + 0.05
        assert c["cv_sd"] >= 0
    # batch-relative time: no order between batches, shuffled stratified folds, said so
    assert "no time order" in sel["fold_kind"]
    assert "no time order" in meta["training_data"]["period"]
    assert meta["training_data"]["split"].startswith("none")
    # a drifting probe from a random time on is caught
    assert best["cv_mean"] > 0.8


@pytest.mark.parametrize("progress", [0.2, 0.5])
def test_predictions_at_p_ignore_what_was_recorded_after_p(fitted, progress):
    """At 0.5 the chosen pipeline scores; at 0.2 the early one, and where the evidence gate
    is closed the tie-break (distance from the normal batches) orders them."""
    model, _, series, _ = fitted
    nominal = model.featurizer.nominal_h
    cut = progress * nominal
    hist = _history(series, pd.DataFrame({"batch": series["batch"].unique()}), None)
    before = model.predict(hist, progress=progress, explain=False)["p_deviation"]
    # swap everything recorded after the cut-off between batches (a cyclic shift)
    late = series["hours"] > cut
    swapped = series.copy()
    ids = sorted(series["batch"].unique())
    shift = dict(zip(ids, ids[1:] + ids[:1], strict=True))
    swapped.loc[late, "batch"] = swapped.loc[late, "batch"].map(shift)
    hist2 = _history(swapped, pd.DataFrame({"batch": ids}), None)
    after = model.predict(hist2, progress=progress, explain=False)["p_deviation"]
    np.testing.assert_allclose(after.reindex(before.index), before, rtol=0, atol=1e-12)


def test_same_data_and_seed_give_the_same_model(fitted):
    _model, meta, series, outcomes = fitted
    again = DeviationModel(seed=0).fit(_history(series, outcomes))
    assert model_fingerprint(again) == meta["model_sha256"]


def test_probabilities_are_calibrated_not_saturated(fitted):
    model, _, series, outcomes = fitted
    hist = _history(series, outcomes)
    p = model.predict(hist, progress=1.0, explain=False)["p_deviation"]
    assert p.min() > 0.0 and p.max() < 1.0
    assert abs(p.mean() - outcomes["bad"].mean()) < 0.15
    from quality.calibration import METHODS

    assert model.calibration["chosen"] in METHODS
    assert set(model.calibration["methods"]) == set(METHODS)


def test_calibration_never_maps_everything_to_one_value_and_keeps_the_base_rate():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    groups = np.arange(400) // 4
    # uninformative, wildly overconfident raw scores: every method must land near the rate
    raw = rng.normal(8.0, 0.5, 400)
    cal, record = choose_calibrator(raw, y, groups, seed=0)
    p = cal.predict(raw)
    assert abs(p.mean() - y.mean()) <= record["tolerance"]
    assert "none" in record["methods"] and record["methods"]["none"]["refused"]
    # informative scores: calibrated, ranking kept
    raw2 = y * 1.5 + rng.normal(0, 1, 400)
    cal2, _ = choose_calibrator(raw2, y, groups, seed=0)
    p2 = cal2.predict(raw2)
    assert np.ptp(p2) > 0.1
    assert fast_auc(y, p2) == pytest.approx(fast_auc(y, raw2), abs=1e-9)
    report = calibration_report(y, p2)
    assert report["brier"] < report["brier_constant_rate"]
    assert 0 <= report["ece"] < 0.1


# ---------------------------------------------------------------------- maintenance


def _units(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = []
    for u in range(n):
        life = int(rng.integers(90, 200))
        c = np.arange(1, life + 1)
        regime = rng.integers(0, 3, life)
        setting = regime * 10.0 + rng.normal(0, 0.1, life)
        wear = np.exp((c - life) / 30.0)
        base = rng.normal(0, 0.3)
        frames.append(
            pd.DataFrame(
                {
                    "unit": f"U{u:02d}",
                    "cycle": c,
                    "setting": setting,
                    "s1": 5 * regime + base + wear + rng.normal(0, 0.1, life),
                    "s2": -3 * regime + 0.5 * wear + rng.normal(0, 0.1, life),
                    "flat": 1.0,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_maintenance_selection_follows_the_data_time_base_and_regimes():
    runs = run_history(_units(), asset_col="unit", time_col="cycle")
    model = MaintenanceModel(seed=0, setting_cols=["setting"]).fit(runs)
    life = runs.rows.groupby("run")["t"].agg(lambda t: t.max() - t.min())
    assert model.horizon == pytest.approx(0.1 * life.median())  # cycles, not 168 hours
    assert model.regimes.k == 3
    assert "flat" in model.dropped_constant
    assert model.selection["time_unit"] == "cycles"
    assert len(model.selection["candidates"]) >= 4
    assert max(w for c in model.selection["candidates"] for w in c.get("windows", [])) <= 100
    out = model.predict(runs)
    assert (out["rul_lo"] <= out["rul"]).all() and (out["rul"] <= out["rul_hi"]).all()
    assert "cycle" in " ".join(out["reasons"]) or out["reasons"].str.len().gt(0).any()
    again = MaintenanceModel(seed=0, setting_cols=["setting"]).fit(runs)
    assert model_fingerprint(again) == model_fingerprint(model)


def test_binning_gives_the_same_bits_every_time():
    """Many samples per bin, enough rows for DuckDB to scan in parallel: the bins' means and
    standard deviations are the same bits on every call (a parallel aggregation adds in
    thread order; it changed most bins' last bits from one call to the next)."""
    from quality.data import _bin

    rng = np.random.default_rng(0)
    n = 2_000_000  # (at 2 M rows a parallel aggregation differed on every trial here)
    samples = pd.DataFrame(
        {
            "batch_id": rng.choice([f"B{i}" for i in range(20)], n),
            "tag": rng.choice(["a", "b", "c"], n),
            "align_h": rng.uniform(0, 50, n),
            "t_h": rng.uniform(0, 50, n),
            "value": rng.normal(100, 10, n),
            "bad": rng.random(n) < 0.01,
        }
    )
    first = _bin(samples, 1.0)
    assert len(first) == 20 * 3 * 50
    for _ in range(2):
        pd.testing.assert_frame_equal(_bin(samples, 1.0), first, check_exact=True)
