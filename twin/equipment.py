"""Equipment of the line: units (ISA-95) and the wearing assets they carry.

A :class:`Unit` is a vessel or skid that holds one batch at a time. Its :class:`Asset` s
(agitator, feed pump, valve seat...) age while the unit operates (or with calendar time,
for probes), fail when their age reaches a life drawn from their Weibull distribution, and
are renewed by a repair or by planned maintenance. The *health* of an asset is the share of
its life used, ``age / life`` in [0, 1]; condition tags (vibration, motor current, pressure
ripple) and wear-driven quality effects are functions of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import simpy

from twin.config import AssetSpec, UnitClassSpec

__all__ = ["Asset", "Unit", "residual_life"]


def residual_life(spec: AssetSpec, age_h: float, rng: np.random.Generator) -> float:
    """Draw a total life for an asset that has already survived ``age_h`` hours.

    For a Weibull life this samples the conditional distribution ``L | L > age`` exactly by
    inversion; for other distributions it redraws until the life exceeds the age (bounded).

    Returns
    -------
    float
        The total life in age hours (always > ``age_h``).
    """
    life = spec.life_h
    if age_h <= 0:
        return life.sample(rng)
    if life.dist == "weibull":
        u = rng.random()
        return life.scale * ((age_h / life.scale) ** life.shape - math.log1p(-u)) ** (
            1.0 / life.shape
        )
    if life.dist == "exponential":
        return age_h + life.sample(rng)
    for _ in range(100):
        drawn = life.sample(rng)
        if drawn > age_h:
            return drawn
    return age_h + life.mean


@dataclass(eq=False)
class Asset:
    """A wearing component: tracks its age in hours of its age basis and its drawn life."""

    id: str
    spec: AssetSpec
    unit: Unit
    rng: np.random.Generator
    life_h: float = 0.0
    age_at_mark_h: float = 0.0
    mark_time_h: float = 0.0
    failed: bool = False
    renewals: int = 0

    def age(self, now: float) -> float:
        """Age in hours at time ``now`` (operating or calendar hours, per the spec)."""
        if self.spec.age_basis == "calendar" or self.unit.operating:
            return self.age_at_mark_h + (now - self.mark_time_h)
        return self.age_at_mark_h

    def mark(self, now: float) -> None:
        """Fold the time elapsed since the last mark into the age (call before state changes)."""
        self.age_at_mark_h = self.age(now)
        self.mark_time_h = now

    def health(self, now: float) -> float:
        """Share of the drawn life used, in [0, 1]."""
        return min(1.0, self.age(now) / self.life_h) if self.life_h > 0 else 1.0

    def renew(self, now: float, age_h: float = 0.0) -> None:
        """Replace or restore the component: age reset and a new life drawn."""
        self.age_at_mark_h = age_h
        self.mark_time_h = now
        self.life_h = residual_life(self.spec, age_h, self.rng)
        self.failed = False
        self.renewals += 1


@dataclass(eq=False)
class Unit:
    """A piece of equipment that holds one batch at a time."""

    id: str
    unit_class: str
    spec: UnitClassSpec
    assets: list[Asset] = field(default_factory=list)
    operating: bool = False
    running: bool = False
    location: str = "pool"
    batch: object | None = None
    process: simpy.Process | None = None
    down_since: float | None = None
    repaired: simpy.Event | None = None
    down_assets: set = field(default_factory=set)
    busy_until_h: float = 0.0  # end of the cleaning or PM under way

    def set_operating(self, now: float, operating: bool) -> None:
        """Start or stop the operating clock of the unit's assets."""
        if operating != self.operating:
            for asset in self.assets:
                asset.mark(now)
            self.operating = operating

    @property
    def is_down(self) -> bool:
        """True while at least one of the unit's assets is failed and not yet repaired."""
        return bool(self.down_assets)

    def __repr__(self) -> str:
        return f"Unit({self.id!r}, class={self.unit_class!r})"
