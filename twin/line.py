"""The discrete-event model of the line (SimPy).

Batches flow through the recipe's unit procedures, competing for units of each class,
operators on shift, maintenance technicians and QC analysts. A batch holds its unit until
it has the next one (hold-and-wait, as a broth waits in its vessel for the harvest skid),
then the released unit is cleaned (CIP, SIP) before it returns to its pool. Assets wear
with operating (or calendar) hours, fail when their drawn life is used up, and are repaired
or renewed by planned maintenance; a failure during a batch aborts it or degrades it with a
deviation.

Time is in hours from the start of the run. The model holds no signals: the 1-minute tags
are generated afterwards from its records (:mod:`twin.signals`), so the same model runs the
full simulation and the fast scenario replications (:mod:`twin.scenarios`).

Random streams: one ``numpy.random.Generator`` per batch, per asset and for the demand, all
derived from the seed, so that the same seed gives the same run and a scenario changes only
the streams it touches (common random numbers for baseline vs scenario comparisons).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import simpy

from twin.batches import (
    Batch,
    Deviation,
    StepRecord,
    deviation_plan,
    draw_deviations,
    draw_lot,
    wear_odds,
)
from twin.config import PlantConfig
from twin.equipment import Asset, Unit

__all__ = ["Crew", "Line", "LineRecords", "ShiftBlock"]

logger = logging.getLogger(__name__)

# Stream identifiers for numpy SeedSequence entropy: (seed, STREAM, index).
_STREAM_BATCH = 1
_STREAM_ASSET = 2
_STREAM_DEMAND = 3
_STREAM_LINE = 4


@dataclass
class _Failure:
    asset: Asset


@dataclass
class ShiftBlock:
    """Operators taken off the roster between two times (e.g. a shift that is not staffed)."""

    start_h: float
    end_h: float
    operators: int | None = None  # None: all operators of the roster


class Crew:
    """The operators on duty: a first-come, first-served pool whose size follows the roster.

    A set-up asks for all the operators it needs at once (:meth:`request` with a number) and
    gets them together when that many are free; requests are served strictly in arrival
    order, so a large request at the head holds back smaller ones behind it. That is what
    one SimPy request per operator gave (the first ones granted wait, held, for the rest),
    with one event instead of one per operator plus their ``AllOf``.

    The number on duty changes with the shift (:meth:`set_roster`) and when operators are
    taken off duty (:meth:`block`). Lowering it pre-empts nobody: the operators at work
    finish their task, and new requests wait until fewer are busy than are on duty.
    """

    def __init__(self, env: simpy.Environment, max_operators: int) -> None:
        self.env = env
        self.max_operators = max_operators
        self.on_roster = max_operators
        self.blocked = 0
        self.busy = 0
        self.waiting: deque[tuple[int, simpy.Event]] = deque()

    @property
    def capacity(self) -> int:
        """Operators on duty now."""
        return max(0, self.on_roster - self.blocked)

    @property
    def count(self) -> int:
        """Operators at work now (SimPy's ``Resource.count``)."""
        return self.busy

    def set_roster(self, operators: int) -> None:
        """A new shift starts with ``operators`` on duty."""
        self.on_roster = operators
        self._grant()

    def block(self, operators: int) -> None:
        """Take ``operators`` off duty (a negative number gives them back)."""
        self.blocked += operators
        self._grant()

    def request(self, operators: int = 1) -> simpy.Event:
        """An event that succeeds (with the number) once ``operators`` are assigned."""
        event = self.env.event()
        self.waiting.append((operators, event))
        self._grant()
        return event

    def take_now(self, operators: int = 1) -> bool:
        """Assign ``operators`` at once if they are free and nobody waits (what
        :meth:`request` would grant now, without its event); False otherwise."""
        if self.waiting or self.busy + operators > self.on_roster - self.blocked:
            return False
        self.busy += operators
        return True

    def release_now(self, operators: int = 1) -> None:
        """Return ``operators`` to the pool at once; waiting requests are served now."""
        self.busy -= operators
        self._grant()

    def _grant(self) -> None:
        capacity = self.on_roster - self.blocked  # (self.capacity, without the call)
        while self.waiting and self.busy + self.waiting[0][0] <= capacity:
            n, event = self.waiting.popleft()
            self.busy += n
            event.succeed(n)


def put_now(pool: simpy.FilterStore, item) -> None:
    """Put ``item`` into an unbounded store at once, without a ``StorePut`` event.

    Equivalent to ``pool.put(item)`` for a store without capacity limit (the put always
    succeeds and waiting gets are served now), one event less.
    """
    pool.items.append(item)
    pool._trigger_get(None)


@dataclass
class LineRecords:
    """Everything the model observed, as plain Python rows (turned into tables later)."""

    schedule: list[tuple] = field(default_factory=list)  # unit, batch, step, activity, start, end
    asset_events: list[tuple] = field(
        default_factory=list
    )  # time, asset, unit, event, age, life, health, detail
    events: list[tuple] = field(default_factory=list)  # time, kind, unit, batch, detail
    down: list[tuple] = field(default_factory=list)  # unit, asset, start, end, kind


class Line:
    """The line as a SimPy model.

    Parameters
    ----------
    config : PlantConfig
        The validated plant.
    seed : int
        Root of every random stream.
    env : simpy.Environment, optional
        The environment to run in (a ``simpy.rt.RealtimeEnvironment`` for live serving);
        a new one starting at 0 by default.
    demand_factor : float
        Multiplies the demand rate (1.2 = 20 % more batches).
    log_events : bool
        Keep the event log and daily wear snapshots (off for fast scenario replications).
    first_batch_seq : int
        Number given to the first batch released (to continue numbering from a snapshot).

    Examples
    --------
    >>> from twin.config import load_config
    >>> line = Line(load_config(), seed=7)
    >>> line.start()
    >>> line.env.run(until=24 * 30)
    """

    def __init__(
        self,
        config: PlantConfig,
        seed: int,
        *,
        env: simpy.Environment | None = None,
        demand_factor: float = 1.0,
        log_events: bool = True,
        first_batch_seq: int = 0,
    ) -> None:
        if demand_factor <= 0:
            raise ValueError(f"demand_factor must be > 0; got {demand_factor}")
        self.config = config
        self.seed = int(seed)
        self.env = env if env is not None else simpy.Environment()
        self.demand_factor = demand_factor
        self.log_events = log_events
        self.records = LineRecords()
        self.batches: list[Batch] = []
        self._next_seq = first_batch_seq
        self.demand_rng = self._rng(_STREAM_DEMAND, 0)
        self.line_rng = self._rng(_STREAM_LINE, 0)

        env = self.env
        max_ops = max(s.operators for s in config.shifts)
        self.operators = Crew(env, max(1, max_ops))
        self.technicians = simpy.Resource(env, capacity=config.maintenance.technicians)
        self.analysts = simpy.Resource(env, capacity=config.qc_lab.analysts)
        self.wip = simpy.Resource(env, capacity=config.demand.max_wip)
        self.pools: dict[str, simpy.FilterStore] = {}
        self.units: dict[str, Unit] = {}
        self.assets: dict[str, Asset] = {}
        asset_index = 0
        for unit_spec in config.units:
            spec = config.unit_classes[unit_spec.unit_class]
            unit = Unit(unit_spec.id, unit_spec.unit_class, spec)
            unit.location = "pool"
            for asset_spec in spec.assets:
                asset = Asset(
                    id=f"{unit.id}/{asset_spec.name}",
                    spec=asset_spec,
                    unit=unit,
                    rng=self._rng(_STREAM_ASSET, asset_index),
                )
                asset_index += 1
                asset.renew(0.0)
                asset.renewals = 0
                unit.assets.append(asset)
                self.assets[asset.id] = asset
            self.units[unit.id] = unit
            pool = self.pools.setdefault(unit.unit_class, simpy.FilterStore(env))
            pool.items.append(unit)
        self.next_pm_h: dict[str, float] = {}
        self._steps = config.recipe.steps
        self._step_index = {s.name: i for i, s in enumerate(self._steps)}
        self._deviation_plan = deviation_plan(config)
        self._clean_keys = {s.name: (f"{s.name}.cip", f"{s.name}.sip") for s in self._steps}
        qc = config.qc_lab
        self._duration_plan = [
            plan
            for step in self._steps
            for plan in (
                (step.name, step.duration_h),
                (f"{step.name}.cip", step.cip_h),
                (f"{step.name}.sip", step.sip_h),
            )
        ] + [
            ("qc.hands_on", qc.hands_on_h),
            ("qc.turnaround", qc.turnaround_h),
            ("qc.investigation", qc.investigation_h),
        ]

    # ------------------------------------------------------------------ helpers
    def _rng(self, stream: int, index: int) -> np.random.Generator:
        # the stream of ``np.random.default_rng([seed, stream, index])``, built without
        # default_rng's argument checks (40 % of its cost; a batch draws one)
        return np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([self.seed, stream, index]))
        )

    def _log(self, kind: str, unit: str | None, batch: str | None, detail: str = "") -> None:
        if self.log_events:
            self.records.events.append((self.env.now, kind, unit, batch, detail))

    def _asset_event(self, asset: Asset, event: str, detail: str = "") -> None:
        now = self.env.now
        self.records.asset_events.append(
            (
                now,
                asset.id,
                asset.unit.id,
                event,
                asset.age(now),
                asset.life_h,
                asset.health(now),
                detail,
            )
        )

    def new_batch(
        self,
        release_h: float,
        due_h: float | None = None,
        *,
        seq: int | None = None,
        batch_id: str | None = None,
    ) -> Batch:
        """Create (but do not start) a batch: the next planned one, or ``seq`` (a resumed one).

        Everything random about the batch (lot, deviations, durations) comes from its own
        stream ``(seed, batch, seq)``, so a batch is the same batch in every scenario.
        """
        if seq is None:
            seq = self._next_seq
            self._next_seq += 1
        else:
            self._next_seq = max(self._next_seq, seq + 1)
        rng = self._rng(_STREAM_BATCH, seq)
        batch = Batch(
            id=batch_id or f"B{seq + 1:05d}",
            seq=seq,
            product=self.config.demand.product,
            release_h=release_h,
            due_h=due_h if due_h is not None else release_h + self.config.demand.lead_time_h,
            rng=rng,
        )
        batch.lot = draw_lot(seq, rng, self.config)
        drawn = draw_deviations(rng, self.config, self._deviation_plan)
        batch.deviations = [d for d in drawn if d.pending_u is None]
        batch.pending_deviations = [d for d in drawn if d.pending_u is not None]
        for dev in batch.deviations:
            if dev.deviation_class == "raw_material":  # a bad lot: low potency from the start
                batch.lot["media_potency"] *= 1.0 - 0.05 - 0.25 * dev.severity
        # Durations are drawn up front, from the batch's own stream, so that a scenario
        # that delays a batch does not change how long its steps take. One vector of
        # uniforms through each distribution's quantile function: one generator call.
        u = rng.random(len(self._duration_plan))
        batch.durations = {
            key: dist.ppf(x) if dist is not None else 0.0
            for (key, dist), x in zip(self._duration_plan, u.tolist(), strict=True)
        }
        self.batches.append(batch)
        return batch

    # ------------------------------------------------------------------ start
    def start(
        self,
        *,
        demand: bool = True,
        shifts: bool = True,
        failures: bool = True,
        maintenance: bool = True,
        wear_snapshots_h: float | None = 24.0,
        shift_blocks: list[ShiftBlock] | None = None,
        pm_offsets_h: dict[str, float] | None = None,
    ) -> None:
        """Start the line's standing processes (demand, roster, asset lives, PM plan).

        Parameters
        ----------
        pm_offsets_h : dict, optional
            Time of each asset's next PM (by asset id); by default the PMs are staggered
            at random over one interval.
        """
        env = self.env
        for asset in self.assets.values():
            self._asset_event(asset, "in_service", "state at start of run")
        if demand:
            env.process(self.demand_generator())
        if shifts:
            env.process(self.shift_roster())
        for block in shift_blocks or []:
            env.process(self.shift_block(block))
        for asset in self.assets.values():
            if failures:
                env.process(self.asset_life(asset))
            if maintenance and asset.spec.pm_interval_h:
                offset = None if pm_offsets_h is None else pm_offsets_h.get(asset.id)
                if offset is None:
                    offset = float(asset.rng.uniform(0.2, 1.0)) * asset.spec.pm_interval_h
                env.process(self.planned_maintenance(asset, offset))
        if self.log_events and wear_snapshots_h:
            env.process(self.condition_monitor(wear_snapshots_h))

    # ------------------------------------------------------------------ demand & roster
    def demand_generator(self):
        """Release a planned batch every ``batch_interval_h`` (divided by the demand factor)."""
        dist = self.config.demand.batch_interval_h
        while True:
            yield self.env.timeout(dist.sample(self.demand_rng) / self.demand_factor)
            self.release(self.new_batch(self.env.now))

    def release(self, batch: Batch, **resume) -> simpy.Process:
        """Start a batch's flow through the line (optionally resuming mid-recipe)."""
        batch.status = "queued"
        self._log("batch_released", None, batch.id)
        return self.env.process(self.batch_flow(batch, **resume))

    def shift_roster(self):
        """Hold back the operators that are not on shift, following the daily roster."""
        shifts = sorted(self.config.shifts, key=lambda s: s.start_h)
        first_day = np.floor(self.env.now / 24.0) * 24.0 - 24.0

        def boundaries():
            day = first_day
            while True:
                for shift in shifts:
                    yield day + shift.start_h, shift
                day += 24.0

        upcoming = boundaries()
        on_duty = next(upcoming)
        following = next(upcoming)
        while following[0] <= self.env.now:
            on_duty, following = following, next(upcoming)
        t, shift = on_duty
        while True:
            self.operators.set_roster(shift.operators)
            self._log("shift_start", None, None, shift.name)
            t, shift = following
            following = next(upcoming)
            yield self.env.timeout(t - self.env.now)

    def shift_block(self, block: ShiftBlock):
        """Take operators off duty between two times (a lost shift)."""
        if block.start_h > self.env.now:
            yield self.env.timeout(block.start_h - self.env.now)
        n = self.operators.max_operators if block.operators is None else block.operators
        self.operators.block(n)
        self._log("shift_removed", None, None, f"{n} operators until {block.end_h:.1f} h")
        yield self.env.timeout(max(0.0, block.end_h - self.env.now))
        self.operators.block(-n)

    # ------------------------------------------------------------------ batches
    def batch_flow(
        self,
        batch: Batch,
        start_step: int = 0,
        unit: Unit | None = None,
        elapsed_h: float = 0.0,
        holding: bool = False,
        qc_remaining_h: float | None = None,
    ):
        """The life of one batch: WIP slot, every unit procedure, then QC and disposition.

        ``start_step``, ``unit``, ``elapsed_h`` and ``holding`` resume a batch from a plant
        snapshot: it sits on ``unit`` in step ``start_step`` with ``elapsed_h`` done (or, with
        ``holding``, finished and waiting for the next unit).
        """
        env = self.env
        steps = self._steps
        wip_req = None
        if qc_remaining_h is None:
            wip_req = self.wip.request()
            yield wip_req
        if batch.start_h is None:
            batch.start_h = env.now
        batch.status = "in_progress"
        prev_unit: Unit | None = None
        if qc_remaining_h is None:
            for i in range(start_step, len(steps)):
                step = steps[i]
                resumed = unit is not None and i == start_step
                if resumed:
                    current = unit
                    current.location = "batch"
                    current.batch = batch
                    record = StepRecord(step.name, current.id, env.now, env.now)
                    remaining = max(0.0, batch.durations[step.name] - elapsed_h)
                    if holding:
                        remaining = 0.0
                else:
                    queued = env.now
                    pool = self.pools[step.unit_class]
                    if pool.items and not pool.get_queue:  # a free unit, nobody waiting:
                        current = pool.items.pop(0)  # what get() gives, without its event
                    else:
                        current = yield pool.get()
                    current.location = "batch"
                    current.batch = batch
                    record = StepRecord(step.name, current.id, queued, env.now)
                    if prev_unit is not None:
                        batch.steps[-1].released_h = env.now
                        self._hand_back(prev_unit, batch, steps[i - 1])
                        prev_unit = None
                    setup_h = 0.0
                    if step.operators and step.setup_h > 0:
                        if not self.operators.take_now(step.operators):
                            yield self.operators.request(step.operators)
                        # The set-up is the first part of the step's hold of the unit; its
                        # operators return to the roster when it ends (by a callback: one
                        # process step less per unit procedure, which the scenarios feel).
                        setup_h = step.setup_h
                        env.timeout(setup_h).callbacks.append(
                            lambda _event, n=step.operators: self.operators.release_now(n)
                        )
                    remaining = batch.durations[step.name] + setup_h
                    record.start_h = env.now + setup_h
                batch.steps.append(record)
                if batch.pending_deviations:
                    self._wear_deviations(batch, current, step.name)
                if self.log_events:  # asset health at step start feeds the signals only
                    record.health = {a.id: a.health(env.now) for a in current.assets}
                self._log("step_start", current.id, batch.id, step.name)
                lost = yield from self._run_step(batch, current, step, remaining, record)
                if lost:
                    if wip_req is not None:
                        self.wip.release(wip_req)
                    return
                record.end_h = env.now
                record.duration_h = record.end_h - record.start_h
                self._log("step_end", current.id, batch.id, step.name)
                prev_unit = current
            batch.steps[-1].released_h = env.now
            self._hand_back(prev_unit, batch, steps[-1])
            batch.filled_h = env.now
            if wip_req is not None:
                self.wip.release(wip_req)
        yield from self._qc_release(batch, qc_remaining_h)

    def _wear_deviations(self, batch: Batch, unit: Unit, step_name: str) -> None:
        """Decide the batch's wear-driven deviations of this step from the driver's age."""
        undecided = []
        for dev in batch.pending_deviations:
            if dev.step != step_name:
                undecided.append(dev)
                continue
            spec = self.config.deviations[dev.deviation_class]
            asset = next((a for a in unit.assets if a.spec.name == spec.driver_asset), None)
            if asset is None:
                continue
            life = asset.spec.life_h
            characteristic = min(
                asset.spec.pm_interval_h or math.inf,
                life.scale if getattr(life, "scale", None) else life.mean,
            )
            if dev.pending_u < wear_odds(spec, asset.age(self.env.now), characteristic):
                dev.pending_u = None
                batch.deviations.append(dev)
        batch.pending_deviations = undecided

    def _run_step(self, batch: Batch, unit: Unit, step, remaining: float, record: StepRecord):
        """Hold the unit for the step; handle failures of its assets. Returns True if lost."""
        env = self.env
        while unit.is_down:  # an asset failed during set-up: wait for the repair
            yield unit.repaired
        unit.set_operating(env.now, True)
        unit.process = env.active_process
        unit.running = True
        try:
            while remaining > 1e-9:
                t0 = env.now
                try:
                    yield env.timeout(remaining)
                    remaining = 0.0
                except simpy.Interrupt as interrupt:
                    remaining -= env.now - t0
                    failure = interrupt.cause
                    asset = failure.asset
                    total = batch.durations[step.name]
                    rng = batch.rng
                    u_abort, severity = rng.random(), rng.random()
                    if u_abort < asset.spec.abort_probability:
                        unit.running = False
                        unit.set_operating(env.now, False)
                        record.start_h = min(record.start_h, env.now)  # lost in set-up
                        record.end_h = record.released_h = env.now
                        record.duration_h = env.now - record.start_h
                        batch.status = "lost"
                        batch.disposition = "lost"
                        batch.lost_reason = f"{asset.id} failed"
                        batch.disposition_h = env.now
                        self._log("batch_lost", unit.id, batch.id, batch.lost_reason)
                        self._hand_back(unit, batch, step, aborted=True)
                        return True
                    if asset.spec.deviation is not None:
                        dev_spec = self.config.deviations.get(asset.spec.deviation)
                        oos_p = dev_spec.oos_probability if dev_spec else 0.5
                        severity = 0.5 + 0.5 * severity  # a failure is at least moderate
                        batch.deviations.append(
                            Deviation(
                                deviation_class=asset.spec.deviation,
                                root_cause=f"{asset.spec.name} failure",
                                step=step.name,
                                onset_fraction=min(1.0, max(0.0, 1.0 - remaining / total)),
                                severity=severity,
                                consequential=severity > 1.0 - oos_p,
                                source=asset.id,
                                unit=unit.id,
                                onset_h=env.now,
                            )
                        )
                    unit.running = False
                    unit.set_operating(env.now, False)
                    if unit.is_down:
                        yield unit.repaired
                    unit.set_operating(env.now, True)
                    unit.running = True
        finally:
            unit.running = False
            unit.process = None
        unit.set_operating(env.now, False)
        return False

    def _hand_back(self, unit: Unit, batch: Batch, step, aborted: bool = False) -> None:
        """The batch leaves the unit: record its occupancy, clean it, return it to its pool.

        CIP and SIP cannot be interrupted, so they are one timeout with a callback rather
        than a process: a third of the events of a step, which the scenario engine feels.
        """
        env = self.env
        unit.batch = None
        unit.location = "cleaning"
        start = env.now
        cip_key, sip_key = self._clean_keys[step.name]
        cip = batch.durations.get(cip_key, 0.0)
        sip = batch.durations.get(sip_key, 0.0)
        unit.busy_until_h = start + cip + sip
        if cip > 0:
            self.records.schedule.append((unit.id, batch.id, step.name, "cip", start, start + cip))
        if sip > 0:
            self.records.schedule.append(
                (unit.id, batch.id, step.name, "sip", start + cip, start + cip + sip)
            )
        if cip + sip > 0:
            env.timeout(cip + sip).callbacks.append(lambda _event: self._cleaned(unit))
        else:
            self._cleaned(unit)

    def _cleaned(self, unit: Unit) -> None:
        if unit.is_down:
            self.env.process(self._return_to_pool(unit))
        else:
            unit.location = "pool"
            put_now(self.pools[unit.unit_class], unit)

    def _return_to_pool(self, unit: Unit):
        while unit.is_down:
            yield unit.repaired
        unit.location = "pool"
        self.pools[unit.unit_class].put(unit)  # a Store without capacity accepts at once

    def _qc_release(self, batch: Batch, qc_remaining_h: float | None):
        """QC release testing (analysts), incubation, investigation of deviations, disposition."""
        env = self.env
        batch.status = "qc"
        if qc_remaining_h is None:
            batch.qc_start_h = env.now
            req = self.analysts.request()
            yield req
            yield env.timeout(batch.durations["qc.hands_on"])
            # the analyst is free at once (a Release event would free her at the same time)
            self.analysts.users.remove(req)
            self.analysts._trigger_put(None)
            wait = batch.durations["qc.turnaround"]
            if batch.deviations:
                wait += batch.durations["qc.investigation"]
        else:
            wait = qc_remaining_h
        yield env.timeout(wait)
        batch.disposition_h = env.now
        rejected = any(d.consequential for d in batch.deviations)
        batch.disposition = "rejected" if rejected else "released"
        batch.status = batch.disposition
        self._log("disposition", None, batch.id, batch.disposition)

    # ------------------------------------------------------------------ assets
    def asset_life(self, asset: Asset):
        """Wait until the asset's age reaches its life, then fail it (forever)."""
        env = self.env
        while True:
            if asset.failed:  # failed by someone else (a scenario outage): wait for it
                yield env.timeout(1.0)
                continue
            needed = asset.life_h - asset.age(env.now)
            if needed > 1e-6:
                # Age grows at most one hour per hour: sleep the lower bound, then re-check.
                yield env.timeout(max(needed, 1e-3))
                continue
            yield from self.fail(asset)

    def fail(
        self,
        asset: Asset,
        repair_h: float | None = None,
        reason: str = "wear-out",
        *,
        technician: bool = True,
        renew: bool = True,
    ):
        """Fail an asset now: take its unit down, interrupt its batch, repair it.

        With ``technician=False`` the repair does not wait for a technician (an outage
        planned from outside, e.g. a scenario's "BR-202 down from t1 to t2"); with
        ``renew=False`` the asset keeps its age when it comes back.
        """
        env = self.env
        unit = asset.unit
        asset.mark(env.now)
        asset.failed = True
        self._asset_event(asset, "failure", reason)
        self._log("asset_failure", unit.id, unit.batch.id if unit.batch else None, asset.id)
        was_down = unit.is_down
        unit.down_assets.add(asset.id)
        if not was_down:
            unit.down_since = env.now
            unit.repaired = env.event()
        if unit.location == "pool":
            self.pools[unit.unit_class].items.remove(unit)
            unit.location = "repair"
            env.process(self._return_after_repair(unit))
        elif unit.location == "batch" and unit.running and unit.process is not None:
            unit.process.interrupt(_Failure(asset))
        yield from self.repair(asset, repair_h, technician=technician, renew=renew)

    def _return_after_repair(self, unit: Unit):
        yield from self._return_to_pool(unit)

    def repair(
        self,
        asset: Asset,
        repair_h: float | None = None,
        *,
        technician: bool = True,
        renew: bool = True,
    ):
        """Corrective maintenance by a technician; the asset is renewed."""
        env = self.env
        unit = asset.unit
        start = env.now
        duration = asset.spec.repair_h.sample(asset.rng) if repair_h is None else repair_h
        if technician:
            with self.technicians.request() as req:
                yield req
                self._asset_event(asset, "repair_start")
                yield env.timeout(duration)
        else:
            self._asset_event(asset, "repair_start", "outage")
            yield env.timeout(duration)
        if renew:
            asset.renew(env.now)
        else:
            asset.mark(env.now)
            asset.failed = False
        self._asset_event(asset, "repair_end", f"{env.now - start:.2f} h down")
        self.records.down.append((unit.id, asset.id, start, env.now, "failure"))
        unit.down_assets.discard(asset.id)
        if not unit.is_down:
            unit.down_since = None
            unit.repaired.succeed()

    def planned_maintenance(self, asset: Asset, first_h: float):
        """Preventive maintenance every ``pm_interval_h``: waits for the unit to be free."""
        env = self.env
        unit = asset.unit
        pool = self.pools[unit.unit_class]
        next_h = env.now + first_h
        while True:
            self.next_pm_h[asset.id] = next_h
            yield env.timeout(max(0.0, next_h - env.now))
            due = env.now
            got = yield pool.get(lambda u, unit=unit: u is unit)
            assert got is unit
            unit.location = "pm"
            start = env.now
            with self.technicians.request() as req:
                yield req
                self._asset_event(asset, "pm_start", f"waited {start - due:.1f} h for the unit")
                duration = asset.spec.pm_duration_h.sample(asset.rng)
                unit.busy_until_h = env.now + duration
                yield env.timeout(duration)
            if not asset.failed:
                asset.renew(env.now)
            self._asset_event(asset, "pm_end")
            self.records.schedule.append((unit.id, None, asset.spec.name, "pm", start, env.now))
            self.records.down.append((unit.id, asset.id, start, env.now, "pm"))
            yield from self._return_to_pool(unit)
            next_h = due + asset.spec.pm_interval_h

    def condition_monitor(self, every_h: float):
        """Daily wear snapshot of every asset (the asset-event table's ``wear`` rows)."""
        while True:
            for asset in self.assets.values():
                self._asset_event(asset, "wear")
            yield self.env.timeout(every_h)
