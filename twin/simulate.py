"""Run the twin for a horizon and produce its records and 1-minute signals.

:func:`simulate` runs the discrete-event model (:mod:`twin.line`), lays its records on the
sample grid (:mod:`twin.timeline`), integrates the bioreactors' kinetics and computes every
unit's true tag values in plant order (the bioreactor's titer feeds chromatography, the
homogenizer's droplets feed filtration), then assesses each batch's CQAs. The instrument
layer (noise, sensor faults, quality) is applied per unit when the signals are consumed,
so that :func:`twin.output.write_outputs` can run it in parallel with Parquet writing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from twin.batches import Deviation
from twin.bioreactor import bioreactor_class_signals
from twin.config import PlantConfig
from twin.cqa import CQA_DEVIATION, assess_batch
from twin.downstream import SIGNAL_FUNCTIONS
from twin.line import Line
from twin.sensors import read_instrument
from twin.timeline import STATE_NAMES, UnitTimeline, build_timelines

__all__ = ["Simulation", "simulate"]

logger = logging.getLogger(__name__)

_STREAM_TAG = 5
_STREAM_QC = 6
_ORDER = (
    "media_prep",
    "bioreactor",
    "harvest",
    "chromatography",
    "premix",
    "homogenizer",
    "sterile_filter",
    "filler",
)


@dataclass
class UnitSignals:
    """Instrument readings of one unit: a long table's columns, ready for Arrow."""

    unit_id: str
    tags: list[str]
    values: np.ndarray  # (n_tags, n)
    quality: np.ndarray  # (n_tags, n) int8
    faults: list[tuple[str, str, int, int]]  # tag, kind, start, end


@dataclass
class Simulation:
    """A finished run: the line's records, per-batch attributes and true signals."""

    config: PlantConfig
    seed: int
    horizon_h: float
    line: Line
    timelines: dict[str, UnitTimeline]
    true_signals: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    attrs: dict[str, dict] = field(default_factory=dict)
    cqa: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def start(self) -> pd.Timestamp:
        """Wall-clock time of hour 0."""
        return pd.Timestamp(self.config.plant.start)

    @property
    def n_samples(self) -> int:
        """Samples per tag on the grid."""
        return next(iter(self.timelines.values())).n

    def tag_name(self, unit_id: str, signal: str) -> str:
        """ISA-5.1 tag of a unit's signal, e.g. ``TIC-201.PV``."""
        unit = next(u for u in self.config.units if u.id == unit_id)
        spec = self.config.unit_classes[unit.unit_class]
        sig = next(s for s in spec.signals if s.name == signal)
        return sig.tag.format(n=unit.loop_number)

    def read_unit(self, unit_id: str) -> UnitSignals:
        """Apply the instruments (noise, faults, quality) to one unit's true values."""
        unit_index = [u.id for u in self.config.units].index(unit_id)
        unit = self.config.units[unit_index]
        spec = self.config.unit_classes[unit.unit_class]
        true = self.true_signals[unit_id]
        dt_h = self.config.plant.sample_interval_min / 60.0
        n = self.n_samples
        values = np.empty((len(spec.signals), n))
        quality = np.empty((len(spec.signals), n), dtype=np.int8)
        faults = []
        tags = []
        for j, sig in enumerate(spec.signals):
            tag = sig.tag.format(n=unit.loop_number)
            rng = np.random.default_rng([self.seed, _STREAM_TAG, unit_index, j])
            values[j] = true[sig.name]
            _, quality[j], episodes = read_instrument(
                values[j], sig, self.config.sensor_faults, rng, dt_h
            )
            faults += [(tag, kind, a, b) for kind, a, b in episodes]
            tags.append(tag)
        return UnitSignals(unit_id, tags, values, quality, faults)


