"""Critical quality attributes of each batch, as the QC lab reports them.

Each CQA is computed from what the batch went through: the bioreactor's titer at harvest
(from the kinetics), resin health at purification, droplet size out of the homogenizer,
the fill offset of the dosing pump, plus assay noise. Deviations move the attributes they
act on: a *consequential* deviation (see :mod:`twin.batches`) moves its attribute out of
specification; a minor one moves it toward the limit. Wear alone can also produce an
out-of-specification result (a worn valve seat gives large droplets): such a result opens a
deviation with its root cause under investigation, as a QA department would.
"""

from __future__ import annotations

import numpy as np

from twin.batches import Batch, Deviation
from twin.config import PlantConfig

__all__ = ["CQA_DEVIATION", "assess_batch"]

#: The deviation class QA opens when an attribute is out of specification unexplained.
CQA_DEVIATION = {
    "titer_g_per_l": "raw_material",
    "purity_pct": "oos_result",
    "endotoxin_eu_per_ml": "contamination",
    "bioburden_cfu": "contamination",
    "droplet_z_avg_nm": "oversized_droplets",
    "pdi": "oversized_droplets",
    "ph": "oos_result",
    "osmolality_mosm_per_kg": "oos_result",
    "fill_volume_dev_pct": "oos_result",
}

_TITER_CLASSES = ("raw_material", "do_crash", "feed_failure", "temperature_excursion")


def _worst(batch: Batch, classes) -> Deviation | None:
    found = [d for d in batch.deviations if d.deviation_class in classes]
    return max(found, key=lambda d: d.severity) if found else None


def _push(value: float, limit: float, dev: Deviation | None, direction: int, rng) -> float:
    """Move ``value`` past ``limit`` (consequential) or toward it (minor) in ``direction``."""
    if dev is None:
        return value
    if dev.consequential:
        beyond = limit + direction * abs(limit) * rng.uniform(0.02, 0.15)
        return beyond if direction * (beyond - value) > 0 else value
    toward = value + direction * dev.severity * 0.5 * abs(limit - value)
    return toward


def assess_batch(
    batch: Batch, attrs: dict, config: PlantConfig, rng: np.random.Generator
) -> dict[str, float]:
    """QC results of one finished batch (CQA values only; compare with specs separately)."""
    specs = config.specs
    titer = attrs.get("titer_g_per_l", np.nan) * 0.9 * (1.0 + 0.03 * rng.standard_normal())
    titer = _push(titer, specs["titer_g_per_l"].low, _worst(batch, _TITER_CLASSES), -1, rng)
    contamination = _worst(batch, ("contamination",))
    purity = (
        98.3
        - 3.5 * attrs.get("resin_health", 0.0) ** 2
        - 1.5
        * max(
            (d.severity for d in batch.deviations if d.deviation_class == "do_crash"), default=0.0
        )
        + 0.35 * rng.standard_normal()
    )
    endotoxin = float(np.exp(rng.normal(np.log(0.8), 0.3)))
    endotoxin = _push(endotoxin, specs["endotoxin_eu_per_ml"].high, contamination, +1, rng)
    bioburden = 0.0
    if contamination is not None and contamination.consequential:
        bioburden = float(1 + rng.poisson(6))
    if attrs.get("integrity_failed"):
        bioburden += float(rng.integers(1, 4))
    droplet = attrs.get("droplet_nm", np.nan) + 2.0 * rng.standard_normal()
    droplet = _push(
        droplet, specs["droplet_z_avg_nm"].high, _worst(batch, ("oversized_droplets",)), +1, rng
    )
    pdi = 0.09 + 0.004 * max(0.0, droplet - 155.0) + 0.015 * rng.standard_normal()
    ph = 7.08 - 0.5 * attrs.get("ph_probe_offset", 0.0) + 0.05 * rng.standard_normal()
    ph_dev = _worst(batch, ("ph_drift",))
    ph = _push(ph, specs["ph"].low, ph_dev, -1, rng) if ph_dev and ph_dev.consequential else ph
    return {
        "titer_g_per_l": float(titer),
        "purity_pct": float(min(99.9, purity)),
        "endotoxin_eu_per_ml": float(endotoxin),
        "bioburden_cfu": float(bioburden),
        "droplet_z_avg_nm": float(droplet),
        "pdi": float(max(0.01, pdi)),
        "ph": float(ph),
        "osmolality_mosm_per_kg": float(rng.normal(300.0, 7.0)),
        "fill_volume_dev_pct": float(
            attrs.get("fill_offset_pct", 0.0) + 0.3 * rng.standard_normal()
        ),
    }
