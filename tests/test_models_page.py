"""The Models page: registry versions, drift, model card, and QA's e-signed approval."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from connectors.security import ensure_demo_users
from quality.registry import Registry

PAGE = Path(__file__).resolve().parents[1] / "dashboard" / "views" / "models.py"


def test_models_page_lists_versions_shows_the_card_and_approves(tmp_path, monkeypatch, trained):
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(tmp_path))
    ensure_demo_users(tmp_path / "users.toml")
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
    at.text_input[0].input("qa-demo")
    at.button[0].click().run()
    assert any(f"{version} approved by qa" in s.value for s in at.success)
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
