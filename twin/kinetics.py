"""Fed-batch bioreactor kinetics: Monod growth, Luedeking-Piret product, oxygen cascade.

Many batches are integrated at once, one row each, with a fixed-step classical RK4 on the
biological states (biomass X, substrate S, product P, volume V); Python loops only over
time steps. Equations (units: g/L, L, h):

- mu = mu_max * S/(Ks + S) * DO/(Ko + DO)
- dX/dt = mu*X - (F/V)*X
- dS/dt = -(mu/Yxs + m)*X + (F/V)*(Sf - S)
- dP/dt = (alpha*mu + beta)*X - (F/V)*P
- dV/dt = F

Oxygen is fast (kLa*dt >> 1 at a one-minute step), so it is taken at quasi-steady state:
OUR = (mu/Yxo)*X / 32 * 1000 mmol/L/h, and the DO cascade raises agitation, then airflow,
then O2 enrichment until kLa * C*(1 - DO_sp/100) meets OUR; past the top of the cascade DO
falls to 100*(1 - OUR/(kLa_max*C*)). The DO of the previous step enters the Monod oxygen
term (explicit coupling; the error is of order dt). Substrate consumption is limited to what
is present, so S never goes negative and the substrate balance closes exactly; the consumed
integral is tracked so :func:`substrate_balance_residual_g` can check it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AerationControl",
    "FedBatchTrajectory",
    "FeedProfile",
    "KineticParameters",
    "integrate_fed_batch",
    "substrate_balance_residual_g",
]

_O2_G_PER_MOL = 32.0


@dataclass(frozen=True)
class KineticParameters:
    """Monod / Luedeking-Piret parameters; each a scalar or one value per batch."""

    mu_max_per_h: float | np.ndarray = 0.6
    ks_g_per_l: float | np.ndarray = 0.05
    ko_pct: float | np.ndarray = 5.0
    yxs_g_per_g: float | np.ndarray = 0.5
    maintenance_g_per_g_h: float | np.ndarray = 0.02
    yxo_g_per_g: float | np.ndarray = 1.0
    alpha_g_per_g: float | np.ndarray = 0.06
    beta_g_per_g_h: float | np.ndarray = 0.003
    respiratory_quotient: float | np.ndarray = 1.0


@dataclass(frozen=True)
class FeedProfile:
    """Exponential feed from ``feed_start_h``, capped, stopped at ``max_volume_l``."""

    feed_start_h: float = 10.0
    initial_feed_l_per_h: float = 2.0
    feed_growth_per_h: float = 0.1
    max_feed_l_per_h: float = 20.0
    feed_substrate_g_per_l: float = 500.0
    max_volume_l: float = 1600.0


@dataclass(frozen=True)
class AerationControl:
    """DO cascade: agitation, then airflow, then O2 enrichment (van 't Riet kLa)."""

    do_setpoint_pct: float = 35.0
    agitation_min_rpm: float = 200.0
    agitation_max_rpm: float = 800.0
    airflow_min_vvm: float = 0.5
    airflow_max_vvm: float = 1.5
    o2_fraction_max: float = 0.4
    kla_ref_per_h: float = 500.0
    power_exponent_a: float = 0.5
    gas_exponent_b: float = 0.5
    o2_saturation_mmol_per_l: float = 0.21


@dataclass(frozen=True)
class FedBatchTrajectory:
    """States and control outputs, arrays of shape (n_batches, n_steps + 1)."""

    time_h: np.ndarray
    biomass_g_per_l: np.ndarray
    substrate_g_per_l: np.ndarray
    product_g_per_l: np.ndarray
    volume_l: np.ndarray
    feed_l_per_h: np.ndarray
    mu_per_h: np.ndarray
    do_pct: np.ndarray
    our_mmol_per_l_h: np.ndarray
    cer_mmol_per_l_h: np.ndarray
    agitation_rpm: np.ndarray
    airflow_vvm: np.ndarray
    o2_fraction: np.ndarray
    kla_per_h: np.ndarray
    substrate_fed_g: np.ndarray
    substrate_consumed_g: np.ndarray


def _per_batch(name: str, value, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},); got shape {arr.shape}")
    return arr


