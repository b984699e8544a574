"""A living plant from the first minute: one timeline for the loaded history and the live twin.

``biotwin up`` serves the twin over OPC UA and loads history into the historian. Both come
from *one* run of the line (one seed, one plant start, the *epoch*), so that the live plant
continues the history it follows:

- first start: the epoch is set ``warm_days`` before now (kept in
  ``<data dir>/twin/epoch.json``); the line is simulated from the epoch to now and loaded into
  the historian (the batches in progress at that moment are still running when the server
  takes over), with the plant's batch records up to now (QC results and dispositions
  taken before biotwin) in ``<data dir>/simulation/batches.parquet``;
- the server (``serve-opcua --epoch``) replays the same run from the sample after the
  historian's latest one: units are busy and tags move from its first sample on. A run of the
  twin extends a shorter run of the same seed exactly (twin/simulate.py), so the seam is
  invisible;
- on every start, batch-context records still open in the historian are closed at their
  unit's latest stored sample (:func:`close_open_context`): the server and the ingest open new
  ones from the seam on, and a batch that never finished in the history is not left open.

The twin's clock runs ``speed`` times faster than the wall clock while it is served, and it
does not run while biotwin is stopped: a restart resumes where the historian stops (the plant
"paused"), which keeps history and live data on one timeline without a gap.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from connectors.historian import Historian, HistorianError
from twin.config import PlantConfig

__all__ = [
    "WARM_DAYS",
    "PlantEpoch",
    "close_open_context",
    "ensure_epoch",
    "load_epoch",
    "plant_config",
    "resume_sample",
    "warm_history",
]

logger = logging.getLogger(__name__)

#: days of plant history simulated and loaded at the first start
WARM_DAYS = 21.0


@dataclass(frozen=True)
class PlantEpoch:
    """The served plant's timeline: twin time 0 (UTC) and the seed of the run."""

    start: str  # ISO 8601, UTC, whole seconds ("2026-11-14T10:20:00Z")
    seed: int = 7

    @property
    def start_time(self) -> datetime:
        return datetime.fromisoformat(self.start.replace("Z", "+00:00"))


def epoch_path(root: Path) -> Path:
    return Path(root) / "twin" / "epoch.json"


def load_epoch(path: Path) -> PlantEpoch:
    """Read an epoch file.

    Raises
    ------
    HistorianError
        If the file is not a valid epoch (names the field and the bad value).
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise HistorianError(f"epoch: cannot read {path}: {exc}") from exc
    start, seed = raw.get("start"), raw.get("seed", 7)
    try:
        datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    except ValueError as exc:
        raise HistorianError(f"epoch.start: must be an ISO 8601 UTC time; got {start!r}") from exc
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise HistorianError(f"epoch.seed: must be an integer; got {seed!r}")
    return PlantEpoch(start=str(start), seed=seed)


def ensure_epoch(
    root: Path,
    config: PlantConfig,
    *,
    warm_days: float = WARM_DAYS,
    seed: int = 7,
    now: datetime | None = None,
) -> tuple[PlantEpoch, bool]:
    """The store's epoch, created ``warm_days`` before ``now`` if there is none.

    Returns
    -------
    (PlantEpoch, bool)
        The epoch and whether it was created now.
    """
    path = epoch_path(root)
    if path.exists():
        return load_epoch(path), False
    now = now or datetime.now(UTC)
    step = config.plant.sample_interval_min * 60
    now_s = int(now.timestamp()) // step * step
    start = datetime.fromtimestamp(now_s, UTC) - timedelta(days=warm_days)
    epoch = PlantEpoch(start=start.strftime("%Y-%m-%dT%H:%M:%SZ"), seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".epoch.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(epoch), f, indent=2)
    os.replace(tmp, path)
    logger.info("plant epoch %s (seed %d) written to %s", epoch.start, seed, path)
    return epoch, True


def plant_config(config: PlantConfig, epoch: PlantEpoch) -> PlantConfig:
    """``config`` with its simulation start at the epoch (the served run and the history)."""
    plant = config.plant.model_copy(
        update={"start": epoch.start_time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    )
    return config.model_copy(update={"plant": plant})


def warm_history(
    historian: Historian,
    config: PlantConfig,
    epoch: PlantEpoch,
    *,
    until: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Simulate the epoch's run up to ``until`` (default: now) and load it into ``historian``.

    Returns the rows imported per unit (see :func:`connectors.twin_import.import_simulation`).
    """
    from connectors.twin_import import import_simulation
    from twin.output import simulate_to

    until = until or datetime.now(UTC)
    days = (until - epoch.start_time).total_seconds() / 86400.0
    if days <= 0:
        raise HistorianError(f"epoch.start: must be before now; got {epoch.start}")
    tmp = Path(tempfile.mkdtemp(prefix=".warm.", dir=historian.root.parent))
    try:
        if progress:
            progress(f"simulating the plant's last {days:.0f} days")
        simulate_to(plant_config(config, epoch), tmp / "twin", days=days, seed=epoch.seed)
        counts = import_simulation(tmp / "twin", historian, progress=progress)
        # the plant's batch records up to now (QC results and dispositions taken before
        # biotwin; LIMS / MES data): what the command center knows of finished batches
        records = historian.root.parent / "simulation"
        records.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "twin" / "batches.parquet", records / "batches.parquet")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def close_open_context(historian: Historian) -> int:
    """Close every open batch-context record at its unit's latest stored sample.

    Run before the ingest starts: the ingest opens new records from the first context values
    it receives, so a record left open by a stop (or by the end of loaded history) would stay
    open for ever. A record is never closed before it starts.

    Returns
    -------
    int
        The number of records closed.
    """
    ctx = historian.batch_context()
    open_ = ctx[ctx["end_time"].isna()]
    if open_.empty:
        return 0
    tags = historian.tags()
    last = tags.dropna(subset=["last_time"]).groupby("unit")["last_time"].max()
    latest = tags["last_time"].max() if len(tags) else pd.NaT
    rows = open_.copy()
    end = rows["unit"].map(last).fillna(latest)
    end = pd.to_datetime(end, utc=True)
    rows["end_time"] = end.where(end.notna() & (end > rows["start_time"]), rows["start_time"])
    n = historian.append_batch_context(rows)
    logger.info("closed %d open batch-context records at their units' latest samples", n)
    return n


def resume_sample(historian: Historian, epoch: PlantEpoch, sample_interval_min: float) -> int:
    """The served run's sample after the historian's latest one (0 for an empty store)."""
    tags = historian.tags()
    last = tags["last_time"].max() if len(tags) else pd.NaT
    if pd.isna(last):
        return 0
    step = sample_interval_min * 60.0
    elapsed = (pd.Timestamp(last) - pd.Timestamp(epoch.start_time)).total_seconds()
    return max(0, int(elapsed // step) + 1)
