"""Signals of the non-bioreactor units: media prep, harvest, chromatography, emulsion
premix, high-pressure homogenizer, sterile filtration and filling.

Each ``*_signals`` function takes a unit's :class:`~twin.timeline.UnitTimeline` and the
unit class, and returns the *true* value of every tag on the sample grid (instrument noise
and sensor faults are added later by :mod:`twin.sensors`), plus a per-batch dict of the
attributes the step produced (droplet size, fill deviation...) for the CQA model.

Precursors follow DOMAIN.md: a worn homogenizer valve seat loses pressure, raises ripple
and outlet temperature, and makes droplets larger; larger droplets foul the sterile filter
(differential pressure rising faster, flux falling); a worn dosing pump drifts the fill.
"""

from __future__ import annotations

import numpy as np

from twin.config import UnitClassSpec
from twin.timeline import CIP, PM, RUNNING, SIP, UnitTimeline

__all__ = ["SIGNAL_FUNCTIONS", "deviation_severity", "phase_fraction"]

AMBIENT_C = 21.0
CIP_C = 75.0
SIP_C = 122.0


def deviation_severity(tl: UnitTimeline, deviation_class: str) -> np.ndarray:
    """Per-sample severity of a deviation class, from its onset to the end of the step.

    Zero where the class is absent, before its onset, or outside the batch's step.
    """
    sev = np.zeros(len(tl.segments) + 1)
    onset = np.ones(len(tl.segments) + 1)
    for k, seg in enumerate(tl.segments):
        for dev in seg.batch.deviations:
            if dev.deviation_class == deviation_class and dev.step == seg.step.name:
                sev[k] = max(sev[k], dev.severity)
                onset[k] = min(onset[k], dev.onset_fraction)
    k = tl.seg
    after = (tl.state == RUNNING) & (tl.frac >= onset[k])
    return np.where(after, sev[k], 0.0)


def phase_fraction(tl: UnitTimeline) -> np.ndarray:
    """Fraction done of the current ISA-88 phase (0 outside batches)."""
    if not tl.segments:
        return np.zeros(tl.n)
    fractions = np.array([p.fraction for p in tl.segments[0].step.phases])
    starts = np.concatenate([[0.0], np.cumsum(fractions)[:-1]])
    ph = np.clip(tl.phase.astype(np.int64), 0, len(fractions) - 1)
    out = (tl.frac - starts[ph]) / fractions[ph]
    return np.where(tl.seg >= 0, np.clip(out, 0.0, 1.0), 0.0)


def _base(tl: UnitTimeline):
    run = tl.state == RUNNING
    clean = (tl.state == CIP) | (tl.state == SIP)
    return run, clean


def _temperature(tl: UnitTimeline, running_c: np.ndarray | float) -> np.ndarray:
    t = np.full(tl.n, AMBIENT_C)
    run, _ = _base(tl)
    t = np.where(run, running_c, t)
    t = np.where(tl.state == CIP, CIP_C, t)
    return np.where(tl.state == SIP, SIP_C, t)


def _health(tl: UnitTimeline, name: str) -> np.ndarray:
    return tl.health.get(name, np.zeros(tl.n))


def _motor(
    tl: UnitTimeline, load: np.ndarray, health: np.ndarray, nominal_a: float, base_vib: float
):
    """Vibration RMS (mm/s) and motor current (A) of a rotating machine with wear."""
    on = load > 0
    vibration = np.where(on, base_vib * (0.6 + 0.4 * load) + 5.0 * health**3, 0.1)
    current = np.where(on, nominal_a * (0.25 + 0.75 * load**2) * (1.0 + 0.25 * health**2), 0.0)
    return vibration, current


