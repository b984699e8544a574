"""The command center in a real browser (Debian's chromium, driven by Playwright).

`.ci/run` installs chromium (apt package `chromium`); without it this test fails and says
so. The journeys of each role through a real `biotwin up` are in tests/test_journeys.py;
this file holds what they share and the first-session test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import PASSWORDS, write_users

from connectors.historian import Historian
from connectors.twin_import import import_simulation
from dashboard.cli import _streamlit_command

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained, maint):
    assert shutil.which("chromium") or Path(CHROMIUM).exists(), (
        "Debian's chromium is needed for the browser test: apt-get install chromium (.ci/run does)"
    )
    from quality.live import score_historian
    from quality.registry import Registry

    store = tmp_path_factory.mktemp("store")
    import_simulation(ROOT / "sample_data" / "twin", Historian(store / "historian"))
    write_users(store / "users.toml")
    registry = Registry(store / "models")
    for model, meta, _ in (trained, maint):  # approved models and their scores, as `up` has
        version = registry.register(model, meta)
        registry.approve(
            version,
            user="qa",
            password=PASSWORDS["qa"],
            reason="browser test",
            users_file=store / "users.toml",
        )
    score_historian(store, registry, store / "scores")
    return store


@contextmanager
def serve(store: Path):
    """A fresh Streamlit server of the command center on a free port; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        _streamlit_command(port),  # what `biotwin dashboard` runs (dashboard/serve.py)
        env={**os.environ, "BIOTWIN_DATA_DIR": str(store)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def app_url(store):
    with serve(store) as url:
        yield url


@contextmanager
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def sign_in(page, user: str, password: str) -> None:
    """Fill the sidebar sign-in form and submit it with Enter."""
    page.get_by_role("textbox", name="User").fill(user)
    page.get_by_role("textbox", name="User").press("Tab")
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("textbox", name="Password").press("Enter")  # submits the form


def test_first_session_opening_a_page_by_its_url_gets_the_app(store):
    """A fresh server whose first visitor opens /triage directly: the page used to be run
    alone (Streamlit's pages-directory mode), without the navigation and the sign-in box;
    and nobody signed in sees the sign-in page, not the page asked for."""
    from playwright.sync_api import expect

    with serve(store) as url, browser_page() as page:
        page.goto(url + "/triage", timeout=60_000)
        expect(page.get_by_text("Sign in to see the plant")).to_be_visible(timeout=60_000)
        assert page.get_by_text("Disposition", exact=True).count() == 0
        sign_in(page, "qa", PASSWORDS["qa"])
        expect(page.get_by_text("Signed in: qa")).to_be_visible(timeout=30_000)
        page.get_by_role("link", name="Batch triage (QA)").click()
        expect(page.get_by_text("Disposition", exact=True)).to_be_visible(timeout=30_000)
        assert page.locator("[data-testid='stException']").count() == 0
