"""The predictive-quality models on twin data held out by time, and their governance.

One two-year twin history (seed 1, 10-minute samples, tests/conftest.py) is simulated once;
the deviation model is trained on the earlier 70 % of its batches and measured on the later
30 %; the asset model on runs before / after a time cut-off. The thresholds are what this
pipeline achieves on this seed with a margin for platform noise; the issue's targets that are
not met are reported in docs/quality.md, not hidden here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quality.data import batch_history, run_history
from quality.deviation import DeviationModel, _feature_matrix
from quality.drift import PSI_FLAG, deviation_performance, psi_table, reference
from quality.errors import InputError, RegistryError, SchemaError
from quality.maintenance import split_runs
from quality.registry import Registry
from quality.selection import fast_auc
from quality.service import (
    evaluate_deviation,
    model_fingerprint,
    split_batches,
    train_deviation,
)


def model_of(trained):
    return trained[0]


def _by_p(metrics):
    return {r["progress"]: r for r in metrics["by_progress"]}


# ---------------------------------------------------------------------- validation


def test_split_is_by_time_and_never_shares_a_batch(history):
    train, test = split_batches(history)
    assert not set(train) & set(test)
    order = history.outcomes["order"]
    assert order[train].max() < order[test].min()
    assert len(test) == pytest.approx(0.3 * (len(train) + len(test)), abs=1)


def test_deviation_model_ranks_held_out_batches_and_beats_the_envelope_rule(trained):
    _, meta, metrics = trained
    at = _by_p(metrics)
    assert at[0.5]["positives"] >= 30
    # live inputs only (no lot attributes: the historian does not hold them), so the early
    # ranking lost what the raw-material potency gave it (docs/quality.md)
    assert at[0.25]["roc_auc"] >= 0.58
    assert at[0.5]["roc_auc"] >= 0.83
    assert at[1.0]["roc_auc"] >= 0.90
    for p in (0.5, 0.75, 1.0):
        assert at[p]["roc_auc"] > at[p]["envelope_rule_auc"], p
    # the pipeline was chosen by the training batches' cross-validation, and recorded
    sel = meta["selection"]
    best = max(sel["candidates"], key=lambda c: round(c["cv_mean"], 4))
    assert sel["chosen"] == best["name"] == model_of(trained).chosen
    assert "blocked in time order" in sel["fold_kind"]
    # the number of boosting rounds came from the training batches' cross-validation
    model = trained[0]
    assert model.rounds in model.rounds_cv_log_loss
    assert model.rounds_cv_log_loss[model.rounds] == min(model.rounds_cv_log_loss.values())
    assert model.classifier.booster_.num_trees() == model.rounds
    # more of the batch seen, better ranking
    assert at[1.0]["roc_auc"] > at[0.5]["roc_auc"] > at[0.1]["roc_auc"]
    assert meta["metrics"]["headline"]["auc_p50"] == at[0.5]["roc_auc"]


def test_onset_oracle_counts_deviations_under_way_from_the_simulator_truth(twin_dir, trained):
    model, _, metrics = trained
    at = _by_p(metrics)
    devs = pd.read_parquet(twin_dir / "deviations.parquet")
    batches = pd.read_parquet(twin_dir / "batches.parquet").set_index("batch_id")
    test_ids = metrics["_predictions"]["batch_id"].unique()
    first = devs.groupby("batch_id")["onset_time"].min().reindex(test_ids)
    start = batches.loc[test_ids, "start_time"]
    hours = (first - start).dt.total_seconds().to_numpy() / 3600
    label = metrics["_predictions"].drop_duplicates("batch_id").set_index("batch_id")["label"]
    for p in (0.25, 0.5, 1.0):
        started = hours <= p * model.featurizer.nominal_h
        assert at[p]["positives_started"] == int((started & label[test_ids].to_numpy()).sum())
    # an onset is a deviation: every batch with one is labelled
    assert not (np.isfinite(hours) & ~label[test_ids].to_numpy()).any()
    assert at[0.25]["positives_started"] < at[0.5]["positives_started"] <= at[1.0]["positives"]
    # before production starts few deviations are under way; lot attributes and wear odds
    # let the model rank better than a perfect detector of started deviations
    assert at[0.25]["roc_auc"] > at[0.25]["onset_oracle_auc"]


def test_probabilities_are_calibrated_on_held_out_batches(trained):
    _model, meta, metrics = trained
    # the calibration map was chosen by grouped cross-validation among the methods
    record = meta["calibration"]
    best = min(
        (m for m, v in record["methods"].items() if not v["refused"]),
        key=lambda m: record["methods"][m]["cv_log_loss"],
    )
    assert record["chosen"] == best
    preds = metrics["_predictions"]
    for p in (0.25, 0.5, 1.0):
        d = preds[np.isclose(preds["progress"], p)]
        base = d["label"].mean()
        brier_base = ((d["label"] - base) ** 2).mean()
        assert _by_p(metrics)[p]["brier"] < brier_base
        assert abs(d["score"].mean() - base) < 0.06


def test_cqa_intervals_cover_about_90_percent(trained):
    _, _, metrics = trained
    for row in metrics["by_progress"]:
        assert 0.8 <= row["titer_g_per_l_coverage"] <= 0.99
        assert 0.8 <= row["droplet_z_avg_nm_coverage"] <= 0.99


def test_scoring_computes_only_the_tags_the_trees_use_with_the_same_scores(trained, history):
    """Scoring without explanations computes the statistics of the tags the classifier's
    trees split on only: the booster's answer, and the probabilities, must be the same."""
    model = model_of(trained)
    _, test = split_batches(history)
    tags = model._booster_tags()
    assert 0 < len(tags) < len(model.featurizer.tags)
    cube = model.featurizer.cube(history, test)
    names = model.featurizer.feature_names()
    kept = [i for i, n in enumerate(names) if n.split("|", 1)[0] not in model.featurizer.tags
            or model.featurizer.tags.index(n.split("|", 1)[0]) in set(tags)]  # fmt: skip
    booster = model.classifier.booster_
    progress = np.linspace(0.05, 1.0, len(test))
    full = model.featurizer.matrix(history, test, progress, cube)
    part = model.featurizer.matrix(history, test, progress, cube, tags)
    np.testing.assert_array_equal(part[:, kept], full[:, kept])
    assert np.isnan(np.delete(part, kept, axis=1)).all()
    np.testing.assert_array_equal(
        booster.predict(part, raw_score=True), booster.predict(full, raw_score=True)
    )
    framed = model.predict(history, test, progress, explain=False)["p_deviation"]
    np.testing.assert_allclose(model.score(history, test, progress, cube), framed, rtol=0,
                               atol=1e-12)  # fmt: skip


