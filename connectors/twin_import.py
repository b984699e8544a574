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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.historian import (
    FLAG_OUT_OF_RANGE,
    Historian,
    HistorianError,
    quality_from_status,
)

__all__ = ["STATUS_OF_QUALITY", "batch_context_rows", "historian_rows", "import_simulation"]

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

    Then compacts the historian, so that every past day is one file.

    Returns
    -------
    dict
        Rows imported per unit, plus ``batch_context``.

    Raises
    ------
    HistorianError
        If ``sim_dir`` is not a twin output (no manifest.json / tags.parquet ...).
    """
    sim_dir = Path(sim_dir)
    for needed in ("manifest.json", "tags.parquet", "phases.parquet", "batches.parquet"):
        if not (sim_dir / needed).exists():
            raise HistorianError(
                f"sim_dir: must be a `biotwin simulate` output with {needed}; got {sim_dir}"
            )
    context = batch_context_rows(sim_dir)  # first: a bad record fails before the long part
    tags = pd.read_parquet(sim_dir / "tags.parquet")
    historian.upsert_tags(
        tags.assign(node_id=None)[
            ["tag", "node_id", "unit", "eng_unit", "description", "eu_low", "eu_high"]
        ]
    )
    limits = tags.set_index("tag")[["eu_low", "eu_high"]]
    counts = {}
    for path in sorted((sim_dir / "signals").glob("*.parquet")):
        table = pq.read_table(path, columns=["time", "tag", "value", "quality"])
        counts[path.stem] = historian.append(historian_rows(table, limits))
        if progress:
            progress(path.stem)
    counts["batch_context"] = historian.append_batch_context(context)
    historian.compact()  # one file per past day: the fastest layout for the readers
    if progress:
        progress("compaction")
    logger.info("imported %s into %s", sim_dir, historian.root)
    return counts


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """Dictionary codes and values of a column (strings, categories)."""
    array = column.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    return array.indices.to_numpy(zero_copy_only=False), array.dictionary.to_pylist()


def historian_rows(table: pa.Table, limits: pd.DataFrame) -> pa.Table:
    """Twin signal rows (time, tag, value, quality category) as historian rows.

    The quality becomes the StatusCode an OPC UA server would send (:data:`STATUS_OF_QUALITY`,
    unknown categories Bad) and values outside the tag's EU range get ``FLAG_OUT_OF_RANGE``,
    as the ingest does. Vectorised over the few distinct tags and qualities.
    """
    q_codes, q_names = _codes(table["quality"])
    bad = STATUS_OF_QUALITY["bad"]
    status = np.array([STATUS_OF_QUALITY.get(q, bad) for q in q_names], np.uint32)[q_codes]
    t_codes, t_names = _codes(table["tag"])
    lo = limits["eu_low"].reindex(t_names).to_numpy(float)[t_codes]
    hi = limits["eu_high"].reindex(t_names).to_numpy(float)[t_codes]
    value = table["value"].to_numpy()
    with np.errstate(invalid="ignore"):
        outside = (value < lo) | (value > hi)
    time = table["time"].cast(pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "time": time,
            "tag": table["tag"].cast(pa.string()),
            "value": value,
            "status": status,
            "quality": quality_from_status(status),
            "flags": np.where(outside, FLAG_OUT_OF_RANGE, 0).astype(np.uint8),
        }
    )


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
    rows = pd.concat([running[cols], other[cols]], ignore_index=True)
    backwards = rows["end_time"] < rows["start_time"]
    if backwards.any():  # seen at the horizon of a simulation: the record cannot be stored
        first = rows[backwards].iloc[0]
        logger.warning(
            "import: skipped %d batch context records ending before they start "
            "(first: %s %s %s, %s -> %s)",
            int(backwards.sum()),
            first["batch_id"],
            first["unit"],
            first["phase"],
            first["start_time"],
            first["end_time"],
        )
    # A unit has one record per start time (it is in one state at a time): of two records
    # that start together (a repair that began during a CIP), the longer one is written last
    # and wins.
    rows = rows[~backwards].sort_values(["unit", "start_time", "end_time"], kind="stable")
    return rows.reset_index(drop=True)
