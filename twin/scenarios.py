"""What-if scenarios: Monte Carlo replications of the line from a plant state.

The command center asks "what happens from now on if BR-202 is down on Tuesday?". A
scenario answers it by running the discrete-event model (:class:`~twin.line.Line`, no
1-minute signals) ``N`` times from a :class:`~twin.state.PlantState`, with the scenario's
events applied, and summarising the KPIs of the replications with their spread.

Events (pydantic models, so a scenario saves as JSON):

- :class:`AssetOutage`: a unit or asset is down from ``start_h`` to ``end_h``.
- :class:`FailureRisk`: an asset fails within ``within_h`` with probability ``probability``
  (e.g. the maintenance model's failure probability), the failure time drawn per
  replication; optionally instead of its wear-out life.
- :class:`DemandChange`: the release rate of new batches times ``factor``.
- :class:`PMMove`: an asset's next PM moved to ``to_h``.
- :class:`ShiftRemoved`: operators taken off the roster between two times.

Each replication is a pure function of ``(config, state, events, horizon_h, seed)``
(:func:`run_replication`), so a sweep is spread over local processes or a Dask cluster
through one seam (:func:`run_sweeps`, :func:`biotwin.execution.executor`,
docs/cluster.md) with the same result bit for bit. The seed of replication ``i`` derives
from the scenario seed and ``i`` alone (:func:`replication_seeds`), so replication ``i`` of
a baseline and of a scenario share their random streams (common random numbers): their
difference is the effect of the events, not noise; :func:`compare` reports paired
differences.

Times are hours from the snapshot's *now*.

Besides the KPIs, every replication records its lots (:data:`LOT_COLUMNS`: release, due,
fill and QA-disposition times, status, whether the twin ended it good, its predicted
risk), so a planner can see which lots slip and by how much across the replications.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import simpy
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from twin.config import PlantConfig
from twin.equipment import residual_life
from twin.errors import ScenarioError
from twin.line import Line, ShiftBlock
from twin.state import PlantState, validate_state

__all__ = [
    "KPI_NAMES",
    "LOT_COLUMNS",
    "AssetOutage",
    "DemandChange",
    "FailureRisk",
    "PMMove",
    "Replication",
    "Scenario",
    "ScenarioResult",
    "ShiftRemoved",
    "collect",
    "compare",
    "replication_seeds",
    "run_replication",
    "run_scenario",
    "run_sweeps",
    "sweep_chunks",
]

logger = logging.getLogger(__name__)

_STREAM_EVENT = 10

KPI_NAMES = (
    "completed",
    "released",
    "rejected",
    "lost",
    "late",
    "due_dates_missed",
    "throughput_per_week",
    "expected_good_lots",
    "mean_utilization",
    "mean_availability",
    "wip_at_end",
)


# one row per lot and replication (ScenarioResult.lots); times in hours from the snapshot,
# NaN when it did not happen within the horizon; finish_h is the QA disposition (or the
# loss) of the lot, what its due date is held against; sim_good: released (or not yet
# dispositioned) with no deviation, the definition of a good batch of the outcomes
LOT_COLUMNS = (
    "replication",
    "lot",
    "release_h",
    "due_h",
    "filled_h",
    "finish_h",
    "status",
    "sim_good",
    "risk",
)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssetOutage(_Event):
    """A unit (or one asset of it) is down from ``start_h`` to ``end_h``."""

    kind: Literal["outage"] = "outage"
    target: str = Field(description="Unit id (BR-202) or asset id (BR-202/agitator).")
    start_h: float = Field(ge=0)
    end_h: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> AssetOutage:
        if self.end_h <= self.start_h:
            raise ValueError(f"end_h must be > start_h ({self.start_h:g}); got {self.end_h:g}")
        return self


class FailureRisk(_Event):
    """An asset fails within ``within_h`` with ``probability`` (constant hazard)."""

    kind: Literal["failure_risk"] = "failure_risk"
    asset: str
    probability: float = Field(ge=0, le=1)
    within_h: float = Field(gt=0)
    repair_h: float | None = Field(None, gt=0, description="Fixed repair time; None: drawn.")
    replaces_wear: bool = Field(
        True, description="Use this risk instead of the asset's wear-out life."
    )


class DemandChange(_Event):
    """New batches are released ``factor`` times as often (1.2 = +20 %)."""

    kind: Literal["demand"] = "demand"
    factor: float = Field(gt=0, le=10)


class PMMove(_Event):
    """The asset's next planned maintenance starts at ``to_h``."""

    kind: Literal["pm_move"] = "pm_move"
    asset: str
    to_h: float = Field(ge=0)


