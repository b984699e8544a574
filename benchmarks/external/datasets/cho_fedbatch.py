"""Mammalian (CHO) fed-batch: 14 days at 30-min samples, a lactate shift, a temperature shift.

Mechanism (written for this suite, independent of biotwin's twin): viable and dead cells grow
and die under glucose, ammonium, lactate, osmolality, dissolved CO2, pH, temperature and
dissolved-oxygen factors; glucose uptake feeds lactate production until a metabolic shift
(driven by culture age, the day-5 temperature shift and glucose limitation) turns the cells to
lactate consumption. pH follows lactate, base and CO2; a deadband controller doses base on the
probe's reading. DO is held by an agitation cascade until agitation saturates. A continuous
feed starts on day 3 and steps up on day 7.

Online tags (30 min): ``vcd`` (capacitance soft sensor, 1e6 cells/mL), ``do_pct``, ``ph``,
``temperature_c``, ``agitation_rpm``, ``base_total_l``, ``feed_flow_l_h``. Offline tags (one
sample a day, jittered): ``viability_pct``, ``glucose_g_l``, ``lactate_g_l``, ``ammonium_mm``,
``osmolality``.

Faults (about 30 % of batches, each from a random start):

- ``feed_underdelivery``: the pump delivers 35-65 % less than commanded; ``feed_flow_l_h``
  logs the command, so only the culture shows it.
- ``temperature_offset``: the temperature loop holds 0.3-1.0 C off its setpoint (a wrong
  controller bias); the logged temperature shows it.
- ``ph_probe_drift``: the pH probe drifts 0.0015-0.004 per hour (either sign); the base
  controller acts on the drifting reading, so the true pH moves.
- ``co2_accumulation``: CO2 stripping drops by 45-75 % (sparger fouling): pCO2 rises, pH
  falls, base and osmolality rise, growth slows.
"""

from __future__ import annotations

import numpy as np

from . import _common

__all__ = ["FAULTS", "draw_batches", "make", "measure", "simulate"]

FAULTS = ("feed_underdelivery", "temperature_offset", "ph_probe_drift", "co2_accumulation")
FAULT_SHARE = 0.30
N_BATCHES = {"full": 200, "small": 40}

SAMPLE_H = 0.5
DT_H = 0.1
NOMINAL_HARVEST_H = 336.0
MAX_HARVEST_H = 342.0
FEED_START_H = 72.0
FEED_STEP_H = 168.0
PH_SETPOINT = 6.95
DO_SETPOINT_PCT = 40.0
T_GROWTH_C = 36.8
T_PRODUCTION_C = 33.5
O2_SATURATION_MM = 0.35
AGITATION_RPM = (70.0, 165.0)


