"""Batches (ISA-88 control recipes in execution) and what happens to them.

A :class:`Batch` carries its plan (release and due time), its own random stream, the
raw-material lot it was made from, the deviations injected into it, and the record of the
unit procedures it went through. :func:`draw_lot` and :func:`draw_deviations` decide, when a
batch is released, what it will suffer; the discrete-event model then decides *when*, and
the signal generator (:mod:`twin.signals`) makes the precursors visible in the tags.

Severity and consequence: every deviation gets a severity in [0, 1]. The most severe
``oos_probability`` share of occurrences are *consequential*: they drive a critical quality
attribute out of specification. Precursor magnitudes in the signals grow with severity, so
the outcome is partly, never perfectly, predictable from the trajectories.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.config import PlantConfig

__all__ = [
    "Batch",
    "Deviation",
    "StepRecord",
    "deviation_plan",
    "draw_deviations",
    "draw_lot",
    "wear_odds",
]


@dataclass
class Deviation:
    """A documented departure: class, root cause, where and when it started, how bad."""

    deviation_class: str
    root_cause: str
    step: str
    onset_fraction: float
    severity: float
    consequential: bool
    source: str = "random"
    unit: str | None = None
    onset_h: float | None = None
    lead_h: float = 0.0  # hours before the onset in which the root cause already shows
    pending_u: float | None = None  # wear-driven: decided when the step starts (see Line)


@dataclass
class StepRecord:
    """One executed unit procedure: where, when it waited, started and ended."""

    step: str
    unit: str
    queued_h: float
    start_h: float
    end_h: float | None = None
    released_h: float | None = None
    duration_h: float = 0.0
    health: dict[str, float] = field(default_factory=dict)


@dataclass(eq=False)
class Batch:
    """A batch in the line, from release to disposition."""

    id: str
    seq: int
    product: str
    release_h: float
    due_h: float
    rng: np.random.Generator
    lot: dict[str, float | str] = field(default_factory=dict)
    deviations: list[Deviation] = field(default_factory=list)
    pending_deviations: list[Deviation] = field(default_factory=list)  # wear-driven, undecided
    steps: list[StepRecord] = field(default_factory=list)
    status: str = "planned"
    start_h: float | None = None
    filled_h: float | None = None
    qc_start_h: float | None = None
    disposition_h: float | None = None
    disposition: str | None = None
    lost_reason: str | None = None
    durations: dict[str, float] = field(default_factory=dict)


def draw_lot(batch_seq: int, rng: np.random.Generator, config: PlantConfig) -> dict:
    """Raw-material lot attributes of a batch (lot-to-lot variability of DOMAIN.md).

    The media lot's potency drives the growth rate in the bioreactors; a bad lot (the
    ``raw_material`` deviation) is a lot whose potency is low from the start.
    """
    z = rng.standard_normal(3).tolist()
    return {
        "media_lot": f"ML-{2600 + batch_seq // 3:05d}",
        "media_potency": min(1.1, max(0.85, 1.0 + 0.025 * z[0])),
        "glucose_purity_pct": min(100.0, max(98.0, 99.5 + 0.2 * z[1])),
        "squalene_lot": f"SQ-{700 + batch_seq // 6:04d}",
        "squalene_peroxide_meq_per_kg": abs(0.5 + 0.15 * z[2]),
        "polysorbate_lot": f"PS-{300 + batch_seq // 10:04d}",
    }


def deviation_plan(config: PlantConfig) -> list[tuple]:
    """What :func:`draw_deviations` needs of each deviation class, computed once per plant:
    name, spec, the occurrence threshold (the largest wear-driven odds for classes with a
    driver asset), onset range, OOS threshold and whether occurrence waits for the step."""
    plan = []
    for name, spec in config.deviations.items():
        most = spec.rate_per_batch
        if spec.driver_asset is not None:
            most *= (spec.wear_exponent + 1.0) * WEAR_X_MAX**spec.wear_exponent
        plan.append(
            (
                name,
                spec,
                most,
                spec.onset_fraction_low,
                spec.onset_fraction_high - spec.onset_fraction_low,
                1.0 - spec.oos_probability,
                spec.driver_asset is not None,
            )
        )
    return plan


def draw_deviations(
    rng: np.random.Generator, config: PlantConfig, plan: list[tuple] | None = None
) -> list[Deviation]:
    """Random-root-cause deviations of one batch, drawn at release.

    Asset failures add further deviations while the batch runs (see :mod:`twin.line`).
    ``plan``: :func:`deviation_plan` of ``config``, if the caller keeps it (a line does).
    """
    plan = deviation_plan(config) if plan is None else plan
    # Draw all numbers for every class (one call) so that changing one rate does not shift
    # the random stream of the others (common random numbers across scenarios).
    u = rng.random((len(plan), 3)).tolist()
    out = []
    for (name, spec, most, onset_lo, onset_span, oos_above, waits), (
        u_occurs,
        u_onset,
        severity,
    ) in zip(plan, u, strict=True):
        if u_occurs < most:
            out.append(
                Deviation(
                    deviation_class=name,
                    root_cause=spec.root_cause,
                    step=spec.step,
                    onset_fraction=onset_lo + u_onset * onset_span,
                    severity=severity,
                    consequential=severity > oos_above,
                    pending_u=u_occurs if waits else None,
                    lead_h=spec.precursor_lead_h,
                )
            )
    return out


WEAR_X_MAX = 1.5


def wear_odds(spec, age_h: float, characteristic_h: float) -> float:
    """Occurrence probability of a wear-driven deviation for an asset of age ``age_h``."""
    x = min(WEAR_X_MAX, max(0.0, age_h / characteristic_h)) if characteristic_h > 0 else 1.0
    k = spec.wear_exponent
    return min(1.0, spec.rate_per_batch * (k + 1.0) * x**k)
