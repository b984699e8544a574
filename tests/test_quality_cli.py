"""The quality commands end to end: bring your own data, registry, scoring into the store."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import PASSWORDS, write_users
from typer.testing import CliRunner

from biotwin.cli import app
from connectors.historian import Historian
from connectors.twin_import import import_simulation
from quality.registry import Registry

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _batches(n=60, seed=0):
    """Long-form batch data: batches whose temperature drifts up end out of spec."""
    rng = np.random.default_rng(seed)
    rows, outcomes = [], []
    start = pd.Timestamp("2026-01-01", tz="UTC")
    for b in range(n):
        bad = rng.random() < 0.35
        t0 = start + pd.Timedelta(hours=30 * b)
        for h in range(48):
            drift = 0.8 * h / 48 if bad else 0.0
            rows.append(
                (
                    f"L{b:03d}",
                    t0 + pd.Timedelta(hours=h),
                    "TEMP",
                    37 + drift + rng.normal(0, 0.1),
                    "good",
                )
            )
            rows.append(
                (f"L{b:03d}", t0 + pd.Timedelta(hours=h), "PH", 7 + rng.normal(0, 0.02), "good")
            )
        outcomes.append((f"L{b:03d}", bad))
    series = pd.DataFrame(rows, columns=["lot", "ts", "sensor", "reading", "q"])
    return series, pd.DataFrame(outcomes, columns=["lot", "failed"])


def _runs(n_assets=16, seed=0):
    """Run-to-failure by cycles: a wear sensor rising to failure, one noisy sensor."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(n_assets):
        life = int(rng.integers(80, 200))
        for c in range(1, life + 1):
            rows.append((f"engine{a}", c, 0.01 * c / life * 100 + rng.normal(0, 0.1), rng.normal()))
    return pd.DataFrame(rows, columns=["unit_id", "cycle", "wear", "noise"])


def test_deviation_fit_and_predict_on_user_files(tmp_path):
    series, outcomes = _batches()
    series.to_csv(tmp_path / "series.csv", index=False)
    outcomes.to_parquet(tmp_path / "outcomes.parquet")
    model = tmp_path / "model"
    result = invoke(
        "deviation",
        "fit",
        "--series",
        tmp_path / "series.csv",
        "--outcomes",
        tmp_path / "outcomes.parquet",
        "--batch-col",
        "lot",
        "--time-col",
        "ts",
        "--label-col",
        "failed",
        "--tag-col",
        "sensor",
        "--value-col",
        "reading",
        "--quality-col",
        "q",
        "--model",
        model,
    )
    assert result.exit_code == 0, result.output
    assert (model / "card.md").exists() and (model / "model.skops").exists()
    result = invoke(
        "deviation",
        "predict",
        "--model",
        model,
        "--series",
        tmp_path / "series.csv",
        "--progress",
        "0.75",
        "--out",
        tmp_path / "p.csv",
    )
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(tmp_path / "p.csv").set_index("batch_id")
    truth = outcomes.set_index("lot")["failed"]
    late = truth.index[-18:]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth[late], pred.loc[late, "p_deviation"]) > 0.9
    assert {"reasons", "low_confidence", "model_version"} <= set(pred.columns)


def test_deviation_fit_names_a_missing_column(tmp_path):
    series, outcomes = _batches(30)
    series.to_csv(tmp_path / "s.csv", index=False)
    outcomes.to_csv(tmp_path / "o.csv", index=False)
    result = invoke(
        "deviation",
        "fit",
        "--series",
        tmp_path / "s.csv",
        "--outcomes",
        tmp_path / "o.csv",
        "--batch-col",
        "lot",
        "--time-col",
        "time",
        "--label-col",
        "failed",
        "--model",
        tmp_path / "m",
    )
    assert result.exit_code == 2
    assert "series: column 'time' is missing" in result.output
    assert not (tmp_path / "m").exists()