def test_shuffled_training_labels_leave_the_model_without_a_claim(history):
    """With the training labels shuffled there is nothing to learn: the cross-validation
    finds no ranking evidence, so the probabilities stay at the base rate, and the learned
    classifier's held-out ranking is near chance. The batches still have an order among
    themselves, the tie-break: their distance from the training batches labelled normal,
    which needs no labels to rank a deviating batch high (it is unusual whatever the labels
    say), so it is checked to be exactly that distance, not near chance."""
    train, test = split_batches(history)
    train = train[-200:]  # the latest 200 training batches: enough to learn, if there were
    shuffled = history.subset(history.outcomes.index)
    rng = np.random.default_rng(0)
    labels = shuffled.outcomes["label"].copy()
    labels[train] = rng.permutation(labels[train].to_numpy())
    shuffled.outcomes = shuffled.outcomes.assign(label=labels)
    model = DeviationModel(seed=0).fit(shuffled, train)
    metrics = evaluate_deviation(model, history, test)
    preds = metrics["_predictions"]
    assert len(model.calibration["no_evidence_at_progress"]) >= 6
    assert model.tie is not None
    cube = model.featurizer.cube(history, test)
    for p in (0.5, 1.0):
        learned = model.classifier.booster_.predict(
            _feature_matrix(model.features_at(history, test, p)), raw_score=True
        )
        auc = fast_auc(history.outcomes.loc[test, "label"].astype(bool).to_numpy(), learned)
        assert abs(auc - 0.5) < 0.2, (p, auc)
        d = preds[np.isclose(preds["progress"], p)].set_index("batch_id").loc[test]
        score = d["score"]
        assert score.std() < 0.03 and abs(score.mean() - model.base_rate) < 0.03
        distance = model._tie_raw(cube, np.full(len(test), p))
        assert np.isfinite(distance).all()
        order = pd.Series(distance, index=test).rank().to_numpy()
        np.testing.assert_array_equal(score.rank().to_numpy(), order)


