"""Evaluation reports: Markdown tables and PNG figures a reviewer can file.

``write_report(out_dir, deviation=metrics, maintenance=metrics)`` writes ``report.md`` with
the metric tables and ``roc.png``, ``lead_time.png``, ``calibration.png``,
``importance.png``, ``maintenance_roc.png``. Files are written into a temporary directory
that replaces ``out_dir`` at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from quality.registry import markdown_table

__all__ = ["write_report"]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _deviation(tmp: Path, metrics: dict, version: str) -> list[str]:
    lines = [f"## Batch deviation model `{version}`", ""]
    lines += ["Held-out batches (later in time than every training batch).", ""]
    lines += [markdown_table(metrics["by_progress"]), ""]
    if any("onset_oracle_auc" in r for r in metrics["by_progress"]):
        lines += [
            "Twin data: `positives_started` counts the deviating batches with a deviation "
            "already under way at the cut-off (simulator truth, never a feature); "
            "`onset_oracle_auc` is the AUC of a perfect detector of started deviations. "
            "A model above it foresees deviations before their onset.",
            "",
        ]
    if "class_accuracy_at_100%" in metrics:
        lines += [f"Deviation class accuracy at 100 %: {metrics['class_accuracy_at_100%']:.3f}", ""]
    preds = metrics["_predictions"]
    fig, ax = plt.subplots(figsize=(5, 4))
    for p in (0.25, 0.5, 1.0):
        d = preds[np.isclose(preds["progress"], p)]
        if d["label"].nunique() == 2:
            fpr, tpr, _ = roc_curve(d["label"], d["score"])
            ax.plot(fpr, tpr, label=f"progress {p:.0%}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, held-out batches")
    ax.legend()
    _save(fig, tmp / "roc.png")
    rows = metrics["by_progress"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([r["progress"] for r in rows], [r["roc_auc"] for r in rows], "o-", label="model")
    ax.plot(
        [r["progress"] for r in rows],
        [r["envelope_rule_auc"] for r in rows],
        "s--",
        label="golden-batch envelope rule",
    )
    ax.plot(
        [r["progress"] for r in rows],
        [r["recall_at_0.5"] for r in rows],
        "^:",
        label="share of deviating batches flagged (p >= 0.5)",
    )
    ax.set(
        xlabel="batch progress",
        ylabel="ROC AUC / share",
        title="How early: lead time",
        ylim=(0, 1.02),
    )
    ax.legend(fontsize=8)
    _save(fig, tmp / "lead_time.png")
    cal = metrics.get("calibration_p50", [])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([c["mean_predicted"] for c in cal], [c["observed"] for c in cal], "o-")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="predicted probability", ylabel="observed share", title="Calibration at 50 %")
    _save(fig, tmp / "calibration.png")
    imp = metrics["importance"][:15][::-1]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.barh([r["feature"] for r in imp], [r["gain"] for r in imp])
    ax.set(xlabel="total gain", title="Feature importance")
    _save(fig, tmp / "importance.png")
    lines += [
        "![ROC](roc.png) ![lead time](lead_time.png)",
        "",
        "![calibration](calibration.png)",
        "",
    ]
    if metrics.get("calibration_all_progress"):
        lines += ["### Calibration over all progress points", ""]
        lines += [markdown_table([metrics["calibration_all_progress"]]), ""]
        lines += [markdown_table(metrics.get("reliability_all_progress", [])), ""]
    lines += _selection(metrics)
    lines += ["LightGBM member's importance:", "", "![importance](importance.png)", ""]
    return lines


def _selection(metrics: dict) -> list[str]:
    """The model-selection record as a table: candidates, figures, the choice."""
    sel = metrics.get("selection")
    if not sel:
        return []
    rows = [
        {
            "candidate": c["name"],
            "cv": c["cv_mean"],
            "sd over folds": c["cv_sd"],
            "90 % interval": c["cv_interval_90"],
            "chosen": "yes" if c["name"] == sel["chosen"] else "",
        }
        for c in sel["candidates"]
    ]
    lines = ["### Model selection", "", f"{sel['metric']}, {sel['folds']}-fold {sel['fold_kind']}"]
    lines += ["", markdown_table(rows), "", f"Chosen: {sel['chosen']} ({sel['why']})", ""]
    lines += [f"- warning: {w}" for w in sel.get("warnings", [])]
    return [*lines, ""]


def _maintenance(tmp: Path, metrics: dict, version: str) -> list[str]:
    lines = [f"## Asset maintenance model `{version}`", ""]
    flat = {
        k: v
        for k, v in metrics.items()
        if not k.startswith("_") and k not in ("headline", "selection", "calibration")
    }
    flat.update(metrics["headline"])
    lines += [markdown_table([flat]), ""]
    lines += _selection(metrics)
    preds = metrics["_predictions"]
    if preds["label"].nunique() == 2:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        fpr, tpr, _ = roc_curve(preds["label"], preds["p_fail"])
        ax.plot(fpr, tpr)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title=f"Failure within {metrics['horizon']:g} {metrics['time_unit']}",
        )
        _save(fig, tmp / "maintenance_roc.png")
        lines += ["![maintenance ROC](maintenance_roc.png)", ""]
    return lines


def write_report(
    out_dir: str | os.PathLike,
    *,
    deviation: tuple[str, dict] | None = None,
    maintenance: tuple[str, dict] | None = None,
    title: str = "biotwin model evaluation",
) -> Path:
    """Write the report for the given (version, metrics) pairs; returns report.md's path."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        lines = [f"# {title}", ""]
        if deviation is not None:
            lines += _deviation(tmp, deviation[1], deviation[0])
        if maintenance is not None:
            lines += _maintenance(tmp, maintenance[1], maintenance[0])
        (tmp / "report.md").write_text("\n".join(lines) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "report.md"
