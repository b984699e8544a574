"""Microbial (E. coli) high-cell-density fed-batch: about 40 h at 3-min samples, 20 tags.

Mechanism (written for this suite): glucose uptake saturates; what the oxidative capacity
(or the oxygen transferred) cannot burn overflows to acetate, which inhibits uptake and is
re-consumed when there is spare capacity. A batch phase on the initial glucose ends when the
glucose runs out; an exponential feed (specific rate 0.2 1/h) then runs until induction at
about 24 h, when the temperature setpoint drops from 37 to 30 C and the feed is held constant.
A DO cascade (agitation, then airflow, then O2 enrichment) holds 30 % until it saturates;
off-gas O2/CO2 follow from the gas balance; the cooling-water valve removes the metabolic and
stirring heat until it is wide open; NH4OH dosing follows growth and acetate; antifoam shots
come more often with more gas and biomass.

Tags (3 min unless noted): ``temperature_c``, ``cw_flow_m3_h``, ``cw_return_c``, ``do_pct``,
``ph``, ``agitation_rpm``, ``agitator_power_kw``, ``air_flow_nm3_h``, ``o2_flow_nm3_h``,
``pressure_barg``, ``offgas_o2_pct``, ``offgas_co2_pct``, ``feed_flow_l_h``,
``feed_total_l``, ``base_flow_l_h``, ``antifoam_total_l``, ``weight_kg``, and offline every
2 h: ``od600``, ``glucose_g_l``, ``acetate_g_l``.

Faults (about 45 %, from a random start between 4 and 36 h):

- ``aeration_failure``: the air header loses pressure for 2-10 h; airflow is capped at
  20-45 % of its maximum.
- ``feed_concentration``: a new feed tank is made up at 70-85 % or 115-130 % of the glucose
  concentration.
- ``cooling_degradation``: the jacket's heat transfer falls by 50-70 % over 4 h (fouling or
  chilled-water trouble).
- ``offgas_drift``: the off-gas analyser drifts (O2 by 0.03-0.08 %-points per hour, CO2 gain
  by up to 1.5 % per hour); sensor only, the culture is unchanged.
- ``agitator_derate``: the drive is derated to 60-80 % of its maximum speed.
"""

from __future__ import annotations

import numpy as np

from . import _common

__all__ = ["FAULTS", "draw_batches", "make", "measure", "simulate"]

FAULTS = (
    "aeration_failure",
    "feed_concentration",
    "cooling_degradation",
    "offgas_drift",
    "agitator_derate",
)
FAULT_SHARE = 0.45
N_BATCHES = {"full": 150, "small": 40}

SAMPLE_H = 0.05
DT_H = 1.0 / 60.0
MAX_END_H = 42.0
DO_SETPOINT = 0.30
AGITATION_RPM = (300.0, 900.0)
AIR_VVM = (0.5, 1.5)
O2_FRACTION_MAX = 0.40
KLA_MAX_1_H = 900.0
C_SAT_AIR_MM = 0.32
FEED_RATE_MAX_L_H = 14.0
MU_FEED_1_H = 0.15
UA_KW_K = 1.6
CW_FLOW_MAX_M3_H = 20.0
CW_HALF_M3_H = 5.0


