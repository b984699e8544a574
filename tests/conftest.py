"""Shared fixtures: the shipped plant and small simulations reused across tests."""

from __future__ import annotations

import pytest

from twin.config import load_config
from twin.simulate import simulate


@pytest.fixture(scope="session")
def config():
    """The shipped plant configuration."""
    return load_config()


@pytest.fixture(scope="session")
def sim_20d(config):
    """A 20-day run of the shipped plant with signals (seed 11)."""
    return simulate(config, days=20, seed=11)


@pytest.fixture(scope="session")
def sim_150d(config):
    """A 150-day run, for statistics over batches (seed 3)."""
    return simulate(config, days=150, seed=3)
