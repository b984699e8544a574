"""Signals of the bioreactors: fed-batch kinetics plus control loops, faults and wear.

All batches of one bioreactor class (every seed run, or every production run, of the
year) are integrated together by :func:`twin.kinetics.integrate_fed_batch`, one row per
batch; the trajectories are then scattered onto each unit's sample grid. The deviations of
DOMAIN.md leave their precursors here:

- raw-material lot: lower media potency, so a lower growth rate from inoculation (early);
- feed failure: the feed pump delivers less than commanded from the onset: substrate and
  growth change while the feed tag shows mostly the command (mid-batch);
- DO crash: a capped agitator (fault, or a blocked sparger) cannot meet the oxygen demand;
  agitation pegs at its ceiling and DO falls (when OUR is high: late);
- temperature excursion: the chilled-water valve saturates, then temperature drifts more
  than 0.5 C above setpoint (late, when the heat load is highest);
- pH drift: the probe reading drifts; the loop "corrects" the true pH the other way, and
  base addition changes (a sensor problem, not a process one);
- contamination: an extra oxygen demand grows exponentially, DO drops, CER/OUR change shape,
  acid production raises base addition.
Wear shows on condition tags: agitator vibration and motor current rise with its health.
"""

from __future__ import annotations

import numpy as np

from twin.config import BioreactorSpec, UnitClassSpec
from twin.downstream import AMBIENT_C, SIP_C
from twin.kinetics import (
    AerationControl,
    FeedProfile,
    KineticParameters,
    integrate_fed_batch,
)
from twin.timeline import CIP, DOWN, RUNNING, SIP, UnitTimeline

__all__ = ["bioreactor_class_signals"]

#: Step of the kinetics integration (hours); the signals are interpolated to the sample grid.
#: Two minutes keeps the scheme within 5 % of LSODA (tests/test_kinetics.py) at half the cost
#: of one minute; five minutes would drift to 6 % near substrate exhaustion.
INTEGRATION_STEP_H = 2.0 / 60.0

OFFLINE_PH_EVERY_H = 8.0  # hours between off-line pH samples of a running bioreactor
OUR_DESIGN = 150.0  # mmol/(L h): the oxygen uptake the jacket is sized for (valve ~70 %)


def _block_min(a: np.ndarray, k: int) -> np.ndarray:
    """Per-block minimum over ``k`` consecutive steps (a short outage is not skipped)."""
    if k == 1:
        return a
    n, m = a.shape
    pad = (-m) % k
    if pad:
        a = np.concatenate([a, np.repeat(a[:, -1:], pad, axis=1)], axis=1)
    return a.reshape(n, -1, k).min(axis=2)


def _severity_onset(seg, deviation_class: str) -> tuple[float, float, float]:
    """Severity, onset (fraction of the step) and precursor lead (hours) of a class."""
    sev, onset, lead_h = 0.0, 1.0, 0.0
    for dev in seg.batch.deviations:
        if dev.deviation_class == deviation_class and dev.step == seg.step.name:
            sev = max(sev, dev.severity)
            if dev.onset_fraction <= onset:
                onset, lead_h = dev.onset_fraction, dev.lead_h
    return sev, onset, lead_h


def _precursor(frac: np.ndarray, onset: float, lead_h: float, step_h: float) -> np.ndarray:
    """How far the root cause shows, per sample: 0 until ``lead_h`` before the onset,
    rising linearly to 1 at the onset and staying there (a worn bearing keeps vibrating)."""
    if lead_h <= 0.0 or step_h <= 0.0:
        return (frac >= onset).astype(float)
    lead = lead_h / step_h
    return np.clip((frac - (onset - lead)) / lead, 0.0, 1.0)