def media_prep_signals(tl: UnitTimeline, spec: UnitClassSpec, attrs: dict) -> dict:
    """Media preparation: charge, mix, filter-transfer; conductivity reflects the lot."""
    run, _clean = _base(tl)
    pf = phase_fraction(tl)
    potency = tl.per_sample([s.batch.lot["media_potency"] for s in tl.segments], 1.0)
    level = np.select(
        [run & (tl.phase == 0), run & (tl.phase == 1), run & (tl.phase == 2)],
        [80.0 * pf, 80.0, 80.0 * (1.0 - pf) + 3.0],
        default=np.where(tl.state == CIP, 20.0, 2.0),
    )
    agitation = np.select(
        [run & (tl.phase == 1), run, tl.state == CIP], [120.0, 60.0, 80.0], default=0.0
    )
    conductivity = np.where(
        run, (14.0 + 40.0 * (1.0 - potency)) * np.minimum(1.0, level / 40.0), 0.05
    )
    conductivity = np.where(tl.state == CIP, 35.0, conductivity)
    vibration, current = _motor(tl, agitation / 120.0, _health(tl, "mixer"), 18.0, 1.2)
    return {
        "temperature": _temperature(tl, 25.0),
        "level": level,
        "agitation": agitation,
        "conductivity": conductivity,
        "ph": np.where(run, 7.0 + 0.8 * (1.0 - potency), 7.0),
        "weight": level / 100.0 * 2500.0,
        "vibration": vibration,
        "motor_current": current,
    }


def harvest_signals(tl: UnitTimeline, spec: UnitClassSpec, attrs: dict) -> dict:
    """Disc-stack centrifuge: bowl wear raises vibration, current and centrate turbidity."""
    run, _clean = _base(tl)
    health = _health(tl, "bowl_drive")
    centrifuging = run & (tl.phase == 0)
    biomass = tl.per_sample(
        [attrs.get(s.batch.id, {}).get("biomass_g_per_l", 40.0) for s in tl.segments], 0.0
    )
    bowl = np.select([run, tl.state == CIP], [7200.0, 3000.0], default=0.0)
    feed = np.select([centrifuging, run, tl.state == CIP], [400.0, 600.0, 500.0], default=0.0)
    turbidity = np.where(centrifuging, 5.0 + 0.4 * biomass + 60.0 * health**2, 0.5)
    vibration, current = _motor(tl, bowl / 7200.0, health, 110.0, 1.8)
    discharges = np.where(centrifuging, np.floor(tl.tau_h * 60.0 / 8.0), 0.0)
    return {
        "feed_flow": feed,
        "bowl_speed": bowl,
        "turbidity": turbidity,
        "outlet_pressure": np.where(feed > 0, 2.0 + 0.0012 * feed, 0.0),
        "temperature": _temperature(tl, 12.0),
        "discharge_count": discharges,
        "vibration": vibration,
        "motor_current": current,
    }


def chromatography_signals(tl: UnitTimeline, spec: UnitClassSpec, attrs: dict) -> dict:
    """Capture chromatography: resin ageing raises column dP and lowers purity."""
    run, _clean = _base(tl)
    pf = phase_fraction(tl)
    resin = _health(tl, "resin")
    titer = tl.per_sample(
        [attrs.get(s.batch.id, {}).get("titer_g_per_l", 3.0) for s in tl.segments], 0.0
    )
    # resin cycles since the last renewal: count segments, reset when health drops
    cycles = np.zeros(len(tl.segments) + 1)
    count, last_health = 0, -1.0
    for k, seg in enumerate(tl.segments):
        h = resin[min(seg.start, tl.n - 1)] if tl.n else 0.0
        count = 1 if h < last_health - 0.05 else count + 1
        last_health = h
        cycles[k] = count
    for k, seg in enumerate(tl.segments):
        attrs.setdefault(seg.batch.id, {})["resin_health"] = float(resin[min(seg.start, tl.n - 1)])
        attrs[seg.batch.id]["resin_cycles"] = float(cycles[k])
    flow = np.select([run, tl.state == CIP], [150.0, 100.0], default=0.0)
    column_dp = np.where(flow > 0, (0.6 + 1.4 * resin**2) * flow / 150.0, 0.0)
    uv = np.select(
        [run & (tl.phase == 1), run & (tl.phase == 2), run & (tl.phase == 3)],
        [
            200.0 + 300.0 * pf,
            500.0 * np.exp(-5.0 * pf),
            titer * 450.0 * (1.0 - 0.4 * resin**2) * np.exp(-((pf - 0.45) ** 2) / 0.02),
        ],
        default=2.0,
    )
    conductivity = np.select(
        [run & (tl.phase == k) for k in range(5)] + [tl.state == CIP],
        [15.0, 12.0, 20.0, 80.0, 150.0, 120.0],
        default=0.1,
    )
    return {
        "flow": flow,
        "pressure": np.where(flow > 0, column_dp + 0.4, 0.0),
        "column_dp": column_dp,
        "uv280": uv,
        "conductivity": conductivity,
        "ph": np.where(run & (tl.phase == 3), 4.2, 7.0),
        "temperature": _temperature(tl, 20.0),
        "resin_cycles": tl.per_sample(cycles[:-1], 0.0) if tl.segments else np.zeros(tl.n),
    }


