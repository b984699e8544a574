"""Each role's journey through a real `biotwin up` in a temporary data dir, in Debian's chromium.

`biotwin up --demo` runs as `make run` runs it (demo users with passwords made for this data
dir, warm history, the twin over OPC UA, the ingest, scoring, the command center); only the
models are trained beforehand (the session's test models, registered: `up --demo` approves
them as the demo set-up, as after its own training), so that the journey does not wait
minutes for training. The users sign in with the passwords `up` wrote to
demo-credentials.txt. Screenshots go to $BIOTWIN_SCREENSHOTS when set (e.g. docs/screenshots to
refresh the README's), else to a temporary folder: tests leave the tree clean.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.test_browser import CHROMIUM, browser_page, free_port
from tests.test_browser import sign_in as fill_sign_in

SHOTS = Path(os.environ.get("BIOTWIN_SCREENSHOTS") or tempfile.mkdtemp(prefix="biotwin-shots-"))
#: words a user must never read on a page
SNAKE = re.compile(r"\b[a-z]+_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def plant(tmp_path_factory, trained, maint):
    """A running `biotwin up` on free ports; yields (url, data dir)."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install chromium"
    from quality.registry import Registry

    root = tmp_path_factory.mktemp("up")
    registry = Registry(root / "models")
    for model, meta, _ in (trained, maint):
        registry.register(model, meta)
    port, opcua, receive = free_port(), free_port(), free_port()
    log = open(root / "up.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "biotwin", "up", "--demo", "--data-dir", str(root),
         "--port", str(port), "--opcua-port", str(opcua), "--receive-port", str(receive)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, (root / "up.log").read_text()
                time.sleep(1)
        yield url, root
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def password(root: Path, user: str) -> str:
    """``user``'s password from the demo-credentials.txt that `biotwin up --demo` wrote."""
    for line in (root / "demo-credentials.txt").read_text().splitlines():
        if not line.startswith("#") and line.split("\t")[0] == user:
            return line.split("\t")[2]
    raise AssertionError(f"no {user} in {root / 'demo-credentials.txt'}")


TEXT_JS = """() => {
    const app = document.querySelector("[data-testid='stAppViewContainer']");
    const copy = app.cloneNode(true);
    // icon ligatures (keyboard_arrow_right) are drawn as icons, not read as words
    copy.querySelectorAll("[data-testid*='Icon'], .material-symbols-rounded")
        .forEach((e) => e.remove());
    document.body.appendChild(copy);
    const text = copy.innerText;
    copy.remove();
    return text;
}"""


def page_text(page) -> str:
    """The text a user reads on the page (icons left out)."""
    return page.evaluate(TEXT_JS)


def no_bad_words(page) -> None:
    """No "None", "nan" or snake_case label in the page's text (the sidebar included)."""
    text = page_text(page)
    assert not re.search(r"\bNone\b|\bnan\b|\bNaN\b", text), text[:2000]
    bad = sorted(set(SNAKE.findall(text)))
    assert not bad, bad
    assert page.locator("[data-testid='stException']").count() == 0


def sign_in(page, user: str, password: str) -> None:
    """Sign in with the sidebar form and wait until the sidebar says so."""
    from playwright.sync_api import expect

    expect(page.get_by_role("textbox", name="User")).to_be_visible(timeout=60_000)
    fill_sign_in(page, user, password)
    expect(page.get_by_text("Signed in:").first).to_be_visible(timeout=60_000)
    deadline = time.monotonic() + 30
    while not any(c["name"] == "biotwin_session" for c in page.context.cookies()):
        assert time.monotonic() < deadline, "signed in, but no session cookie after 30 s"
        page.wait_for_timeout(250)


def goto(page, url: str, link: str) -> None:
    page.get_by_role("link", name=link).click()
    page.wait_for_load_state("networkidle")


def test_viewer_sees_a_living_plant(plant):
    from playwright.sync_api import expect

    url, root = plant
    SHOTS.mkdir(parents=True, exist_ok=True)
    with browser_page() as page:
        page.goto(url, timeout=60_000)
        # nobody signed in: the sign-in page, no plant data
        expect(page.get_by_text("Sign in to see the plant")).to_be_visible(timeout=60_000)
        assert page.get_by_role("link", name="Plant overview").count() == 0
        sign_in(page, "viewer", password(root, "viewer"))
        running = page.locator("[data-testid='stMetric']").filter(has_text="Units running")
        expect(running).to_be_visible(timeout=90_000)
        deadline = time.monotonic() + 90
        while "0 of 12" in running.inner_text() and time.monotonic() < deadline:
            time.sleep(2)
        assert re.search(r"[1-9]\d* of 12", running.inner_text())
        expect(page.get_by_text("Data: live")).to_be_visible(timeout=60_000)
        # the run after the sign-in has finished: the form is gone, the page is complete
        expect(page.get_by_role("textbox", name="User")).to_have_count(0, timeout=60_000)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)
        no_bad_words(page)
        # a viewer reads triage but cannot disposition; the Deploy button is not shown
        goto(page, url, "Batch triage (QA)")
        expect(page.get_by_text("Only QA can disposition")).to_be_visible(timeout=60_000)
        assert page.get_by_text("Deploy", exact=True).count() == 0
        no_bad_words(page)