def simulate(
    config: PlantConfig,
    *,
    days: float,
    seed: int,
    signals: bool = True,
    unit_ready: Callable[[Simulation, str], None] | None = None,
) -> Simulation:
    """Simulate the plant for ``days`` from an empty, new plant.

    Parameters
    ----------
    config : PlantConfig
        The validated plant.
    days : float
        Horizon in days (> 0).
    seed : int
        Root of every random stream: the same seed gives the same output.
    signals : bool
        Compute the 1-minute true signals (off: records and CQAs only need the kinetics
        outcomes, which are still computed).
    unit_ready : callable, optional
        Called as ``unit_ready(sim, unit_id)`` as soon as a unit's true signals are
        computed, in plant order (a writer can start on it while the next units compute;
        see :func:`twin.output.simulate_to`). The unit's signals are not changed afterwards.

    Raises
    ------
    ValueError
        If ``days`` is not positive.
    """
    if not days > 0:
        raise ValueError(f"days must be > 0; got {days}")
    horizon_h = float(days) * 24.0
    line = Line(config, seed=seed)
    line.start()
    line.env.run(until=horizon_h)
    logger.info("line simulated: %d batches released over %.0f days", len(line.batches), days)
    timelines = build_timelines(line, horizon_h)
    sim = Simulation(config, seed, horizon_h, line, timelines)
    _compute_true_signals(sim, unit_ready)
    _assess(sim)
    if not signals:
        sim.true_signals = {}
    return sim


def _compute_true_signals(sim: Simulation, unit_ready=None) -> None:
    config = sim.config
    by_class: dict[str, list[str]] = {}
    for unit in config.units:
        by_class.setdefault(unit.unit_class, []).append(unit.id)
    classes = sorted(by_class, key=lambda c: _ORDER.index(config.unit_classes[c].kind))
    # seed bioreactors before production: stable plant order within the kind
    for cls in classes:
        spec = config.unit_classes[cls]
        unit_ids = by_class[cls]
        if spec.kind == "bioreactor":
            result = bioreactor_class_signals([sim.timelines[u] for u in unit_ids], spec, sim.attrs)
            sim.true_signals.update(result)
        else:
            for unit_id in unit_ids:
                sim.true_signals[unit_id] = SIGNAL_FUNCTIONS[spec.kind](
                    sim.timelines[unit_id], spec, sim.attrs
                )
        for unit_id in unit_ids:
            produced = sim.true_signals[unit_id]
            for asset, age in sim.timelines[unit_id].age_h.items():
                produced.setdefault(f"{asset}_hours", age)
            missing = [s.name for s in spec.signals if s.name not in produced]
            if missing:
                raise ValueError(
                    f"unit_classes.{cls}.signals: the twin cannot generate {missing} for kind "
                    f"{spec.kind!r}; it knows {sorted(produced)}"
                )
            if unit_ready is not None:
                unit_ready(sim, unit_id)


def _assess(sim: Simulation) -> None:
    """QC results for every batch that reached QC; wear-driven OOS opens a deviation."""
    for batch in sim.line.batches:
        if batch.filled_h is None:
            continue
        rng = np.random.default_rng([sim.seed, _STREAM_QC, batch.seq])
        results = assess_batch(batch, sim.attrs.get(batch.id, {}), sim.config, rng)
        sim.cqa[batch.id] = results
        explained = {d.deviation_class for d in batch.deviations}
        for name, value in results.items():
            spec = sim.config.specs.get(name)
            if spec is None or not _oos(value, spec.low, spec.high):
                continue
            cls = CQA_DEVIATION.get(name, "oos_result")
            if cls not in explained:
                batch.deviations.append(
                    Deviation(
                        cls,
                        f"OOS {name}: root cause under investigation",
                        "qc_release",
                        1.0,
                        1.0,
                        True,
                        source="qc",
                        onset_h=batch.qc_start_h,
                    )
                )
                explained.add(cls)
        if batch.disposition in ("released", "rejected"):
            oos = any(
                _oos(v, sim.config.specs[k].low, sim.config.specs[k].high)
                for k, v in results.items()
                if k in sim.config.specs
            )
            batch.disposition = batch.status = "rejected" if oos else "released"


def _oos(value: float, low: float | None, high: float | None) -> bool:
    if not np.isfinite(value):
        return False
    return (low is not None and value < low) or (high is not None and value > high)


def unit_states_frame(sim: Simulation) -> pd.DataFrame:
    """State changes of every unit as rows (time, unit, state), for the event log."""
    rows = []
    for unit_id, tl in sim.timelines.items():
        change = np.flatnonzero(np.diff(tl.state, prepend=-1))
        for i in change:
            rows.append((i * tl.dt_h, unit_id, STATE_NAMES[tl.state[i]]))
    return pd.DataFrame(rows, columns=["time_h", "unit", "state"])