def draw_batches(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-batch inoculum, medium, strain, recipe and fault draws (all drawn for every batch)."""

    def lognormal(cv):
        return np.exp(rng.normal(0.0, cv, n))

    p = {
        "x0": 0.12 * lognormal(0.15),
        "s0": 20.0 * lognormal(0.04),
        "vol0_l": 500.0 + rng.normal(0, 5, n),
        "qs_max": 1.35 * lognormal(0.05),
        "q_ox_max": 0.95 * lognormal(0.06),
        "feed_s_g_l": 550.0 * lognormal(0.02),
        "feed0_l_h": 2.5 * lognormal(0.05),
        "t_induction_h": 24.0 + rng.normal(0, 1.0, n),
        "t_cw_c": 12.0 + rng.normal(0, 1.0, n),
        "end_h": 40.0 + rng.uniform(-1.5, 1.5, n),
        "fault_start_h": rng.uniform(4.0, 36.0, n),
        "air_cap": rng.uniform(0.2, 0.45, n),
        "air_outage_h": rng.uniform(2.0, 10.0, n),
        "feed_factor": np.where(
            rng.random(n) < 0.5, rng.uniform(0.70, 0.85, n), rng.uniform(1.15, 1.30, n)
        ),
        "ua_loss": rng.uniform(0.5, 0.7, n),
        "o2_drift_per_h": rng.choice([-1.0, 1.0], n) * rng.uniform(0.03, 0.08, n),
        "co2_gain_per_h": rng.uniform(-0.015, 0.015, n),
        "agitation_derate": rng.uniform(0.6, 0.8, n),
        "antifoam_u": rng.random((n, round(MAX_END_H / DT_H) + 1)),
    }
    p["fault"] = _common.assign_faults(rng, n, FAULT_SHARE, len(FAULTS))
    late = p["fault"] == 2
    p["fault_start_h"][late] = rng.uniform(10.0, 36.0, int(late.sum()))
    return p


def simulate(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Integrate all batches at once (explicit Euler, 1 min), recorded every 3 min."""
    n = len(p["x0"])
    code, t_f = p["fault"], p["fault_start_h"]
    n_steps = round(MAX_END_H / DT_H)
    every = round(SAMPLE_H / DT_H)
    names = (
        "x", "s", "a", "vol", "temp", "do", "agitation", "power_kw", "gas_nm3_h", "o2_nm3_h",
        "y_o2_out", "y_co2_out", "feed_l_h", "feed_total", "base_l_h", "antifoam_total",
        "cw_flow", "cw_return", "ph",
    )  # fmt: skip
    rec = {k: np.empty((n, n_steps // every + 1)) for k in names}

    x, s, a = p["x0"].copy(), p["s0"].copy(), np.zeros(n)
    vol, temp = p["vol0_l"].copy(), np.full(n, 37.0)
    feed_total, antifoam, base_prev = np.zeros(n), np.zeros(n), np.zeros(n)
    feed_on = np.full(n, np.inf)  # time the feed started
    for k in range(n_steps + 1):
        t = k * DT_H
        on = t >= t_f
        induced = t >= p["t_induction_h"]
        t_sp = 37.0 - 7.0 * np.clip((t - p["t_induction_h"]) / 1.0, 0.0, 1.0)
        # feed program: exponential from the glucose-depletion signal, constant after induction
        feed_on = np.where(np.isinf(feed_on) & (s < 0.5), t, feed_on)
        f_exp = p["feed0_l_h"] * np.exp(MU_FEED_1_H * np.clip(t - feed_on, 0.0, 60.0))
        f_ind = p["feed0_l_h"] * np.exp(MU_FEED_1_H * np.clip(p["t_induction_h"] - feed_on, 0, 60))
        feed = np.where(induced, 0.7 * np.minimum(f_ind, FEED_RATE_MAX_L_H), f_exp)
        feed = np.where(np.isfinite(feed_on), np.minimum(feed, FEED_RATE_MAX_L_H), 0.0)
        s_feed = p["feed_s_g_l"] * np.where((code == 2) & on, p["feed_factor"], 1.0)
        # uptake, overflow and acetate
        f_t = np.exp(0.07 * (temp - 37.0)) / (1.0 + np.exp((temp - 40.5) / 0.7))
        burden = np.where(induced, 0.7, 1.0)
        s_avail = s + DT_H * feed / vol * s_feed  # this step's feed mixes in first
        qs = p["qs_max"] * burden * f_t * s_avail / (s_avail + 0.05) / (1.0 + a / 5.0)
        qs = np.minimum(qs, s_avail / (DT_H * x))  # no more than is there
        q_ox = np.minimum(qs, p["q_ox_max"] * f_t)
        q_ac_c = np.where(qs < q_ox + 1e-9, 0.15 * a / (a + 0.1) * (1 - qs / p["q_ox_max"]), 0.0)
        our_demand = x * (15.0 * q_ox + 10.0 * q_ac_c + 1.0)  # mmol/L/h
        # DO cascade: agitation, then air, then O2 enrichment, each within its limits
        n_max = np.where(
            (code == 5) & on, p["agitation_derate"] * AGITATION_RPM[1], AGITATION_RPM[1]
        )
        outage = (code == 1) & on & (t < t_f + p["air_outage_h"])
        air_max = np.where(outage, p["air_cap"] * AIR_VVM[1], AIR_VVM[1])
        c_air = C_SAT_AIR_MM
        kla_need = our_demand / (c_air * (1 - DO_SETPOINT))
        air_lo = np.minimum(AIR_VVM[0], air_max)
        n_rpm = AGITATION_RPM[1] * (kla_need / (KLA_MAX_1_H * np.sqrt(air_lo / AIR_VVM[1]))) ** (
            1 / 2.1
        )
        n_rpm = np.clip(n_rpm, AGITATION_RPM[0], n_max)
        kla_n = KLA_MAX_1_H * (n_rpm / AGITATION_RPM[1]) ** 2.1
        vvm = np.clip(AIR_VVM[1] * (kla_need / kla_n) ** 2, air_lo, air_max)
        kla = kla_n * np.sqrt(vvm / AIR_VVM[1])
        y_in = np.clip(0.21 * kla_need / kla, 0.21, O2_FRACTION_MAX)
        c_sat = c_air * y_in / 0.21
        otr_max = kla * c_sat * 0.98
        our = np.minimum(our_demand, otr_max)
        do = np.clip(1.0 - our / (kla * c_sat), 0.0, DO_SETPOINT)
        # oxygen-limited cells burn less and overflow more
        limited = our_demand > otr_max
        q_ox = np.where(limited, np.maximum((our / x - 1.0 - 10 * q_ac_c) / 15.0, 0.0), q_ox)
        q_of = np.maximum(qs - q_ox, 0.0)
        mu = 0.5 * q_ox + 0.15 * q_of + 0.3 * q_ac_c - 0.01
        # gases and heat
        gas = vvm * vol / 1000.0 * 60.0  # Nm3/h
        o2 = gas * (y_in - 0.21) / 0.79
        n_in = gas * 1000.0 / 22.41  # mol/h
        our_mol = our * vol / 1000.0
        cer_mol = our_mol * (1.0 + 0.5 * q_of / (qs + 1e-6))
        out_mol = n_in - our_mol + cer_mol
        y_o2_out = (n_in * y_in - our_mol) / out_mol
        y_co2_out = (0.0004 * n_in + cer_mol) / out_mol
        power = 8.0 * (n_rpm / AGITATION_RPM[1]) ** 3 * (vol / 800.0) ** 0.7 * (1 - 0.2 * vvm)
        q_gen = 0.46 * our * vol / 3600.0 + 0.9 * power  # kW
        ua = UA_KW_K * np.where(
            (code == 3) & on, 1.0 - p["ua_loss"] * np.clip((t - t_f) / 4.0, 0.0, 1.0), 1.0
        )
        heat_cap = vol * 4.1 / 3600.0  # kWh/K
        q_target = q_gen + heat_cap * (temp - t_sp) / 0.1
        dt_cw = np.maximum(temp - p["t_cw_c"], 1.0)
        g = np.clip(q_target / (ua * dt_cw), 0.0, 1.0)
        gc = g * CW_FLOW_MAX_M3_H / (CW_FLOW_MAX_M3_H + CW_HALF_M3_H)
        cw_flow = np.maximum(CW_HALF_M3_H * gc / (1.0 - gc), 1.0)
        q_cool = ua * g * dt_cw
        cw_return = p["t_cw_c"] + q_cool * 3600.0 / (cw_flow * 1000.0 * 4.18)
        # base for growth and acetate; antifoam shots
        base = np.maximum(9.0 * mu * x + 16.7 * (0.5 * q_of - q_ac_c) * x, 0.0) * vol / 13400.0
        ph = 6.9 - 0.04 * np.tanh((base - base_prev) * 20.0) + 0.05 * np.tanh(q_ac_c * x / 0.5)
        base_prev = base
        shot = p["antifoam_u"][:, k] < 0.004 * vvm * (1.0 + x / 30.0)
        if k % every == 0:
            j = k // every
            for key, val in (
                ("x", x),
                ("s", s),
                ("a", a),
                ("vol", vol),
                ("temp", temp),
                ("do", do * 100),
                ("agitation", n_rpm),
                ("power_kw", power),
                ("gas_nm3_h", gas - o2),
                ("o2_nm3_h", o2),
                ("y_o2_out", 100 * y_o2_out),
                ("y_co2_out", 100 * y_co2_out),
                ("feed_l_h", feed),
                ("feed_total", feed_total),
                ("base_l_h", base),
                ("antifoam_total", antifoam),
                ("cw_flow", cw_flow),
                ("cw_return", cw_return),
                ("ph", ph),
            ):
                rec[key][:, j] = val
        d = (feed + base) / vol
        x = np.maximum(x + DT_H * (mu * x - d * x), 1e-3)
        s = np.maximum(s + DT_H * (-qs * x + feed / vol * s_feed - d * s), 0.0)
        a = np.maximum(a + DT_H * (0.5 * q_of * x - q_ac_c * x - d * a), 0.0)
        temp = temp + DT_H * (q_gen - q_cool) / heat_cap
        vol = vol + DT_H * (feed + base - 0.0008 * gas) + 0.05 * shot
        feed_total = feed_total + DT_H * feed
        antifoam = antifoam + 0.05 * shot
    rec["t_h"] = np.arange(rec["x"].shape[1]) * SAMPLE_H
    return rec


def measure(
    p: dict[str, np.ndarray], s: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tags as logged: noise, the off-gas drift (sensor fault), 2-hourly lab samples, gaps."""
    n, _ = s["x"].shape
    t = s["t_h"]
    code, t_f = p["fault"], p["fault_start_h"]

    def noisy(x, sd_abs=0.0, sd_rel=0.0):
        return x * (1 + rng.normal(0, sd_rel, x.shape)) + rng.normal(0, sd_abs, x.shape)

    since = np.where((code == 4)[:, None], np.clip(t[None, :] - t_f[:, None], 0.0, None), 0.0)
    o2_read = s["y_o2_out"] + p["o2_drift_per_h"][:, None] * since
    co2_read = s["y_co2_out"] * (1.0 + p["co2_gain_per_h"][:, None] * since)
    online = {
        "temperature_c": noisy(s["temp"], 0.03),
        "cw_flow_m3_h": noisy(s["cw_flow"], 0.03, 0.02),
        "cw_return_c": noisy(s["cw_return"], 0.1),
        "do_pct": noisy(s["do"], 0.8),
        "ph": noisy(s["ph"], 0.01),
        "agitation_rpm": noisy(s["agitation"], 2.0),
        "agitator_power_kw": noisy(s["power_kw"], 0.05, 0.02),
        "air_flow_nm3_h": noisy(s["gas_nm3_h"], 0.2, 0.01),
        "o2_flow_nm3_h": np.maximum(noisy(s["o2_nm3_h"], 0.05), 0.0),
        "pressure_barg": noisy(0.5 + 0.03 * s["gas_nm3_h"] / 70.0, 0.004),
        "offgas_o2_pct": noisy(o2_read, 0.03),
        "offgas_co2_pct": noisy(co2_read, 0.02),
        "feed_flow_l_h": noisy(s["feed_l_h"], 0.0, 0.01),
        "feed_total_l": np.round(s["feed_total"], 1),
        "base_flow_l_h": np.maximum(noisy(s["base_l_h"], 0.02, 0.05), 0.0),
        "antifoam_total_l": np.round(s["antifoam_total"], 2),
        "weight_kg": noisy(s["vol"] * 1.02, 0.5),
    }
    tags = {k: (t, _common.drop_samples(rng, v, 0.01, 0.1, (5, 40))) for k, v in online.items()}
    t_lab = np.clip(np.arange(0, 43, 2.0)[None, :] + rng.uniform(0.0, 0.25, (n, 22)), 0, None)
    lab = {
        "od600": (s["x"] * 2.5, 0.05, 0.05),
        "glucose_g_l": (s["s"], 0.05, 0.05),
        "acetate_g_l": (s["a"], 0.05, 0.05),
    }
    step = t[1] - t[0]
    idx = np.clip(np.round(t_lab / step).astype(int), 0, len(t) - 1)
    rows = np.arange(n)[:, None]
    for tag, (x, sd_abs, sd_rel) in lab.items():
        v = np.maximum(noisy(x[rows, idx], sd_abs, sd_rel), 0.0)
        v[rng.random(v.shape) < 0.04] = np.nan
        tags[tag] = (t_lab, v)
    return tags


def generate(seed: int, n: int) -> tuple:
    """Parameters, true trajectories, long series and outcomes of ``n`` batches."""
    r_params, r_measure, r_split = _common.spawn(seed, 3)
    p = draw_batches(r_params, n)
    s = simulate(p)
    ids = np.array([f"ECO-{i:04d}" for i in range(n)], dtype=object)
    series = _common.long_frame(ids, measure(p, s, r_measure), p["end_h"])
    outcomes = _common.outcomes_frame(ids, p["fault"], FAULTS, p["fault_start_h"])
    return p, s, series, outcomes, r_split


def make(seed: int = 0, size: str = "full") -> dict:
    """E. coli fed-batch data set: 150 batches (90 train / 60 test), 40 for ``size="small"``.

    Raises
    ------
    ValueError
        If ``size`` is not "full" or "small".
    """
    _common.check_size(size)
    _, _, series, outcomes, r_split = generate(seed, N_BATCHES[size])
    test = _common.split_batches(r_split, outcomes["label"].to_numpy())
    return _common.batch_result(series, outcomes, test, _common.batch_fit_args(1.0), DESCRIPTION)


DESCRIPTION = (
    "E. coli high-cell-density fed-batch, 38.5-41.5 h at 3-min samples plus 2-hourly lab "
    "samples, 20 tags; overflow (acetate) metabolism, exponential feed, induction at ~24 h "
    "with a 37->30 C shift, DO cascade. Faults (45 %): aeration outage, feed concentration "
    "error, cooling degradation, off-gas analyser drift (sensor only), agitator derate."
)
