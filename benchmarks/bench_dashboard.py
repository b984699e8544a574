"""Benchmark: the command center in a real browser (chromium via Playwright).

On the 60-day sample history: the first render of every page (fresh server per round, from
navigation to the page's key text), and the time from clicking "Run baseline and scenario"
(BR-202 down 24-96 h, 200 replications, 30 days) to the results ("... paired
replications"), with nothing cached (``BIOTWIN_PREFETCH_BASELINE=0``) and with the baseline
prefetched while the user fills in the form for 3 s. Goals (issue 5): first render < 2 s;
scenario < 3 s.

Also, without a browser: the Trends page's data for 10 tags over 30 days (historian read
and DuckDB min/max buckets, :func:`dashboard.trends.trend_data`), median of ``--rounds``
runs after one warm-up, and a whole run of the page's script with them (AppTest: reads,
data, the plotly figure sent). Goal: <= 1.5 s. ``--trends-only`` measures only these.

Two clocks per figure (both printed):

- in the page: a MutationObserver notes (``Date.now()``) the first animation frame whose
  document holds the text; a render is timed from the navigation call, a click from the
  button's ``mousedown`` in the page (the user's click). This is the figure for the goals;
- Playwright's: from calling ``goto``/``click`` until ``expect(...).to_be_visible()``
  returns. It adds Playwright's click actionability checks (~0.15 s) and expect's polling
  (it re-checks after 100, 250, 500 ms, then every 1 s), so it lies up to ~1 s after the
  page shows the text: an upper bound.

The browser signs in once, as a user made for the run (role engineer, random password),
before the first page is timed; its session cookie opens every later page, as a user's does.

Usage: ``python benchmarks/bench_dashboard.py [--rounds 3] [--trends-only]`` (needs
/usr/bin/chromium, except with ``--trends-only``)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
from _machine import machine

from dashboard.cli import _streamlit_command

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "": "Units running",
    "triage": "Batch triage",
    "batch": "ISA-88 phase timeline",
    "assets": "Find the window",
    "scenarios": "Run baseline and scenario",
    "models": "No model in the registry yet",  # the bench store has no models
    "trends": "Time range",
    "events": "Alarms and events",
}


STARTS: list[float] = []  # server start: launch to a healthy server (imports included)
RESULTS = "paired replications"
# When each text first shows, in page time (ms since the epoch): checked on the animation
# frame after DOM changes (cheap: at most one look per frame, none while nothing changes).
WATCH = """(() => {
  const want = %s;
  window.__shown = {};
  let queued = false;
  const look = () => {
    queued = false;
    const text = document.body ? document.body.textContent : "";
    for (const w of want) {
      if (!(w in window.__shown) && text.includes(w)) window.__shown[w] = Date.now();
    }
  };
  new MutationObserver(() => {
    if (!queued) { queued = true; requestAnimationFrame(look); }
  }).observe(document, {subtree: true, childList: true, characterData: true});
  document.addEventListener("mousedown", () => { window.__down = Date.now(); }, true);
})();"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(store: Path, prefetch: bool):
    port = free_port()
    env = {
        **os.environ,
        "BIOTWIN_DATA_DIR": str(store),
        "BIOTWIN_PREFETCH_BASELINE": "1" if prefetch else "0",
    }
    # what `biotwin dashboard` runs: dashboard/serve.py (imports done before it listens)
    proc = subprocess.Popen(
        _streamlit_command(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    try:
        for _ in range(1200):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            time.sleep(0.05)
        STARTS.append(time.perf_counter() - t0)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def trend_data_times(store: Path, rounds: int) -> list[float]:
    """Seconds of :func:`dashboard.trends.trend_data` for 10 tags over the last 30 days of
    the store, ``rounds`` times after one warm-up run."""
    from connectors.historian import Historian
    from dashboard.trends import trend_data

    h = Historian(store / "historian")
    tags = h.tags()
    names = list(tags.loc[tags["unit"] == "BR-201", "tag"][:10])
    end = tags["last_time"].max()
    start = end - pd.Timedelta(days=30)
    trend_data(h, names, start, end)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        trend = trend_data(h, names, start, end)
        times.append(time.perf_counter() - t0)
    print(
        f"trend data, {len(names)} tags x 30 days ({trend.samples:,} samples, "
        f"{len(trend.lines):,} points drawn): {statistics.median(times):.2f} s ("
        + ", ".join(f"{t:.2f}" for t in times)
        + ")"
    )
    return times


def trend_page_times(store: Path, rounds: int) -> list[float]:
    """Seconds of a whole run of the Trends page script (server side, Streamlit's AppTest:
    historian reads, trend data, the plotly figure sent) with 10 tags over the last 30 days;
    ``rounds`` reruns after the run that chose them."""
    from streamlit.testing.v1 import AppTest

    os.environ["BIOTWIN_DATA_DIR"] = str(store)
    at = AppTest.from_file(str(ROOT / "dashboard" / "views" / "trends.py"), default_timeout=120)
    at.run()
    labels = list(at.multiselect(key="tr_tags").options)
    br = [o for o in labels if o.startswith(("TIC-201", "AIC-201", "SIC-201", "FIC-201"))]
    picked = list(dict.fromkeys(br + labels))[:10]
    at.multiselect(key="tr_tags").set_value(picked)
    at.radio(key="tr_range").set_value("Last 30 days")
    at.run()
    if at.exception:
        raise RuntimeError(f"the Trends page failed: {at.exception[0].message}")
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    print(
        f"Trends page run (AppTest, server side), {len(picked)} tags x 30 days: "
        f"{statistics.median(times):.2f} s (" + ", ".join(f"{t:.2f}" for t in times) + ")"
    )
    return times


def main() -> None:
    from connectors.historian import Historian
    from connectors.security import add_user
    from connectors.twin_import import import_simulation

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trends-only", action="store_true", help="no browser: trend data")
    args = parser.parse_args()
    print(machine())
    if args.trends_only:
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp)
            import_simulation(ROOT / "sample_data" / "twin", Historian(store / "historian"))
            trend_data_times(store, max(args.rounds, 5))
            trend_page_times(store, max(args.rounds, 5))
        return
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        store = Path(tmp)
        import_simulation(ROOT / "sample_data" / "twin", Historian(store / "historian"))
        password = secrets.token_urlsafe(16)
        add_user(store / "users.toml", "bench", password=password, roles=["engineer"])
        trend_data_times(store, max(args.rounds, 5))
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        watch = WATCH % json.dumps([*PAGES.values(), RESULTS])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(watch)
        new_page = context.new_page
        signed_in = []

        def sign_in(url: str) -> None:
            """Sign in once (the cookie, signed with the store's key, outlives the server)."""
            if signed_in:
                return
            page = new_page()
            page.goto(url, timeout=60_000)
            page.get_by_role("textbox", name="User").fill("bench")
            page.get_by_role("textbox", name="Password").fill(password)
            page.get_by_role("textbox", name="Password").press("Enter")
            expect(page.get_by_text("Signed in:").first).to_be_visible(timeout=60_000)
            while not any(c["name"] == "biotwin_session" for c in context.cookies()):
                page.wait_for_timeout(250)
            page.close()
            signed_in.append(True)

        def shown(page, text: str) -> float:
            """Epoch seconds at which the page first held ``text``."""
            return page.evaluate("(w) => window.__shown[w]", text) / 1000

        renders: dict[str, list[float]] = {k: [] for k in PAGES}
        renders_pw: dict[str, list[float]] = {k: [] for k in PAGES}
        labels = ("nothing cached", "baseline prefetched")
        clicks: dict[str, list[float]] = {k: [] for k in labels}
        clicks_pw: dict[str, list[float]] = {k: [] for k in labels}
        for _ in range(args.rounds):
            with server(store, prefetch=False) as url:
                sign_in(url)
                page = new_page()
                for path, text in PAGES.items():
                    t0, w0 = time.perf_counter(), time.time()
                    page.goto(f"{url}/{path}", timeout=60_000)
                    expect(page.get_by_text(text).first).to_be_visible(timeout=60_000)
                    renders_pw[path].append(time.perf_counter() - t0)
                    renders[path].append(shown(page, text) - w0)
                page.close()
            for label, prefetch, wait in zip(labels, (False, True), (0, 3), strict=True):
                with server(store, prefetch=prefetch) as url:
                    page = new_page()
                    page.goto(f"{url}/scenarios", timeout=60_000)
                    button = page.get_by_role("button", name="Run baseline and scenario")
                    expect(button).to_be_visible(timeout=60_000)
                    time.sleep(wait)
                    t0 = time.perf_counter()
                    button.click()
                    expect(page.get_by_text(RESULTS).first).to_be_visible(timeout=120_000)
                    clicks_pw[label].append(time.perf_counter() - t0)
                    down = page.evaluate("window.__down") / 1000
                    if shown(page, RESULTS) <= down:
                        raise RuntimeError("the results were on the page before the click")
                    clicks[label].append(shown(page, RESULTS) - down)
                    page.close()
        browser.close()
    med = statistics.median
    print(
        f"server start (launch to healthy): {med(STARTS):.2f} s ("
        + ", ".join(f"{t:.2f}" for t in STARTS)
        + ")"
    )

    def line(times: list[float], pw: list[float]) -> str:
        return (
            f"{med(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)}); "
            f"Playwright's clock {med(pw):.2f} s ({', '.join(f'{t:.2f}' for t in pw)})"
        )

    for path, times in renders.items():
        print(f"first render /{path}: {line(times, renders_pw[path])}")
    for label, times in clicks.items():
        print(f"scenario click to results, {label}: {line(times, clicks_pw[label])}")


if __name__ == "__main__":
    main()
