"""The Models page: registry versions, drift, model card, and QA's e-signed approval."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import PASSWORDS, write_users
from streamlit.testing.v1 import AppTest

from quality.registry import Registry

PAGE = Path(__file__).resolve().parents[1] / "dashboard" / "views" / "models.py"


def test_models_page_lists_versions_shows_the_card_and_approves(tmp_path, monkeypatch, trained):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(tmp_path))
    write_users(tmp_path / "users.toml")
    model, meta, _ = trained
    version = Registry(tmp_path / "models").register(model, meta)

    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    assert version in at.dataframe[0].value["version"].tolist()
    assert any("Intended use" in m.value for m in at.markdown)
    assert any("Only QA can approve" in c.value for c in at.caption)

    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.session_state["user"] = "qa"
    at.session_state["roles"] = ["qa"]
    at.run()
    at.text_area[0].input("held-out AUC reviewed")
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert any("approval refused" in e.value for e in at.error)
    at.text_area[0].input("held-out AUC reviewed")
    at.text_input[0].input(PASSWORDS["qa"])
    at.button[0].click().run()
    assert any(f"{version} approved by Quinn Avery (qa)" in s.value for s in at.success)
    assert Registry(tmp_path / "models").approved("deviation") == version


def test_models_page_without_models_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    assert any("biotwin train" in i.value for i in at.info)


def test_models_page_shows_drift_and_a_performance_drop(tmp_path, monkeypatch, history, trained):
    import pandas as pd

    from quality.drift import deviation_performance
    from quality.jobs import write_drift
    from quality.service import split_batches

    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(tmp_path))
    model, meta, _ = trained
    version = Registry(tmp_path / "models").register(model, meta)
    meta = {**meta, "version": version}
    _, test = split_batches(history)
    flipped = history.subset(history.outcomes.index)
    labels = flipped.outcomes["label"].copy()
    labels[test] = ~labels[test].astype(bool)
    flipped.outcomes = flipped.outcomes.assign(label=labels)
    scores = tmp_path / "scores"
    scores.mkdir()
    write_drift(
        scores,
        pd.Timestamp("2026-12-02T10:00:00Z"),
        model.features_at(history, test[-60:], 0.5),
        meta,
        deviation_performance(model, meta, flipped),
    )

    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    # the latest batches' seed agitator vibrates more than in training: a PSI flag, shown
    assert any("features drifting" in m.value for m in [*at.warning, *at.success])
    drop = [w.value for w in at.warning if "performance at 50% progress" in w.value]
    assert drop and "120 latest batches with an outcome" in drop[0] and version in drop[0]


def small_meta() -> dict:
    """A deviation model's metadata with the shapes a trained one has (feature names with
    '|', 16-digit floats, a reliability table that is off in its upper bins)."""
    return {
        "family": "deviation",
        "created": "2026-12-05T02:03:36+00:00",
        "seed": 0,
        "model_sha256": "ab" * 32,
        "features": ["production.jacket_valve|max_z", "media_preparation.ph|mean"],
        "intended_use": "Rank batches in progress by their risk of a deviation.",
        "limitations": "Same recipe, units and tags only.",
        "training_data": {"batches_train": 605, "members": [{"windows": [10, 30]}]},
        "metrics": {
            "headline": {"auc_p50": 0.8589543164842799, "test_batches": 259},
            "by_progress": [{"progress": 0.5, "n": 259, "roc_auc": 0.8589543164842799}],
            "calibration_p50": [
                {"bin": 0, "mean_predicted": 0.0707, "observed": 0.0733, "n": 150},
                {"bin": 3, "mean_predicted": 0.35, "observed": 0.875, "n": 16},
            ],
            "importance": [
                {"feature": "production.jacket_valve|max_z", "gain": 3173.0638704299927},
                {"feature": "media_preparation.ph|mean", "gain": 680.87668800354},
            ],
        },
    }


def demo_approved_store(tmp_path, monkeypatch) -> str:
    from connectors.security import DEMO_SIGNER, demo_signer

    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(tmp_path))
    write_users(tmp_path / "users.toml")
    registry = Registry(tmp_path / "models")
    version = registry.register({"a": "stand-in model"}, small_meta())
    registry.approve(
        version,
        user=DEMO_SIGNER,
        password=demo_signer(tmp_path / "users.toml"),
        reason="automatic demo approval",
        users_file=tmp_path / "users.toml",
    )
    return version


def test_a_demo_approval_shows_as_such_with_numeric_gains_and_a_calibration_comment(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("BIOTWIN_TZ", "Europe/Zurich")
    version = demo_approved_store(tmp_path, monkeypatch)
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    versions = at.dataframe[0].value
    approval = versions.loc[versions["version"] == version, "approval"].iloc[0]
    assert re.fullmatch(
        r"approved automatically by the demo set-up on \d{4}-\d\d-\d\d \d\d:\d\d CES?T "
        r"— not a QA decision",
        approval,
    )
    assert "approved by qa" not in " ".join(str(v) for v in versions.to_numpy().ravel())
    assert any("not a QA decision" in w.value for w in at.warning)
    assert versions.loc[0, "ROC AUC at 50 % progress"] == 0.859  # 3 significant digits

    tables = [d.value for d in at.dataframe]
    gains = next(t for t in tables if "gain" in t.columns)
    assert gains["gain"].tolist() == [3170.0, 681.0]
    assert gains["signal"].tolist() == ["Jacket valve (production)", "Ph (media preparation)"]
    assert gains["statistic"].iloc[0].startswith("largest distance from the golden envelope")
    shown = " ".join(str(v) for t in tables for v in t.to_numpy().ravel())
    assert "{" not in shown  # no raw dicts
    reliability = next(t for t in tables if "mean predicted" in t.columns)
    assert reliability["predicted vs observed"].tolist() == ["agree", "predicted too low"]
    comment = next(c.value for c in at.caption if "bins predicted and observed differ" in c.value)
    assert "under-states the risk in 1 bin (worst: 0.35 predicted against 0.88 observed" in (
        comment
    )


def test_approving_keeps_the_reason_on_a_wrong_password_and_names_the_signer(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(tmp_path))
    write_users(tmp_path / "users.toml")
    version = Registry(tmp_path / "models").register({"a": "stand-in"}, small_meta())
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.session_state["user"] = "qa"
    at.session_state["roles"] = ["qa"]
    at.run()
    at.text_area(key="approve_reason").input("held-out AUC and reliability reviewed")
    at.text_input(key="approve_password").input("wrong")
    at.button[0].click().run()
    assert any("approval refused" in e.value for e in at.error)
    assert at.text_area(key="approve_reason").value == "held-out AUC and reliability reviewed"
    at.text_input(key="approve_password").input(PASSWORDS["qa"])
    at.button[0].click().run()
    assert any(f"{version} approved by Quinn Avery (qa) on" in s.value for s in at.success)