def bioreactor_class_signals(
    timelines: list[UnitTimeline], spec: UnitClassSpec, attrs: dict
) -> dict[str, dict[str, np.ndarray]]:
    """True tag values of every unit of one bioreactor class.

    Parameters
    ----------
    timelines : list of UnitTimeline
        The units of the class.
    spec : UnitClassSpec
        The class (its ``bioreactor`` table holds kinetics, feed and aeration).
    attrs : dict
        Per-batch attributes; titer and biomass at harvest are written into it.

    Returns
    -------
    dict
        ``{unit_id: {signal name: array}}``.
    """
    br: BioreactorSpec = spec.bioreactor
    segs = [(tl, seg) for tl in timelines for seg in tl.segments if seg.end > seg.start]
    out = {tl.unit_id: _idle_signals(tl, br) for tl in timelines}
    if not segs:  # no batch yet: idle vessels still show their idle condition tags
        for tl in timelines:
            _condition(out[tl.unit_id], tl, br)
        return out
    n_b = len(segs)
    lengths = np.array([seg.end - seg.start for _, seg in segs])
    n_steps = int(lengths.max())
    dt_h = timelines[0].dt_h
    kin = br.kinetics
    potency = np.array([seg.batch.lot["media_potency"] for _, seg in segs])
    mu_max = kin.mu_max_per_h * potency**2

    # per-batch, per-step disturbances on the kinetics grid
    step_frac = np.arange(n_steps)[None, :] / np.maximum(lengths[:, None], 1)
    feed_mult = np.ones((n_b, n_steps))
    agit_cap = np.full((n_b, n_steps), br.aeration.agitation_max_rpm)
    contamination = np.zeros((n_b, n_steps))
    wear_show = {tl.unit_id: np.zeros(tl.n) for tl in timelines}  # agitator precursor
    for i, (tl, seg) in enumerate(segs):
        step_h = lengths[i] * dt_h
        sev, onset, lead_h = _severity_onset(seg, "feed_failure")
        if sev > 0:  # a wearing pump delivers less and less, then fails to keep up
            ramp = _precursor(step_frac[i], onset, lead_h, step_h)
            worn = 1.0 - 0.2 * (0.5 + 0.5 * sev) * ramp
            feed_mult[i] = np.where(step_frac[i] >= onset, 1.0 - (0.25 + 0.65 * sev), worn)
        sev, onset, lead_h = _severity_onset(seg, "do_crash")
        if sev > 0:  # bearing wear or a clogging sparger: the ceiling comes down, then drops
            ramp = _precursor(step_frac[i], onset, lead_h, step_h)
            top = br.aeration.agitation_max_rpm
            cap = top * (0.85 - 0.45 * sev)
            agit_cap[i] = np.where(step_frac[i] >= onset, cap, top * (1.0 - 0.08 * ramp))
            show = (0.5 + 0.5 * sev) * ramp[: lengths[i]]
            wear_show[tl.unit_id][seg.start : seg.start + show.size] = show
        sev, onset, _ = _severity_onset(seg, "contamination")
        if sev > 0:
            hours_in = np.maximum(0.0, step_frac[i] - onset) * lengths[i] * dt_h
            contamination[i] = np.where(
                step_frac[i] >= onset, (0.2 + 0.8 * sev) * np.expm1(0.25 * hours_in), 0.0
            )
        window = tl.state[seg.start : seg.end] == DOWN
        if window.any():  # a failed asset during the run: agitator and feed pump stop
            names = {d.source.split("/")[-1] for d in seg.batch.deviations if d.unit == tl.unit_id}
            pad = np.zeros(n_steps, dtype=bool)
            pad[: window.size] = window
            if "agitator" in names or not names:
                agit_cap[i] = np.where(pad, br.aeration.agitation_min_rpm * 0.5, agit_cap[i])
            if "feed_pump" in names:
                feed_mult[i] = np.where(pad, 0.0, feed_mult[i])
    # Integrate on a coarser step than the samples and interpolate onto the sample grid.
    k = max(1, round(INTEGRATION_STEP_H / dt_h))
    n_coarse = -(-n_steps // k)
    traj = integrate_fed_batch(
        kin.initial_biomass_g_per_l,
        kin.initial_substrate_g_per_l,
        br.initial_volume_l,
        n_coarse,
        params=KineticParameters(
            mu_max_per_h=mu_max,
            ks_g_per_l=kin.ks_g_per_l,
            ko_pct=kin.ko_pct,
            yxs_g_per_g=kin.yxs_g_per_g,
            maintenance_g_per_g_h=kin.maintenance_g_per_g_h,
            yxo_g_per_g=kin.yxo_g_per_g,
            alpha_g_per_g=kin.alpha_g_per_g,
            beta_g_per_g_h=kin.beta_g_per_g_h,
            respiratory_quotient=kin.respiratory_quotient,
        ),
        feed=FeedProfile(
            feed_start_h=br.feed.feed_start_h,
            initial_feed_l_per_h=br.feed.initial_feed_l_per_h,
            feed_growth_per_h=br.feed.feed_growth_per_h,
            max_feed_l_per_h=br.feed.max_feed_l_per_h,
            feed_substrate_g_per_l=br.feed.feed_substrate_g_per_l,
            max_volume_l=br.working_volume_l,
        ),
        aeration=AerationControl(**br.aeration.model_dump()),
        dt_h=dt_h * k,
        feed_multiplier=_block_min(feed_mult, k),
        agitation_cap_rpm=_block_min(agit_cap, k),
    )
    coarse = np.arange(n_coarse + 1) * k  # sample index of each integration step
    for i, (tl, seg) in enumerate(segs):
        L = lengths[i]
        sl = slice(seg.start, seg.end)
        sig = out[tl.unit_id]
        fine = np.arange(1, L + 1)

        def at(a, i=i, fine=fine):
            """Batch i's trajectory on the sample grid, samples 1..L (linear interpolation)."""
            return np.interp(fine, coarse, a[i])

        do_traj = at(traj.do_pct)
        titer = at(traj.product_g_per_l)
        biomass = at(traj.biomass_g_per_l)
        attrs.setdefault(seg.batch.id, {}).update(
            titer_g_per_l=float(titer[-1]),
            biomass_g_per_l=float(biomass[-1]),
            min_do_pct=float(do_traj.min()),
        )
        o2_fraction = at(traj.o2_fraction)
        our = at(traj.our_mmol_per_l_h) + contamination[i, :L]
        cer = at(traj.cer_mmol_per_l_h) + 1.3 * contamination[i, :L]
        kla_max = np.maximum(at(traj.kla_per_h), 1e-6)
        csat = br.aeration.o2_saturation_mmol_per_l * o2_fraction / 0.21
        do = do_traj - 100.0 * contamination[i, :L] / (kla_max * csat)
        sig["do"][sl] = np.clip(do, 0.0, 110.0)
        sig["agitation"][sl] = at(traj.agitation_rpm)
        volume = at(traj.volume_l)
        sig["airflow"][sl] = at(traj.airflow_vvm) * volume
        sig["o2_fraction"][sl] = 100.0 * o2_fraction
        feed = at(traj.feed_l_per_h)
        feed_cmd = feed / np.maximum(feed_mult[i, :L], 0.05)
        sig["feed_rate"][sl] = np.where(feed_mult[i, :L] < 0.01, 0.0, 0.5 * (feed_cmd + feed))
        sig["our"][sl] = our
        sig["cer"][sl] = cer
        sig["biomass"][sl] = biomass
        sig["substrate"][sl] = at(traj.substrate_g_per_l)
        sig["titer"][sl] = titer
        sig["volume"][sl] = volume
        attrs[seg.batch.id]["ph_probe_offset"] = _thermal_and_ph(sig, sl, seg, tl, br, our, volume)
    for tl in timelines:
        _condition(out[tl.unit_id], tl, br, wear_show[tl.unit_id])
    return out


def _idle_signals(tl: UnitTimeline, br: BioreactorSpec) -> dict[str, np.ndarray]:
    n = tl.n
    state = tl.state
    temperature = np.full(n, AMBIENT_C)
    temperature[state == CIP] = 75.0
    temperature[state == SIP] = SIP_C
    pressure = np.zeros(n)
    pressure[state == SIP] = 1.1
    pressure[state == CIP] = 0.1
    sp = np.where((state == RUNNING) | (state == SIP), br.temperature_setpoint_c, AMBIENT_C)
    sp[state == SIP] = SIP_C
    z = np.zeros
    return {
        "temperature": temperature,
        "temperature_sp": sp,
        "jacket_valve": np.where(state == CIP, 30.0, 0.0),
        "ph": np.full(n, 7.0),
        "ph_offline": np.full(n, 7.0),
        "base_addition": z(n),
        "do": np.full(n, 100.0),
        "agitation": np.where(state == CIP, 150.0, 0.0),
        "airflow": z(n),
        "o2_fraction": np.full(n, 21.0),
        "pressure": pressure,
        "feed_rate": z(n),
        "our": z(n),
        "cer": z(n),
        "biomass": z(n),
        "substrate": z(n),
        "titer": z(n),
        "volume": np.where(state == CIP, 0.03 * br.working_volume_l, 0.0),
        "vibration": z(n),
        "motor_current": z(n),
    }


def _thermal_and_ph(sig, sl, seg, tl, br: BioreactorSpec, our, volume) -> float:
    """Temperature loop (jacket valve), pH loop (base pump) and head pressure of one run.

    Returns the pH probe offset at the end of the run (reading minus true value).
    """
    L = our.shape[0]
    frac = tl.frac[sl]
    load = our / OUR_DESIGN  # heat load against the vessel's design OUR (causal)
    valve = 15.0 + 55.0 * load
    temperature = np.full(L, br.temperature_setpoint_c)
    step_h = L * tl.dt_h
    sev, onset, lead_h = _severity_onset(seg, "temperature_excursion")
    if sev > 0:  # a sticking valve needs more and more opening, then saturates
        ramp = _precursor(frac, onset, lead_h, step_h)
        after = np.clip((frac - onset) / max(1e-3, 1.0 - onset), 0.0, 1.0)
        valve = np.minimum(100.0, valve + (8.0 + 10.0 * sev) * ramp + 60.0 * after)
        temperature = temperature + 0.12 * ramp + (0.3 + 1.6 * sev) * after**1.5
    sig["jacket_valve"][sl] = np.clip(valve, 0.0, 100.0)
    sig["temperature"][sl] = temperature
    sig["temperature_sp"][sl] = br.temperature_setpoint_c
    # pH: probe offset from calibration age plus a drift episode; the loop controls the
    # reading to setpoint, so the true pH moves the other way and base demand changes.
    probe = tl.health.get("ph_probe")
    offset = 0.08 * (probe[sl] ** 2) if probe is not None else np.zeros(L)
    sev, onset, lead_h = _severity_onset(seg, "ph_drift")
    if sev > 0:
        ramp = _precursor(frac, onset, lead_h, step_h)
        after = np.clip((frac - onset) / max(1e-3, 1 - onset), 0, 1)
        offset = offset + 0.03 * ramp + (0.05 + 0.3 * sev) * after
    c_sev, c_onset, _ = _severity_onset(seg, "contamination")
    acid = np.where(frac >= c_onset, c_sev, 0.0) if c_sev > 0 else 0.0
    sig["ph"][sl] = br.ph_setpoint - 0.04 * acid * np.clip((frac - c_onset) * 4, 0, 1)
    # the off-line sample (a bench meter, every OFFLINE_PH_EVERY_H, held until the next)
    # measures the true pH: reading minus probe offset, what shows a drifting probe
    every = max(1, round(OFFLINE_PH_EVERY_H / tl.dt_h))
    held = (np.arange(L) // every) * every
    sig["ph_offline"][sl] = (sig["ph"][sl] - offset)[held]
    base = 0.012 * our * volume / 100.0 * (1.0 + 2.0 * offset) * (1.0 + 1.5 * acid)
    sig["base_addition"][sl] = base
    sig["pressure"][sl] = br.pressure_setpoint_barg
    return float(offset[-1]) if L else 0.0


def _condition(
    sig, tl: UnitTimeline, br: BioreactorSpec, precursor: np.ndarray | None = None
) -> None:
    """Agitator vibration and motor current: speed-dependent, rising with wear and, ahead
    of a DO crash, with the failing bearing or the clogging sparger (``precursor``, 0-1)."""
    health = tl.health.get("agitator", np.zeros(tl.n))
    rpm = sig["agitation"]
    load = rpm / br.aeration.agitation_max_rpm
    on = rpm > 1.0
    extra = 0.0 if precursor is None else precursor
    sig["vibration"] = np.where(on, 0.6 + 0.9 * load + 6.0 * health**3 + 2.5 * extra, 0.05)
    sig["motor_current"] = np.where(
        on, (8.0 + 70.0 * load**3) * (1.0 + 0.35 * health**2 + 0.15 * extra), 0.0
    )