class ShiftRemoved(_Event):
    """Operators off the roster from ``start_h`` to ``end_h`` (all of them by default)."""

    kind: Literal["shift_removed"] = "shift_removed"
    start_h: float = Field(ge=0)
    end_h: float = Field(gt=0)
    operators: int | None = Field(None, ge=1)


Event = Annotated[
    AssetOutage | FailureRisk | DemandChange | PMMove | ShiftRemoved,
    Field(discriminator="kind"),
]
_EVENTS = TypeAdapter(list[Event])


class Scenario(BaseModel):
    """A named list of events over a horizon (what the command center saves)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "baseline"
    horizon_h: float = Field(24.0 * 30, gt=0, le=24.0 * 3650)
    events: list[Event] = Field(default_factory=list)


def parse_events(data) -> list:
    """Events from plain data (a list of dicts with a ``kind``), validated."""
    return _EVENTS.validate_python(data)


def validate_events(events: Sequence, config: PlantConfig) -> None:
    """Check that the events name units and assets of this plant.

    Raises
    ------
    ScenarioError
        Naming the event, the field, the rule and the value.
    """
    units = {u.id for u in config.units}
    assets = {
        f"{u.id}/{a.name}" for u in config.units for a in config.unit_classes[u.unit_class].assets
    }
    pm_assets = {
        f"{u.id}/{a.name}"
        for u in config.units
        for a in config.unit_classes[u.unit_class].assets
        if a.pm_interval_h
    }
    max_ops = max(s.operators for s in config.shifts)
    for i, e in enumerate(events):
        where = f"events[{i}] ({e.kind})"
        if isinstance(e, AssetOutage) and e.target not in units | assets:
            raise ScenarioError(f"{where}.target: must be a unit or asset id; got {e.target!r}")
        if isinstance(e, FailureRisk) and e.asset not in assets:
            raise ScenarioError(f"{where}.asset: must be an asset id; got {e.asset!r}")
        if isinstance(e, PMMove) and e.asset not in pm_assets:
            raise ScenarioError(f"{where}.asset: must be an asset with a PM plan; got {e.asset!r}")
        if isinstance(e, ShiftRemoved):
            if e.end_h <= e.start_h:
                raise ScenarioError(f"{where}.end_h: must be > start_h; got {e.end_h:g}")
            if e.operators is not None and e.operators > max_ops:
                raise ScenarioError(f"{where}.operators: must be <= {max_ops}; got {e.operators}")


def replication_seeds(seed: int, n: int) -> list[int]:
    """Seeds of replications ``0..n-1`` of a sweep (the same for baseline and scenario).

    Seed ``i`` is word ``i`` of ``SeedSequence([seed, 99])``'s state: a function of
    ``seed`` and ``i`` only, not of ``n`` nor of where the replication runs.
    """
    return [int(s) for s in np.random.SeedSequence([int(seed), 99]).generate_state(n)]


@dataclass
class Replication:
    """The outcome of one replication: KPIs, per-unit figures, its lots (rows of
    :data:`LOT_COLUMNS` without the replication) and (optionally) the schedule."""

    seed: int
    kpis: dict[str, float]
    utilization: dict[str, float]
    availability: dict[str, float]
    schedule: list[tuple] | None = None
    lots: list[tuple] = field(default_factory=list)


# ---------------------------------------------------------------------- one replication
def run_replication(
    config: PlantConfig,
    state: PlantState,
    events: Sequence = (),
    horizon_h: float = 24.0 * 30,
    seed: int = 0,
    *,
    keep_schedule: bool = False,
    known_lives: bool = False,
    default_risk: float | None = None,
) -> Replication:
    """Run the line once from ``state`` with ``events`` for ``horizon_h`` hours.

    A pure function of its arguments (validate them first with :func:`validate_state` and
    :func:`validate_events`; :func:`run_scenario` does).

    Parameters
    ----------
    known_lives : bool
        Use the snapshot's drawn asset lives (a twin knows them). By default each asset's
        remaining life is redrawn given its age, as a plant that knows only ages must.
    default_risk : float, optional
        Deviation risk of batches without a predicted ``risk`` in the snapshot, for
        ``expected_good_lots``; None: their simulated disposition counts.
    """
    t0 = state.clock_h
    end = t0 + horizon_h
    factor = math.prod(e.factor for e in events if isinstance(e, DemandChange))
    env = simpy.Environment(initial_time=t0)
    line = Line(
        config,
        seed,
        env=env,
        demand_factor=factor,
        log_events=False,
        first_batch_seq=state.next_seq,
    )
    _set_assets(line, state, events, known_lives)
    pm_offsets = {a.asset: max(0.0, a.next_pm_h) for a in state.assets if a.next_pm_h is not None}
    pm_offsets.update({e.asset: e.to_h for e in events if isinstance(e, PMMove)})
    blocks = [
        ShiftBlock(t0 + e.start_h, t0 + e.end_h, e.operators)
        for e in events
        if isinstance(e, ShiftRemoved)
    ]
    line.start(wear_snapshots_h=None, shift_blocks=blocks, pm_offsets_h=pm_offsets)
    batch_risk = _resume(line, state)
    for i, e in enumerate(events):
        rng = np.random.default_rng([seed, _STREAM_EVENT, i])
        if isinstance(e, AssetOutage):
            env.process(_outage(line, e, t0))
        elif isinstance(e, FailureRisk):
            env.process(_risk_failure(line, e, rng))
    env.run(until=end)
    return _measure(line, t0, end, seed, batch_risk, default_risk, keep_schedule)


def _set_assets(line: Line, state: PlantState, events: Sequence, known_lives: bool) -> None:
    """Give each asset its age, life and state from the snapshot."""
    t0 = line.env.now
    for a in state.assets:
        asset = line.assets[a.asset]
        asset.age_at_mark_h = a.age_h
        asset.mark_time_h = t0
        if known_lives and a.life_h is not None:
            asset.life_h = a.life_h
        else:
            asset.life_h = residual_life(asset.spec, a.age_h, asset.rng)
        if a.failed:
            drawn = asset.spec.repair_h.sample(asset.rng)
            remaining = max(0.05 * drawn, drawn - a.down_for_h)
            line.env.process(line.fail(asset, repair_h=remaining, reason="down at snapshot"))
    for e in events:
        if isinstance(e, FailureRisk) and e.replaces_wear:
            line.assets[e.asset].life_h = math.inf
    for u in state.units:
        if u.state in ("cleaning", "pm") and u.busy_for_h > 0:
            unit = line.units[u.unit]
            line.pools[unit.unit_class].items.remove(unit)
            unit.location = u.state
            line.env.process(_busy(line, unit, u.busy_for_h))


def _busy(line: Line, unit, hours: float):
    yield line.env.timeout(hours)
    yield from line._return_to_pool(unit)


def _resume(line: Line, state: PlantState) -> dict[str, float]:
    """Release the snapshot's batches where they were; returns their predicted risks."""
    from twin.batches import Deviation

    t0 = line.env.now
    step_index = {s.name: i for i, s in enumerate(line.config.recipe.steps)}
    n_steps = len(step_index)
    risk: dict[str, float] = {}
    for b in state.batches:
        batch = line.new_batch(t0 + b.release_h, t0 + b.due_h, seq=b.seq, batch_id=b.batch_id)
        batch.start_h = t0 + b.release_h
        batch.deviations = [
            Deviation(c, "known at snapshot", b.step or "", 0.0, 1.0, b.consequential and i == 0)
            for i, c in enumerate(b.deviations or (("unspecified",) if b.consequential else ()))
        ]
        if b.risk is not None:
            risk[batch.id] = b.risk
        if b.qc_remaining_h is not None:
            batch.filled_h = t0
            line.release(batch, start_step=n_steps, qc_remaining_h=b.qc_remaining_h)
            continue
        unit = line.units[b.unit]
        line.pools[unit.unit_class].items.remove(unit)
        unit.location = "batch"
        line.release(
            batch,
            start_step=step_index[b.step],
            unit=unit,
            elapsed_h=b.elapsed_h,
            holding=b.holding,
        )
    for q in state.queue:
        batch = line.new_batch(t0 + q.release_h, t0 + q.due_h, seq=q.seq, batch_id=q.batch_id)
        if q.risk is not None:
            risk[batch.id] = q.risk
        line.release(batch)
    return risk


