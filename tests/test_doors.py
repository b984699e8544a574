"""Doors of the command center (docs/security.md): sign-in before any page, roles that gate
scenario runs, failed sign-ins recorded and locked out, users by command, demo users only
on request with passwords made per install, sessions that expire.

Real files, the real ``biotwin`` command in a subprocess, the real Streamlit app through
AppTest; the store holds the sample history so that a page that should not run would have
plant data to show.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PASSWORDS, sign_in_as, write_users
from streamlit.testing.v1 import AppTest

from connectors.historian import Historian
from connectors.security import (
    DEMO_CREDENTIALS,
    DEMO_USERS,
    SignInError,
    UserFileManager,
    authenticate,
    ensure_demo_users,
    sign_in_log,
)
from connectors.twin_import import import_simulation
from dashboard import saved
from dashboard.plant import live_state
from dashboard.session import read_session_token, session_key, session_token
from dashboard.whatif import Author, run_study
from twin.scenarios import AssetOutage, Scenario

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
PAGES = ROOT / "dashboard" / "views"
VIEWER = Author("viewer", "Vera Lindqvist", ("viewer",))
ENGINEER = Author("engineer", "Erin Patel", ("engineer",))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """The sample history and the test users."""
    root = tmp_path_factory.mktemp("doors")
    import_simulation(ROOT / "sample_data" / "twin", Historian(root / "historian"))
    write_users(root / "users.toml")
    return root


@pytest.fixture
def env(store, monkeypatch) -> Path:
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    monkeypatch.setenv("BIOTWIN_PREFETCH_BASELINE", "0")
    monkeypatch.delenv("BIOTWIN_KIOSK", raising=False)
    return store


@pytest.fixture
def users(tmp_path) -> Path:
    path = tmp_path / "users.toml"
    write_users(path)
    return path


def biotwin(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "biotwin", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},  # rich tables unwrapped
    )


# ------------------------------------------------------------------ sign-in before any page
def test_a_visitor_who_is_not_signed_in_sees_the_sign_in_page_and_no_plant_data(env):
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["biotwin command center"]
    assert [i.label for i in at.text_input] == ["User", "Password"]
    shown = " ".join(e.value for e in [*at.markdown, *at.caption, *at.metric] if e.value)
    assert "BR-20" not in shown and not at.dataframe and not at.metric


def test_signing_in_opens_the_pages(env):
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.text_input(key="login_user").input("viewer")
    at.text_input(key="login_password").input(PASSWORDS["viewer"])
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["roles"] == ["viewer"]
    assert "Plant overview" in [t.value for t in at.title]


def test_the_kiosk_shows_read_only_pages_as_viewer_under_a_banner(env, monkeypatch):
    monkeypatch.setenv("BIOTWIN_KIOSK", "1")
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception
    assert any(i.value.startswith("Kiosk: a read-only view") for i in at.info)
    assert "Plant overview" in [t.value for t in at.title]
    assert [i.label for i in at.sidebar.text_input] == ["User", "Password"]


# ------------------------------------------------------------------ roles gate scenarios
def test_a_viewer_sees_the_run_button_disabled_with_the_reason(env):
    at = AppTest.from_file(str(PAGES / "scenarios.py"), default_timeout=120)
    sign_in_as(at, "viewer")
    at.run()
    assert not at.exception
    assert at.button(key="sc_run").disabled
    assert any("needs a signed-in user with the role engineer" in c.value for c in at.caption)


def test_run_study_refuses_a_viewer_before_running(config, store):
    state = live_state(Historian(store / "historian"), config)[0]
    with pytest.raises(PermissionError, match=r"^scenario run: user 'viewer' needs one of the"):
        run_study(config, state, [], author=VIEWER, horizon_h=24 * 180, replications=2000)


@pytest.fixture(scope="module")
def tiny_run(config, store):
    """A one-day study of 2 replications, run by an engineer."""
    state = live_state(Historian(store / "historian"), config)[0]
    events = [AssetOutage(target="BR-202", start_h=2, end_h=10)]
    base, what, _ = run_study(
        config, state, events, author=ENGINEER, horizon_h=24, replications=2, workers=1
    )
    return Scenario(name="A", horizon_h=24, events=events), base, what, state.model_dump_json()


def save(folder: Path, run, author: Author, name: str = "A") -> Path:
    scenario, base, what, state_json = run
    scenario = scenario.model_copy(update={"name": name})
    return saved.save_scenario(
        folder,
        scenario,
        author=author,
        baseline=base,
        result=what,
        replications=2,
        seed=0,
        state_json=state_json,
    )


def test_save_scenario_refuses_a_viewer_and_writes_nothing(tmp_path, tiny_run):
    with pytest.raises(PermissionError, match="user 'viewer' needs one of the roles"):
        save(tmp_path, tiny_run, VIEWER)
    assert not list(tmp_path.iterdir())


def test_a_saved_scenario_carries_its_author_and_a_name_is_never_overwritten(tmp_path, tiny_run):
    path = save(tmp_path, tiny_run, ENGINEER)
    record = json.loads(path.read_text())
    assert record["author"] == {
        "user": "engineer",
        "full_name": "Erin Patel",
        "roles": ["engineer"],
    }
    assert record["saved_at"].endswith("+00:00")
    assert saved.list_saved(tmp_path)["author"].tolist() == ["Erin Patel (engineer)"]
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"^scenario name: must be new, .*got 'A', saved already"):
        save(tmp_path, tiny_run, ENGINEER)
    save(tmp_path, tiny_run, ENGINEER, name="B-1")
    with pytest.raises(ValueError, match=r"got 'B:1', saved already in B-1.json"):
        save(tmp_path, tiny_run, ENGINEER, name="B:1")  # another name, the same file
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 2
    assert saved.unique_name(tmp_path, "A") == "A (2)"


@pytest.mark.parametrize(
    ("name", "wording"),
    [
        ("x" * 300, r"^scenario name: must be at most 80 characters; got 300 characters \('x+'"),
        ("   ", r"^scenario name: must not be empty; got ''$"),
    ],
    ids=["300-characters", "blank"],
)
def test_a_bad_scenario_name_is_refused_before_the_run(tmp_path, name, wording):
    with pytest.raises(ValueError, match=wording):
        saved.check_new_name(tmp_path, name)
    assert saved.check_new_name(tmp_path, " " + "x" * 80 + " ") == "x" * 80


def test_the_page_refuses_a_300_character_name_before_running(env):
    at = AppTest.from_file(str(PAGES / "scenarios.py"), default_timeout=120)
    sign_in_as(at, "engineer")
    at.run()
    at.text_input(key="sc_name").input("y" * 300)
    at.button(key="sc_run").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Not run and not saved: scenario name: must be at most 80 characters; got 300 "
        f"characters ({'y' * 40!r}...)"
    ]
    assert not at.get("progress") and not (env / "scenarios").exists()


# ------------------------------------------------------------------ failures and lockout
def test_five_failures_lock_a_user_out_for_15_minutes_and_every_attempt_is_recorded(users):
    t0 = 1_800_000_000.0
    for k in range(5):
        with pytest.raises(SignInError, match=r"^sign-in refused: wrong user name or password$"):
            authenticate(users, "qa", f"guess-{k}", source="dashboard", now=t0 + 60 * k)
    with pytest.raises(SignInError) as refused:  # the right password, locked out
        authenticate(users, "qa", PASSWORDS["qa"], source="dashboard", now=t0 + 300)
    assert str(refused.value) == (
        "sign-in refused: too many failed attempts; try again after 2027-01-15 08:19:00 UTC"
    )
    for k in range(5):  # a name that does not exist: the same words, the same lockout
        with pytest.raises(SignInError, match=r"^sign-in refused: wrong user name or password$"):
            authenticate(users, "nobody", "x", source="opcua", now=t0 + k)
    with pytest.raises(SignInError, match=r"^sign-in refused: too many failed attempts; try"):
        authenticate(users, "nobody", "x", source="opcua", now=t0 + 5)
    assert authenticate(users, "qa", PASSWORDS["qa"], source="dashboard", now=t0 + 240 + 900)
    log = sign_in_log(users)
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    mine = [(r["user"], r["source"], r["outcome"]) for r in records if r["user"] == "qa"]
    assert mine == [("qa", "dashboard", "failed")] * 5 + [
        ("qa", "dashboard", "locked"),
        ("qa", "dashboard", "ok"),
    ]
    assert all({"t", "time", "user", "source", "outcome"} <= set(r) for r in records)


def test_the_dashboard_sign_in_and_opc_ua_share_the_lockout(env, tmp_path, monkeypatch):
    store = tmp_path
    write_users(store / "users.toml")
    monkeypatch.setenv("BIOTWIN_DATA_DIR", str(store))
    opcua = UserFileManager(store / "users.toml")
    for _ in range(5):
        assert opcua.get_user(None, username="engineer", password="wrong") is None
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.text_input(key="login_user").input("engineer")
    at.text_input(key="login_password").input(PASSWORDS["engineer"])
    at.button[0].click().run()
    assert "user" not in at.session_state
    assert next(e.value for e in at.error).startswith("sign-in refused: too many failed attempts")
    sources = [json.loads(x)["source"] for x in sign_in_log(store / "users.toml").open()]
    assert sources == ["opcua"] * 5 + ["dashboard"]


def test_a_disabled_user_cannot_sign_in(users):
    from connectors.security import set_disabled

    set_disabled(users, "maint")
    with pytest.raises(SignInError, match=r"^sign-in refused: user 'maint' is disabled$"):
        authenticate(users, "maint", PASSWORDS["maint"], source="dashboard")
    assert UserFileManager(users).get_user(None, "maint", PASSWORDS["maint"]) is None


# ------------------------------------------------------------------ users by command
def test_users_add_list_disable_through_the_command_with_standard_input(tmp_path):
    data = ["--data-dir", str(tmp_path)]
    done = biotwin("users", "add", "ada", "--role", "qa", "--full-name", "Ada L", *data,
                   stdin="correct horse battery\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    users_file = tmp_path / "users.toml"
    assert oct(users_file.stat().st_mode & 0o777) == "0o600"
    assert authenticate(users_file, "ada", "correct horse battery", source="test")["roles"] == [
        "qa"
    ]

    short = biotwin("users", "add", "bob", "--role", "qa", *data, stdin="short\n")
    assert short.returncode == 2
    assert (
        short.stderr.strip() == "error: password: must be at least 12 characters; got 5 characters"
    )
    bad_role = biotwin("users", "add", "bob", "--role", "boss", *data, stdin="long enough pw\n")
    assert (
        "role: must be one of viewer, engineer, qa, maintenance, ot-writer; got 'boss'"
        in bad_role.stderr
    )
    again = biotwin("users", "add", "ada", "--role", "qa", *data, stdin="another password\n")
    assert again.returncode == 2 and "'ada' exists already" in again.stderr

    assert biotwin("users", "disable", "ada", *data).returncode == 0
    listing = biotwin("users", "list", *data)
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if " ada " in line)
    assert re.search(r"ada\s*│\s*Ada L\s*│\s*qa\s*│\s*yes\s*│", row)
    assert re.search(r"│\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\s*│\s*0\s*│", row)  # last sign-in
    assert "scrypt" not in listing.stdout and "bob" not in listing.stdout
    with pytest.raises(SignInError, match="is disabled"):
        authenticate(users_file, "ada", "correct horse battery", source="test")


# ------------------------------------------------------------------ demo mode only on request
def test_demo_passwords_are_made_per_install_and_kept_0600(tmp_path):
    first = ensure_demo_users(tmp_path / "a" / "users.toml")
    second = ensure_demo_users(tmp_path / "b" / "users.toml")
    assert set(first) == {u for u, _ in DEMO_USERS} == set(second)
    assert all(first[u] != second[u] for u in first)
    assert "qa-demo" not in first.values()
    creds = tmp_path / "a" / DEMO_CREDENTIALS
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    assert f"qa\tqa\t{first['qa']}" in creds.read_text().splitlines()
    assert authenticate(tmp_path / "a" / "users.toml", "qa", first["qa"], source="test")
    assert ensure_demo_users(tmp_path / "a" / "users.toml") == {}  # made once, never again


def test_up_without_demo_on_a_data_dir_without_users_refuses_in_one_line(tmp_path):
    done = biotwin("up", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    (line,) = done.stdout.strip().splitlines()
    assert line.startswith(f"error: no users in {tmp_path / 'users.toml'}: add one with")
    assert "biotwin users add NAME --role qa" in line and "biotwin up --demo" in line
    assert not (tmp_path / "users.toml").exists() and not (tmp_path / "historian").exists()


# ------------------------------------------------------------------ sessions expire
def test_a_session_ends_12_hours_after_the_sign_in(tmp_path):
    key = session_key(tmp_path)
    t0 = 1_800_000_000.0
    token = session_token("qa", key, now=t0)
    assert read_session_token(token, key, now=t0 + 12 * 3600 - 1) == ("qa", t0 + 12 * 3600)
    assert read_session_token(token, key, now=t0 + 12 * 3600) is None
    with pytest.raises(ValueError, match=r"^hours: must be > 0 and <= 12; got 48$"):
        session_token("qa", key, now=t0, hours=48)


def test_an_expired_session_is_signed_out_at_the_next_click(env):
    at = AppTest.from_file(str(APP), default_timeout=60)
    sign_in_as(at, "qa")
    at.session_state["signed_in_until"] = 1.0  # ended long ago
    at.run()
    assert "user" not in at.session_state
    assert [e.value for e in at.error] == ["Your session ended: sign in again"]
    assert [t.value for t in at.title] == ["biotwin command center"]
