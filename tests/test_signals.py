"""A biotwin command that is stopped stops its children (biotwin/children.py).

``biotwin dashboard`` is started for real on a free port; once Streamlit answers, the
command gets SIGTERM, SIGINT or SIGKILL, and within a few seconds the port must be free and
every process it started gone. ``biotwin up``'s supervisor is checked on its parts with real
process trees (a full ``up`` trains models first: tests/test_up.py and the browser journeys
start it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from biotwin.children import stop_groups
from dashboard.cli import _Service

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        todo.extend(kids - found)
        found |= kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` (SO_REUSEADDR: the closed connections of the health
    checks may linger in TIME_WAIT, which is not a server)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(done, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.1)
    return done()


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name
)
def test_a_stopped_biotwin_dashboard_leaves_no_streamlit_behind(tmp_path, sig):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "biotwin", "dashboard", "--port", str(port)]
    parent = subprocess.Popen(
        [*argv, "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the signal reaches the command only, as `kill PID` does
    )
    children: set[int] = set()
    try:
        assert wait_until(lambda: serves(port), 90), "the dashboard never served"
        children = descendants(parent.pid)
        assert children, "biotwin dashboard started no child"
        os.kill(parent.pid, sig)
        parent.wait(timeout=15)
        assert wait_until(lambda: not any(alive(p) for p in children), 5), [
            p for p in children if alive(p)
        ]
        assert wait_until(lambda: port_free(port), 5)
    finally:
        for pid in [parent.pid, *children]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


#: a service that starts a grandchild (as the ingest starts its workers), both long-lived
TREE = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
    "time.sleep(120)"
)
#: a service that ignores SIGTERM
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


def test_the_supervisor_stops_every_service_group_grandchildren_too(tmp_path):
    services = [
        _Service(name, [sys.executable, "-c", code], dict(os.environ), tmp_path)
        for name, code in (("tree", TREE), ("stubborn", STUBBORN))
    ]
    for service in services:
        service.start()
    tree = services[0].proc.pid
    assert wait_until(lambda: len(descendants(tree)) == 1, 10)
    pids = {tree, services[1].proc.pid, *descendants(tree)}
    t0 = time.monotonic()
    stop_groups([s.proc for s in services], timeout_s=1.0)
    took = time.monotonic() - t0
    assert not [p for p in pids if alive(p)]
    assert took < 4.0  # SIGTERM, then SIGKILL for the stubborn one after 1 s


def test_a_restart_back_off_ends_when_stopping(tmp_path):
    """A service that died is restarted after a back-off (2 s, 4 s, ... 30 s); a stop
    during the back-off ends it at once and starts nothing."""
    service = _Service("dies", [sys.executable, "-c", "pass"], dict(os.environ), tmp_path)
    service.start()
    service.proc.wait()
    stopping = threading.Event()
    threading.Timer(0.3, stopping.set).start()
    first = service.proc
    t0 = time.monotonic()
    service.check(stopping)
    assert time.monotonic() - t0 < 1.5
    assert service.proc is first  # not restarted