def test_maintenance_fit_and_predict_by_cycles(tmp_path):
    runs = _runs()
    runs.to_csv(tmp_path / "runs.csv", index=False)
    model = tmp_path / "m"
    result = invoke(
        "maintenance",
        "fit",
        "--runs",
        tmp_path / "runs.csv",
        "--asset-col",
        "unit_id",
        "--time-col",
        "cycle",
        "--horizon",
        "20",
        "--rul-cap",
        "120",
        "--model",
        model,
    )
    assert result.exit_code == 0, result.output
    # score assets part-way through their lives: RUL should follow the truth
    partial = runs[runs["cycle"] <= runs.groupby("unit_id")["cycle"].transform("max") // 2]
    partial.to_parquet(tmp_path / "now.parquet")
    result = invoke(
        "maintenance",
        "predict",
        "--model",
        model,
        "--runs",
        tmp_path / "now.parquet",
        "--out",
        tmp_path / "rul.parquet",
    )
    assert result.exit_code == 0, result.output
    out = pd.read_parquet(tmp_path / "rul.parquet").set_index("asset")
    life = runs.groupby("unit_id")["cycle"].max()
    true_rul = life - partial.groupby("unit_id")["cycle"].max()
    err = (out["rul"] - true_rul.reindex(out.index)).abs()
    assert err.median() < 25
    assert (out["rul_lo"] <= out["rul"]).all() and (out["rul"] <= out["rul_hi"]).all()
    assert out["p_fail"].between(0, 1).all()


def test_score_refuses_without_an_approved_model(tmp_path):
    result = invoke("score", "--data-dir", tmp_path)
    assert result.exit_code == 2
    assert "no approved model" in result.output


def test_score_from_the_historian_with_approved_models(tmp_path, trained, maint):
    from twin.config import load_config
    from twin.output import simulate_to

    plant = load_config()
    plant = plant.model_copy(
        update={"plant": plant.plant.model_copy(update={"sample_interval_min": 10})}
    )
    simulate_to(plant, tmp_path / "live", days=25, seed=5)
    store = tmp_path / "store"
    import_simulation(tmp_path / "live", Historian(store / "historian"))
    write_users(store / "users.toml")
    reg = Registry(store / "models")
    for model, meta, _ in (trained, maint):
        version = reg.register(model, meta)
        result = invoke(
            "models",
            "approve",
            version,
            "--user",
            "qa",
            "--reason",
            "test",
            "--data-dir",
            store,
            env={"BIOTWIN_PASSWORD": PASSWORDS["qa"]},
        )
        assert result.exit_code == 0, result.output
    result = invoke("score", "--data-dir", store)
    assert result.exit_code == 0, result.output
    batches = pd.read_parquet(store / "scores" / "batch_scores.parquet")
    assets = pd.read_parquet(store / "scores" / "asset_scores.parquet")
    for col in (
        "batch_id",
        "unit",
        "progress",
        "p_deviation",
        "likely_class",
        "reasons",
        "low_confidence",
        "suspect_sensors",
        "model_version",
        "scored_at",
    ):
        assert col in batches.columns
    assert len(batches) >= 5 and batches["p_deviation"].between(0, 1).all()
    # the model was trained on the inputs the historian holds: none is missing live
    assert not batches["suspect_sensors"].str.contains("missing inputs").any()
    assert set(assets["asset"]) >= {"BR-201/agitator", "HZ-502/valve_seat"}
    assert assets["p_fail_7d"].between(0, 1).all() and (assets["rul_h"] >= 0).all()
    import json

    drift = json.loads((store / "scores" / "drift.json").read_text())["deviation"]
    assert drift["features_checked"] > 50 and isinstance(drift["flag"], bool)
    assert "performance" not in drift  # no outcomes given
    listed = invoke("models", "list", "--data-dir", store)
    assert "approved" in listed.output

    # QA's decisions so far, as the LIMS exports them: the performance check reads them
    b = pd.read_parquet(tmp_path / "live" / "batches.parquet")
    done = b["status"].isin(["released", "rejected", "lost"])
    bad = b["any_oos"].fillna(False).astype(bool) | (b["n_deviations"] > 0)
    bad |= b["status"].eq("lost")
    lims = tmp_path / "lims.csv"
    pd.DataFrame({"lot": b["batch_id"], "failed": bad.astype("Int64").where(done)}).to_csv(
        lims, index=False
    )
    args = ["score", "--data-dir", store, "--outcomes", lims, "--batch-col", "lot"]
    result = invoke(*args, "--label-col", "failed")
    assert result.exit_code == 0, result.output
    perf = json.loads((store / "scores" / "drift.json").read_text())["deviation"]["performance"]
    # trained on another history: every decided batch of the historian counts
    assert perf["batches"] == done.sum() and perf["positives"] == (bad & done).sum()
    assert perf["model_version"] == drift["model_version"]
    assert (perf["auc"] is None) == (perf["note"] != "")
    result = invoke(*args)  # no "label" column in the file
    assert result.exit_code == 2 and "outcomes" in result.output and "label" in result.output


def test_evaluate_writes_a_report_on_independent_history(tmp_path, twin_dir, trained, maint):
    reg = Registry(tmp_path / "models")
    versions = [reg.register(m, meta) for m, meta, _ in (trained, maint)]
    args = ["evaluate", "--data-dir", tmp_path, "--twin", twin_dir, "--out", tmp_path / "rep"]
    for v in versions:
        args += ["--version", v]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "roc_auc" in report and "envelope_rule_auc" in report and "phm_score" in report
    for png in (
        "roc.png",
        "lead_time.png",
        "calibration.png",
        "importance.png",
        "maintenance_roc.png",
    ):
        assert (tmp_path / "rep" / png).stat().st_size > 1000


def test_score_a_twin_history_with_drift(tmp_path, twin_dir, trained, maint):
    write_users(tmp_path / "users.toml")
    reg = Registry(tmp_path / "models")
    for model, meta, _ in (trained, maint):
        reg.approve(
            reg.register(model, meta),
            user="qa",
            password=PASSWORDS["qa"],
            reason="test",
            users_file=tmp_path / "users.toml",
        )
    result = invoke("score", "--twin", twin_dir, "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    batches = pd.read_parquet(tmp_path / "scores" / "batch_scores.parquet")
    status = pd.read_parquet(twin_dir / "batches.parquet").set_index("batch_id")["status"]
    assert set(batches["batch_id"]) == set(status.index[status.isin(["in_progress", "qc"])])
    assert {"titer_pred", "titer_lo", "titer_hi"} <= set(batches.columns)
    assets = pd.read_parquet(tmp_path / "scores" / "asset_scores.parquet")
    assert len(assets) == 21 and (assets["rul_lo_h"] <= assets["rul_h"]).all()
    import json

    drift = json.loads((tmp_path / "scores" / "drift.json").read_text())["deviation"]
    assert drift["features_drifting"] <= drift["features_checked"]
    # outcomes are in twin output: the latest 120 decided batches, later than training
    perf = drift["performance"]
    assert perf["batches"] == 120 and not perf["flag"]
    assert abs(perf["auc"] - perf["validation_auc"]) < 0.1


def _sample_outcomes(path, *, rename=None):
    """QA / LIMS outcomes of the sample history as a user would export them."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "sample_data" / "twin"
    b = pd.read_parquet(root / "batches.parquet")
    done = b["status"].isin(["released", "rejected", "lost"])
    bad = b["any_oos"].fillna(False).astype(bool) | (b["n_deviations"] > 0)
    bad |= b["status"].eq("lost")
    table = pd.DataFrame(
        {
            "lot": b["batch_id"],
            "failed": bad.astype("Int64").where(done),  # empty: not decided yet
            "potency": b["media_potency"],
            "titer": b["titer_g_per_l"],
        }
    )
    table.rename(columns=rename or {}).to_csv(path, index=False)
    return root, table


def test_train_the_deviation_model_from_the_historian_and_an_outcomes_file(tmp_path):
    out = tmp_path / "outcomes.csv"
    root, table = _sample_outcomes(out)
    store = tmp_path / "store"
    hist = Historian(store / "historian")
    import_simulation(root, hist)
    args = ["train", "--data-dir", store, "--outcomes", out, "--batch-col", "lot"]
    args += ["--label-col", "failed", "--context-col", "potency", "--cqa-col", "titer"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "held-out (later) batches" in result.output
    versions = Registry(store / "models").versions()
    assert len(versions) == 1 and versions["family"].iloc[0] == "deviation"
    meta = Registry(store / "models").meta(versions["version"].iloc[0])
    assert "historian" in meta["training_data"]["source"]
    stored = set(hist.batch_context()["batch_id"])
    labelled = table[table["failed"].notna() & table["lot"].isin(stored)]
    assert meta["training_data"]["batches_train"] + meta["training_data"]["batches_test"] == len(
        labelled
    )
    assert "ctx|potency" in meta["features"] and "ctx|production_unit" in meta["features"]
    assert any(f.startswith("production.do|") for f in meta["features"])
    assert any(f.startswith("asset.homogenization.") for f in meta["features"])
    # a finished batch's equipment ages stop at its end, not at the end of the store
    from quality.live import training_history_from_historian
    from twin.config import load_config

    history = training_history_from_historian(
        hist, load_config(), table, batch_col="lot", label_col="failed"
    )
    span = history.bins.groupby("batch_id")["t_h"].max()
    assert span.max() < 24 * 8, span.max()


def test_train_from_the_historian_names_what_is_wrong(tmp_path):
    out = tmp_path / "outcomes.csv"
    root, table = _sample_outcomes(out, rename={"failed": "verdict"})
    store = tmp_path / "store"
    result = invoke("train", "--data-dir", store, "--outcomes", out, "--label-col", "verdict")
    assert result.exit_code == 2 and "historian: nothing stored" in result.output
    import_simulation(root, Historian(store / "historian"))
    result = invoke("train", "--data-dir", store, "--outcomes", out, "--batch-col", "lot")
    assert result.exit_code == 2
    assert "outcomes" in result.output and "label" in result.output, result.output
    other = tmp_path / "other.csv"
    table.assign(lot="X" + table["lot"]).rename(columns={"failed": "verdict"}).to_csv(other)
    result = invoke(
        "train",
        "--data-dir",
        store,
        "--outcomes",
        other,
        "--batch-col",
        "lot",
        "--label-col",
        "verdict",
    )
    assert result.exit_code == 2 and "none of the batches is in the historian" in result.output
    assert not list((store / "models").glob("deviation-*"))