def _outage(line: Line, event: AssetOutage, t0: float):
    env = line.env
    target = event.target
    asset = line.assets[target] if "/" in target else line.units[target].assets[0]
    yield env.timeout(event.start_h)
    end = t0 + event.end_h
    while asset.failed and env.now < end:  # already down: the outage starts once it is back
        yield asset.unit.repaired
    if env.now < end:
        yield from line.fail(
            asset, repair_h=end - env.now, reason="outage", technician=False, renew=False
        )


def _risk_failure(line: Line, event: FailureRisk, rng: np.random.Generator):
    """Fail the asset at a time drawn from a constant hazard with P(T < within_h) = p."""
    u_fail, u_time = rng.random(), rng.random()
    if u_fail >= event.probability:
        return
    p = min(event.probability, 1.0 - 1e-12)
    t = event.within_h * math.log1p(-u_time * p) / math.log1p(-p)
    yield line.env.timeout(t)
    asset = line.assets[event.asset]
    if not asset.failed:
        yield from line.fail(asset, repair_h=event.repair_h, reason="predicted failure")


def _clip(a: float, b: float | None, t0: float, end: float) -> float:
    b = end if b is None else b
    return max(0.0, min(b, end) - max(a, t0))


def _measure(
    line: Line,
    t0: float,
    end: float,
    seed: int,
    batch_risk: dict[str, float],
    default_risk: float | None,
    keep_schedule: bool,
) -> Replication:
    horizon = end - t0
    busy = dict.fromkeys(line.units, 0.0)
    down = dict.fromkeys(line.units, 0.0)
    k = dict.fromkeys(KPI_NAMES, 0.0)
    schedule = [] if keep_schedule else None
    lots = []
    nan = math.nan
    good = 0.0
    for b in line.batches:
        lots.append(
            (
                b.id,
                b.release_h - t0,
                b.due_h - t0,
                nan if b.filled_h is None else b.filled_h - t0,
                nan if b.disposition_h is None else b.disposition_h - t0,
                b.status,
                b.disposition in (None, "released") and not b.deviations,
                batch_risk.get(b.id, nan),
            )
        )
        for rec in b.steps:
            busy[rec.unit] += _clip(rec.start_h, rec.released_h, t0, end)
            if schedule is not None and (rec.released_h is None or rec.released_h > t0):
                schedule.append((rec.unit, b.id, rec.step, "batch", rec.start_h, rec.end_h))
                if rec.end_h is not None and rec.released_h != rec.end_h:
                    schedule.append(
                        (rec.unit, b.id, rec.step, "holding", rec.end_h, rec.released_h)
                    )
        done = b.disposition_h is not None and t0 <= b.disposition_h <= end
        if b.filled_h is not None and t0 < b.filled_h <= end:
            k["completed"] += 1
            ok = b.disposition != "rejected" and not any(d.consequential for d in b.deviations)
            risk = batch_risk.get(b.id, default_risk)
            good += (1.0 - risk) if risk is not None else float(ok)
        if done:
            if b.status in ("released", "rejected", "lost"):
                k[b.status] += 1
            if b.status in ("released", "rejected") and b.disposition_h > b.due_h:
                k["late"] += 1
        on_time = b.disposition == "released" and b.disposition_h <= b.due_h
        if t0 <= b.due_h <= end and not on_time:
            k["due_dates_missed"] += 1
        if b.status in ("queued", "in_progress"):
            k["wip_at_end"] += 1
    for unit_id, _asset, a, b_, _kind in line.records.down:
        down[unit_id] += _clip(a, b_, t0, end)
    for unit in line.units.values():
        if unit.down_since is not None:
            down[unit.id] += _clip(unit.down_since, None, t0, end)
    if schedule is not None:
        schedule += [
            (u, b, s, a, x, y) for u, b, s, a, x, y in line.records.schedule if y is None or y > t0
        ]
        schedule += [
            (u, None, asset, "down" if kind == "failure" else "pm", x, y)
            for u, asset, x, y, kind in line.records.down
            if kind == "failure" and y > t0
        ]
        for unit in line.units.values():
            if unit.down_since is not None:
                schedule.append((unit.id, None, None, "down", unit.down_since, None))
    utilization = {u: v / horizon for u, v in busy.items()}
    availability = {u: 1.0 - v / horizon for u, v in down.items()}
    k["throughput_per_week"] = k["completed"] / (horizon / 168.0)
    k["expected_good_lots"] = good
    k["mean_utilization"] = float(np.mean(list(utilization.values())))
    k["mean_availability"] = float(np.mean(list(availability.values())))
    return Replication(seed, k, utilization, availability, schedule, lots)


