"""The external validation suite's generators and baselines (benchmarks/external).

The product itself is not run here; these tests check that the data sets are what their
README says: deterministic, split by batch with both classes on both sides, batch-relative
time, sensor-only faults that leave the process alone, random fault starts, runs that end in
failure with a consistent RUL truth, and baselines that learn something.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.external import baselines
from benchmarks.external.datasets import (
    BATCH,
    DEGRADATION,
    _common,
    cho_fedbatch,
    compressor,
    ecoli_hcd,
    exo_reactor,
    membrane_fouling,
)

BATCH_KEYS = {
    "series_train",
    "outcomes_train",
    "series_test",
    "outcomes_test",
    "fit_args",
    "description",
}
DEGRADATION_KEYS = {
    "runs_train",
    "runs_test",
    "truth_test",
    "fit_args",
    "rul_cap",
    "setting_cols",
    "description",
}


@pytest.fixture(scope="module")
def small():
    """``make(seed=0, size="small")`` of every data set, made once."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = {**BATCH, **DEGRADATION}[name].make(seed=0, size="small")
        return cache[name]

    return get


# ----------------------------------------------------------------------------- registry


def test_registry_lists_at_least_three_batch_and_two_degradation_processes():
    assert len({m.__name__ for m in BATCH.values()}) >= 3
    assert len(DEGRADATION) >= 2
    for module in (*BATCH.values(), *DEGRADATION.values()):
        assert callable(module.make)


@pytest.mark.parametrize("size", ["medium", "", "FULL"])
def test_make_rejects_an_unknown_size(size):
    with pytest.raises(ValueError, match="size must be one of"):
        exo_reactor.make(size=size)


# ----------------------------------------------------------------------------- batch sets


@pytest.mark.parametrize("name", sorted(BATCH))
def test_batch_set_has_the_documented_shape(small, name):
    data = small(name)
    assert set(data) >= BATCH_KEYS
    for key in ("series_train", "series_test"):
        assert list(data[key].columns) == ["batch_id", "time_h", "tag", "value"]
    for key in ("outcomes_train", "outcomes_test"):
        assert list(data[key].columns) == ["batch_id", "label", "fault_type", "fault_start_h"]
    args = dict(zip(data["fit_args"][::2], data["fit_args"][1::2], strict=True))
    assert args["--batch-col"] == "batch_id" and args["--label-col"] == "label"
    assert float(args["--bin-h"]) > 0


@pytest.mark.parametrize("name", sorted(BATCH))
def test_split_is_by_batch_with_both_classes_on_both_sides(small, name):
    data = small(name)
    train, test = data["outcomes_train"], data["outcomes_test"]
    assert not set(train["batch_id"]) & set(test["batch_id"])
    assert set(data["series_train"]["batch_id"]) == set(train["batch_id"])
    assert set(data["series_test"]["batch_id"]) == set(test["batch_id"])
    for side in (train, test):
        assert set(side["label"]) == {0, 1}
    assert (train["label"] == (train["fault_type"] != "none")).all()


@pytest.mark.parametrize("name", sorted(BATCH))
def test_batch_time_is_relative_to_the_batch_start(small, name):
    series = small(name)["series_train"]
    first = series.groupby("batch_id")["time_h"].min()
    assert (first == 0.0).all()
    assert series["value"].notna().all()


@pytest.mark.parametrize("module", [cho_fedbatch, ecoli_hcd, exo_reactor], ids=lambda m: m.__name__)
def test_same_seed_same_frames_other_seed_other_frames(module):
    a, b, c = module.make(seed=5, size="small"), module.make(seed=5, size="small"), None
    for key in ("series_train", "outcomes_train", "series_test", "outcomes_test"):
        pd.testing.assert_frame_equal(a[key], b[key])
    c = module.make(seed=6, size="small")
    assert not a["series_train"]["value"].head(1000).equals(c["series_train"]["value"].head(1000))


@pytest.mark.parametrize("name", ["cho_fedbatch", "ecoli_hcd", "exo_reactor"])
def test_faults_start_at_random_times(small, name):
    data = small(name)
    out = pd.concat([data["outcomes_train"], data["outcomes_test"]])
    faulted = out[out["label"] == 1]
    assert out.loc[out["label"] == 0, "fault_start_h"].isna().all()
    starts = faulted.loc[faulted["fault_type"] != "catalyst_potency", "fault_start_h"]
    assert starts.nunique() == len(starts) and starts.std() > 1.0


