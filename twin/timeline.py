"""Per-minute timelines of every unit, built from the discrete-event records.

The SimPy model records intervals (a batch step from 10.3 h to 58.1 h on BR-201, a CIP,
a repair); the signal generators need arrays on the sampling grid. A :class:`UnitTimeline`
holds, for one unit and every sample: the unit state, which batch step occupies it, the
time since that step started and its fraction done, the ISA-88 phase, and the health of
each asset. All signal functions are then whole-array numpy expressions over the year.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.batches import Batch, StepRecord
from twin.config import PlantConfig, UnitProcedureSpec
from twin.line import Line

__all__ = [
    "BLOCKED",
    "CIP",
    "DOWN",
    "IDLE",
    "PM",
    "RUNNING",
    "SIP",
    "STATE_NAMES",
    "Segment",
    "UnitTimeline",
    "build_timelines",
]

IDLE, RUNNING, BLOCKED, CIP, SIP, PM, DOWN = range(7)
STATE_NAMES = ("idle", "running", "holding", "cip", "sip", "maintenance", "down")


@dataclass
class Segment:
    """One batch step on a unit, on the sample grid."""

    batch: Batch
    record: StepRecord
    step: UnitProcedureSpec
    start: int  # first sample of the step
    end: int  # first sample after the step (end of running)
    release: int  # first sample after the batch left the unit


@dataclass
class UnitTimeline:
    """Sample-grid arrays of one unit."""

    unit_id: str
    n: int
    dt_h: float
    state: np.ndarray
    seg: np.ndarray
    tau_h: np.ndarray
    frac: np.ndarray
    phase: np.ndarray
    segments: list[Segment] = field(default_factory=list)
    health: dict[str, np.ndarray] = field(default_factory=dict)
    age_h: dict[str, np.ndarray] = field(default_factory=dict)  # hour meters, per asset

    @property
    def running(self) -> np.ndarray:
        """Boolean mask of the samples where a batch step runs on the unit."""
        return self.state == RUNNING

    def per_sample(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Spread one value per segment onto the samples the segments occupy."""
        lookup = np.append(np.asarray(values, dtype=np.float64), fill)
        return lookup[self.seg]  # seg == -1 picks the fill value


def _idx(hours: float, dt_h: float, n: int) -> int:
    return int(min(n, max(0, round(hours / dt_h))))


def build_timelines(line: Line, horizon_h: float) -> dict[str, UnitTimeline]:
    """Turn a finished run of ``line`` into one :class:`UnitTimeline` per unit."""
    config: PlantConfig = line.config
    dt_h = config.plant.sample_interval_min / 60.0
    n = round(horizon_h / dt_h)
    out = {}
    for unit_id in line.units:
        out[unit_id] = UnitTimeline(
            unit_id=unit_id,
            n=n,
            dt_h=dt_h,
            state=np.zeros(n, dtype=np.int8),
            seg=np.full(n, -1, dtype=np.int32),
            tau_h=np.zeros(n, dtype=np.float64),
            frac=np.zeros(n, dtype=np.float64),
            phase=np.full(n, -1, dtype=np.int8),
        )
    steps = {s.name: s for s in config.recipe.steps}
    for batch in line.batches:
        for record in batch.steps:
            tl = out[record.unit]
            step = steps[record.step]
            start = _idx(record.start_h, dt_h, n)
            end = _idx(record.end_h if record.end_h is not None else horizon_h, dt_h, n)
            release = record.released_h if record.released_h is not None else horizon_h
            release = max(end, _idx(release, dt_h, n))
            k = len(tl.segments)
            tl.segments.append(Segment(batch, record, step, start, end, release))
            tl.state[start:end] = RUNNING
            tl.state[end:release] = BLOCKED
            tl.seg[start:release] = k
    for unit_id, _batch_id, _step, activity, start_h, end_h in line.records.schedule:
        code = {"cip": CIP, "sip": SIP, "pm": PM}[activity]
        out[unit_id].state[_idx(start_h, dt_h, n) : _idx(end_h, dt_h, n)] = code
    open_failures = {}
    for time_h, asset_id, unit_id, event, *_ in line.records.asset_events:
        if event == "failure":
            open_failures[asset_id] = (unit_id, time_h)
        elif event == "repair_end":
            open_failures.pop(asset_id, None)
    downs = [(u, s, e) for u, _a, s, e, kind in line.records.down if kind == "failure"]
    downs += [(u, t, horizon_h) for u, t in open_failures.values()]
    for unit_id, start_h, end_h in downs:
        out[unit_id].state[_idx(start_h, dt_h, n) : _idx(end_h, dt_h, n)] = DOWN
    grid_h = np.arange(n, dtype=np.float64) * dt_h
    for tl in out.values():
        _fill_step_clock(tl, grid_h)
    _fill_health(line, out, horizon_h)
    return out


def _fill_step_clock(tl: UnitTimeline, grid_h: np.ndarray) -> None:
    """Time since step start, fraction done and phase index for every occupied sample."""
    if not tl.segments:
        return
    starts = np.array([s.record.start_h for s in tl.segments])
    durations = np.array(
        [max(s.record.duration_h, (s.end - s.start) * tl.dt_h, tl.dt_h) for s in tl.segments]
    )
    occupied = tl.seg >= 0
    k = tl.seg[occupied]
    tau = grid_h[occupied] - starts[k]
    tl.tau_h[occupied] = np.maximum(tau, 0.0)
    tl.frac[occupied] = np.clip(tau / durations[k], 0.0, 1.0)
    # phase index from the cumulative fractions of the step's phases (same recipe per class)
    bounds = np.cumsum([p.fraction for p in tl.segments[0].step.phases])[:-1]
    tl.phase[occupied] = np.searchsorted(bounds, tl.frac[occupied], side="right").astype(np.int8)


def _fill_health(line: Line, timelines: dict[str, UnitTimeline], horizon_h: float) -> None:
    """Health (share of drawn life used) of every asset on the grid."""
    by_asset: dict[str, list] = {}
    for time_h, asset_id, _unit, event, age_h, life_h, _health, _d in line.records.asset_events:
        if event in {"in_service", "repair_end", "pm_end"}:
            by_asset.setdefault(asset_id, []).append((time_h, age_h, life_h))
    for asset_id, asset in line.assets.items():
        tl = timelines[asset.unit.id]
        dt_h = tl.dt_h
        renewals = sorted(by_asset.get(asset_id, [(0.0, 0.0, asset.life_h)]))
        if asset.spec.age_basis == "calendar":
            clock = np.arange(tl.n, dtype=np.float64) * dt_h
        else:
            clock = np.cumsum(tl.state == RUNNING, dtype=np.float64) * dt_h
        idx = np.array([_idx(t, dt_h, tl.n) for t, _, _ in renewals])
        which = np.searchsorted(idx, np.arange(tl.n), side="right") - 1
        which = np.clip(which, 0, None)
        clock_at = np.append(clock, clock[-1] if tl.n else 0.0)[idx]
        age0 = np.array([a for _, a, _ in renewals])
        life = np.array([max(life, 1e-6) for _, _, life in renewals])
        age = age0[which] + clock - clock_at[which]
        health = np.clip(age / life[which], 0.0, 1.0)
        health[tl.state == DOWN] = np.maximum(health[tl.state == DOWN], 0.0)
        tl.health[asset.spec.name] = health
        tl.age_h[asset.spec.name] = age
