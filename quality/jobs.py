"""The jobs behind ``biotwin train`` / ``score`` / ``evaluate``, callable from the supervisor.

Store layout under DATA_DIR::

    training/twin/     twin history used for training (simulated on first use)
    models/            the registry (see :mod:`quality.registry`)
    scores/            batch_scores.parquet, asset_scores.parquet, drift.json (docs/quality.md)
    reports/           evaluation reports (Markdown + PNG)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from quality.data import batch_history_from_twin, run_history_from_twin
from quality.drift import deviation_performance, psi_table
from quality.registry import Registry
from quality.service import train_deviation, train_maintenance

__all__ = [
    "TRAINING_DAYS",
    "asset_score_frame",
    "batch_score_frame",
    "ensure_training_data",
    "score_twin",
    "train_all",
    "write_drift",
    "write_parquet",
]

logger = logging.getLogger(__name__)

TRAINING_DAYS = 730
TRAINING_SEED = 1
TRAINING_INTERVAL_MIN = 10
#: the latest batches whose features the drift check compares with the training reference
DRIFT_WINDOW = 120


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` atomically (temporary file in the same folder, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure_training_data(
    data_dir: Path,
    *,
    days: float = TRAINING_DAYS,
    seed: int = TRAINING_SEED,
    sample_interval_min: int = TRAINING_INTERVAL_MIN,
) -> Path:
    """DATA_DIR/training/twin, simulated (days, seed, interval) if it is not there yet."""
    out = data_dir / "training" / "twin"
    if (out / "manifest.json").exists():
        return out
    from twin.config import load_config
    from twin.output import simulate_to

    plant = load_config()
    info = plant.plant.model_copy(update={"sample_interval_min": sample_interval_min})
    plant = plant.model_copy(update={"plant": info})
    logger.info("simulating %g days of training history into %s", days, out)
    simulate_to(plant, out, days=days, seed=seed)
    return out


def train_all(
    twin_dir: Path,
    registry: Registry,
    *,
    seed: int = 0,
    horizon_h: float = 168.0,
    progress: Callable[[str], None] | None = None,
    inputs: str = "live",
    scheduler: str | None = None,
) -> dict[str, tuple[str, dict]]:
    """Train and register both families from twin output; returns family -> (version, metrics).

    Parameters
    ----------
    inputs : {"live", "all"}
        Inputs of the deviation model (:func:`quality.data.batch_history_from_twin`):
        ``"live"`` (default), only what ``biotwin score`` finds in the historian (the
        plant's tags and the production unit), so that live scores miss no input; ``"all"``
        adds the twin's raw-material lot attributes, which the historian never holds.
    scheduler : str, optional
        Dask scheduler for binning the twin's unit files (one task per unit) and for the
        cross-validation folds (:mod:`quality.folds`).

    Raises
    ------
    quality.errors.QualityError
        Bad or insufficient twin output.
    """
    say = progress or (lambda _msg: None)
    say("reading batch histories")
    batches = batch_history_from_twin(twin_dir, inputs=inputs, scheduler=scheduler)
    say("training the deviation model")
    model, meta, metrics = train_deviation(
        batches, seed=seed, source=str(twin_dir), scheduler=scheduler
    )
    out = {"deviation": (registry.register(model, meta), metrics)}
    say("reading asset histories")
    runs = run_history_from_twin(twin_dir)
    say("training the maintenance model")
    model, meta, metrics = train_maintenance(
        runs, seed=seed, horizon=horizon_h, source=str(twin_dir), scheduler=scheduler
    )
    out["maintenance"] = (registry.register(model, meta), metrics)
    return out


def score_twin(
    twin_dir: Path, registry: Registry, out_dir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a twin history's open batches and its assets with the approved models.

    Batches in progress or awaiting QC disposition are scored at their own progress; every
    asset at its last observation. Writes batch_scores.parquet, asset_scores.parquet and
    drift.json into ``out_dir``.
    """
    now = pd.Timestamp(datetime.now(UTC)).floor("ms")
    dev, dev_meta = registry.load_approved("deviation")
    mnt, mnt_meta = registry.load_approved("maintenance")
    # everything the twin has: the model reads the inputs it was trained on, whichever
    history = batch_history_from_twin(twin_dir, inputs="all")
    status = pd.read_parquet(twin_dir / "batches.parquet").set_index("batch_id")["status"]
    open_ids = status.index[status.isin(["in_progress", "qc"])].intersection(history.outcomes.index)
    scores = dev.predict(history, open_ids).reset_index()
    unit = pd.read_parquet(twin_dir / "batches.parquet").set_index("batch_id")["production_unit"]
    scores.insert(1, "unit", scores["batch_id"].map(unit))
    scores = batch_score_frame(scores, dev_meta, now)
    runs = run_history_from_twin(twin_dir)
    horizon_days = mnt.horizon / 24
    asset_scores = asset_score_frame(mnt.predict(runs), mnt_meta, now)
    if horizon_days != 7:
        logger.warning(
            "maintenance horizon is %.1f days; p_fail_7d holds that horizon", horizon_days
        )
    write_parquet(scores, out_dir / "batch_scores.parquet")
    write_parquet(asset_scores, out_dir / "asset_scores.parquet")
    recent = history.outcomes.sort_values("order").index[-DRIFT_WINDOW:]
    source = str(dev_meta.get("training_data", {}).get("source", ""))
    same = source != "" and Path(source).resolve() == Path(twin_dir).resolve()
    performance = deviation_performance(dev, dev_meta, history, same_source=same)
    write_drift(out_dir, now, dev.features_at(history, recent, 0.5), dev_meta, performance)
    return scores, asset_scores


def write_drift(
    out_dir: Path,
    now: pd.Timestamp,
    X: pd.DataFrame,
    meta: dict,
    performance: dict | None = None,
) -> dict:
    """PSI of ``X`` against the model's training reference, and the performance on batches
    with outcomes (:func:`quality.drift.deviation_performance`), into out_dir/drift.json."""
    drift = {"computed_at": now.isoformat(), "deviation": _drift(X, meta)}
    if performance is not None:
        drift["deviation"]["performance"] = performance
    tmp = out_dir / ".drift.json.tmp"
    tmp.write_text(json.dumps(drift, indent=2, default=str))
    os.replace(tmp, out_dir / "drift.json")
    return drift


def batch_score_frame(scores: pd.DataFrame, meta: dict, now: pd.Timestamp) -> pd.DataFrame:
    """Deviation predictions as scores/batch_scores.parquet rows (docs/quality.md)."""
    scores = scores.rename(
        columns={
            "titer_g_per_l_pred": "titer_pred",
            "titer_g_per_l_lo": "titer_lo",
            "titer_g_per_l_hi": "titer_hi",
        }
    )
    return scores.assign(model_version=meta["version"], scored_at=now)


def asset_score_frame(assets: pd.DataFrame, meta: dict, now: pd.Timestamp) -> pd.DataFrame:
    """Maintenance predictions as scores/asset_scores.parquet rows (docs/quality.md)."""
    return pd.DataFrame(
        {
            "asset": assets["asset"],
            "unit": assets["asset"].str.split("/").str[0],
            "p_fail_7d": assets["p_fail"],
            "rul_h": assets["rul"],
            "rul_lo_h": assets["rul_lo"],
            "rul_hi_h": assets["rul_hi"],
            "reasons": assets["reasons"],
            "model_version": meta["version"],
            "scored_at": now,
        }
    )


def _drift(X: pd.DataFrame, meta: dict) -> dict:
    table = psi_table(meta.get("drift_reference", {}), X)
    flagged = table[table["flag"] == "drift"]
    return {
        "model_version": meta["version"],
        "features_checked": len(table),
        "features_drifting": len(flagged),
        "worst": table.head(10).to_dict("records"),
        "flag": bool(len(flagged) > 0),
    }