def test_batch_lengths_differ_in_the_reactor(small):
    series = small("exo_reactor")["series_train"]
    ends = series.groupby("batch_id")["time_h"].max()
    assert ends.max() - ends.min() > 1.0  # hours: the batch ends on conversion, not a clock


def test_few_batch_variant_thins_only_the_training_side(small):
    few, many = small("cho_fedbatch_few"), small("cho_fedbatch")
    pd.testing.assert_frame_equal(few["outcomes_test"], many["outcomes_test"])
    assert set(few["outcomes_train"]["batch_id"]) < set(many["outcomes_train"]["batch_id"])
    assert set(few["outcomes_train"]["label"]) == {0, 1}


# ----------------------------------------------------------------------------- sensor faults


def _with_fault(module, seed, n, code, start_h):
    """Parameters of ``n`` batches, every one given fault ``code`` from ``start_h``."""
    p = module.draw_batches(np.random.default_rng(seed), n)
    p["fault"] = np.full(n, code)
    p["fault_start_h"] = np.full(n, start_h)
    return p


def _without_fault(p):
    return {**p, "fault": np.zeros_like(p["fault"])}


SENSOR_ONLY = [
    (ecoli_hcd, "offgas_drift", ["offgas_o2_pct", "offgas_co2_pct"], 12.0),
    (exo_reactor, "tc_drift", ["reactor_temp_2_c"], 2.0),
]


@pytest.mark.parametrize(
    ("module", "fault", "tags", "start_h"), SENSOR_ONLY, ids=[f for _, f, _, _ in SENSOR_ONLY]
)
def test_sensor_only_fault_leaves_the_process_unchanged(module, fault, tags, start_h):
    p = _with_fault(module, 1, 6, module.FAULTS.index(fault) + 1, start_h)
    faulty, clean = module.simulate(p), module.simulate(_without_fault(p))
    for key, values in clean.items():
        np.testing.assert_array_equal(faulty[key], values, err_msg=key)
    read_f = module.measure(p, faulty, np.random.default_rng(2))
    read_c = module.measure(_without_fault(p), clean, np.random.default_rng(2))
    for tag in read_c:
        t, v_f = read_f[tag]
        v_c = read_c[tag][1]
        before = np.broadcast_to(t < start_h, v_c.shape)
        np.testing.assert_array_equal(v_f[before], v_c[before], err_msg=tag)
        after = np.broadcast_to(t > start_h + 1.0, v_c.shape) & np.isfinite(v_c)
        changed = not np.allclose(v_f[after], v_c[after])
        assert changed == (tag in tags), tag


@pytest.mark.parametrize(
    ("module", "fault", "state"),
    [
        (ecoli_hcd, "cooling_degradation", "temp"),
        (exo_reactor, "jacket_fouling", "temp"),
        (cho_fedbatch, "ph_probe_drift", "ph"),  # in the base loop: the true pH moves
    ],
    ids=["cooling", "fouling", "ph-probe-in-loop"],
)
def test_process_faults_do_change_the_process(module, fault, state):
    p = _with_fault(module, 1, 4, module.FAULTS.index(fault) + 1, 3.0)
    if module is cho_fedbatch:
        p["ph_drift_per_h"] = np.full(4, -0.003)
    faulty, clean = module.simulate(p), module.simulate(_without_fault(p))
    assert np.nanmax(np.abs(faulty[state] - clean[state])) > 0.05


# ----------------------------------------------------------------------------- degradation


@pytest.mark.parametrize("name", sorted(DEGRADATION))
def test_degradation_set_has_the_documented_shape(small, name):
    data = small(name)
    assert set(data) >= DEGRADATION_KEYS
    args = dict(zip(data["fit_args"][::2], data["fit_args"][1::2], strict=True))
    asset, time = args["--asset-col"], args["--time-col"]
    for key in ("runs_train", "runs_test"):
        runs = data[key]
        assert runs.groupby(asset)[time].is_monotonic_increasing.all()
        assert not runs.duplicated([asset, time]).any()
    assert set(data["truth_test"]["asset"]) == set(data["runs_test"][asset])
    assert (data["truth_test"]["rul"] > 0).all()
    assert not set(data["runs_train"][asset]) & set(data["runs_test"][asset])


