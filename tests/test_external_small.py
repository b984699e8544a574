"""The product on data nobody here wrote the model for: a small run of the external suite.

Two batch processes and one degradation process of benchmarks/external (not the twin), at
their ``small`` size, go through ``biotwin deviation fit/predict`` and ``biotwin maintenance
fit/predict`` as a customer would run them. The fitted pipeline must be at least as good as
the best plain baseline (benchmarks/external/baselines.py) within the spread that the small
test sets give, and its probabilities must beat the constant training rate (Brier) once
faults have had time to show. The full suite (``python benchmarks/external/run.py``) is the
measurement; this is its smoke alarm.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.external import baselines
from benchmarks.external.datasets import compressor_1mode_1regime, ecoli_hcd, exo_reactor
from biotwin.cli import app
from quality.selection import fast_auc

runner = CliRunner()


def _run(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("module", [ecoli_hcd, exo_reactor], ids=["ecoli_hcd", "exo_reactor"])
def test_batch_pipeline_holds_up_against_the_plain_baselines(tmp_path, module):
    data = module.make(seed=0, size="small")
    files = {}
    for key in ("series_train", "outcomes_train", "series_test"):
        files[key] = tmp_path / f"{key}.parquet"
        data[key].to_parquet(files[key])
    model = tmp_path / "model"
    _run(
        [
            "deviation", "fit", "--series", str(files["series_train"]),
            "--outcomes", str(files["outcomes_train"]), *data["fit_args"],
            "--model", str(model),
        ]
    )  # fmt: skip
    meta = json.loads((model / "meta.json").read_text())
    chosen = next(
        c for c in meta["selection"]["candidates"] if c["name"] == meta["selection"]["chosen"]
    )
    bin_h = float(
        dict(zip(data["fit_args"][::2], data["fit_args"][1::2], strict=False)).get("--bin-h", 1.0)
    )
    base = baselines.batch_baselines(data, bin_h=bin_h, progress=(0.75, 1.0))
    y_test = data["outcomes_test"].set_index("batch_id")["label"]
    rate = data["outcomes_train"]["label"].mean()
    for p in (0.75, 1.0):
        out = tmp_path / f"pred_{p}.parquet"
        _run(["deviation", "predict", "--model", str(model), "--series", str(files["series_test"]),
              "--progress", str(p), "--out", str(out)])  # fmt: skip
        pred = pd.read_parquet(out).set_index("batch_id")["p_deviation"].reindex(y_test.index)
        y = y_test.to_numpy()
        auc = fast_auc(y, pred.to_numpy())
        best = max(fast_auc(y, s) for s in (base[b][p] for b in base))
        # a small test set (16-20 batches) measures AUC to about +-0.15
        assert auc >= best - max(0.15, 2 * chosen["cv_sd"]), (p, auc, best)
        brier = float(np.mean((pred.to_numpy() - y) ** 2))
        assert brier < float(np.mean((rate - y) ** 2)) + 0.02, (p, brier)
        assert pred.between(0, 1).all() and pred.std() > 0.01


def test_rul_pipeline_holds_up_against_fixed_windows(tmp_path):
    data = compressor_1mode_1regime.make(seed=0, size="small")
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    data["runs_train"].to_parquet(train)
    data["runs_test"].to_parquet(test)
    model = tmp_path / "model"
    _run(
        ["maintenance", "fit", "--runs", str(train), *data["fit_args"], "--rul-cap",
         str(data["rul_cap"]), "--setting-cols", ",".join(data["setting_cols"]),
         "--n-seeds", "1", "--model", str(model)]
    )  # fmt: skip
    out = tmp_path / "pred.parquet"
    _run(["maintenance", "predict", "--model", str(model), "--runs", str(test), "--out", str(out)])
    pred = pd.read_parquet(out).set_index("asset")["rul"]
    truth = data["truth_test"].set_index("asset")["rul"].clip(upper=data["rul_cap"])
    rmse = float(np.sqrt(np.mean((pred.reindex(truth.index) - truth) ** 2)))
    base = baselines.degradation_baseline(data).set_index("asset")["rul"]
    base_rmse = float(np.sqrt(np.mean((base.reindex(truth.index) - truth) ** 2)))
    meta = json.loads((model / "meta.json").read_text())
    assert meta["training_data"]["time_unit"] == "cycles"
    assert rmse <= base_rmse * 1.1, (rmse, base_rmse)