# ---------------------------------------------------------------------- a sweep
@dataclass
class ScenarioResult:
    """Replications of one scenario: KPIs per replication and the schedule of the first."""

    name: str
    horizon_h: float
    kpis: pd.DataFrame  # one row per replication, KPI_NAMES columns, plus seed
    utilization: pd.DataFrame  # replication x unit
    availability: pd.DataFrame  # replication x unit
    schedule: pd.DataFrame  # unit, batch_id, step, activity, start_h, end_h (replication 0)
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)
    lots: pd.DataFrame | None = None  # LOT_COLUMNS, every replication; None: not recorded

    def summary(self) -> pd.DataFrame:
        """Mean, standard deviation and 5/50/95 % quantiles of every KPI."""
        d = self.kpis[list(KPI_NAMES)]
        out = pd.DataFrame(
            {
                "mean": d.mean(),
                "std": d.std(ddof=1) if len(d) > 1 else 0.0,
                "p05": d.quantile(0.05),
                "p50": d.quantile(0.50),
                "p95": d.quantile(0.95),
            }
        )
        out.index.name = "kpi"
        return out

    def unit_summary(self) -> pd.DataFrame:
        """Mean utilization and availability per unit."""
        return pd.DataFrame(
            {"utilization": self.utilization.mean(), "availability": self.availability.mean()}
        )


