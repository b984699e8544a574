"""Multi-stage centrifugal compressor run to failure, one row per operating cycle.

Mechanism (written for this suite): a four-stage intercooled compressor at a shaft speed,
suction pressure and inlet-guide-vane angle set per cycle (the three setting columns). Each
stage adds an isentropic head proportional to tip speed squared, reduced off its design flow;
its efficiency turns that into a temperature rise and a pressure ratio. Two damage processes,
each a normalised damage that grows convexly from a small initial value to 1 at failure:

- impeller erosion (stages 1-2): head, efficiency and flow capacity fall; discharge
  pressures drop, discharge temperatures and power per unit of flow rise, a little imbalance;
- bearing wear: vibration grows (quadratically), bearing temperatures, axial displacement and
  friction power rise, lube-oil pressure sags.

In ``modes=1`` every unit fails by erosion; with ``modes=2`` half fail by bearing wear, the
other process still creeping along. With ``regimes=6`` every cycle runs in one of six
operating points (with setting noise), so raw sensor levels mostly say which regime it is.
Several sensors carry little or nothing (suction temperature, intercooler outlets, oil
supply temperature). Test units stop at a random cycle before failure; the truth is the
remaining number of cycles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import _common

__all__ = ["REGIMES", "SENSORS", "SETTINGS", "make_variant", "simulate_units"]

SETTINGS = ["speed_pct", "suction_p_bar", "igv_deg"]
SENSORS = [
    "suction_t_c", "p1_bar", "p2_bar", "p3_bar", "p4_bar", "t1_c", "t2_c", "t3_c", "t4_c",
    "ic1_out_c", "ic2_out_c", "ic3_out_c", "mass_flow_kg_s", "shaft_power_kw", "speed_rpm",
    "vib_de_um", "vib_nde_um", "brg_de_c", "brg_nde_c", "oil_supply_c", "oil_p_bar",
    "axial_um", "seal_gas_nm3_h",
]  # fmt: skip
#: (speed %, suction pressure bar a, IGV angle deg) of the six operating points.
REGIMES = np.array(
    [
        [100.0, 1.01, 0.0],
        [96.0, 1.01, 8.0],
        [92.0, 1.25, 15.0],
        [100.0, 1.25, 4.0],
        [88.0, 0.95, 20.0],
        [104.0, 1.10, -5.0],
    ]
)
N_UNITS = {"full": (100, 100), "small": (20, 20)}
RUL_CAP = 125.0
DESIGN_RPM = 9800.0
CP = 1.005  # kJ/kg/K
STAGE_HEAD = np.array([58.0, 55.0, 52.0, 48.0])  # kJ/kg at design speed
STAGE_ETA = np.array([0.82, 0.83, 0.81, 0.80])


def _damage(cycle, life, d0, curvature):
    """Damage from ``d0`` at cycle 0 to 1 at ``life``, convex with ``curvature``."""
    x = np.clip(cycle / life, 0.0, 1.0)
    return d0 + (1.0 - d0) * np.expm1(curvature * x) / np.expm1(curvature)


def simulate_units(rng: np.random.Generator, n: int, modes: int, regimes: int) -> pd.DataFrame:
    """Rows of ``n`` units from their first cycle to failure (no noise-free columns).

    Returns
    -------
    pandas.DataFrame
        ``unit, cycle, life, mode`` (1 erosion, 2 bearing), the settings and the sensors.
    """
    life = np.round(120 + 230 * rng.beta(2.0, 2.5, n)).astype(int)
    mode = np.ones(n, dtype=int) if modes == 1 else rng.permutation(np.arange(n) % 2 + 1)
    unit = np.repeat(np.arange(n), life)
    cycle = np.concatenate([np.arange(1, L + 1) for L in life]).astype(float)
    rows = len(unit)
    L = life[unit].astype(float)
    # damage: the failing process reaches 1 at the last cycle; the other one creeps
    ero_d0, brg_d0 = rng.uniform(0.0, 0.15, n), rng.uniform(0.0, 0.1, n)
    ero_k, brg_k = rng.uniform(2.0, 5.0, n), rng.uniform(3.0, 6.0, n)
    ero_end = np.where(mode == 1, 1.0, rng.uniform(0.1, 0.3, n))
    brg_end = np.where(mode == 2, 1.0, rng.uniform(0.05, 0.2, n) if modes == 2 else 0.0)
    ero = _damage(cycle, L, ero_d0[unit], ero_k[unit]) * ero_end[unit]
    brg = _damage(cycle, L, brg_d0[unit], brg_k[unit]) * np.maximum(brg_end, brg_d0)[unit]
    # operating point
    reg = rng.integers(0, regimes, rows) if regimes > 1 else np.zeros(rows, dtype=int)
    settings = REGIMES[reg] + rng.normal(0, 1, (rows, 3)) * [0.15, 0.004, 0.2]
    speed, p_s, igv = settings.T
    t_s = 303.15 + rng.normal(0, 0.6, rows)
    t_cw = 301.0 + rng.normal(0, 0.5, n)[unit]
    unit_eta = 1.0 + rng.normal(0, 0.005, (n, 4))[unit]
    # flow: speed, vanes, eroded capacity
    n_rel = speed / 100.0
    capacity = 1.0 - 0.04 * ero
    q_rel = n_rel * (1.0 - 0.012 * igv) * capacity  # volumetric flow / design
    phi = q_rel / n_rel  # flow coefficient / design
    rho = p_s * 1e5 / (287.0 * t_s)
    mass = 16.0 * q_rel * rho / 1.16
    head_loss = np.stack([0.05 * ero, 0.03 * ero, 0 * ero, 0 * ero], axis=1)
    eta_loss = np.stack([0.06 * ero, 0.04 * ero, 0 * ero, 0 * ero], axis=1)
    off_design = 1.0 - 0.5 * (phi - 1.0)[:, None] ** 2
    head = STAGE_HEAD * n_rel[:, None] ** 2 * off_design * (1 - head_loss)
    eta = STAGE_ETA * unit_eta * off_design * (1 - eta_loss)
    p, t_in = p_s.copy(), t_s.copy()
    out = {}
    power = np.zeros(rows)
    for i in range(4):
        dt_is = head[:, i] / CP
        dt = dt_is / eta[:, i]
        p = p * (1.0 + dt_is / t_in) ** 3.5
        t_out = t_in + dt
        out[f"p{i + 1}_bar"] = p
        out[f"t{i + 1}_c"] = t_out - 273.15
        power += mass * CP * dt
        if i < 3:
            t_in = t_cw + 8.0 + 0.3 * (mass - 16.0) + rng.normal(0, 0.3, rows)
            out[f"ic{i + 1}_out_c"] = t_in - 273.15
    friction = (40.0 + 35.0 * brg) * n_rel**2
    out["shaft_power_kw"] = power / 0.985 + friction
    out["mass_flow_kg_s"] = mass
    out["speed_rpm"] = DESIGN_RPM * n_rel
    out["suction_t_c"] = t_s - 273.15
    vib_base = 14.0 * n_rel**2 * (1.0 + rng.normal(0, 0.05, n)[unit])
    out["vib_de_um"] = vib_base + 4.0 * ero + 28.0 * brg**2
    out["vib_nde_um"] = 0.8 * vib_base + 2.0 * ero + 16.0 * brg**2
    oil = 45.0 + rng.normal(0, 0.3, rows)
    out["oil_supply_c"] = oil
    out["brg_de_c"] = oil + 22.0 * n_rel**1.5 + 9.0 * brg
    out["brg_nde_c"] = oil + 18.0 * n_rel**1.5 + 6.0 * brg
    out["oil_p_bar"] = 2.5 - 0.12 * brg
    out["axial_um"] = 120.0 + 10.0 * (p - 9.0) / 3.0 + 45.0 * brg
    out["seal_gas_nm3_h"] = 6.0 + 0.4 * (p - 9.0) + 1.5 * brg
    noise = {
        "suction_t_c": 0.0, "p1_bar": 0.01, "p2_bar": 0.02, "p3_bar": 0.04, "p4_bar": 0.06,
        "t1_c": 0.5, "t2_c": 0.5, "t3_c": 0.5, "t4_c": 0.5, "ic1_out_c": 0.2,
        "ic2_out_c": 0.2, "ic3_out_c": 0.2, "mass_flow_kg_s": 0.08, "shaft_power_kw": 25.0,
        "speed_rpm": 5.0, "vib_de_um": 1.2, "vib_nde_um": 1.0, "brg_de_c": 0.6,
        "brg_nde_c": 0.6, "oil_supply_c": 0.0, "oil_p_bar": 0.02, "axial_um": 3.0,
        "seal_gas_nm3_h": 0.15,
    }  # fmt: skip
    frame = pd.DataFrame(
        {"unit": unit, "cycle": cycle.astype(int), "life": L.astype(int), "mode": mode[unit]}
    )
    for k, v in zip(SETTINGS, settings.T, strict=True):
        frame[k] = np.round(v, 4)
    for k in SENSORS:
        frame[k] = np.round(out[k] + rng.normal(0, noise[k], rows), 4)
    return frame


def _truncate(rng: np.random.Generator, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cut each unit at a random cycle (at least 31 observed, at least 5 before failure)."""
    life = frame.groupby("unit")["life"].first()
    cut = pd.Series([rng.integers(31, L - 4) if L > 36 else L - 5 for L in life], index=life.index)
    kept = frame[frame["cycle"] <= frame["unit"].map(cut)]
    truth = pd.DataFrame({"unit": life.index, "rul": (life - cut).to_numpy(dtype=float)})
    return kept, truth


def make_variant(seed: int, size: str, *, modes: int, regimes: int, prefix: str) -> dict:
    """A compressor data set: train units to failure, test units cut before it."""
    _common.check_size(size)
    r_train, r_test, r_cut = _common.spawn(seed, 3)
    n_train, n_test = N_UNITS[size]
    train = simulate_units(r_train, n_train, modes, regimes)
    test, truth = _truncate(r_cut, simulate_units(r_test, n_test, modes, regimes))

    def table(frame, tag):
        out = frame.drop(columns=["life", "mode"]).rename(columns={"unit": "asset"})
        out["asset"] = [f"{prefix}-{tag}{u:03d}" for u in out["asset"]]
        return out.reset_index(drop=True)

    truth["asset"] = [f"{prefix}-T{u:03d}" for u in truth["unit"]]
    return {
        "runs_train": table(train, "U"),
        "runs_test": table(test, "T"),
        "truth_test": truth[["asset", "rul"]],
        "fit_args": ["--asset-col", "asset", "--time-col", "cycle"],
        "rul_cap": RUL_CAP,
        "setting_cols": list(SETTINGS),
        "modes_train": train.groupby("unit")["mode"].first().to_numpy(),
        "description": "",
    }