def _per_step(name: str, value, n: int, steps: int, default: float) -> np.ndarray:
    if value is None:
        return np.full((n, steps), default)
    arr = np.asarray(value, dtype=np.float64)
    try:
        return np.broadcast_to(arr, (n, steps))
    except ValueError:
        raise ValueError(
            f"{name} must broadcast to (n_batches, n_steps) = ({n}, {steps}); got shape {arr.shape}"
        ) from None


def _kla(aer: AerationControl, rpm, vvm):
    return (
        aer.kla_ref_per_h
        * (rpm / aer.agitation_max_rpm) ** (3.0 * aer.power_exponent_a)
        * (vvm / aer.airflow_max_vvm) ** aer.gas_exponent_b
    )


def _cascade(aer: AerationControl, our, cap_rpm):
    """Agitation, airflow, O2 fraction, kLa and DO meeting ``our`` (vectorised)."""
    c_air = aer.o2_saturation_mmol_per_l
    drive = 1.0 - aer.do_setpoint_pct / 100.0
    need = our / (c_air * drive)  # kLa needed with air at the setpoint
    a3 = 3.0 * aer.power_exponent_a
    cap = np.maximum(np.minimum(cap_rpm, aer.agitation_max_rpm), 1e-6)
    kla_min_air = _kla(aer, np.minimum(aer.agitation_min_rpm, cap), aer.airflow_min_vvm)
    # stage 1: agitation at min airflow
    rpm = aer.agitation_max_rpm * (
        need
        / (aer.kla_ref_per_h * (aer.airflow_min_vvm / aer.airflow_max_vvm) ** aer.gas_exponent_b)
    ) ** (1.0 / a3)
    rpm = np.clip(rpm, np.minimum(aer.agitation_min_rpm, cap), cap)
    kla_rpm = _kla(aer, rpm, aer.airflow_min_vvm)
    # stage 2: airflow at the agitation ceiling
    vvm = np.full_like(rpm, aer.airflow_min_vvm)
    short = need > kla_rpm * (1.0 + 1e-9)
    base = aer.kla_ref_per_h * (cap / aer.agitation_max_rpm) ** a3
    vvm_need = aer.airflow_max_vvm * (need / base) ** (1.0 / aer.gas_exponent_b)
    vvm = np.where(short, np.clip(vvm_need, aer.airflow_min_vvm, aer.airflow_max_vvm), vvm)
    kla = np.maximum(np.where(short, _kla(aer, rpm, vvm), kla_rpm), kla_min_air)
    # stage 3: O2 enrichment
    o2 = np.full_like(rpm, 0.21)
    short = our > kla * c_air * drive * (1.0 + 1e-9)
    o2_need = 0.21 * our / (kla * c_air * drive)
    o2 = np.where(short, np.clip(o2_need, 0.21, aer.o2_fraction_max), o2)
    c_sat = c_air * o2 / 0.21
    do = np.where(
        our > kla * c_sat * drive * (1.0 + 1e-9),
        100.0 * (1.0 - our / (kla * c_sat)),
        aer.do_setpoint_pct,
    )
    return rpm, vvm, o2, kla, np.clip(do, 0.0, 100.0)