def premix_signals(tl: UnitTimeline, spec: UnitClassSpec, attrs: dict) -> dict:
    """Emulsion premix: squalene and buffer charge, then high-shear mixing."""
    run, _clean = _base(tl)
    pf = phase_fraction(tl)
    charging = run & (tl.phase == 0)
    mixing = run & (tl.phase == 1)
    shear = np.select([mixing, tl.state == CIP], [5000.0, 1500.0], default=0.0)
    level = np.select([charging, run], [70.0 * pf, 70.0], default=1.0)
    vibration, current = _motor(tl, shear / 5000.0, np.zeros(tl.n), 45.0, 1.0)
    return {
        "temperature": _temperature(tl, np.where(mixing, 22.0 + 6.0 * pf, 20.0)),
        "shear_speed": shear,
        "level": level,
        "squalene_flow": np.where(charging, 40.0, 0.0),
        "buffer_flow": np.where(charging, 600.0, np.where(tl.state == CIP, 400.0, 0.0)),
        "pressure": np.where(run, 0.05, 0.0),
        "vibration": vibration,
        "motor_current": current,
    }


def homogenizer_signals(tl: UnitTimeline, spec: UnitClassSpec, attrs: dict) -> dict:
    """High-pressure homogenizer: pressure loss from valve-seat and seal wear enlarges droplets."""
    run, _clean = _base(tl)
    hz = spec.homogenizer
    valve = _health(tl, "valve_seat")
    seal = _health(tl, "plunger_seal")
    sev = deviation_severity(tl, "oversized_droplets")
    loss = 120.0 * valve**3 + 60.0 * seal**3 + np.where(sev > 0, 60.0 + 260.0 * sev, 0.0)
    pressure = np.where(run, hz.pressure_setpoint_bar - loss, 0.0)
    pressure = np.where(tl.state == CIP, 150.0, pressure)
    ripple = np.where(run, 4.0 + 50.0 * seal**2 + 25.0 * valve**2 + 25.0 * sev, 0.0)
    passes = np.where(run, tl.phase.astype(np.float64) + 1.0, 0.0)
    final = hz.droplet_nm_at_setpoint + hz.droplet_nm_per_bar_loss * loss
    droplet = np.where(run, final * (1.0 + 0.9 * np.exp(-(passes - 1.0) * 1.3)), 0.0)
    for seg in tl.segments:
        last = max(seg.start, min(seg.end, tl.n) - 1)
        if last < tl.n:
            attrs.setdefault(seg.batch.id, {})["droplet_nm"] = float(final[last])
            attrs[seg.batch.id]["homogenizer_loss_bar"] = float(loss[last])
    outlet = np.where(run, hz.outlet_temperature_c + 0.004 * pressure + 8.0 * sev, AMBIENT_C)
    flow = np.select([run, tl.state == CIP], [300.0, 200.0], default=0.0)
    vibration, current = _motor(tl, flow / 300.0, np.maximum(valve, seal), 220.0, 2.0)
    return {
        "pressure": pressure,
        "pressure_ripple": ripple,
        "pass_number": passes,
        "inlet_temperature": np.where(run, 18.0, AMBIENT_C),
        "outlet_temperature": np.where(tl.state == CIP, 60.0, outlet),
        "flow": flow,
        "droplet_size": droplet,
        "vibration": vibration,
        "motor_current": current,
    }


