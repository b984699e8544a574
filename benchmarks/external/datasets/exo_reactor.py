"""Exothermic semi-batch chemical reactor: 6-10 h at 30-s samples, 9 tags, variable length.

Mechanism (written for this suite): a solvent charge holding reactant B (15 % in excess) is
heated to 75 C; reactant A is then dosed at a constant rate for about 4 h and reacts with B,
second order, Arrhenius in temperature, proportional to the catalyst's activity and slightly
to stirring. A PI loop on thermocouple TC1 sets the jacket inlet temperature (10-150 C); the
heat-transfer coefficient grows with the wetted area and the stirrer speed. The batch holds
until the in-line NIR conversion reaches 98.5 %, then cools to 45 C and ends: batches differ
in length. A small gas side-stream follows the reaction rate into the headspace pressure.

Tags (30 s; NIR every minute): ``reactor_temp_c`` (TC1, in the loop), ``reactor_temp_2_c``
(TC2, an independent thermocouple), ``jacket_in_c``, ``jacket_out_c``, ``dosing_flow_kg_h``,
``stirrer_speed_rpm`` (the drive's speed), ``stirrer_power_kw``, ``pressure_bar``,
``nir_conversion``.

Faults (about 20 %, imbalanced):

- ``catalyst_potency``: the catalyst lot is 30-50 % less active (from the start).
- ``jacket_fouling``: heat transfer falls 40-60 % within an hour from a random time.
- ``tc_drift``: TC2 drifts 0.4-1.2 C per hour (either sign); sensor only, the loop uses TC1.
- ``stirrer_slowdown``: a slipping coupling: the impeller turns 15-30 % slower than the drive
  says; power and heat transfer fall.
"""

from __future__ import annotations

import numpy as np

from . import _common

__all__ = ["FAULTS", "draw_batches", "make", "measure", "simulate"]

FAULTS = ("catalyst_potency", "jacket_fouling", "tc_drift", "stirrer_slowdown")
FAULT_SHARE = 0.20
N_BATCHES = {"full": 250, "small": 50}

SAMPLE_H = 30.0 / 3600.0
DT_H = 10.0 / 3600.0
MAX_END_H = 11.0
T_REACTION_C = 75.0
T_DISCHARGE_C = 45.0
CONVERSION_END = 0.985
A_TOTAL_MOL = 5500.0
A_MOL_PER_L = 7.5
A_KG_PER_MOL = 0.1
DH_KJ_MOL = 110.0
EA_K = 70_000.0 / 8.314
UA_KW_K = 1.5
JACKET_KW_K = 10.0
STIRRER_RPM = 120.0


