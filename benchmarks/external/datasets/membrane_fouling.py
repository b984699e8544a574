"""Ultrafiltration skids: membrane modules run to failure or to planned replacement, 2-h samples.

Mechanism (written for this suite): each skid filters river water at a flux setpoint. The
transmembrane pressure (TMP) is viscosity (temperature) x flux x total resistance: the clean
membrane, reversible fouling that builds with the feed's turbidity and is mostly removed by a
clean-in-place (CIP) every 96 h, and irreversible fouling that grows with the load and with
itself (pore constriction). At the TMP ceiling (1.5 bar) the skid loses flux. Fibres also
break, more often at high TMP and after many CIPs (chemical ageing); broken fibres raise the
permeate turbidity and the daily pressure-decay test (PDT).

A module *fails* when its flux at the TMP ceiling is below 60 % of the setpoint (fouled out)
or when a PDT exceeds 0.5 kPa/min (integrity breach); it is then replaced. About 30 % of
modules get a planned replacement first (a censored run), and each skid's last module is still
running when the record ends (censored too). Feed temperature and turbidity follow seasons
and storm events shared by all skids on the river.

Each module is its own asset (``UF03-M2``: skid 3, second module): the product's input marks
failures but not planned replacements, so a replaced module must not continue under the same
id. Columns: ``asset``, ``time`` (UTC timestamps every 2 h, a few rows missing), ``failure``
(1 on a failure row), and the sensors ``feed_temp_c``, ``feed_turbidity_ntu``, ``flux_lmh``,
``tmp_bar``, ``permeability_20c``, ``backwash_p_bar``, ``permeate_turbidity_ntu``,
``pdt_kpa_min`` (daily test, the last result held), ``cip_count``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import _common

__all__ = ["DESCRIPTION", "SENSORS", "make", "simulate_skids"]

SENSORS = [
    "feed_temp_c", "feed_turbidity_ntu", "flux_lmh", "tmp_bar", "permeability_20c",
    "backwash_p_bar", "permeate_turbidity_ntu", "pdt_kpa_min", "cip_count",
]  # fmt: skip
SKIDS = {"full": (10, 6), "small": (4, 4)}
HOURS = {"full": 2 * 8760, "small": 8760}
STEP_H = 2.0
FLUX_SP_LMH = 60.0
TMP_MAX_BAR = 1.5
TMP_CLEAN_BAR = 0.35
CIP_EVERY_H = 96.0
PDT_LIMIT = 0.5
FOULED_OUT = 0.6
RUL_CAP_H = 1000.0
START = pd.Timestamp("2024-01-01", tz="UTC")


def _river(rng: np.random.Generator, hours: float) -> tuple[np.ndarray, np.ndarray]:
    """Feed temperature and turbidity on the sample grid (shared by every skid)."""
    t = np.arange(0.0, hours, STEP_H)
    season = 2 * np.pi * t / 8760.0
    temp = 13.0 - 8.0 * np.cos(season) + 0.6 * np.sin(2 * np.pi * t / 24.0)
    turb = 3.0 + 1.5 * np.sin(season + 0.8)
    n_storms = rng.poisson(hours / 720.0)
    for start, size in zip(
        rng.uniform(0, hours, n_storms), rng.uniform(8, 40, n_storms), strict=True
    ):
        turb = turb + np.where(t >= start, size * np.exp(-(t - start) / 30.0), 0.0)
    return temp, turb


def simulate_skids(rng: np.random.Generator, n_skids: int, hours: float) -> pd.DataFrame:
    """Every skid's record, module after module (true states plus measured sensors)."""
    temp, turb = _river(rng, hours)
    n_t = len(temp)
    max_runs = 40
    alpha = 0.0015 * np.exp(rng.normal(0, 0.35, (n_skids, max_runs)))
    kappa = 0.012 * np.exp(rng.normal(0, 0.2, (n_skids, max_runs)))
    fragility = np.exp(rng.normal(0, 0.5, (n_skids, max_runs)))
    pm_at = np.where(
        rng.random((n_skids, max_runs)) < 0.3,
        rng.uniform(1200, 4500, (n_skids, max_runs)),
        np.inf,
    )
    u_break = rng.random((n_skids, n_t))
    offset = rng.uniform(0, CIP_EVERY_H, n_skids)  # CIP phase of each skid
    run = np.zeros(n_skids, dtype=int)
    age = np.zeros(n_skids)
    r_irr, r_rev, breaks, cips = (np.zeros(n_skids) for _ in range(4))
    pdt = np.full(n_skids, 0.08)
    sk = np.arange(n_skids)
    cols = {
        k: np.empty((n_t, n_skids))
        for k in ("run", "age", "flux", "tmp", "r", "breaks", "pdt", "cips", "end")
    }
    for i in range(n_t):
        t = i * STEP_H
        visc = np.exp(-0.0239 * (temp[i] - 20.0))
        resistance = 1.0 + r_irr + r_rev
        tmp_needed = TMP_CLEAN_BAR * visc * resistance
        flux = FLUX_SP_LMH * np.minimum(1.0, TMP_MAX_BAR / tmp_needed)
        tmp = np.minimum(tmp_needed, TMP_MAX_BAR)
        load = turb[i] / 3.0 * flux / FLUX_SP_LMH
        r_irr = r_irr + STEP_H * alpha[sk, run] * load * (1.0 + r_irr / 4.0)
        r_rev = r_rev + STEP_H * kappa[sk, run] * load
        cip = np.floor((t + offset) / CIP_EVERY_H) > np.floor((t - STEP_H + offset) / CIP_EVERY_H)
        r_rev = np.where(cip, 0.1 * r_rev, r_rev)
        r_irr = np.where(cip, 0.98 * r_irr, r_irr)
        cips = cips + cip
        hazard = 2e-4 * fragility[sk, run] * np.exp(0.03 * cips) * (tmp / 0.5) ** 1.5
        breaks = breaks + (u_break[:, i] < hazard * STEP_H)
        daily = (t % 24.0) == 6.0
        pdt = np.where(daily, 0.08 + 0.035 * breaks + rng.normal(0, 0.01, n_skids), pdt)
        capable = TMP_MAX_BAR / (TMP_CLEAN_BAR * (1.0 + r_irr))  # flux share at 20 C, clean
        failed = (capable < FOULED_OUT) | (daily & (pdt > PDT_LIMIT))
        planned = age + STEP_H >= pm_at[sk, run]
        for key, val in (
            ("run", run),
            ("age", age),
            ("flux", flux),
            ("tmp", tmp),
            ("r", r_irr + r_rev),
            ("breaks", breaks),
            ("pdt", pdt),
            ("cips", cips),
        ):
            cols[key][i] = val
        cols["end"][i] = np.where(failed, 1, np.where(planned, 2, 0))
        renew = failed | planned
        run = np.minimum(run + renew, max_runs - 1)
        age = np.where(renew, 0.0, age + STEP_H)
        for state in (r_irr, r_rev, breaks, cips):
            state[renew] = 0.0
        pdt = np.where(renew, 0.08, pdt)
    frame = pd.DataFrame(
        {k: v.T.ravel() for k, v in cols.items()}
        | {
            "skid": np.repeat(sk, n_t),
            "t_h": np.tile(np.arange(n_t) * STEP_H, n_skids),
            "temp": np.tile(temp, n_skids),
            "turb": np.tile(turb, n_skids),
        }
    )
    return _measure(rng, frame)


