"""Shared fixtures: the shipped plant and small simulations reused across tests."""

from __future__ import annotations

import sys

import pytest

from twin.config import load_config
from twin.simulate import simulate


@pytest.fixture(autouse=True)
def _main_module_kept():
    """Streamlit's AppTest leaves the page it ran as ``sys.modules["__main__"]``; a process
    started later with "spawn" would then run that page before its target (and die in it).
    Put the real main module back after every test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


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


@pytest.fixture(scope="session")
def twin_dir(tmp_path_factory):
    """Two years of twin output at 10-minute samples (seed 1): training data for the models."""
    from twin.output import simulate_to

    plant = load_config()
    plant = plant.model_copy(
        update={"plant": plant.plant.model_copy(update={"sample_interval_min": 10})}
    )
    out = tmp_path_factory.mktemp("quality") / "twin"
    simulate_to(plant, out, days=730, seed=1)
    return out


@pytest.fixture(scope="session")
def history(twin_dir):
    """The twin's batch history (quality.data.BatchHistory)."""
    from quality.data import batch_history_from_twin

    return batch_history_from_twin(twin_dir)


@pytest.fixture(scope="session")
def trained(history):
    """(model, meta, metrics) of the deviation model trained on the earlier 70 % of batches."""
    from quality.service import train_deviation

    return train_deviation(history, seed=0, source="test")


@pytest.fixture(scope="session")
def runs(twin_dir):
    """The twin's asset runs (quality.data.RunHistory)."""
    from quality.data import run_history_from_twin

    return run_history_from_twin(twin_dir)


@pytest.fixture(scope="session")
def maint(runs):
    """(model, meta, metrics) of the asset model trained on the earlier runs."""
    from quality.service import train_maintenance

    return train_maintenance(runs, seed=0, source="test")