def draw_batches(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-batch raw materials, inoculum, schedule and fault draws (all drawn for every batch).

    Returns
    -------
    dict
        Arrays of length ``n``; ``fault`` holds codes (0 normal, i = ``FAULTS[i - 1]``).
    """

    def lognormal(cv):
        return np.exp(rng.normal(0.0, cv, n))

    p = {
        "x0": 0.5 * lognormal(0.12),
        "vol0_l": 150.0 + rng.normal(0, 1.5, n),
        "glc0_mm": 36.0 * lognormal(0.05),
        "osm0": 295.0 + rng.normal(0, 5, n),
        "mu_max": 0.046 * lognormal(0.06),
        "x_cap": 27.0 * lognormal(0.07),
        "q_glc_max": 0.05 * lognormal(0.08),
        "t_lac_shift_h": 110.0 + rng.normal(0, 12, n),
        "t_age_h": 260.0 + rng.normal(0, 20, n),
        "feed_frac_day": 0.025 * lognormal(0.04),
        "feed_glc_mm": 250.0 * lognormal(0.03),
        "feed_osm": 900.0 * lognormal(0.03),
        "t_temp_shift_h": 120.0 + rng.normal(0, 4, n),
        "vessel_bias_c": rng.normal(0, 0.05, n),
        "media_ph_bias": rng.normal(0, 0.02, n),
        "k_strip": 0.5 * lognormal(0.08),
        "harvest_h": NOMINAL_HARVEST_H + rng.uniform(-6, 6, n),
        "fault_start_h": rng.uniform(24.0, 260.0, n),
        "feed_loss": rng.uniform(0.35, 0.65, n),
        "temp_offset_c": rng.choice([-1.0, 1.0], n) * rng.uniform(0.3, 1.0, n),
        "ph_drift_per_h": rng.choice([-1.0, 1.0], n) * rng.uniform(0.0015, 0.004, n),
        "strip_loss": rng.uniform(0.45, 0.75, n),
    }
    p["fault"] = _common.assign_faults(rng, n, FAULT_SHARE, len(FAULTS))
    feed = p["fault"] == 1
    p["fault_start_h"][feed] = rng.uniform(FEED_START_H + 8, 260.0, int(feed.sum()))
    return p


def simulate(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Integrate every batch at once (explicit Euler at ``DT_H``), recorded every ``SAMPLE_H``.

    Returns
    -------
    dict
        ``t_h`` (samples,) and true states / controller outputs as (batches, samples) arrays.
    """
    n = len(p["x0"])
    code = p["fault"]
    t_f = p["fault_start_h"]
    n_steps = round(MAX_HARVEST_H / DT_H)
    every = round(SAMPLE_H / DT_H)
    names = (
        "xv", "xd", "glc", "lac", "amm", "osm", "pco2", "ph", "ph_probe", "temp", "temp_probe",
        "do", "agitation", "base_total_l", "feed_cmd_l_h", "vol",
    )  # fmt: skip
    rec = {k: np.empty((n, n_steps // every + 1)) for k in names}

    xv, xd = p["x0"].copy(), np.full(n, 0.02)
    glc, lac, amm = p["glc0_mm"].copy(), np.zeros(n), np.full(n, 0.5)
    osm, pco2, base = p["osm0"].copy(), np.full(n, 38.0), np.zeros(n)
    vol, m, temp = p["vol0_l"].copy(), np.zeros(n), np.full(n, T_GROWTH_C)
    base_total = np.zeros(n)
    for k in range(n_steps + 1):
        t = k * DT_H
        on = t >= t_f
        # temperature: setpoint schedule; the loop may hold it off setpoint (offset fault)
        shift = np.clip((t - p["t_temp_shift_h"]) / 2.0, 0.0, 1.0)
        t_sp = T_GROWTH_C + (T_PRODUCTION_C - T_GROWTH_C) * shift
        offset = np.where((code == 2) & on, p["temp_offset_c"], 0.0)
        temp += DT_H / 0.5 * (t_sp + p["vessel_bias_c"] + offset - temp)
        # pH: lactate and CO2 acidify, base neutralises; the probe may drift
        ph = 7.16 + p["media_ph_bias"] - 0.0215 * (lac - base) - 0.5 * np.log10(pco2 / 40.0)
        drift = np.where((code == 3) & on, p["ph_drift_per_h"] * (t - t_f), 0.0)
        ph_probe = ph + drift
        base_rate = np.clip(100.0 * (PH_SETPOINT - ph_probe), 0.0, 2.0)  # mM/h
        # oxygen: agitation cascade holds DO until it saturates
        f_t = np.exp(0.15 * (temp - T_GROWTH_C))
        our = 0.15 * xv * np.exp(0.08 * (temp - T_GROWTH_C))  # mM/h
        kla_needed = our / (O2_SATURATION_MM * (1 - DO_SETPOINT_PCT / 100))
        agitation = np.clip(120.0 * np.sqrt(kla_needed / 10.0), *AGITATION_RPM)
        kla = 10.0 * (agitation / 120.0) ** 2
        do = np.clip(100.0 * (1 - our / (kla * O2_SATURATION_MM)), 0.0, DO_SETPOINT_PCT)
        if k % every == 0:
            j = k // every
            for key, val in (
                ("xv", xv),
                ("xd", xd),
                ("glc", glc),
                ("lac", lac),
                ("amm", amm),
                ("osm", osm),
                ("pco2", pco2),
                ("ph", ph),
                ("ph_probe", ph_probe),
                ("temp", temp),
                ("temp_probe", temp),
                ("do", do),
                ("agitation", agitation),
                ("base_total_l", base_total),
                ("vol", vol),
            ):
                rec[key][:, j] = val
            rec["feed_cmd_l_h"][:, j] = _feed_command(p, t)
        # growth and death
        f_glc = glc / (glc + 0.8)
        f_ph = np.exp(-(((ph - 7.05) / 0.4) ** 2))
        f_osm = 1.0 / (1.0 + np.maximum(osm - 340.0, 0.0) / 150.0)
        f_co2 = 1.0 / (1.0 + np.maximum(pco2 - 70.0, 0.0) / 120.0)
        f_cap = np.clip(1.0 - (xv + 0.3 * xd) / p["x_cap"], 0.0, 1.0)
        f_do = do / (do + 5.0)
        mu = p["mu_max"] * f_t * f_glc * f_ph * f_osm * f_co2 * f_cap * f_do
        mu = mu / (1.0 + amm / 15.0) / (1.0 + lac / 70.0)
        age = 1.0 / (1.0 + np.exp(-(t - p["t_age_h"]) / 30.0))
        kd = (
            0.002
            + 0.03 * 0.3 / (glc + 0.3)
            + 0.004 * amm / (amm + 10.0)
            + 0.001 * age
            + 0.01 * np.maximum(osm - 450.0, 0.0) / 100.0
            + 0.01 * (1.0 - f_ph)
        )
        # metabolism: lactate shift
        cool = np.clip((T_GROWTH_C - temp) / (T_GROWTH_C - T_PRODUCTION_C), 0.0, 1.0)
        m_target = 1.0 / (1.0 + np.exp(-(t - p["t_lac_shift_h"]) / 10.0))
        m_target = np.clip(m_target + 0.25 * cool + 0.5 * (1.0 - glc / (glc + 1.0)), 0.0, 1.0)
        q_glc = (
            p["q_glc_max"]
            * glc
            / (glc + 1.0)
            * (1.0 - 0.55 * m)
            * np.exp(0.08 * (temp - T_GROWTH_C))
        )
        q_lac_p = 1.4 * q_glc * (1.0 - m)
        q_lac_c = 0.012 * m * lac / (lac + 3.0)
        q_amm = 0.0015 + 0.05 * mu
        # CO2: produced with respiration, stripped by the gas (fault: fouled sparger)
        strip = p["k_strip"] * (agitation / 120.0) ** 1.5
        strip = np.where((code == 4) & on, strip * (1.0 - p["strip_loss"]), strip)
        # feed (fault: the pump delivers less than commanded), dilution
        feed = _feed_command(p, t) * np.where((code == 1) & on, 1.0 - p["feed_loss"], 1.0)
        base_l_h = base_rate * vol / 1000.0
        d = (feed + base_l_h) / vol
        xv, xd = (
            xv + DT_H * ((mu - kd - d) * xv),
            xd + DT_H * (kd * xv - (0.012 + d) * xd),
        )
        glc = np.maximum(glc + DT_H * (-q_glc * xv + feed / vol * p["feed_glc_mm"] - d * glc), 0)
        lac = np.maximum(lac + DT_H * ((q_lac_p - q_lac_c) * xv - d * lac), 0.0)
        amm = amm + DT_H * (q_amm * xv - d * amm)
        osm = osm + DT_H * (
            feed / vol * (p["feed_osm"] - osm)
            + (q_lac_p - q_lac_c - q_glc + q_amm) * xv
            + base_rate
            - base_l_h / vol * osm
        )
        pco2 = pco2 + DT_H * (0.9 * xv * f_t - strip * (pco2 - 35.0))
        base = base + DT_H * (base_rate - d * base)
        m = m + DT_H * (m_target - m) / 12.0
        vol = vol + DT_H * (feed + base_l_h - 0.02)
        base_total = base_total + DT_H * base_l_h
    rec["t_h"] = np.arange(rec["xv"].shape[1]) * SAMPLE_H
    return rec


def _feed_command(p: dict[str, np.ndarray], t: float) -> np.ndarray:
    """Commanded feed flow (L/h): off before day 3, a share of the start volume a day after."""
    if t < FEED_START_H:
        return np.zeros(len(p["x0"]))
    step = 1.3 if t >= FEED_STEP_H else 1.0
    return p["vol0_l"] * p["feed_frac_day"] / 24.0 * step


def measure(
    p: dict[str, np.ndarray], s: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tags as the historian and the lab record them: noise, calibration, sampling, gaps."""
    n = s["xv"].shape[0]
    t = s["t_h"]

    def noisy(x, sd_abs=0.0, sd_rel=0.0):
        return x * (1 + rng.normal(0, sd_rel, x.shape)) + rng.normal(0, sd_abs, x.shape)

    viab = s["xv"] / (s["xv"] + s["xd"])
    gain = np.exp(rng.normal(0, 0.04, n))[:, None]
    online = {
        "vcd": noisy(s["xv"] * (1 + 0.12 * (1 - viab)) * gain, 0.1, 0.03),
        "do_pct": noisy(s["do"], 0.8),
        "ph": noisy(s["ph_probe"], 0.01),
        "temperature_c": noisy(s["temp_probe"], 0.03),
        "agitation_rpm": noisy(s["agitation"], 0.5),
        "base_total_l": np.round(s["base_total_l"], 2),
        "feed_flow_l_h": noisy(s["feed_cmd_l_h"], 0.0, 0.01),
    }
    tags = {k: (t, _common.drop_samples(rng, v, 0.015, 0.1, (4, 20))) for k, v in online.items()}
    days = np.arange(0, 15) * 24.0
    t_lab = np.clip(days[None, :] + rng.uniform(-1.0, 1.0, (n, len(days))), 0.0, None)
    lab = {
        "viability_pct": (100 * viab, 1.5, 0.0),
        "glucose_g_l": (s["glc"] * 0.18, 0.02, 0.03),
        "lactate_g_l": (s["lac"] * 0.09, 0.02, 0.04),
        "ammonium_mm": (s["amm"], 0.05, 0.05),
        "osmolality": (s["osm"], 3.0, 0.0),
    }
    for tag, (x, sd_abs, sd_rel) in lab.items():
        v = noisy(_interp_rows(t, x, t_lab), sd_abs, sd_rel)
        v[rng.random(v.shape) < 0.03] = np.nan
        tags[tag] = (t_lab, v)
    return tags


def _interp_rows(t: np.ndarray, x: np.ndarray, t_new: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation of ``x`` (batches x samples on grid ``t``) at ``t_new``."""
    step = t[1] - t[0]
    pos = np.clip(t_new / step, 0, len(t) - 1.000001)
    i = pos.astype(int)
    w = pos - i
    rows = np.arange(x.shape[0])[:, None]
    return x[rows, i] * (1 - w) + x[rows, i + 1] * w


def generate(seed: int, n: int) -> tuple:
    """Parameters, true trajectories, long series and outcomes of ``n`` batches."""
    r_params, r_measure, r_split = _common.spawn(seed, 3)
    p = draw_batches(r_params, n)
    s = simulate(p)
    ids = np.array([f"CHO-{i:04d}" for i in range(n)], dtype=object)
    series = _common.long_frame(ids, measure(p, s, r_measure), p["harvest_h"])
    outcomes = _common.outcomes_frame(ids, p["fault"], FAULTS, p["fault_start_h"])
    return p, s, series, outcomes, r_split


def make(seed: int = 0, size: str = "full") -> dict:
    """CHO fed-batch data set: 200 batches (120 train / 80 test), 40 for ``size="small"``.

    Raises
    ------
    ValueError
        If ``size`` is not "full" or "small".
    """
    _common.check_size(size)
    _, _, series, outcomes, r_split = generate(seed, N_BATCHES[size])
    test = _common.split_batches(r_split, outcomes["label"].to_numpy())
    return _common.batch_result(
        series,
        outcomes,
        test,
        _common.batch_fit_args(1.0),
        DESCRIPTION,
    )


DESCRIPTION = (
    "CHO fed-batch, 14 d (330-342 h) at 30-min online samples plus daily offline samples, "
    "12 tags; lactate-shift metabolism, temperature shift on day 5. Faults (30 %): feed pump "
    "under-delivery, temperature controller offset, pH probe drift (in the base loop), CO2 "
    "accumulation, each from a random start."
)
