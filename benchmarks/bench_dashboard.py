"""Benchmark: the command center in a real browser (chromium via Playwright).

On the 60-day sample history: the first render of every page (fresh server per round, time
from navigation to the page's key text), and the time from clicking "Run baseline and
scenario" (BR-202 down 24-96 h, 200 replications, 30 days) to the results table, with
nothing cached (``BIOTWIN_PREFETCH_BASELINE=0``) and with the baseline prefetched while the
user fills in the form for 3 s. Goals (issue 5): first render < 2 s; scenario < 3 s.

Usage: ``python benchmarks/bench_dashboard.py [--rounds 3]`` (needs /usr/bin/chromium)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from _machine import machine

from dashboard.cli import _streamlit_command

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "": "units running",
    "triage": "Batch triage",
    "assets": "Find the window",
    "scenarios": "Run baseline and scenario",
    "models": "No model in the registry yet",  # the bench store has no models
}


STARTS: list[float] = []  # server start: launch to a healthy server (imports included)


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


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    from connectors.historian import Historian
    from connectors.security import ensure_demo_users
    from connectors.twin_import import import_simulation

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        store = Path(tmp)
        import_simulation(ROOT / "sample_data" / "twin", Historian(store / "historian"))
        ensure_demo_users(store / "users.toml")
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        renders: dict[str, list[float]] = {k: [] for k in PAGES}
        clicks: dict[str, list[float]] = {"nothing cached": [], "baseline prefetched": []}
        for _ in range(args.rounds):
            with server(store, prefetch=False) as url:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                for path, text in PAGES.items():
                    t0 = time.perf_counter()
                    page.goto(f"{url}/{path}", timeout=60_000)
                    expect(page.get_by_text(text).first).to_be_visible(timeout=60_000)
                    renders[path].append(time.perf_counter() - t0)
                page.close()
            for label, prefetch, wait in (
                ("nothing cached", False, 0),
                ("baseline prefetched", True, 3),
            ):
                with server(store, prefetch=prefetch) as url:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(f"{url}/scenarios", timeout=60_000)
                    button = page.get_by_role("button", name="Run baseline and scenario")
                    expect(button).to_be_visible(timeout=60_000)
                    time.sleep(wait)
                    t0 = time.perf_counter()
                    button.click()
                    expect(page.get_by_text("paired replications")).to_be_visible(timeout=120_000)
                    clicks[label].append(time.perf_counter() - t0)
                    page.close()
        browser.close()
    med = statistics.median
    print(
        f"server start (launch to healthy): {med(STARTS):.2f} s ("
        + ", ".join(f"{t:.2f}" for t in STARTS)
        + ")"
    )
    for path, times in renders.items():
        print(
            f"first render /{path}: {med(times):.2f} s ("
            + ", ".join(f"{t:.2f}" for t in times)
            + ")"
        )
    for label, times in clicks.items():
        print(
            f"scenario click to results, {label}: {med(times):.2f} s ("
            + ", ".join(f"{t:.2f}" for t in times)
            + ")"
        )


if __name__ == "__main__":
    main()