def draw_batches(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-batch charge, catalyst, utilities and fault draws (all drawn for every batch)."""

    def lognormal(cv):
        return np.exp(rng.normal(0.0, cv, n))

    p = {
        "b0_mol": 1.15 * A_TOTAL_MOL * lognormal(0.02),
        "vol0_l": 3000.0 + rng.normal(0, 15, n),
        "catalyst": lognormal(0.08),
        "dose_h": 4.0 * lognormal(0.05),
        "temp0_c": rng.uniform(20.0, 30.0, n),
        "feed_temp_c": rng.uniform(15.0, 30.0, n),
        "ua": UA_KW_K * lognormal(0.05),
        "cold_c": rng.uniform(8.0, 14.0, n),
        "speed_rpm": STIRRER_RPM * lognormal(0.01),
        "nir_bias": rng.normal(0.0, 0.003, n),
        "tc2_offset_c": rng.normal(0.0, 0.2, n),
        "fault_start_h": rng.uniform(0.5, 6.0, n),
        "catalyst_loss": rng.uniform(0.3, 0.5, n),
        "fouling_loss": rng.uniform(0.4, 0.6, n),
        "tc_drift_c_h": rng.choice([-1.0, 1.0], n) * rng.uniform(0.4, 1.2, n),
        "slip": rng.uniform(0.15, 0.30, n),
    }
    p["fault"] = _common.assign_faults(rng, n, FAULT_SHARE, len(FAULTS))
    p["fault_start_h"][p["fault"] == 1] = 0.0
    return p


def simulate(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Integrate all batches at once (explicit Euler, 10 s), recorded every 30 s.

    Returns
    -------
    dict
        ``t_h`` (samples,), ``end_h`` (batches,) and trajectories (batches, samples).
    """
    n = len(p["b0_mol"])
    code, t_f = p["fault"], p["fault_start_h"]
    n_steps = round(MAX_END_H / DT_H)
    every = round(SAMPLE_H / DT_H)
    names = (
        "temp",
        "jacket_in",
        "jacket_out",
        "dose_kg_h",
        "speed_drive",
        "power_kw",
        "pressure",
        "conversion",
    )
    rec = {k: np.full((n, n_steps // every + 1), np.nan) for k in names}

    a, b, prod = np.zeros(n), p["b0_mol"].copy(), np.zeros(n)  # moles
    vol, temp, jacket_in = p["vol0_l"].copy(), p["temp0_c"].copy(), p["temp0_c"].copy()
    integral = np.zeros(n)
    dose_start, end_h = np.full(n, np.inf), np.full(n, MAX_END_H)
    reached = np.zeros(n, dtype=bool)
    dose_rate = A_TOTAL_MOL / p["dose_h"]  # mol/h
    for k in range(n_steps + 1):
        t = k * DT_H
        on = t >= t_f
        done = t > end_h
        # recipe: heat up, dose, hold until converted, cool, discharge
        dose_start = np.where(np.isinf(dose_start) & (temp >= T_REACTION_C - 2.0), t, dose_start)
        dosed = np.clip((t - dose_start) * dose_rate, 0.0, A_TOTAL_MOL)
        dosing = (t >= dose_start) & (dosed < A_TOTAL_MOL)
        feed = np.where(dosing, dose_rate, 0.0)
        conversion = prod / A_TOTAL_MOL
        reached |= (conversion + p["nir_bias"] >= CONVERSION_END) & ~dosing & (dosed > 0)
        t_sp = np.where(reached, T_DISCHARGE_C - 5.0, T_REACTION_C)
        newly_done = reached & (temp < T_DISCHARGE_C) & (end_h >= MAX_END_H)
        end_h = np.where(newly_done, t, end_h)
        # stirring: the impeller slips (fault) under a drive at constant speed
        slip = np.where((code == 4) & on, p["slip"] * np.clip((t - t_f) / 0.5, 0.0, 1.0), 0.0)
        speed = p["speed_rpm"] * (1.0 - slip)
        power = 4.0 * (speed / STIRRER_RPM) ** 3 * (vol / 3700.0) ** 0.3 * (1 + 0.3 * conversion)
        # heat transfer: wetted area, stirring, fouling (fault)
        foul = np.where(
            (code == 2) & on, p["fouling_loss"] * np.clip((t - t_f) / 1.0, 0.0, 1.0), 0.0
        )
        ua = p["ua"] * (vol / 3700.0) ** 0.5 * (speed / STIRRER_RPM) ** 0.67 * (1.0 - foul)
        ua_eff = ua / (1.0 + ua / (2.0 * JACKET_KW_K))
        q_jacket = ua_eff * (jacket_in - temp)  # kW into the reactor
        jacket_out = jacket_in - q_jacket / JACKET_KW_K
        # kinetics
        cat = p["catalyst"] * np.where(code == 1, 1.0 - p["catalyst_loss"], 1.0)
        k_rate = 4.0 * cat * np.exp(-EA_K * (1 / (temp + 273.15) - 1 / 348.15))
        k_rate = k_rate * (speed / STIRRER_RPM) ** 0.3
        rate = k_rate * a * b / vol  # mol/h: k [L/mol/h] x moles x moles / volume
        rate = np.minimum(rate, np.minimum(a, b) / DT_H)
        if k % every == 0:
            j = k // every
            for key, val in (
                ("temp", temp),
                ("jacket_in", jacket_in),
                ("jacket_out", jacket_out),
                ("dose_kg_h", feed * A_KG_PER_MOL),
                ("speed_drive", p["speed_rpm"]),
                ("power_kw", power),
                ("conversion", conversion),
                ("pressure", 1.3 + 0.05 * np.exp(0.04 * (temp - 75.0)) + 2e-4 * rate / 10),
            ):
                rec[key][:, j] = np.where(done, np.nan, val)
        # PI loop on TC1 (the true temperature; TC1 itself is healthy) sets the jacket inlet
        err = t_sp - temp
        u = t_sp + 8.0 * (err + integral / 0.3)
        free = (u > 10.0) & (u < 150.0)
        integral = integral + np.where(free, DT_H * err, 0.0)
        jacket_in = jacket_in + DT_H / 0.05 * (np.clip(u, p["cold_c"], 150.0) - jacket_in)
        heat_cap = (vol * 0.95 * 1.9) / 3600.0  # kWh/K
        q_feed = feed * A_KG_PER_MOL * 2.0 * (p["feed_temp_c"] - temp) / 3600.0
        dtemp = (rate * DH_KJ_MOL / 3600.0 + q_jacket + q_feed + power) / heat_cap
        temp = temp + DT_H * dtemp
        a = a + DT_H * (feed - rate)
        b = b - DT_H * rate
        prod = prod + DT_H * rate
        vol = vol + DT_H * feed / A_MOL_PER_L
    rec["t_h"] = np.arange(rec["temp"].shape[1]) * SAMPLE_H
    rec["end_h"] = end_h
    return rec


def measure(
    p: dict[str, np.ndarray], s: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tags as logged: noise, TC2's offset and drift (sensor fault), NIR every minute, gaps."""
    t = s["t_h"]
    code, t_f = p["fault"], p["fault_start_h"]

    def noisy(x, sd_abs=0.0, sd_rel=0.0):
        return x * (1 + rng.normal(0, sd_rel, x.shape)) + rng.normal(0, sd_abs, x.shape)

    since = np.where((code == 3)[:, None], np.clip(t[None, :] - t_f[:, None], 0.0, None), 0.0)
    tc2 = s["temp"] + p["tc2_offset_c"][:, None] + p["tc_drift_c_h"][:, None] * since
    online = {
        "reactor_temp_c": noisy(s["temp"], 0.05),
        "reactor_temp_2_c": noisy(tc2, 0.08),
        "jacket_in_c": noisy(s["jacket_in"], 0.1),
        "jacket_out_c": noisy(s["jacket_out"], 0.1),
        "dosing_flow_kg_h": np.maximum(noisy(s["dose_kg_h"], 0.2, 0.01), 0.0),
        "stirrer_speed_rpm": noisy(s["speed_drive"], 0.3),
        "stirrer_power_kw": noisy(s["power_kw"], 0.0, 0.02),
        "pressure_bar": noisy(s["pressure"], 0.004),
    }
    tags = {k: (t, _common.drop_samples(rng, v, 0.01, 0.1, (10, 60))) for k, v in online.items()}
    nir = noisy(s["conversion"][:, ::2] + p["nir_bias"][:, None], 0.004)
    tags["nir_conversion"] = (t[::2], _common.drop_samples(rng, nir, 0.02, 0.05, (5, 20)))
    return tags


def generate(seed: int, n: int) -> tuple:
    """Parameters, true trajectories, long series and outcomes of ``n`` batches."""
    r_params, r_measure, r_split = _common.spawn(seed, 3)
    p = draw_batches(r_params, n)
    s = simulate(p)
    ids = np.array([f"RX-{i:04d}" for i in range(n)], dtype=object)
    series = _common.long_frame(ids, measure(p, s, r_measure), s["end_h"])
    outcomes = _common.outcomes_frame(ids, p["fault"], FAULTS, p["fault_start_h"])
    return p, s, series, outcomes, r_split


def make(seed: int = 0, size: str = "full") -> dict:
    """Exothermic reactor data set: 250 batches (150 train / 100 test), 50 for ``"small"``.

    Raises
    ------
    ValueError
        If ``size`` is not "full" or "small".
    """
    _common.check_size(size)
    _, _, series, outcomes, r_split = generate(seed, N_BATCHES[size])
    test = _common.split_batches(r_split, outcomes["label"].to_numpy())
    return _common.batch_result(series, outcomes, test, _common.batch_fit_args(0.25), DESCRIPTION)


DESCRIPTION = (
    "Exothermic semi-batch reactor, heat-up, ~4 h dosing, hold to 98.5 % NIR conversion, "
    "cool-down: 6-10 h at 30-s samples, 9 tags, batches of different length. Faults (20 %): "
    "weak catalyst lot, jacket fouling, TC2 drift (sensor only), stirrer coupling slip."
)