def _measure(rng: np.random.Generator, f: pd.DataFrame) -> pd.DataFrame:
    """Sensor columns with noise; a few rows lost; one asset id per module."""
    n = len(f)
    f["asset"] = [
        f"UF{s:02d}-M{r + 1}" for s, r in zip(f["skid"], f["run"].astype(int), strict=True)
    ]
    f["time"] = START + pd.to_timedelta(f["t_h"], unit="h")
    f["failure"] = (f["end"] == 1).astype(int)
    f["feed_temp_c"] = f["temp"] + rng.normal(0, 0.1, n)
    f["feed_turbidity_ntu"] = f["turb"] * np.exp(rng.normal(0, 0.05, n))
    f["flux_lmh"] = f["flux"] + rng.normal(0, 0.5, n)
    f["tmp_bar"] = f["tmp"] + rng.normal(0, 0.01, n)
    visc = np.exp(-0.0239 * (f["feed_temp_c"] - 20.0))
    f["permeability_20c"] = f["flux_lmh"] / f["tmp_bar"] / visc
    f["backwash_p_bar"] = 0.5 + 0.2 * f["r"] * visc + rng.normal(0, 0.01, n)
    f["permeate_turbidity_ntu"] = np.maximum(
        0.02 + 0.004 * f["breaks"] * f["turb"] / 3.0 + rng.normal(0, 0.005, n), 0.0
    )
    f["pdt_kpa_min"] = np.round(f["pdt"], 3)
    f["cip_count"] = f["cips"]
    lost = (rng.random(n) < 0.01) & (f["end"] == 0)  # failure rows are always kept
    for col in ("feed_turbidity_ntu", "permeate_turbidity_ntu"):
        f.loc[rng.random(n) < 0.01, col] = np.nan
    return f[~lost].reset_index(drop=True)


def make(seed: int = 0, size: str = "full") -> dict:
    """Train skids' modules (failed and censored) and test skids' failed modules cut early.

    Raises
    ------
    ValueError
        If ``size`` is not "full" or "small".
    """
    _common.check_size(size)
    r_sim, r_cut = _common.spawn(seed, 2)
    n_train, n_test = SKIDS[size]
    f = simulate_skids(r_sim, n_train + n_test, HOURS[size])
    keep = ["asset", "time", "failure", *SENSORS]
    train = f[f["skid"] < n_train]
    test_all = f[f["skid"] >= n_train]
    failed = test_all.groupby("asset")["failure"].max()
    parts, truth = [], []
    for asset in failed.index[failed.to_numpy() == 1]:
        rows = test_all[test_all["asset"] == asset]
        if len(rows) < 60:
            continue
        cut = _cut_rows(r_cut, len(rows))
        parts.append(rows.iloc[:cut])
        truth.append((asset, float(rows["t_h"].iloc[-1] - rows["t_h"].iloc[cut - 1])))
    return {
        "runs_train": train[keep].reset_index(drop=True),
        "runs_test": pd.concat(parts)[keep].assign(failure=0).reset_index(drop=True),
        "truth_test": pd.DataFrame(truth, columns=["asset", "rul"]),
        "fit_args": ["--asset-col", "asset", "--time-col", "time", "--failure-col", "failure"],
        "rul_cap": RUL_CAP_H,
        "setting_cols": [],
        "description": DESCRIPTION,
    }


def _cut_rows(rng: np.random.Generator, n_rows: int) -> int:
    """Rows kept of a test module: 20-95 % of its life, at least 30 rows, never its last."""
    return int(np.clip(rng.integers(int(0.2 * n_rows), int(0.95 * n_rows)), 30, n_rows - 1))


DESCRIPTION = (
    "Ultrafiltration modules on river-water skids, 2-h UTC timestamps, 9 sensors; fouling to "
    "a TMP ceiling or fibre breakage to a failed pressure-decay test; ~30 % of modules replaced "
    "on plan first (censored), each skid's last module still running. Split by skid; test "
    "modules cut at 20-95 % of life; RUL in hours capped at 1000."
)