def sterile_filter_signals(tl: UnitTimeline, spec: UnitClassSpec, attrs: dict) -> dict:
    """0.2 um filtration: oversized droplets and damaged filters foul it; integrity tests."""
    run, _clean = _base(tl)
    fs = spec.filter
    pf = phase_fraction(tl)
    droplet = tl.per_sample(
        [attrs.get(s.batch.id, {}).get("droplet_nm", 155.0) for s in tl.segments], 155.0
    )
    sev = deviation_severity(tl, "filter_fouling")
    rate = fs.fouling_per_h * (1.0 + np.maximum(0.0, droplet - 160.0) / 8.0) + 1.2 * sev
    filtering = run & (tl.phase == 1)
    phase_h = pf * tl.per_sample(
        [s.record.duration_h * s.step.phases[1].fraction for s in tl.segments], 0.0
    )
    dp = np.where(filtering, fs.clean_dp_bar * np.exp(rate * phase_h), 0.0)
    flux = np.where(filtering, fs.nominal_flux_lmh * fs.clean_dp_bar / np.maximum(dp, 1e-6), 0.0)
    failed = tl.per_sample(
        [
            any(
                d.deviation_class == "filter_fouling" and d.consequential
                for d in s.batch.deviations
            )
            for s in tl.segments
        ],
        0.0,
    )
    bubble = np.select(
        [run & (tl.phase == 0), run & (tl.phase == 2)], [3.6, 3.6 - 1.4 * failed], default=0.0
    )
    for seg in tl.segments:
        window = dp[seg.start : min(seg.end, tl.n)]
        attrs.setdefault(seg.batch.id, {})["final_dp_bar"] = float(window.max(initial=0.0))
        attrs[seg.batch.id]["integrity_failed"] = bool(failed[min(seg.start, tl.n - 1)])
    filtrate = flux * 1.2
    total = np.cumsum(filtrate * tl.dt_h)
    at_start = np.array([total[s.start - 1] if s.start > 0 else 0.0 for s in tl.segments] + [0.0])
    volume = np.where(run, total - at_start[tl.seg], 0.0)
    return {
        "differential_pressure": dp,
        "flux": flux,
        "inlet_pressure": np.where(filtering, dp + 0.3, 0.0),
        "filtrate_flow": filtrate,
        "temperature": _temperature(tl, 20.0),
        "filtered_volume": np.maximum(volume, 0.0),
        "bubble_point": bubble,
        "turbidity": np.where(filtering, 0.3 + 2.0 * failed, 0.05),
    }


def filler_signals(tl: UnitTimeline, spec: UnitClassSpec, attrs: dict) -> dict:
    """Vial filling: a worn dosing pump under-fills and spreads the fill weights."""
    run, _clean = _base(tl)
    fl = spec.filler
    pump = _health(tl, "dosing_pump")
    filling = run & (tl.phase == 1)
    offset_pct = -3.2 * pump**3
    sd_pct = fl.fill_sd_pct * (1.0 + 2.0 * pump**2)
    for seg in tl.segments:
        mid = min(tl.n - 1, (seg.start + seg.end) // 2)
        attrs.setdefault(seg.batch.id, {})["fill_offset_pct"] = float(offset_pct[mid])
        attrs[seg.batch.id]["fill_sd_pct"] = float(sd_pct[mid])
    target_g = fl.target_fill_ml * 1.01  # emulsion density about 1.01 g/mL
    speed = np.where(filling, fl.vials_per_h / 60.0, 0.0)
    reject = np.where(filling, 100.0 * 2.0 * _normal_tail(2.0 / np.maximum(sd_pct, 1e-3)), 0.0)
    return {
        "fill_weight": np.where(filling, target_g * (1.0 + offset_pct / 100.0), 0.0),
        "fill_weight_sd": np.where(filling, target_g * sd_pct / 100.0, 0.0),
        "speed": speed,
        "reject_rate": reject,
        "pump_pressure": np.where(filling, 1.5 + 0.3 * pump, 0.0),
        "room_particles": np.where(run, 800.0, np.where(tl.state == PM, 2500.0, 300.0)),
        "temperature": _temperature(tl, 20.0),
        "vial_count": np.where(filling, np.floor(speed * tl.tau_h * 60.0), 0.0),
    }


def _normal_tail(z: np.ndarray) -> np.ndarray:
    """P(Z > z) for a standard normal, vectorised without scipy."""
    from math import sqrt

    return 0.5 * _erfc(z / sqrt(2.0))


def _erfc(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26, |error| < 1.5e-7, enough for a reject-rate tag
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    y = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erfc = y * np.exp(-x * x)
    return np.where(x >= 0, erfc, 2.0 - erfc)


SIGNAL_FUNCTIONS = {
    "media_prep": media_prep_signals,
    "harvest": harvest_signals,
    "chromatography": chromatography_signals,
    "premix": premix_signals,
    "homogenizer": homogenizer_signals,
    "sterile_filter": sterile_filter_signals,
    "filler": filler_signals,
}
