"""Load a twin simulation's Parquet output into the historian.

``biotwin history import-sim DIR`` uses this so that the models and the command center can
work on a year of history without waiting for the OPC UA ingest to collect it. The rows
get the StatusCodes an OPC UA server would have sent for the twin's qualities (good ->
Good, uncertain -> Uncertain, bad -> Bad), and the same flags the ingest sets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from connectors.historian import (
    FLAG_OUT_OF_RANGE,
    Historian,
    HistorianError,
    quality_from_status,
)

__all__ = ["STATUS_OF_QUALITY", "import_simulation"]

logger = logging.getLogger(__name__)

#: OPC UA StatusCodes for the twin's qualities: Good, UncertainLastUsableValue, BadSensorFailure.
STATUS_OF_QUALITY = {"good": 0x00000000, "uncertain": 0x40900000, "bad": 0x808B0000}


def import_simulation(
    sim_dir: str | Path,
    historian: Historian,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Append a simulation's signals, tag metadata and batch context to ``historian``.

    Returns
    -------
    dict
        Rows imported per unit, plus ``batch_context``.

    Raises
    ------
    HistorianError
        If ``sim_dir`` is not a twin output (no manifest.json / tags.parquet).
    """
    sim_dir = Path(sim_dir)
    for needed in ("manifest.json", "tags.parquet", "phases.parquet", "batches.parquet"):
        if not (sim_dir / needed).exists():
            raise HistorianError(
                f"sim_dir: must be a `biotwin simulate` output with {needed}; got {sim_dir}"
            )
    tags = pd.read_parquet(sim_dir / "tags.parquet")
    historian.upsert_tags(
        tags.assign(node_id=None)[
            ["tag", "node_id", "unit", "eng_unit", "description", "eu_low", "eu_high"]
        ]
    )
    low = dict(zip(tags["tag"], tags["eu_low"], strict=True))
    high = dict(zip(tags["tag"], tags["eu_high"], strict=True))
    counts = {}
    for path in sorted((sim_dir / "signals").glob("*.parquet")):
        table = pq.read_table(path, columns=["time", "tag", "value", "quality"])
        frame = table.to_pandas()
        quality = frame["quality"].astype(str)
        status = quality.map(STATUS_OF_QUALITY).fillna(STATUS_OF_QUALITY["bad"])
        status = status.to_numpy(dtype=np.uint32)
        value = frame["value"].to_numpy()
        tag = frame["tag"].astype(str)
        lo, hi = tag.map(low).to_numpy(float), tag.map(high).to_numpy(float)
        with np.errstate(invalid="ignore"):
            outside = (value < lo) | (value > hi)
        rows = pd.DataFrame(
            {
                "time": pd.to_datetime(frame["time"], utc=True).astype("datetime64[us, UTC]"),
                "tag": tag,
                "value": value,
                "status": status,
                "quality": quality_from_status(status),
                "flags": np.where(outside, FLAG_OUT_OF_RANGE, 0).astype(np.uint8),
            }
        )
        counts[path.stem] = historian.append(rows)
        if progress:
            progress(path.stem)
    counts["batch_context"] = historian.append_batch_context(batch_context_rows(sim_dir))
    logger.info("imported %s into %s", sim_dir, historian.root)
    return counts


def batch_context_rows(sim_dir: Path) -> pd.DataFrame:
    """Phases (running) and schedule activities (cip, sip, pm, repair) as context rows."""
    phases = pd.read_parquet(sim_dir / "phases.parquet")
    batches = pd.read_parquet(sim_dir / "batches.parquet", columns=["batch_id", "recipe"])
    running = phases.merge(batches, on="batch_id", how="left").assign(state="running")
    schedule = pd.read_parquet(sim_dir / "schedule.parquet")
    other = schedule[schedule["activity"].isin(["cip", "sip", "pm", "repair"])].assign(
        recipe=None, phase=schedule["activity"], state=schedule["activity"]
    )
    cols = ["batch_id", "unit", "recipe", "phase", "state", "start_time", "end_time"]
    return pd.concat([running[cols], other[cols]], ignore_index=True)