def integrate_fed_batch(
    initial_biomass_g_per_l,
    initial_substrate_g_per_l,
    initial_volume_l,
    n_steps: int,
    *,
    params: KineticParameters,
    feed: FeedProfile,
    aeration: AerationControl,
    dt_h: float = 1.0 / 60.0,
    feed_multiplier=None,
    agitation_cap_rpm=None,
    initial_product_g_per_l=0.0,
    n_batches: int | None = None,
) -> FedBatchTrajectory:
    """Integrate fed-batch runs (one per row) for ``n_steps`` steps of ``dt_h`` hours.

    Parameters
    ----------
    initial_biomass_g_per_l, initial_substrate_g_per_l, initial_volume_l : float or ndarray
        Initial state, scalar or one value per batch.
    n_steps : int
        Number of steps (every batch is integrated to the same length; callers mask).
    params, feed, aeration : KineticParameters, FeedProfile, AerationControl
        Model parameters; every field of ``params`` may be per batch.
    dt_h : float
        Step in hours (> 0).
    feed_multiplier : array-like, optional
        Share of the commanded feed actually delivered, broadcast to (n_batches, n_steps).
    agitation_cap_rpm : array-like, optional
        Highest agitation the drive reaches, broadcast to (n_batches, n_steps).

    Raises
    ------
    ValueError
        If a parameter breaks its rule; the message names it and its value.
    """
    if not dt_h > 0:
        raise ValueError(f"dt_h must be > 0; got {dt_h}")
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be >= 1; got {n_steps}")
    sizes = [
        np.size(v)
        for v in (
            initial_biomass_g_per_l,
            initial_substrate_g_per_l,
            initial_volume_l,
            params.mu_max_per_h,
        )
    ]
    n = n_batches or max(sizes)
    for f in ("feed_multiplier", "agitation_cap_rpm"):
        v = locals()[f]
        if v is not None and np.ndim(v) == 2:
            n = max(n, np.shape(v)[0])
    x = _per_batch("initial_biomass_g_per_l", initial_biomass_g_per_l, n).copy()
    s = _per_batch("initial_substrate_g_per_l", initial_substrate_g_per_l, n).copy()
    v = _per_batch("initial_volume_l", initial_volume_l, n).copy()
    p = _per_batch("initial_product_g_per_l", initial_product_g_per_l, n).copy()
    for name, value in (("initial_biomass_g_per_l", x), ("initial_volume_l", v)):
        if np.any(value <= 0):
            raise ValueError(f"{name} must be > 0; got {value.min()}")
    if np.any(s < 0):
        raise ValueError(f"initial_substrate_g_per_l must be >= 0; got {s.min()}")
    pr = {k: _per_batch(k, getattr(params, k), n) for k in KineticParameters.__dataclass_fields__}
    for k in ("mu_max_per_h", "yxs_g_per_g", "yxo_g_per_g", "ks_g_per_l", "ko_pct"):
        if np.any(pr[k] <= 0):
            raise ValueError(f"params.{k} must be > 0; got {pr[k].min()}")
    steps = int(n_steps)
    fmul = _per_step("feed_multiplier", feed_multiplier, n, steps, 1.0)
    cap = _per_step("agitation_cap_rpm", agitation_cap_rpm, n, steps, aeration.agitation_max_rpm)
    sf = feed.feed_substrate_g_per_l

    # time-major internally (rows written contiguously), transposed views on return
    shape = (steps + 1, n)
    fmul = np.ascontiguousarray(fmul.T)
    cap = np.ascontiguousarray(cap.T)
    out = {
        k: np.empty(shape)
        for k in (
            "x",
            "s",
            "p",
            "v",
            "f",
            "mu",
            "do",
            "our",
            "rpm",
            "vvm",
            "o2",
            "kla",
            "fed",
            "used",
        )
    }
    fed = np.zeros(n)
    used = np.zeros(n)
    do = np.full(n, aeration.do_setpoint_pct)
    mu_max, ks, ko = pr["mu_max_per_h"], pr["ks_g_per_l"], pr["ko_pct"]
    yxs, m = pr["yxs_g_per_g"], pr["maintenance_g_per_g_h"]
    alpha, beta = pr["alpha_g_per_g"], pr["beta_g_per_g_h"]

    def rates(x, s, p, v, f, do_term):
        mu = mu_max * s / (ks + s) * do_term
        demand = (mu / yxs + m) * x  # g/L/h substrate
        # never consume more than is present within the step (keeps S >= 0)
        avail = s / dt_h + f / v * sf
        scale = np.where(demand > avail, avail / np.maximum(demand, 1e-300), 1.0)
        mu = mu * scale
        demand = demand * scale
        d = f / v
        return (
            mu * x - d * x,
            -demand + d * (sf - s),
            (alpha * mu + beta) * x - d * p,
            f,
            demand * v,
            mu,
        )

    def record(i, f, mu, our, rpm, vvm, o2, kla, do):
        out["x"][i], out["s"][i], out["p"][i], out["v"][i] = x, s, p, v
        out["f"][i], out["mu"][i], out["do"][i], out["our"][i] = f, mu, do, our
        out["rpm"][i], out["vvm"][i], out["o2"][i], out["kla"][i] = rpm, vvm, o2, kla
        out["fed"][i], out["used"][i] = fed, used

    c0 = _cascade(aeration, np.zeros(n), cap[0])
    record(0, np.zeros(n), np.zeros(n), np.zeros(n), *c0[:4], c0[4])
    growth = feed.feed_growth_per_h
    for i in range(steps):
        t = i * dt_h
        command = np.where(
            t >= feed.feed_start_h,
            min(
                feed.max_feed_l_per_h,
                feed.initial_feed_l_per_h * np.exp(growth * (t - feed.feed_start_h)),
            ),
            0.0,
        )
        f = np.where(v < feed.max_volume_l, command * fmul[i], 0.0)
        do_term = do / (ko + do)
        k1 = rates(x, s, p, v, f, do_term)
        k2 = rates(
            x + 0.5 * dt_h * k1[0],
            np.maximum(s + 0.5 * dt_h * k1[1], 0.0),
            p + 0.5 * dt_h * k1[2],
            v + 0.5 * dt_h * k1[3],
            f,
            do_term,
        )
        k3 = rates(
            x + 0.5 * dt_h * k2[0],
            np.maximum(s + 0.5 * dt_h * k2[1], 0.0),
            p + 0.5 * dt_h * k2[2],
            v + 0.5 * dt_h * k2[3],
            f,
            do_term,
        )
        k4 = rates(
            x + dt_h * k3[0],
            np.maximum(s + dt_h * k3[1], 0.0),
            p + dt_h * k3[2],
            v + dt_h * k3[3],
            f,
            do_term,
        )
        w = dt_h / 6.0
        dx = w * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        dp = w * (k1[2] + 2 * k2[2] + 2 * k3[2] + k4[2])
        dv = dt_h * f
        consumed = w * (k1[4] + 2 * k2[4] + 2 * k3[4] + k4[4])  # g in the step
        mass_s = s * v + f * dt_h * sf - consumed
        x, p = np.maximum(x + dx, 0.0), np.maximum(p + dp, 0.0)
        # substrate from the exact mass balance, so that it always closes
        consumed = np.where(mass_s < 0, consumed + mass_s, consumed)
        v = v + dv
        s = np.maximum(mass_s, 0.0) / v
        fed += f * dt_h * sf
        used += consumed
        mu = w * (k1[5] + 2 * k2[5] + 2 * k3[5] + k4[5]) / dt_h
        our = mu / pr["yxo_g_per_g"] * x / _O2_G_PER_MOL * 1000.0
        rpm, vvm, o2, kla, do = _cascade(aeration, our, cap[i])
        record(i + 1, f, mu, our, rpm, vvm, o2, kla, do)
    out = {k: a.T for k, a in out.items()}
    return FedBatchTrajectory(
        time_h=np.arange(steps + 1) * dt_h,
        biomass_g_per_l=out["x"],
        substrate_g_per_l=out["s"],
        product_g_per_l=out["p"],
        volume_l=out["v"],
        feed_l_per_h=out["f"],
        mu_per_h=out["mu"],
        do_pct=out["do"],
        our_mmol_per_l_h=out["our"],
        cer_mmol_per_l_h=out["our"] * pr["respiratory_quotient"][:, None],
        agitation_rpm=out["rpm"],
        airflow_vvm=out["vvm"],
        o2_fraction=out["o2"],
        kla_per_h=out["kla"],
        substrate_fed_g=out["fed"],
        substrate_consumed_g=out["used"],
    )


def substrate_balance_residual_g(
    traj: FedBatchTrajectory, initial_substrate_g_per_l, initial_volume_l
) -> np.ndarray:
    """Per-batch residual of S0*V0 + fed - consumed - S*V at the end (should be ~0)."""
    s0v0 = np.asarray(initial_substrate_g_per_l) * np.asarray(initial_volume_l)
    end = traj.substrate_g_per_l[:, -1] * traj.volume_l[:, -1]
    return s0v0 + traj.substrate_fed_g[:, -1] - traj.substrate_consumed_g[:, -1] - end