def test_training_twice_gives_the_same_model(history):
    # the first 150 labelled batches: the same machinery as the full fit, a sixth of the time
    part = history.subset(history.labelled()[:150])
    first, meta, _ = train_deviation(part, seed=0)
    again, meta2, _ = train_deviation(part, seed=0)
    assert model_fingerprint(again) == meta["model_sha256"] == meta2["model_sha256"]
    assert model_fingerprint(first) == meta["model_sha256"]


def test_failure_within_7_days_on_later_runs(runs, maint):
    _, _, metrics = maint
    train, test = split_runs(runs)
    assert not set(train) & set(test)
    h = metrics["headline"]
    assert metrics["positives"] >= 30
    assert h["auc_fail_within_horizon"] >= 0.85
    assert np.isfinite(metrics["phm_score"]) and h["rul_rmse"] > 0
    # the 90 % interval (from out-of-fold errors over the training runs, which are longer
    # than the later test runs) covers; it is wide early in life (docs/quality.md: mean
    # width 1,953 h against an RMSE of 300 h on this history)
    assert metrics["rul_interval_coverage"] >= 0.8
    assert metrics["rul_interval_mean_width"] < 8 * h["rul_rmse"]


def test_rul_interval_narrows_towards_the_end_of_life(runs, maint):
    model, _, _ = maint
    rows = model.predict_rows(runs)
    width = rows["rul_hi"] - rows["rul_lo"]
    short = rows["rul"] < rows["rul"].quantile(0.2)
    long = rows["rul"] > rows["rul"].quantile(0.8)
    assert width[short].median() < 0.5 * width[long].median()
    assert (rows["rul_lo"] >= 0).all() and (rows["rul_lo"] <= rows["rul"]).all()


# ---------------------------------------------------------------------- predictions


def test_predictions_carry_class_cqa_interval_reasons_and_flags(history, trained):
    model, _, _ = trained
    _, test = split_batches(history)
    out = model.predict(history, test[:40], 0.5)
    assert out["p_deviation"].between(0, 1).all()
    assert (out["titer_g_per_l_lo"] <= out["titer_g_per_l_pred"]).all()
    assert (out["titer_g_per_l_pred"] <= out["titer_g_per_l_hi"]).all()
    assert out["likely_class"].isin(model.classes).all()
    risky = out.sort_values("p_deviation").iloc[-1]
    assert risky["reasons"] and "(+" in risky["reasons"]
    words = " ".join(out["reasons"])
    assert any(w in words for w in ("envelope", "averaging", "now", "rising", "falling"))


def test_scores_from_the_booster_equal_lightgbms_pandas_path(history, trained):
    """Scoring hands LightGBM a float matrix (categories as codes) instead of the frame:
    the same raw scores, class probabilities, CQA predictions and contributions, also for
    an unseen category (missing) and a missing value."""
    model, _, _ = trained
    _, test = split_batches(history)
    odd = history.subset(test[:30])
    units = odd.outcomes["production_unit"].astype(object).to_numpy(copy=True)
    units[:3] = "BR-999"
    odd.outcomes = odd.outcomes.assign(production_unit=units)
    X = model.features_at(odd, test[:30], 0.5)
    X.iloc[3:6, 5] = np.nan
    M = _feature_matrix(X)
    assert np.isnan(M[:3, X.columns.get_loc("ctx|production_unit")]).all()
    np.testing.assert_array_equal(
        model.classifier.booster_.predict(M, raw_score=True),
        model.classifier.predict_proba(X, raw_score=True),
    )
    np.testing.assert_array_equal(
        model.classifier.booster_.predict(M, pred_contrib=True),
        model.classifier.predict(X, pred_contrib=True),
    )
    np.testing.assert_allclose(
        model.class_model.booster_.predict(M), model.class_model.predict_proba(X), rtol=1e-12
    )
    for reg in model.cqa_models.values():
        np.testing.assert_array_equal(reg.booster_.predict(M), reg.predict(X))