@pytest.mark.parametrize("name", ["compressor_1mode_1regime", "compressor_2modes_6regimes"])
def test_compressor_truth_is_the_remaining_life(name):
    data = DEGRADATION[name].make(seed=0, size="small")
    modes, regimes = (1, 1) if "1mode" in name else (2, 6)
    seed = 0 if "1mode" in name else 1000
    full = compressor.simulate_units(_common.spawn(seed, 3)[1], 20, modes, regimes)
    life = full.groupby("unit")["life"].first().to_numpy()
    last = data["runs_test"].groupby("asset")["cycle"].max()
    truth = data["truth_test"].set_index("asset")["rul"]
    np.testing.assert_array_equal(last.to_numpy() + truth.reindex(last.index).to_numpy(), life)
    train = data["runs_train"].groupby("asset")["cycle"].agg(["min", "max", "size"])
    assert (train["min"] == 1).all() and (train["max"] == train["size"]).all()
    assert train["max"].between(120, 350).all()


def test_six_regimes_and_two_fault_modes_show_in_different_sensors():
    data = DEGRADATION["compressor_2modes_6regimes"].make(seed=0, size="small")
    settings = data["runs_train"][data["setting_cols"]].to_numpy()
    scale = compressor.REGIMES.std(axis=0)
    dist = np.abs((settings[:, None, :] - compressor.REGIMES[None]) / scale).max(axis=2)
    assert (dist.min(axis=1) < 0.2).all()  # every cycle sits at one operating point
    assert len(np.unique(dist.argmin(axis=1))) == 6
    assert set(data["modes_train"]) == {1, 2}
    units = compressor.simulate_units(np.random.default_rng(4), 20, modes=2, regimes=1)
    units["phase"] = np.where(units["cycle"] <= 20, "start", "")
    units.loc[units["cycle"] > units["life"] - 20, "phase"] = "end"
    means = (
        units[units["phase"] != ""]
        .groupby(["mode", "unit", "phase"])[["vib_de_um", "p4_bar"]]
        .mean()
    )
    change = (means.xs("end", level="phase") - means.xs("start", level="phase")).groupby("mode")
    change = change.mean()
    assert change.loc[2, "vib_de_um"] > 3 * change.loc[1, "vib_de_um"]  # bearing wear
    assert change.loc[1, "p4_bar"] < 3 * min(change.loc[2, "p4_bar"], -0.01)  # erosion


def test_membrane_runs_end_in_failure_or_are_censored(small):
    data = small("membrane_fouling")
    runs = data["runs_train"]
    assert isinstance(runs["time"].dtype, pd.DatetimeTZDtype)
    per = runs.groupby("asset")
    assert (per["failure"].sum() <= 1).all()
    last = per.tail(1).set_index("asset")["failure"]
    ended = per["failure"].max()
    assert (last[ended == 1] == 1).all()  # a failure is the run's last row
    assert 0 < ended.sum() < len(ended)  # some runs fail, some are censored
    skids = runs["asset"].str.split("-").str[0]
    assert (runs.groupby(skids)["asset"].nunique() > 1).all()


def test_membrane_truth_is_the_time_to_failure(small):
    data = small("membrane_fouling")
    n_skids = sum(membrane_fouling.SKIDS["small"])
    rng = _common.spawn(0, 2)[0]
    full = membrane_fouling.simulate_skids(rng, n_skids, membrane_fouling.HOURS["small"])
    fail_time = full[full["failure"] == 1].set_index("asset")["time"]
    last = data["runs_test"].groupby("asset")["time"].max()
    truth = data["truth_test"].set_index("asset")["rul"]
    hours = (fail_time.reindex(last.index) - last) / pd.Timedelta(hours=1)
    np.testing.assert_allclose(hours.to_numpy(), truth.reindex(last.index).to_numpy())
    assert (data["runs_test"]["failure"] == 0).all()


# ----------------------------------------------------------------------------- baselines


