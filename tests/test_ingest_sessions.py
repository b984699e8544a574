"""`biotwin ingest --sessions 2`: tags sharded over two worker processes, one historian.

A node-opcua server (connectors/interop/server.js) on 127.0.0.1 changes its Double tags
every 100 ms, the value being the tick number; the ingest runs as the real command, is
stopped with SIGTERM, and every value is then checked against the server's tick count.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from connectors.historian import Historian
from connectors.ingest import TagSpec
from connectors.ingest_shards import split_tags

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT / "connectors" / "interop"
TAGS = 300
SERVER = ("--rate", "10", "--seconds", "0")  # produce until SIGUSR2
INGEST = ("--sessions", "2", "--publishing-ms", "200")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _json_line(stream) -> dict:
    for _ in range(50):
        line = stream.readline()
        if line.startswith("{"):
            return json.loads(line)
        if not line:
            break
    raise AssertionError("the node-opcua server printed no JSON line")


def _children(pid: int) -> set[int]:
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


def _wait_for_ticks(root: Path, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        ticks = Historian(root).query(["Tick"])["value"] if root.exists() else []
        if len(ticks):
            first = ticks.min() if first is None else first
            if ticks.max() - first >= n:
                return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {n} ticks reached the historian in {timeout:g} s")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_split_is_deterministic_round_robin_and_keeps_a_units_context_together():
    specs = [TagSpec(f"ns=1;s={t}", t) for t in ("c", "a", "d", "b", "e")]
    context = [
        ("ns=1;s=U2.State", "U2", "State"),
        ("ns=1;s=U1.BatchId", "U1", "BatchId"),
        ("ns=1;s=U1.State", "U1", "State"),
    ]
    shards = split_tags(specs, context, 2)
    assert [[s.tag for s in part] for part, _ in shards] == [["a", "c", "e"], ["b", "d"]]
    assert [sorted(u for _, u, _ in ctx) for _, ctx in shards] == [["U1", "U1"], ["U2"]]
    assert split_tags(list(reversed(specs)), context[::-1], 2) == shards
    assert [len(p) for p, _ in split_tags(specs, [], 3)] == [2, 2, 1]


def test_two_sessions_store_every_value_once_and_sigterm_leaves_no_worker(tmp_path):
    node = shutil.which("node")
    assert node, "Node.js is needed (apt install nodejs)"
    assert (INTEROP / "node_modules" / "node-opcua").is_dir(), (
        "node-opcua is not installed: run `npm ci --prefix connectors/interop` (make test does)"
    )
    port = free_port()
    server = subprocess.Popen(
        [node, str(INTEROP / "server.js"), "--port", str(port), "--tags", str(TAGS), *SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    try:
        assert _json_line(server.stdout).get("ready")
        url = f"opc.tcp://127.0.0.1:{port}/UA/node"
        ingest = subprocess.Popen(
            [sys.executable, "-m", "biotwin", "ingest", url, *INGEST, "--data-dir", str(tmp_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            line = ingest.stdout.readline()  # ends with the process at worst
            assert "in 2 sessions" in line, line
            workers = _children(ingest.pid)
            assert len(workers) >= 2  # two workers (and multiprocessing's resource tracker)
            # let at least 30 ticks reach the historian, however slow the machine, then stop
            # the production (SIGUSR2) and read how many ticks the server made
            _wait_for_ticks(tmp_path / "historian", 30, timeout=120)
            server.send_signal(signal.SIGUSR2)
            done = _json_line(server.stdout)
            time.sleep(1.5)  # the last publish (200 ms) and flush (500 ms)
            ingest.send_signal(signal.SIGTERM)
            out, _ = ingest.communicate(timeout=30)
        finally:
            if ingest.poll() is None:
                ingest.kill()
        assert ingest.returncode == 0
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "a worker outlived SIGTERM to the parent"
    finally:
        server.terminate()
        server.wait(timeout=10)

    ticks = done["ticks"]
    historian = Historian(tmp_path / "historian")
    data = historian.query()
    bench = data[data["tag"].str.startswith("T0")]
    per_tag = bench.groupby("tag")["value"].agg(["min", "max", "count"])
    assert len(per_tag) == TAGS
    # every tick from the first one a session saw to the last one produced, once per tag
    assert (per_tag["max"] == ticks).all()
    assert (per_tag["count"] == per_tag["max"] - per_tag["min"] + 1).all()
    assert (per_tag["count"] >= 20).all()
    # exactly once on disk too, and each worker wrote its own segments
    files = sorted((tmp_path / "historian" / "segments").rglob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f, columns=["tag", "time"]).to_pylist()]
    keys = {(r["tag"], r["time"]) for r in rows}
    assert len(rows) == len(keys) == len(data)
    writers = {int(f.name.split("-")[2]) for f in files}
    assert len(writers & workers) == 2
    stored = int(out.split("stopped: ")[1].split(" values")[0].replace(",", ""))
    assert stored == len(data)


def test_a_dead_worker_is_reported_and_restarted(tmp_path):
    import asyncio

    from connectors.ingest_shards import ShardedIngest

    node = shutil.which("node")
    assert node, "Node.js is needed (apt install nodejs)"
    port = free_port()
    server = subprocess.Popen(
        [node, str(INTEROP / "server.js"), "--port", str(port), "--tags", "50", "--rate", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    events: list[str] = []

    async def main() -> tuple[int, int, ShardedIngest]:
        job = ShardedIngest(
            f"opc.tcp://127.0.0.1:{port}/UA/node",
            Historian(tmp_path / "historian"),
            tmp_path / "spool",
            sessions=2,
            publishing_ms=200,
            restart_backoff_s=(0.2, 1.0),
        )
        job.on_event = events.append
        task = asyncio.create_task(job.run())
        await asyncio.wait_for(job.connected.wait(), 60)
        victim = job.pids()[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if job.connected.is_set() and job.pids()[1] != victim:
                break
        await asyncio.sleep(1.5)
        job.stop()
        await task
        return victim, job.pids()[1], job

    try:
        assert _json_line(server.stdout).get("ready")
        victim, successor, job = asyncio.run(main())
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert successor != victim and not _alive(successor)
    assert job.restarts == 1
    assert any(f"pid {victim}) died" in e for e in events), events
    historian = Historian(tmp_path / "historian")
    files = sorted((tmp_path / "historian" / "segments").rglob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f, columns=["tag", "time"]).to_pylist()]
    assert len(rows) == len({(r["tag"], r["time"]) for r in rows}) == historian.count()
    # the restarted worker went on storing its tags
    mine = sorted(s.tag for s in job.workers[1].specs if s.tag.startswith("T0"))
    last = historian.query(["Tick"])["value"].max()
    assert successor in {int(f.name.split("-")[2]) for f in files}
    assert (historian.query(mine).groupby("tag")["value"].max() >= last - 5).all()