def test_qa_triages_the_live_batches_and_signs_as_an_ebr(plant):
    from playwright.sync_api import expect

    from connectors.batch_states import LIVE, batch_states
    from connectors.historian import Historian
    from quality.live import plant_clock
    from twin.config import load_config

    url, root = plant
    with browser_page() as page:
        page.goto(url + "/triage", timeout=60_000)
        sign_in(page, "qa", password(root, "qa"))
        goto(page, url, "Batch triage (QA)")
        expect(page.get_by_text("The live plant at")).to_be_visible(timeout=60_000)
        # scores arrive within a minute of the start (the scoring service)
        deadline = time.monotonic() + 120
        while not (root / "scores" / "batch_scores.parquet").exists():
            assert time.monotonic() < deadline, "no scores after 2 minutes"
            time.sleep(2)
        page.reload()
        expect(page.get_by_text("Signed in:").first).to_be_visible(timeout=60_000)  # a reload
        expect(page.get_by_text("Batch detail")).to_be_visible(timeout=60_000)
        # the batches offered are exactly the live plant's in progress / awaiting disposition
        box = page.locator("[data-testid='stSelectbox']").filter(has_text="Batch").first
        box.click()
        offered = set(page.locator("[role='option']").all_inner_texts())
        page.keyboard.press("Escape")
        h = Historian(root / "historian")
        ctx = h.batch_context()
        states = batch_states(ctx, load_config(), plant_clock(h, ctx))
        live = set(states.index[states["state"].isin(LIVE)])
        assert offered and offered <= live | set(
            states.index[states["state"] == "finished earlier"]
        )
        assert live & offered == live - _decided(root, states), (offered, live)
        scores = pd.read_parquet(root / "scores" / "batch_scores.parquet")
        clock = pd.Timestamp(scores["plant_time"].max())
        assert (scores["last_seen"] >= clock - pd.Timedelta(days=2)).all()
        page.screenshot(path=str(SHOTS / "triage.png"), full_page=True)
        no_bad_words(page)

        # a wrong password keeps the decision and the reason
        reason = "Record reviewed: hold for the pH investigation"
        page.get_by_text("hold", exact=True).click()
        page.get_by_role("textbox", name="Reason").fill(reason)
        page.get_by_role("textbox", name="Password (signature)").fill("wrong")
        page.get_by_role("button", name="Sign", exact=True).click()
        expect(page.get_by_text("password", exact=False).last).to_be_visible(timeout=30_000)
        expect(page.get_by_role("textbox", name="Reason")).to_have_value(reason)
        # signed properly: the batch is on hold
        page.get_by_role("textbox", name="Password (signature)").fill(password(root, "qa"))
        page.get_by_role("button", name="Sign", exact=True).click()
        expect(page.get_by_text("Signed: hold")).to_be_visible(timeout=30_000)
        # a release after a hold asks for a confirmation and a second QA signer
        page.get_by_text("release", exact=True).click()
        expect(page.get_by_text("Four eyes: releasing")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("textbox", name="Second signer (QA user)")).to_be_visible()
        page.screenshot(path=str(SHOTS / "disposition.png"), full_page=True)
        no_bad_words(page)


