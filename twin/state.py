"""A snapshot of the plant at one moment: what a "from now on" scenario starts from.

A :class:`PlantState` holds what a plant knows at time *now*: the batches in progress (the
unit procedure they are in, on which unit, how long it has run, whether it is finished and
waiting for the next unit, how long QC still needs), the queue of released batches that have
not started, every asset's age and state (failed, time of its next PM) and every unit's
state (cleaning or in maintenance, and for how much longer). Times inside the snapshot are
hours relative to *now* (negative in the past), except ``clock_h``, which places *now* on
the plant's clock (hours since midnight of the first day) so that shifts line up.

A snapshot is taken from a running :class:`~twin.line.Line` with :func:`snapshot`, or built
from the historian's batch context by the command center; :func:`validate_state` checks it
against the plant before a scenario runs from it. It is a pydantic model, so it travels as
JSON (``state.model_dump_json()`` / ``PlantState.model_validate_json(text)``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from twin.config import PlantConfig
from twin.errors import ScenarioError

__all__ = [
    "AssetState",
    "BatchState",
    "PlantState",
    "QueuedBatch",
    "UnitState",
    "snapshot",
    "validate_state",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchState(_Model):
    """A batch in progress at *now*."""

    batch_id: str
    seq: int = Field(ge=0, description="Sequence number (names the batch's random stream).")
    step: str | None = Field(None, description="Unit procedure it is in; None once in QC.")
    unit: str | None = Field(None, description="Unit it occupies (None once in QC).")
    elapsed_h: float = Field(0.0, ge=0, description="Hours of the step already done.")
    holding: bool = Field(False, description="Step finished, waiting for the next unit.")
    qc_remaining_h: float | None = Field(None, ge=0, description="Hours of QC left.")
    release_h: float = Field(0.0, description="When it was released (relative, <= 0).")
    due_h: float = Field(description="Due date, hours from now (negative: already late).")
    deviations: tuple[str, ...] = Field((), description="Deviation classes opened so far.")
    consequential: bool = Field(False, description="A deviation drives a CQA out of spec.")
    risk: float | None = Field(
        None, ge=0, le=1, description="Predicted probability of a deviation (quality model)."
    )


class QueuedBatch(_Model):
    """A released batch that has not started yet (waiting for a WIP slot or its first unit)."""

    batch_id: str
    seq: int = Field(ge=0)
    release_h: float = 0.0
    due_h: float
    risk: float | None = Field(None, ge=0, le=1)


class AssetState(_Model):
    """One asset at *now*."""

    asset: str
    age_h: float = Field(ge=0, description="Age in the asset's age basis (operating hours...).")
    life_h: float | None = Field(
        None, gt=0, description="Drawn life, if known (the twin knows it, a plant does not)."
    )
    failed: bool = False
    down_for_h: float = Field(0.0, ge=0, description="Hours it has been down (if failed).")
    next_pm_h: float | None = Field(None, description="Next planned PM, hours from now.")


class UnitState(_Model):
    """What a unit that holds no batch is doing at *now*."""

    unit: str
    state: Literal["idle", "batch", "holding", "cleaning", "pm", "down"] = "idle"
    busy_for_h: float = Field(0.0, ge=0, description="Hours left of cleaning or PM.")


class PlantState(_Model):
    """The plant at one moment (see the module docstring)."""

    clock_h: float = Field(0.0, ge=0, description="Now, hours since midnight of day one.")
    start: str | None = Field(None, description="Timestamp (ISO 8601, UTC) of clock_h = 0.")
    next_seq: int = Field(0, ge=0, description="Sequence number of the next batch released.")
    batches: tuple[BatchState, ...] = ()
    queue: tuple[QueuedBatch, ...] = ()
    assets: tuple[AssetState, ...] = ()
    units: tuple[UnitState, ...] = ()

    @classmethod
    def empty(cls) -> PlantState:
        """A new plant: nothing in progress, every asset new."""
        return cls()


def _err(field: str, rule: str, value) -> ScenarioError:
    return ScenarioError(f"{field}: {rule}; got {value!r}")


def validate_state(state: PlantState, config: PlantConfig) -> None:
    """Check a snapshot against the plant: names exist, units fit steps, nothing doubled.

    Raises
    ------
    ScenarioError
        Naming the field, the rule and the value, at the first problem found.
    """
    units = {u.id: u.unit_class for u in config.units}
    steps = {s.name: s for s in config.recipe.steps}
    assets = {
        f"{u.id}/{a.name}" for u in config.units for a in config.unit_classes[u.unit_class].assets
    }
    occupied: dict[str, str] = {}
    seen: set[str] = set()
    for i, b in enumerate(state.batches):
        where = f"batches[{i}]"
        if b.batch_id in seen:
            raise _err(f"{where}.batch_id", "must be unique", b.batch_id)
        seen.add(b.batch_id)
        if b.qc_remaining_h is not None:
            if b.step is not None or b.unit is not None:
                raise _err(f"{where}.step", "must be empty for a batch in QC", b.step)
            continue
        if b.step not in steps:
            raise _err(f"{where}.step", f"must be one of {sorted(steps)}", b.step)
        if b.unit not in units:
            raise _err(f"{where}.unit", "must be a unit of the plant", b.unit)
        wanted = steps[b.step].unit_class
        if units[b.unit] != wanted:
            raise _err(f"{where}.unit", f"step {b.step} runs on a {wanted} unit", b.unit)
        if b.unit in occupied:
            raise _err(f"{where}.unit", f"already holds batch {occupied[b.unit]}", b.unit)
        occupied[b.unit] = b.batch_id
    for i, q in enumerate(state.queue):
        if q.batch_id in seen:
            raise _err(f"queue[{i}].batch_id", "must be unique", q.batch_id)
        seen.add(q.batch_id)
    known = [a.asset for a in state.assets]
    for i, a in enumerate(state.assets):
        if a.asset not in assets:
            raise _err(f"assets[{i}].asset", "must be an asset of the plant", a.asset)
        if known.count(a.asset) > 1:
            raise _err(f"assets[{i}].asset", "must be listed once", a.asset)
        if a.life_h is not None and a.life_h <= a.age_h and not a.failed:
            raise _err(f"assets[{i}].life_h", f"must exceed age_h ({a.age_h:g})", a.life_h)
    for i, u in enumerate(state.units):
        if u.unit not in units:
            raise _err(f"units[{i}].unit", "must be a unit of the plant", u.unit)
        if u.state in ("cleaning", "pm") and u.unit in occupied:
            raise _err(f"units[{i}].state", f"unit holds batch {occupied[u.unit]}", u.state)
    batches = len([b for b in state.batches if b.qc_remaining_h is None])
    if batches > config.demand.max_wip:
        raise _err("batches", f"at most max_wip={config.demand.max_wip} in production", batches)


def snapshot(line) -> PlantState:
    """The state of a running :class:`~twin.line.Line` at ``line.env.now``.

    Parameters
    ----------
    line : twin.line.Line
        A line that has run up to the moment of the snapshot.

    Returns
    -------
    PlantState
        Batches in progress and queued, assets (with their drawn lives, which a twin
        knows), units cleaning or in PM. Times are relative to ``line.env.now``.
    """
    now = line.env.now
    steps = [s.name for s in line.config.recipe.steps]
    on_unit = {
        u.batch.id: u for u in line.units.values() if u.location == "batch" and u.batch is not None
    }
    batches, queue = [], []
    for b in line.batches:
        if b.status in ("released", "rejected", "lost", "planned"):
            continue
        common = {
            "batch_id": b.id,
            "seq": b.seq,
            "release_h": b.release_h - now,
            "due_h": b.due_h - now,
        }
        deviations = tuple(d.deviation_class for d in b.deviations)
        consequential = any(d.consequential for d in b.deviations)
        if b.status == "qc":
            qc_start = b.qc_start_h if b.qc_start_h is not None else now
            total = b.durations["qc.hands_on"] + b.durations["qc.turnaround"]
            if b.deviations:
                total += b.durations["qc.investigation"]
            qc_left = max(0.0, qc_start + total - now)
            batches.append(
                BatchState(
                    **common,
                    qc_remaining_h=qc_left,
                    deviations=deviations,
                    consequential=consequential,
                )
            )
            continue
        unit = on_unit.get(b.id)
        if unit is None:  # released, waiting for a WIP slot or its first unit
            queue.append(QueuedBatch(**common))
            continue
        rec = b.steps[-1] if b.steps else None
        if rec is not None and rec.unit == unit.id:
            holding = rec.end_h is not None
            step, elapsed = rec.step, 0.0 if holding else max(0.0, now - rec.start_h)
        else:  # the unit of the next step is taken, its set-up is under way
            holding = False
            step = steps[steps.index(rec.step) + 1] if rec is not None else steps[0]
            elapsed = 0.0
        batches.append(
            BatchState(
                **common,
                step=step,
                unit=unit.id,
                elapsed_h=elapsed,
                holding=holding,
                deviations=deviations,
                consequential=consequential,
            )
        )
    assets = []
    for asset in line.assets.values():
        unit = asset.unit
        assets.append(
            AssetState(
                asset=asset.id,
                age_h=asset.age(now),
                life_h=asset.life_h if not asset.failed else None,
                failed=asset.failed,
                down_for_h=(now - unit.down_since) if asset.failed and unit.down_since else 0.0,
                next_pm_h=(line.next_pm_h[asset.id] - now) if asset.id in line.next_pm_h else None,
            )
        )
    units = []
    for unit in line.units.values():
        state = {"pool": "idle", "batch": "batch", "cleaning": "cleaning", "pm": "pm"}.get(
            unit.location, "down"
        )
        busy = max(0.0, unit.busy_until_h - now) if state in ("cleaning", "pm") else 0.0
        units.append(UnitState(unit=unit.id, state=state, busy_for_h=busy))
    return PlantState(
        clock_h=now,
        next_seq=line._next_seq,
        batches=tuple(batches),
        queue=tuple(queue),
        assets=tuple(assets),
        units=tuple(units),
    )
