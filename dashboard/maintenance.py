"""Maintenance planning with the twin: the PM window that hurts production least.

For an asset, every candidate start in the next ``days`` (one every ``step_h`` hours) is a
scenario "the PM starts then" (:class:`~twin.scenarios.PMMove`), run from the current
plant state with the same replication seeds (common random numbers), so the candidates
differ only by the window. All candidates are sweeps of one
:func:`~twin.scenarios.run_sweeps` call: their chunks share one pool, local processes or
a Dask cluster (docs/cluster.md). The recommendation is the candidate with the fewest due
dates missed, then the most batches completed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from twin.config import PlantConfig
from twin.scenarios import PMMove, run_sweeps
from twin.state import PlantState

__all__ = ["best_pm_window"]


def best_pm_window(
    config: PlantConfig,
    state: PlantState,
    asset: str,
    *,
    days: float = 14.0,
    step_h: float = 24.0,
    horizon_days: float = 30.0,
    replications: int = 40,
    seed: int = 0,
    scheduler: str | None = None,
    fallback_local: bool | None = None,
    workers: int | None = None,
    progress=None,
) -> pd.DataFrame:
    """Candidates sorted best first: start_h, due_dates_missed (mean; missed_p10 and
    missed_p90 over the replications), completed, late, availability (means), and against
    the best candidate (paired over the same seeds): vs_best (mean difference in due dates
    missed), its 90 % interval vs_best_lo / vs_best_hi, and clearly_worse (the interval
    excludes 0).

    ``progress(done, total)`` counts replications of all candidates; ``scheduler``: a Dask
    scheduler address (None: ``$DASK_SCHEDULER_ADDRESS``, else the local pool).

    Raises
    ------
    twin.errors.ScenarioError
        If ``asset`` has no PM plan in this plant.
    biotwin.execution.ExecutionError
        If a named scheduler cannot be used (and no fallback was asked for).
    """
    starts = [i * step_h for i in range(int(days * 24 // step_h) + 1)]
    results = run_sweeps(
        config,
        state,
        {
            f"candidate {k}: PM at +{s:g} h": [PMMove(asset=asset, to_h=s)]
            for k, s in enumerate(starts)
        },
        horizon_h=horizon_days * 24,
        replications=replications,
        seed=seed,
        workers=workers,
        scheduler=scheduler,
        fallback_local=fallback_local,
        progress=progress,
    )
    rows, missed = [], []
    for start, result in zip(starts, results.values(), strict=True):
        mean = result.kpis.mean()
        per_rep = result.kpis["due_dates_missed"].to_numpy(dtype=float)
        missed.append(per_rep)
        rows.append(
            {
                "start_h": start,
                "due_dates_missed": mean["due_dates_missed"],
                "missed_p10": float(np.percentile(per_rep, 10)),
                "missed_p90": float(np.percentile(per_rep, 90)),
                "completed": mean["completed"],
                "late": mean["late"],
                "availability": result.availability[asset.split("/")[0]].mean(),
            }
        )
    table = pd.DataFrame(rows)
    order = table.sort_values(
        ["due_dates_missed", "completed", "start_h"], ascending=[True, False, True]
    ).index
    # each candidate against the best, replication by replication (same seeds): the mean
    # difference in due dates missed and its 90 % interval (normal approximation)
    best = missed[order[0]]
    diff = np.array([m - best for m in missed])
    n = diff.shape[1]
    sd = diff.std(axis=1, ddof=1) if n > 1 else np.zeros(len(diff))
    table["vs_best"] = diff.mean(axis=1)
    table["vs_best_lo"] = table["vs_best"] - 1.645 * sd / np.sqrt(max(n, 1))
    table["vs_best_hi"] = table["vs_best"] + 1.645 * sd / np.sqrt(max(n, 1))
    table["clearly_worse"] = table["vs_best_lo"] > 0
    return table.loc[order].reset_index(drop=True)


#: feature codes of the maintenance model's reasons, as words (quality/maintenance.py)
_FEATURE_WORDS = {
    "age_7d_h": "hours run in the last 7 days",
    "age_over_pm": "age as a share of the PM interval",
    "age_h": "hours since the last PM or repair",
    "asset_kind": "asset type",
}
_STAT_WORDS = {"mean": "daily mean", "p95": "daily 95th percentile", "sd": "daily spread"}


def reason_in_words(text: str) -> str:
    """A maintenance model's reasons with its feature codes as words ("motor_current_p95 =
    79.4" -> "motor current (daily 95th percentile) = 79.4"); "—" when there are none."""
    import re

    if not isinstance(text, str) or not text.strip():
        return "—"

    def word(match: re.Match) -> str:
        code = match.group(0)
        if code in _FEATURE_WORDS:
            return _FEATURE_WORDS[code]
        base, _, stat = code.rpartition("_")
        if base and stat in _STAT_WORDS:
            return f"{base.replace('_', ' ')} ({_STAT_WORDS[stat]})"
        return code.replace("_", " ")

    out = re.sub(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", word, text)
    return out.replace("= unknown", "not measured").replace("= nan", "not measured")