def test_a_frozen_sensor_is_named_and_makes_the_score_low_confidence(history, trained):
    model, _, _ = trained
    _, test = split_batches(history)
    batch = test[5]
    cut = 0.5 * model.featurizer.nominal_h
    base = model.predict(history, [batch], 0.5)
    tag = "production.do"
    bins = history.bins.copy()
    rows = (bins["batch_id"] == batch) & (bins["tag"] == tag) & (bins["t_h"] <= cut)
    last = bins[rows].sort_values("bin").index[-4:]
    bins.loc[last, "sd"] = 0.0
    bins.loc[last, "value"] = bins.loc[last[0], "value"]
    frozen = history.subset(history.outcomes.index)
    frozen.bins = bins
    out = model.predict(frozen, [batch], 0.5)
    assert out["low_confidence"].iloc[0]
    assert "Dissolved oxygen (production): frozen" in out["suspect_sensors"].iloc[0]
    assert "Dissolved oxygen (production)" not in base["suspect_sensors"].iloc[0]


def test_sensor_checks_read_each_tags_latest_bins(history, trained):
    """Bad status over exactly half the latest bins, one tag of a step drifting away from
    what the others imply, and the whole step moving together (the process, not a sensor),
    at a cut-off in the middle of the batch: only the bins up to it count."""
    model, _, _ = trained
    check = model.sensor_check
    _, test = split_batches(history)
    cube = model.featurizer.cube(history, test[:20])
    cut = np.full(20, 0.5 * model.featurizer.nominal_h)
    base = check.check(cube, cut)
    idx = max(check.groups, key=lambda g: len(g[0]))[0]
    j, b = int(idx[0]), 3
    last = int(np.flatnonzero(cube.t_h[b, j] <= cut[b]).max())
    cube.bad[b, j, last - 2 : last + 1] = [1 / 3, 2 / 3, 1 / 2]
    cube.bad[b, j, last + 1 :] = 1.0  # after the cut-off: must not count
    name = check.names[j]
    assert f"{name}: bad status" in check.check(cube, cut)[b]
    # drift: one tag of the step, over its latest bins (a tag that the others' models lean
    # on moves their predictions too, and several tags at once are the process: the first
    # tag named alone is the one moved)
    b2 = 7
    seen = np.flatnonzero(cube.t_h[b2, j] <= cut[b2])
    group = max(check.groups, key=lambda g: len(g[0]))
    named = []
    for pos, t in enumerate(idx):
        before = cube.value[b2, t, seen[-4:]].copy()
        cube.value[b2, t, seen[-4:]] += 10 * group[2][pos]
        named = [f for f in check.check(cube, cut)[b2] if "drifting" in f]
        cube.value[b2, t, seen[-4:]] = before
        if named:
            assert named == [f"{check.names[t]}: drifting vs the other tags"]
            break
    assert named, "no single tag of the step was named when moved alone"
    # the whole step moving together is the process: no tag of it is named
    for pos, t in enumerate(idx):
        cube.value[b2, t, seen[-4:]] += 10 * group[2][pos]
    flags = check.check(cube, cut)[b2]
    assert not any("drifting" in f for f in flags)
    assert check.check(cube, cut)[0] == base[0]


def test_sensor_flags_are_rare(history, trained):
    model, _, _ = trained
    _, test = split_batches(history)
    out = model.predict(history, test, 0.5)
    assert out["low_confidence"].mean() < 0.3


def test_a_batch_without_data_gets_the_base_rate_and_low_confidence(history, trained):
    model, _, _ = trained
    empty = history.subset(history.outcomes.index)
    empty.outcomes = pd.concat(
        [empty.outcomes, pd.DataFrame({"order": [1e12]}, index=pd.Index(["NEW"], name="batch_id"))]
    )
    out = model.predict(empty, ["NEW"])
    assert out.loc["NEW", "p_deviation"] == pytest.approx(model.base_rate)
    assert out.loc["NEW", "low_confidence"]
    assert "no data" in out.loc["NEW", "reasons"]