@pytest.fixture(scope="module")
def batch_scores(small):
    out = {}
    for name in ("ecoli_hcd", "exo_reactor", "cho_fedbatch"):
        data = small(name)
        bin_h = float(data["fit_args"][data["fit_args"].index("--bin-h") + 1])
        out[name] = (data, baselines.batch_baselines(data, bin_h=bin_h, seed=0))
    return out


def test_batch_baselines_score_every_test_batch_at_every_progress(batch_scores):
    for data, scores in batch_scores.values():
        n = len(data["outcomes_test"])
        assert set(scores) == {"lightgbm", "logistic", "envelope"}
        for name, by_p in scores.items():
            assert set(by_p) == set(baselines.PROGRESS)
            for s in by_p.values():
                assert s.shape == (n,) and np.isfinite(s).all()
                if name != "envelope":
                    assert ((s >= 0) & (s <= 1)).all()


def test_a_batch_baseline_learns_something_at_the_end(batch_scores):
    best = max(
        baselines.roc_auc(data["outcomes_test"]["label"], s[1.0])
        for data, scores in batch_scores.values()
        for s in scores.values()
    )
    assert best > 0.6


def test_trajectory_features_see_only_data_up_to_the_cut():
    series = pd.DataFrame(
        {
            "batch_id": ["a"] * 4 + ["b"] * 4,
            "time_h": [0.0, 1.0, 2.0, 3.0] * 2,
            "tag": "x",
            "value": [0.0, 1.0, 2.0, 100.0, 5.0, 5.0, 5.0, 5.0],
        }
    )
    f = baselines.trajectory_features(series, 2.0, ["a", "b"])
    assert f.loc["a", "x|last"] == 2.0 and f.loc["a", "x|mean"] == 1.0
    assert f.loc["a", "x|slope"] == pytest.approx(1.0) and f.loc["b", "x|slope"] == 0.0


def test_degradation_baseline_beats_a_constant(small):
    data = small("compressor_1mode_1regime")
    pred = baselines.degradation_baseline(data, seed=0).set_index("asset")["rul"]
    truth = data["truth_test"].set_index("asset")["rul"].clip(upper=data["rul_cap"])
    err = pred.reindex(truth.index) - truth
    constant = truth - truth.mean()
    assert np.sqrt((err**2).mean()) < 0.6 * np.sqrt((constant**2).mean())


def test_window_features_stay_inside_one_asset():
    runs = pd.DataFrame(
        {
            "asset": ["a"] * 3 + ["b"] * 3,
            "cycle": [1, 2, 3] * 2,
            "s": [1.0, 2.0, 3.0, 10.0, 10.0, 10.0],
        }
    )
    f = baselines.window_features(runs, asset_col="asset", time_col="cycle", sensors=["s"])
    assert f["s|mean5"].tolist() == [1.0, 1.5, 2.0, 10.0, 10.0, 10.0]
    assert f["s|slope5"].tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert f["elapsed"].tolist() == [0.0, 1.0, 2.0] * 2


def test_the_summary_says_no_when_the_product_trails_by_more_than_the_cv_spread():
    from benchmarks.external import run

    r = {
        "kind": "batch",
        "constant_brier": 0.2,
        "product": {"fit": {"ok": True}, "selection": {"cv_sd": 0.05}},
        "by_progress": {
            "0.25": {"product_auc": 0.52, "product_brier": 0.19, "lightgbm_auc": 0.60,
                     "logistic_auc": 0.55, "envelope_auc": 0.50},
            "0.5": {"product_auc": 0.70, "product_brier": 0.21, "lightgbm_auc": 0.73,
                    "logistic_auc": 0.60, "envelope_auc": 0.50},
            "1.0": {"product_auc": 0.90, "product_brier": 0.10, "lightgbm_auc": 0.80,
                    "logistic_auc": 0.60, "envelope_auc": 0.50},
        },
    }  # fmt: skip
    rows = {line.split("|")[2].strip(): line for line in run.summary({"x": r}).splitlines()[4:]}
    assert "**no** (0.080 behind)" in rows["AUC at 25%"] and "| yes |" in rows["AUC at 25%"]
    assert "yes (0.030 behind)" in rows["AUC at 50%"] and rows["AUC at 50%"].endswith("| no |")
    assert "yes (ahead)" in rows["AUC at 100%"]
