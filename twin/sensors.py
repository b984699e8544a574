"""Instruments: measurement noise, sensor faults and the quality of every sample.

A tag's *true* value comes from the process model; what the historian receives is the
instrument's reading: true value plus noise, and now and then a fault episode:

============  =====================================================  ==================
fault         what the reading does                                  quality reported
============  =====================================================  ==================
drift         a slowly growing offset (calibration drift)            good (undetected)
freeze        stuck at the last value                                uncertain
spike         a single outlier sample                                good (undetected)
dropout       no value (NaN)                                         bad
============  =====================================================  ==================

Readings outside the tag's engineering range are reported ``uncertain`` (as an OPC UA
server reports EngineeringUnitsExceeded). Quality codes are small integers, see
:data:`QUALITY_NAMES`. Every episode is also returned, as the ground truth that sensor-health
checks are tested against.
"""

from __future__ import annotations

import numpy as np

from twin.config import SensorFaultSpec, SignalSpec

__all__ = ["BAD", "GOOD", "QUALITY_NAMES", "UNCERTAIN", "read_instrument"]

GOOD, UNCERTAIN, BAD = 0, 1, 2
QUALITY_NAMES = ("good", "uncertain", "bad")


def read_instrument(
    true_values: np.ndarray,
    signal: SignalSpec,
    faults: SensorFaultSpec,
    rng: np.random.Generator,
    dt_h: float,
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    """Turn true values into instrument readings with noise, fault episodes and quality.

    Parameters
    ----------
    true_values : ndarray of float64, shape (n,)
        The process value on the sample grid. Modified in place and returned.
    signal : SignalSpec
        The tag (noise standard deviation, engineering range).
    faults : SensorFaultSpec
        Fault rates per tag-year and episode durations.
    rng : numpy.random.Generator
        This tag's random stream.
    dt_h : float
        Sample interval in hours.

    Returns
    -------
    values : ndarray of float64
    quality : ndarray of int8 (0 good, 1 uncertain, 2 bad)
    episodes : list of (kind, first sample, end sample)
    """
    values = true_values
    n = values.shape[0]
    # one stream for the noise and one per fault kind, each drawn sample by sample or
    # episode by episode: a longer run of the same tag extends a shorter one (the served
    # plant continues across horizons, twin.simulate and connectors.server)
    noise_rng, drift_rng, spike_rng, freeze_rng, dropout_rng = rng.spawn(5)
    if signal.noise_sd > 0:
        values += noise_rng.standard_normal(n) * signal.noise_sd
    quality = np.zeros(n, dtype=np.int8)
    span = signal.high - signal.low
    episodes: list[tuple[str, int, int]] = []

    def windows(rate: float, duration, r: np.random.Generator):
        """Episodes of a Poisson process (``rate`` per tag-year), in time order."""
        per_sample = rate * dt_h / 8760.0
        if per_sample <= 0:
            return
        t = 0.0
        while True:
            t += r.exponential(1.0 / per_sample)
            if t >= n:
                return
            start = int(t)
            length = 1 if duration is None else max(1, round(duration.sample(r) / dt_h))
            yield start, min(n, start + length)

    for start, end in windows(faults.drift_per_tag_year, faults.drift_duration_h, drift_rng):
        rate = drift_rng.normal(0.0, faults.drift_rate_sd_per_h) * span
        values[start:end] += rate * dt_h * np.arange(1, end - start + 1)
        episodes.append(("drift", start, end))
    for start, end in windows(faults.spike_per_tag_year, None, spike_rng):
        values[start] += (
            spike_rng.choice((-1.0, 1.0)) * faults.spike_sd * max(signal.noise_sd, 1e-3 * span)
        )
        episodes.append(("spike", start, end))
    for start, end in windows(faults.freeze_per_tag_year, faults.freeze_duration_h, freeze_rng):
        values[start:end] = values[start]
        quality[start:end] = UNCERTAIN
        episodes.append(("freeze", start, end))
    out_of_range = (values < signal.low) | (values > signal.high)
    quality[out_of_range] = UNCERTAIN
    for start, end in windows(faults.dropout_per_tag_year, faults.dropout_duration_h, dropout_rng):
        values[start:end] = np.nan
        quality[start:end] = BAD
        episodes.append(("dropout", start, end))
    return values, quality, episodes