def _decided(root: Path, states: pd.DataFrame) -> set[str]:
    """Finished batches with a decision: signed in biotwin, or in the plant's records from
    before biotwin (simulation/batches.parquet); they no longer await disposition."""
    from dashboard.audit import AuditTrail

    done = set()
    if (root / "audit").exists():
        trail = AuditTrail(root / "audit", root / "users.toml")
        done |= {b for b, r in trail.decisions().items() if r.get("decision") != "hold"}
    records = root / "simulation" / "batches.parquet"
    if records.exists():
        b = pd.read_parquet(records, columns=["batch_id", "disposition"])
        done |= set(b.loc[b["disposition"].isin(["released", "rejected"]), "batch_id"])
    return done & set(states.index[states["state"] == "awaiting disposition"])


def test_engineer_trends_a_tag_with_its_unit(plant):
    from playwright.sync_api import expect

    url, root = plant
    with browser_page() as page:
        page.goto(url, timeout=60_000)
        sign_in(page, "engineer", password(root, "engineer"))
        goto(page, url, "Trends")
        expect(page.get_by_text("Tags").first).to_be_visible(timeout=60_000)
        page.get_by_role("textbox", name="Search tag name or description").fill("TIC-201")
        page.get_by_role("textbox", name="Search tag name or description").press("Enter")
        tags = page.locator("[data-testid='stMultiSelect']").first
        tags.click()
        page.locator("[role='option']").filter(has_text="TIC-201.PV").first.click()
        page.keyboard.press("Escape")
        chart = page.locator("[data-testid='stPlotlyChart']").first
        expect(chart).to_be_visible(timeout=60_000)
        expect(chart.get_by_text("°C").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(SHOTS / "trends.png"), full_page=True)
        no_bad_words(page)


def test_planner_sees_dated_lot_delays_of_an_outage(plant):
    from playwright.sync_api import expect

    url, root = plant
    with browser_page() as page:
        page.goto(url, timeout=60_000)
        sign_in(page, "engineer", password(root, "engineer"))
        goto(page, url, "Downtime scenarios")
        expect(page.get_by_text("Outage", exact=True)).to_be_visible(timeout=60_000)
        page.locator("[data-testid='stSelectbox']").filter(has_text="Unit down").click()
        page.locator("[role='option']").filter(has_text="BR-201").first.click()
        hours = page.get_by_role("spinbutton", name="for (h)")
        hours.fill("96")
        hours.press("Tab")
        page.get_by_role("spinbutton", name="Replications").fill("20")
        page.get_by_role("button", name="Run baseline and scenario").click()
        expect(page.get_by_text("Lots: when they finish").first).to_be_visible(timeout=240_000)
        text = page_text(page)
        assert re.search(r"20\d\d-\d\d-\d\d|\b\d{1,2} \w{3}\b", text)  # dates, not hours
        page.screenshot(path=str(SHOTS / "scenarios.png"), full_page=True)
        no_bad_words(page)


def test_maintenance_models_and_batch_record_read_as_words(plant):
    from playwright.sync_api import expect

    url, root = plant
    with browser_page() as page:
        page.goto(url, timeout=60_000)
        sign_in(page, "maint", password(root, "maint"))
        goto(page, url, "Asset health")
        expect(page.get_by_role("button", name="Find the window")).to_be_visible(timeout=90_000)
        page.screenshot(path=str(SHOTS / "assets.png"), full_page=True)
        no_bad_words(page)
        goto(page, url, "Alarms & events")
        page.wait_for_timeout(3000)
        page.screenshot(path=str(SHOTS / "events.png"), full_page=True)
        no_bad_words(page)
        goto(page, url, "Models")
        expect(page.get_by_text("Intended use").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(SHOTS / "models.png"), full_page=True)
        no_bad_words(page)
        # the batch record of the batch triage ranks first
        scores = pd.read_parquet(root / "scores" / "batch_scores.parquet")
        first = scores.sort_values("p_deviation").iloc[-1]["batch_id"]
        page.goto(f"{url}/batch?batch={first}", timeout=60_000)
        expect(page.get_by_text(f"{first}").first).to_be_visible(timeout=60_000)
        expect(page.locator("[data-testid='stPlotlyChart']").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(SHOTS / "batch.png"), full_page=True)
        no_bad_words(page)
