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
from statistics import NormalDist
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
    """Base of the distributions: each defines ``sample(rng)``, ``ppf(u)`` and ``mean``.

    ``ppf`` is the quantile function (inverse CDF): ``ppf(u)`` for ``u`` uniform on [0, 1)
    is a draw, which lets a caller draw many different distributions from one vector of
    uniforms (one generator call instead of one per draw).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def ppf(self, u: float) -> float:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


class Fixed(_Dist):
    """A constant: ``{ dist = "fixed", value = 3.0 }``."""

    dist: Literal["fixed"] = "fixed"
    value: float = Field(ge=0)

    def sample(self, rng: np.random.Generator) -> float:
        return self.value

    def ppf(self, u: float) -> float:
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

    def ppf(self, u: float) -> float:
        return self.low + (self.high - self.low) * u

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

    def ppf(self, u: float) -> float:
        a, c, b = self.low, self.mode, self.high
        if a == b:
            return a
        f = (c - a) / (b - a)
        if u < f:
            return a + math.sqrt(u * (b - a) * (c - a))
        return b - math.sqrt((1.0 - u) * (b - a) * (b - c))

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

    def ppf(self, u: float) -> float:
        if self.sd == 0:
            return max(self.minimum, self.mean_)
        z = NormalDist().inv_cdf(min(max(u, 1e-12), 1.0 - 1e-12))
        return max(self.minimum, self.mean_ + self.sd * z)

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

    def ppf(self, u: float) -> float:
        z = NormalDist().inv_cdf(min(max(u, 1e-12), 1.0 - 1e-12))
        return self.median * math.exp(self.sigma * z)

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

    def ppf(self, u: float) -> float:
        return -self.mean_ * math.log1p(-u)

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

    def ppf(self, u: float) -> float:
        return self.scale * (-math.log1p(-u)) ** (1.0 / self.shape)

    @property
    def mean(self) -> float:
        return self.scale * math.gamma(1.0 + 1.0 / self.shape)


Distribution = Annotated[
    Fixed | Uniform | Triangular | Normal | Lognormal | Exponential | Weibull,
    Field(discriminator="dist"),
]
