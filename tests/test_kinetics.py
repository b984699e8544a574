"""Fed-batch kinetics: agreement with an independent ODE solver, mass balance, control."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from twin.bioreactor import INTEGRATION_STEP_H
from twin.kinetics import (
    AerationControl,
    FeedProfile,
    KineticParameters,
    integrate_fed_batch,
    substrate_balance_residual_g,
)

PARAMS = KineticParameters()
FEED = FeedProfile()
AMPLE_AIR = AerationControl(kla_ref_per_h=1e6)  # oxygen never limits: DO stays at setpoint


def _reference(params, feed, do_pct, x0, s0, v0, hours):
    do_term = do_pct / (params.ko_pct + do_pct)

    def rhs(t, y):
        x, s, p, v = y
        s = max(s, 0.0)
        f = 0.0
        if t >= feed.feed_start_h and v < feed.max_volume_l:
            f = min(
                feed.max_feed_l_per_h,
                feed.initial_feed_l_per_h
                * np.exp(feed.feed_growth_per_h * (t - feed.feed_start_h)),
            )
        mu = params.mu_max_per_h * s / (params.ks_g_per_l + s) * do_term
        d = f / v
        return [
            mu * x - d * x,
            -(mu / params.yxs_g_per_g + params.maintenance_g_per_g_h) * x
            + d * (feed.feed_substrate_g_per_l - s),
            (params.alpha_g_per_g * mu + params.beta_g_per_g_h) * x - d * p,
            f,
        ]

    t_eval = np.arange(0, hours * 60 + 1) / 60.0
    return solve_ivp(
        rhs,
        (0, hours),
        [x0, s0, 0.0, v0],
        method="LSODA",
        rtol=1e-9,
        atol=1e-9,
        t_eval=t_eval,
        max_step=1 / 60,
    )


def test_matches_solve_ivp_when_oxygen_is_not_limiting():
    hours = 30
    traj = integrate_fed_batch(
        0.5, 20.0, 1000.0, hours * 60, params=PARAMS, feed=FEED, aeration=AMPLE_AIR
    )
    assert np.allclose(traj.do_pct, AMPLE_AIR.do_setpoint_pct)
    ref = _reference(PARAMS, FEED, AMPLE_AIR.do_setpoint_pct, 0.5, 20.0, 1000.0, hours)
    for name, ours, theirs in (
        ("biomass", traj.biomass_g_per_l[0], ref.y[0]),
        ("product", traj.product_g_per_l[0], ref.y[2]),
        ("volume", traj.volume_l[0], ref.y[3]),
    ):
        # 1-minute RK4 with substrate uptake limited to what is present (uptake is stiff
        # once S nears Ks): worst near substrate exhaustion, within 5 % of LSODA
        assert np.allclose(ours, theirs, rtol=0.05, atol=0.05), name
    assert np.max(np.abs(traj.substrate_g_per_l[0] - ref.y[1])) < 1.0  # g/L, S near 0 when fed
    assert traj.biomass_g_per_l[0, -1] > 20  # it did grow


@pytest.mark.parametrize("s0", [20.0, 2.0, 0.0], ids=["rich", "lean", "starved"])
def test_substrate_mass_balance_closes(s0):
    traj = integrate_fed_batch(
        0.5, s0, 1000.0, 48 * 60, params=PARAMS, feed=FEED, aeration=AerationControl()
    )
    residual = substrate_balance_residual_g(traj, s0, 1000.0)
    assert np.all(np.abs(residual) < 1e-6 * max(1.0, traj.substrate_fed_g[0, -1]))
    assert traj.substrate_g_per_l.min() >= 0
    assert np.all(np.diff(traj.volume_l[0]) >= 0)
    assert traj.volume_l.max() <= FEED.max_volume_l + FEED.max_feed_l_per_h / 60


def test_rows_are_independent_batches():
    mu = np.array([0.5, 0.6, 0.7])
    together = integrate_fed_batch(
        0.5,
        20.0,
        1000.0,
        600,
        params=KineticParameters(mu_max_per_h=mu),
        feed=FEED,
        aeration=AerationControl(),
    )
    for i, m in enumerate(mu):
        alone = integrate_fed_batch(
            0.5,
            20.0,
            1000.0,
            600,
            params=KineticParameters(mu_max_per_h=m),
            feed=FEED,
            aeration=AerationControl(),
        )
        assert np.allclose(together.biomass_g_per_l[i], alone.biomass_g_per_l[0])
        assert np.allclose(together.do_pct[i], alone.do_pct[0])


def test_capped_agitator_crashes_do_and_pegs_agitation():
    steps = 40 * 60
    cap = np.full((2, steps), 800.0)
    cap[1, 25 * 60 :] = 350.0
    traj = integrate_fed_batch(
        0.5,
        20.0,
        1000.0,
        steps,
        params=PARAMS,
        feed=FEED,
        aeration=AerationControl(),
        agitation_cap_rpm=cap,
    )
    late = slice(30 * 60, None)
    assert traj.do_pct[1, late].min() < 20.0
    assert traj.do_pct[0, late].min() > traj.do_pct[1, late].min() + 10.0
    assert np.allclose(traj.agitation_rpm[1, 26 * 60 :].max(), 350.0)


def test_weak_feed_and_slow_lot_lower_the_outcome():
    steps = 48 * 60
    mult = np.ones((2, steps))
    mult[1, 20 * 60 :] = 0.5
    traj = integrate_fed_batch(
        0.5,
        20.0,
        1000.0,
        steps,
        params=PARAMS,
        feed=FEED,
        aeration=AerationControl(),
        feed_multiplier=mult,
    )
    assert traj.product_g_per_l[1, -1] < traj.product_g_per_l[0, -1]
    slow = integrate_fed_batch(
        0.5,
        20.0,
        1000.0,
        4 * 60,
        params=KineticParameters(mu_max_per_h=np.array([0.6, 0.45])),
        feed=FEED,
        aeration=AerationControl(),
    )
    assert slow.biomass_g_per_l[1, -1] < 0.7 * slow.biomass_g_per_l[0, -1]


@settings(max_examples=15, deadline=None)
@given(
    mu=st.floats(0.2, 0.8),
    ks=st.floats(0.01, 0.5),
    yxs=st.floats(0.3, 0.6),
    s0=st.floats(0.0, 40.0),
    growth=st.floats(0.0, 0.2),
)
def test_states_stay_physical(mu, ks, yxs, s0, growth):
    traj = integrate_fed_batch(
        0.5,
        s0,
        1000.0,
        36 * 60,
        params=KineticParameters(mu_max_per_h=mu, ks_g_per_l=ks, yxs_g_per_g=yxs),
        feed=FeedProfile(feed_growth_per_h=growth),
        aeration=AerationControl(),
    )
    for arr in (traj.biomass_g_per_l, traj.substrate_g_per_l, traj.product_g_per_l, traj.do_pct):
        assert np.all(np.isfinite(arr)) and arr.min() >= 0
    residual = substrate_balance_residual_g(traj, s0, 1000.0)
    assert abs(residual[0]) < 1e-6 * max(1.0, traj.substrate_fed_g[0, -1] + s0 * 1000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dt_h": -0.1}, r"dt_h must be > 0; got -0.1"),
        ({"n_steps": 0}, r"n_steps must be >= 1; got 0"),
        ({"initial_volume_l": -5.0}, r"initial_volume_l must be > 0; got -5.0"),
        ({"feed_multiplier": np.ones((3, 7))}, r"feed_multiplier must broadcast to"),
    ],
    ids=["negative-step", "no-steps", "negative-volume", "bad-feed-shape"],
)
def test_bad_inputs_are_named(kwargs, message):
    args = {
        "initial_biomass_g_per_l": 0.5,
        "initial_substrate_g_per_l": 20.0,
        "initial_volume_l": 1000.0,
        "n_steps": 10,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        integrate_fed_batch(
            args.pop("initial_biomass_g_per_l"),
            args.pop("initial_substrate_g_per_l"),
            args.pop("initial_volume_l"),
            args.pop("n_steps"),
            params=PARAMS,
            feed=FEED,
            aeration=AerationControl(),
            **args,
        )


def test_the_signals_integration_step_stays_close_to_lsoda():
    """Signals integrate at INTEGRATION_STEP_H and interpolate to the 1-minute grid."""
    hours = 48
    k = round(INTEGRATION_STEP_H * 60)
    traj = integrate_fed_batch(
        0.5,
        20.0,
        1000.0,
        hours * 60 // k,
        params=PARAMS,
        feed=FEED,
        aeration=AMPLE_AIR,
        dt_h=k / 60,
    )
    ref = _reference(PARAMS, FEED, AMPLE_AIR.do_setpoint_pct, 0.5, 20.0, 1000.0, hours)
    minutes = np.arange(hours * 60 + 1)
    for name, row in (("biomass_g_per_l", 0), ("product_g_per_l", 2), ("volume_l", 3)):
        ours = np.interp(minutes, minutes[::k], getattr(traj, name)[0])
        assert np.allclose(ours, ref.y[row], rtol=0.05, atol=0.05), name
