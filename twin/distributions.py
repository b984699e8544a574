"""Probability distributions used by the plant configuration.

Every stochastic duration, life or attribute in the plant file is one of these small value
objects, written in TOML as an inline table with a ``dist`` key, for example::

    duration_h = { dist = "triangular", low = 44, mode = 48, high = 54 }
    life_h = { dist = "weibull", shape = 2.5, scale = 3000 }

Each knows its mean (used by capacity calculations and tests) and samples from a
``numpy.random.Generator`` that the caller passes in; there is no global random state.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Distribution",
    "Exponential",
    "Fixed",
    "Lognormal",
    "Normal",
    "Triangular",
    "Uniform",
    "Weibull",
]


class _Dist(BaseModel):
    """Base of the distributions: each defines ``sample(rng)`` and ``mean``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Fixed(_Dist):
    """A constant: ``{ dist = "fixed", value = 3.0 }``."""

    dist: Literal["fixed"] = "fixed"
    value: float = Field(ge=0)

    def sample(self, rng: np.random.Generator) -> float:
        return self.value

    @property
    def mean(self) -> float:
        return self.value


class Uniform(_Dist):
    """Uniform on ``[low, high]``."""

    dist: Literal["uniform"] = "uniform"
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high must be >= low ({self.low}); got {self.high}")
        return self

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    @property
    def mean(self) -> float:
        return 0.5 * (self.low + self.high)


class Triangular(_Dist):
    """Triangular with ``low <= mode <= high``, the usual choice for task durations."""

    dist: Literal["triangular"] = "triangular"
    low: float = Field(ge=0)
    mode: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Triangular:
        if not self.low <= self.mode <= self.high:
            raise ValueError(
                f"must satisfy low <= mode <= high; got low={self.low}, mode={self.mode}, "
                f"high={self.high}"
            )
        return self

    def sample(self, rng: np.random.Generator) -> float:
        if self.low == self.high:
            return self.low
        return float(rng.triangular(self.low, self.mode, self.high))

    @property
    def mean(self) -> float:
        return (self.low + self.mode + self.high) / 3.0


class Normal(_Dist):
    """Normal, truncated below at ``minimum`` (durations cannot be negative)."""

    dist: Literal["normal"] = "normal"
    mean_: float = Field(alias="mean")
    sd: float = Field(ge=0)
    minimum: float = 0.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def sample(self, rng: np.random.Generator) -> float:
        return max(self.minimum, float(rng.normal(self.mean_, self.sd)))

    @property
    def mean(self) -> float:
        return self.mean_


class Lognormal(_Dist):
    """Lognormal given by its median and the sd of the log (repair times)."""

    dist: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    sigma: float = Field(ge=0, le=3)

    def sample(self, rng: np.random.Generator) -> float:
        return float(self.median * math.exp(self.sigma * rng.standard_normal()))

    @property
    def mean(self) -> float:
        return self.median * math.exp(0.5 * self.sigma**2)


class Exponential(_Dist):
    """Exponential with the given mean (memoryless failures)."""

    dist: Literal["exponential"] = "exponential"
    mean_: float = Field(alias="mean", gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.exponential(self.mean_))

    @property
    def mean(self) -> float:
        return self.mean_


class Weibull(_Dist):
    """Weibull with ``shape`` (beta) and ``scale`` (eta); shape 2-3 is wear-out."""

    dist: Literal["weibull"] = "weibull"
    shape: float = Field(gt=0, le=20)
    scale: float = Field(gt=0)

    def sample(self, rng: np.random.Generator) -> float:
        return float(self.scale * rng.weibull(self.shape))

    @property
    def mean(self) -> float:
        return self.scale * math.gamma(1.0 + 1.0 / self.shape)


Distribution = Annotated[
    Fixed | Uniform | Triangular | Normal | Lognormal | Exponential | Weibull,
    Field(discriminator="dist"),
]