def test_unseen_category_and_missing_context_are_defined_results(history, trained):
    model, _, _ = trained
    _, test = split_batches(history)
    odd = history.subset(test[:5])
    odd.outcomes = odd.outcomes.assign(production_unit="BR-999")
    out = model.predict(odd, test[:5], 0.5)
    assert out["p_deviation"].between(0, 1).all()
    gone = history.subset(test[:5])
    gone.outcomes = gone.outcomes.drop(columns=["production_unit"])
    out = model.predict(gone, test[:5], 0.5)
    assert out["p_deviation"].between(0, 1).all()
    assert out["low_confidence"].all()
    assert out["suspect_sensors"].str.contains("context production_unit").all()


def test_data_of_another_process_is_refused_clearly(trained):
    model, _, _ = trained
    series = pd.DataFrame(
        {"batch": ["X"] * 10, "t": np.arange(10.0), "foo": 1.0, "bar": np.arange(10.0)}
    )
    other = batch_history(
        series, pd.DataFrame({"batch": ["X"]}), batch_col="batch", time_col="t", min_batches=0
    )
    with pytest.raises(SchemaError, match=r"none of the .* tags this model was trained on"):
        model.predict(other)


# ---------------------------------------------------------------------- bad input


def _byod(n=40, seed=0):
    rng = np.random.default_rng(seed)
    rows, outcomes = [], []
    for b in range(n):
        bad = b % 3 == 0
        for t in range(24):
            rows.append(
                {
                    "batch": f"b{b}",
                    "hour": float(t),
                    "temp": 37 + rng.normal(0, 0.1) + (0.5 * t / 24 if bad else 0),
                    "ph": 7 + rng.normal(0, 0.02),
                }
            )
        outcomes.append({"batch": f"b{b}", "oos": int(bad), "lot_purity": 99 - bad + rng.normal()})
    return pd.DataFrame(rows), pd.DataFrame(outcomes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s, o: (s.drop(columns=["hour"]), o), "series: column 'hour' is missing"),
        (lambda s, o: (s, o.drop(columns=["oos"])), "outcomes: column 'oos' is missing"),
        (
            lambda s, o: (s.assign(temp=s["temp"].astype(str) + "C"), o),
            "series.temp: wide form needs numeric tag columns",
        ),
        (lambda s, o: (s, o.assign(oos="maybe")), "outcomes.oos: labels must be 0/1"),
        (lambda s, o: (s, o.head(10)), "at least 20 labelled batches"),
        (lambda s, o: (s, pd.concat([o, o.head(1)])), "one row per batch; 'b0' repeats"),
        (lambda s, o: (s, o.assign(oos=0)), "both outcomes"),
    ],
)
def test_bad_batch_tables_name_the_field_and_rule(change, message):
    series, outcomes = change(*_byod())
    with pytest.raises(InputError, match=message):
        batch_history(series, outcomes, batch_col="batch", time_col="hour", label_col="oos")


def test_bad_run_tables_name_the_field_and_rule():
    table = pd.DataFrame(
        {"unit": ["a"] * 5 + ["b"] * 5, "cycle": list(range(5)) * 2, "s1": np.arange(10.0)}
    )
    with pytest.raises(InputError, match="runs: column 'time' is missing"):
        run_history(table, asset_col="unit", time_col="time")
    with pytest.raises(InputError, match=r"runs\.s1: sensor columns must be numeric"):
        run_history(table.assign(s1="x"), asset_col="unit", time_col="cycle")
    with pytest.raises(InputError, match="at least 3 runs"):
        run_history(table, asset_col="unit", time_col="cycle")
    with pytest.raises(InputError, match="asset 'a' repeats time 0"):
        run_history(pd.concat([table, table.head(1)]), asset_col="unit", time_col="cycle")


# ---------------------------------------------------------------------- governance


