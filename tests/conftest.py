"""Shared fixtures: the shipped plant and small simulations reused across tests, and the
test users (:func:`write_users`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from twin.config import load_config
from twin.simulate import simulate

#: The test users: (user, roles, password). The passwords are known to the tests only;
#: the product has no fixed password (docs/security.md).
TEST_USERS = (
    ("viewer", ["viewer"], "viewer-test-password"),
    ("engineer", ["engineer"], "engineer-test-password"),
    ("qa", ["qa"], "qa-test-password"),
    ("qa2", ["qa"], "qa2-test-password"),
    ("maint", ["maintenance"], "maint-test-password"),
    ("opcua", ["engineer"], "opcua-test-password"),
)
#: user -> password of :data:`TEST_USERS`
PASSWORDS = {user: password for user, _, password in TEST_USERS}


def write_users(path: Path) -> dict[str, str]:
    """Add the test users to the users.toml at ``path`` through the product's users API
    (:func:`connectors.security.add_user`, what ``biotwin users add`` does); returns
    ``{user: password}``. The full names are the demo users' (Quinn Avery for qa...)."""
    from connectors.security import DEMO_FULL_NAMES, add_user

    for user, roles, password in TEST_USERS:
        add_user(path, user, password=password, roles=roles, full_name=DEMO_FULL_NAMES[user])
    return dict(PASSWORDS)


def sign_in_as(at, user: str) -> None:
    """Put a signed-in test user (name, full name, roles) in an AppTest's session, as the
    sign-in form does after :func:`connectors.security.authenticate` accepted them."""
    from connectors.security import DEMO_FULL_NAMES

    at.session_state["user"] = user
    at.session_state["full_name"] = DEMO_FULL_NAMES[user]
    at.session_state["roles"] = next(roles for u, roles, _ in TEST_USERS if u == user)


@pytest.fixture(autouse=True)
def _main_module_kept():
    """Streamlit's AppTest leaves the page it ran as ``sys.modules["__main__"]``; a process
    started later with "spawn" would then run that page before its target (and die in it).
    Put the real main module back after every test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session", autouse=True)
def _records_key(tmp_path_factory):
    """A records signing key of the test session, never the user's (docs/records.md)."""
    from connectors.signed_log import KEY_ENV, init_key

    path = tmp_path_factory.mktemp("records-key") / "records.key"
    init_key(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, str(path))
        yield path


@pytest.fixture(scope="session")
def config():
    """The shipped plant configuration."""
    return load_config()


@pytest.fixture(scope="session")
def plant_100d(config):
    """The plant 100 days into a run (seed 3): batches on units, in QC, assets worn
    (twin.state.PlantState, the start of the scenario sweeps' tests)."""
    from twin.line import Line
    from twin.state import snapshot

    line = Line(config, seed=3, log_events=False)
    line.start(wear_snapshots_h=None)
    line.env.run(until=24 * 100)
    return snapshot(line)


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