def compare(baseline: ScenarioResult, scenario: ScenarioResult) -> pd.DataFrame:
    """Paired differences (scenario - baseline) per KPI with a 95 % confidence interval.

    Replications with the same seed are paired (common random numbers), which makes the
    interval much narrower than the spread of either side.
    """
    a = baseline.kpis.set_index("seed")[list(KPI_NAMES)]
    b = scenario.kpis.set_index("seed")[list(KPI_NAMES)]
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise ScenarioError("seeds: baseline and scenario share no replication seed; got none")
    diff = b.loc[common] - a.loc[common]
    n = len(common)
    half = 1.96 * diff.std(ddof=1) / math.sqrt(n) if n > 1 else diff.mean() * 0.0
    return pd.DataFrame(
        {
            "baseline": a.loc[common].mean(),
            "scenario": b.loc[common].mean(),
            "difference": diff.mean(),
            "ci95_low": diff.mean() - half,
            "ci95_high": diff.mean() + half,
        }
    )


@contextmanager
def _fewer_collections():
    """Run the cyclic garbage collector less often (a replication makes many short-lived
    events; the default thresholds collect every 700 allocations, ~10 % of the time)."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


#: Most replications in one task: bounds what a lost worker costs and keeps progress moving.
MAX_CHUNK = 50


def _run_chunk(payload: tuple) -> tuple[str, list[tuple[int, Replication]]]:
    """Replications of one chunk of one sweep (the task a worker runs): pure, so it can
    run twice, anywhere (docs/cluster.md)."""
    tag, config, state, events, horizon_h, seeds, indices, options = payload
    with _fewer_collections():
        return tag, [
            (
                i,
                run_replication(
                    config, state, events, horizon_h, s, keep_schedule=(i == 0), **options
                ),
            )
            for i, s in zip(indices, seeds, strict=True)
        ]


def sweep_chunks(n: int, lanes: int, max_chunk: int = MAX_CHUNK) -> list[list[int]]:
    """Replication indices ``0..n-1`` in chunks that shrink as the sweep goes (guided
    scheduling): each chunk is the remaining replications over ``lanes`` (slots x
    sweeps), at least 2 and at most ``max_chunk``. Large chunks first keep the per-task
    overhead low; small ones last leave no worker finishing alone after the others have
    run out of work."""
    out, start = [], 0
    lanes = max(1, lanes)
    while start < n:
        size = min(max_chunk, max(2, -(-(n - start) // lanes)))
        out.append(list(range(start, min(n, start + size))))
        start += size
    return out


def run_sweeps(
    config: PlantConfig,
    state: PlantState | None,
    runs: Mapping[str, Sequence],
    *,
    horizon_h: float = 24.0 * 30,
    replications: int = 200,
    seed: int = 0,
    workers: int | None = None,
    scheduler: str | None = None,
    fallback_local: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    known_lives: bool = False,
    default_risk: float | None = None,
) -> dict[str, ScenarioResult]:
    """Several sweeps (name -> events) from one starting point, in one pool.

    Every sweep uses the same replication seeds (paired: common random numbers), so each
    gives the same result as a sweep of its own with that seed; the chunks of all sweeps
    are interleaved in one pool (local processes or a Dask cluster,
    :func:`biotwin.execution.executor`), so no sweep waits for another's stragglers.
    Results are put back by replication index: the outcome does not depend on the pool,
    its size or the order the chunks finish in.

    Parameters
    ----------
    config : PlantConfig
        The plant.
    state : PlantState, optional
        Where to start from (default: an empty, new plant).
    runs : mapping of str to sequence of events
        The sweeps: name -> events (see the module docstring), validated first.
    horizon_h, replications, seed, known_lives, default_risk
        As in :func:`run_scenario`.
    workers : int, optional
        Local processes (default: all cores; 1 runs in this process); ignored on a cluster.
    scheduler : str, optional
        A Dask scheduler address; None: ``$DASK_SCHEDULER_ADDRESS``, else local.
    fallback_local : bool, optional
        Run locally, with a warning, if the scheduler cannot be reached.
    progress : callable, optional
        Called as ``progress(done, total)`` (replications of all sweeps) as chunks finish.

    Returns
    -------
    dict of str to ScenarioResult
        By sweep name; ``meta["ran_on"]`` says where the replications ran.

    Raises
    ------
    ScenarioError
        If the state or an event does not fit the plant, or the arguments are out of range.
    biotwin.execution.ExecutionError
        If a named scheduler cannot be used (and no fallback was asked for).
    """
    import time

    from biotwin.execution import executor

    if replications < 1:
        raise ScenarioError(f"replications: must be >= 1; got {replications}")
    if not horizon_h > 0:
        raise ScenarioError(f"horizon_h: must be > 0; got {horizon_h}")
    if not runs:
        raise ScenarioError("runs: must name at least one sweep; got none")
    state = state if state is not None else PlantState.empty()
    runs = {tag: list(evs) for tag, evs in runs.items()}
    validate_state(state, config)
    for evs in runs.values():
        validate_events(evs, config)
    seeds = replication_seeds(seed, replications)
    options = {"known_lives": known_lives, "default_risk": default_risk}
    workers = max(1, min(workers or os.cpu_count() or 1, replications))
    total = len(runs) * replications
    out: dict[str, list] = {tag: [None] * replications for tag in runs}
    done = 0
    t_start = time.perf_counter()
    with executor(scheduler, workers, fallback_local=fallback_local) as pool:
        chunks = sweep_chunks(replications, pool.slots * len(runs))
        payloads = [
            (tag, config, state, evs, horizon_h, [seeds[i] for i in c], c, options)
            for c in chunks
            for tag, evs in runs.items()
        ]
        for tag, reps in pool.stream(_run_chunk, payloads):
            for i, rep in reps:
                out[tag][i] = rep
            done += len(reps)
            if progress:
                progress(done, total)
        ran_on = pool.where
    seconds = time.perf_counter() - t_start
    logger.info(
        "%d sweeps x %d replications in %.2f s on the %s", len(runs), replications, seconds, ran_on
    )
    results = {tag: collect(tag, horizon_h, reps, seconds, state) for tag, reps in out.items()}
    for result in results.values():
        result.meta["ran_on"] = ran_on
    return results


def run_scenario(
    config: PlantConfig,
    state: PlantState | None = None,
    events: Sequence = (),
    *,
    horizon_h: float = 24.0 * 30,
    replications: int = 200,
    seed: int = 0,
    workers: int | None = None,
    name: str = "scenario",
    progress: Callable[[int, int], None] | None = None,
    known_lives: bool = False,
    default_risk: float | None = None,
    scheduler: str | None = None,
    fallback_local: bool | None = None,
) -> ScenarioResult:
    """Run ``replications`` replications of a scenario on all cores, or on a cluster.

    Parameters
    ----------
    config : PlantConfig
        The plant.
    state : PlantState, optional
        Where to start from (default: an empty, new plant).
    events : sequence of events
        What happens (see the module docstring); validated against the plant first.
    horizon_h : float
        Hours to simulate from the snapshot.
    replications : int
        Number of Monte Carlo replications.
    seed : int
        Root of the replication seeds (same seed: same result, and paired replications
        with any other scenario run with this seed).
    workers : int, optional
        Processes to use (default: all cores; 1 runs in this process); ignored on a
        cluster.
    progress : callable, optional
        Called as ``progress(done, total)`` as replications finish.
    scheduler : str, optional
        A Dask scheduler address (``tcp://HOST:8786``); None: ``$DASK_SCHEDULER_ADDRESS``,
        else the local pool (docs/cluster.md). The result is the same bit for bit.
    fallback_local : bool, optional
        Run locally, with a warning, if the scheduler cannot be reached.

    Raises
    ------
    ScenarioError
        If the state or an event does not fit the plant, or the arguments are out of range.
    biotwin.execution.ExecutionError
        If a named scheduler cannot be used (and no fallback was asked for).
    """
    result = run_sweeps(
        config,
        state,
        {name: events},
        horizon_h=horizon_h,
        replications=replications,
        seed=seed,
        workers=workers,
        scheduler=scheduler,
        fallback_local=fallback_local,
        progress=progress,
        known_lives=known_lives,
        default_risk=default_risk,
    )[name]
    logger.info("scenario %s: %d replications in %.2f s", name, replications, result.seconds)
    return result


def collect(
    name: str, horizon_h: float, results: list, seconds: float, state: PlantState
) -> ScenarioResult:
    """A :class:`ScenarioResult` from the replications of one sweep (in seed order)."""
    kpis = pd.DataFrame([{"seed": r.seed, **r.kpis} for r in results])
    utilization = pd.DataFrame([r.utilization for r in results])
    availability = pd.DataFrame([r.availability for r in results])
    t0 = state.clock_h
    schedule = pd.DataFrame(
        results[0].schedule, columns=["unit", "batch_id", "step", "activity", "start_h", "end_h"]
    )
    schedule["start_h"] = schedule["start_h"] - t0
    schedule["end_h"] = schedule["end_h"].astype("float64").fillna(t0 + horizon_h) - t0
    schedule = schedule.sort_values(["unit", "start_h"], kind="stable").reset_index(drop=True)
    return ScenarioResult(
        name=name,
        horizon_h=horizon_h,
        kpis=kpis,
        utilization=utilization,
        availability=availability,
        schedule=schedule,
        seconds=seconds,
        meta={"start": state.start, "clock_h": state.clock_h},
        lots=pd.DataFrame(
            [(i, *lot) for i, r in enumerate(results) for lot in r.lots],
            columns=list(LOT_COLUMNS),
        ),
    )