def test_registry_versions_approval_and_refusals(tmp_path, trained, maint):
    from conftest import PASSWORDS, write_users

    users = tmp_path / "users.toml"
    write_users(users)
    reg = Registry(tmp_path / "models")
    model, meta, _ = trained
    version = reg.register(model, meta)
    assert reg.register(model, meta) == version  # same model, same version, no new event
    assert [e["event"] for e in reg.events()] == ["registered"]
    with pytest.raises(RegistryError, match="no approved model"):
        reg.load_approved("deviation")
    with pytest.raises(RegistryError, match="wrong user name or password"):
        reg.approve(version, user="qa", password="nope", reason="ok", users_file=users)
    with pytest.raises(RegistryError, match="lacks the 'qa' role"):
        reg.approve(
            version, user="engineer", password=PASSWORDS["engineer"], reason="ok", users_file=users
        )
    reg.approve(version, user="qa", password=PASSWORDS["qa"], reason="validated", users_file=users)
    loaded, loaded_meta = reg.load_approved("deviation")
    assert model_fingerprint(loaded) == meta["model_sha256"]
    assert loaded_meta["intended_use"] and loaded_meta["training_data"]["fingerprint"]
    card = (tmp_path / "models" / version / "card.md").read_text()
    assert "## Intended use" in card and "auc_p50" in card
    events = [e["event"] for e in reg.events()]
    assert events == ["registered", "approval_refused", "approval_refused", "approved"]
    assert reg.verify() == (True, "")
    lines = reg.log.read_text().splitlines()
    lines[0] = lines[0].replace("registered", "retired")
    reg.log.write_text("\n".join(lines) + "\n")
    ok, problem = reg.verify()
    assert not ok and "seq 1" in problem


def test_drift_flags_a_shifted_feature_and_not_the_training_data(history, trained):
    model, meta, _ = trained
    train, _ = split_batches(history)
    X = model.features_at(history, train, 0.5)
    same = psi_table(meta["drift_reference"], X)
    assert (same["psi"] < 0.05).all()
    col = "production.temperature|mean"
    shifted = X.assign(**{col: X[col] + 3 * X[col].std()})
    table = psi_table(reference(X), shifted).set_index("feature")
    assert table.loc[col, "psi"] > PSI_FLAG
    assert table.loc[col, "flag"] == "drift"


def test_performance_check_counts_only_batches_after_the_training_data(history, trained):
    model, meta, _ = trained
    train, test = split_batches(history)
    perf = deviation_performance(model, meta, history)
    # the latest 120 batches with an outcome, all started after the last training batch
    assert meta["training_data"]["last_batch"] == str(train[-1])
    cut = meta["training_data"]["train_until_order"]
    assert perf["batches"] == 120 and (history.outcomes.loc[test[-120:], "order"] > cut).all()
    assert perf["first_batch"] == str(test[-120]) and perf["last_batch"] == str(test[-1])
    assert abs(perf["auc"] - perf["validation_auc"]) < 0.1 and not perf["flag"]
    assert abs(perf["mean_predicted"] - perf["observed"]) < 0.08


def test_performance_check_flags_a_model_whose_ranking_broke(history, trained):
    model, meta, _ = trained
    _, test = split_batches(history)
    flipped = history.subset(history.outcomes.index)
    labels = flipped.outcomes["label"].copy()
    labels[test] = ~labels[test].astype(bool)  # the process changed: the model now ranks wrong
    flipped.outcomes = flipped.outcomes.assign(label=labels)
    perf = deviation_performance(model, meta, flipped)
    assert perf["auc"] < 0.3 and perf["flag"]


def test_performance_check_waits_for_enough_outcomes(history, trained):
    model, meta, _ = trained
    _, test = split_batches(history)
    few = history.subset(history.outcomes.index)
    labels = few.outcomes["label"].copy().astype(object)
    labels[test[10:]] = None  # only ten outcomes known since training
    few.outcomes = few.outcomes.assign(label=labels)
    perf = deviation_performance(model, meta, few)
    assert perf["batches"] == 10 and perf["auc"] is None and not perf["flag"]
    assert "needs 20" in perf["note"]
    old = {
        **meta,
        "training_data": {
            k: v for k, v in meta["training_data"].items() if k != "train_until_order"
        },
    }
    assert "retrain" in deviation_performance(model, old, history)["note"]


def test_running_sum_features_equal_the_direct_computation(history, trained):
    model, _, _ = trained
    f = model.featurizer
    _, test = split_batches(history)
    cube = f.cube(history, test[:60])
    rng = np.random.default_rng(0)
    for cut in (np.full(60, 3.0), rng.uniform(0, 1.1 * f.nominal_h, 60)):
        fast, direct = f.stats(cube, cut), f.stats_direct(cube, cut)
        for name, value in direct.items():
            np.testing.assert_allclose(fast[name], value, rtol=1e-6, atol=1e-8, err_msg=name)
