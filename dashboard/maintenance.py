"""Maintenance planning with the twin: the PM window that hurts production least.

For an asset, every candidate start in the next ``days`` (one every ``step_h`` hours) is a
scenario "the PM starts then" (:class:`~twin.scenarios.PMMove`), run from the current
plant state with the same replication seeds (common random numbers), so the candidates
differ only by the window. The recommendation is the candidate with the fewest due dates
missed, then the most batches completed.
"""

from __future__ import annotations

import pandas as pd

from twin.config import PlantConfig
from twin.scenarios import PMMove, run_scenario
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
    progress=None,
) -> pd.DataFrame:
    """Candidates sorted best first: start_h, due_dates_missed, completed, late (means).

    Raises
    ------
    twin.errors.ScenarioError
        If ``asset`` has no PM plan in this plant.
    """
    starts = [i * step_h for i in range(int(days * 24 // step_h) + 1)]
    rows = []
    for k, start in enumerate(starts):
        result = run_scenario(
            config,
            state,
            [PMMove(asset=asset, to_h=start)],
            horizon_h=horizon_days * 24,
            replications=replications,
            seed=seed,
            name=f"PM at +{start:g} h",
        )
        mean = result.kpis.mean()
        rows.append(
            {
                "start_h": start,
                "due_dates_missed": mean["due_dates_missed"],
                "completed": mean["completed"],
                "late": mean["late"],
                "availability": result.availability[asset.split("/")[0]].mean(),
            }
        )
        if progress:
            progress(k + 1, len(starts))
    table = pd.DataFrame(rows)
    return table.sort_values(
        ["due_dates_missed", "completed", "start_h"], ascending=[True, False, True]
    ).reset_index(drop=True)
