"""Interoperability with an independent OPC UA implementation (node-opcua), both ways.

node-opcua is installed by `make test` (`npm ci --prefix connectors/interop`); if it is
missing these tests fail and say so: they do not skip.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from connectors.historian import FLAG_BAD_STATUS, Historian
from connectors.ingest import Ingest
from connectors.server import TwinServer

INTEROP = Path(__file__).resolve().parents[1] / "connectors" / "interop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    assert exe, "Node.js is needed for the interoperability tests (apt install nodejs)"
    assert (INTEROP / "node_modules" / "node-opcua").is_dir(), (
        "node-opcua is not installed: run `npm ci --prefix connectors/interop` (make test does)"
    )
    return exe


def test_node_opcua_client_browses_and_subscribes_to_our_server(config, tmp_path, node):
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/"

    async def main():
        server = TwinServer(
            config, url, tmp_path, speed=600, horizon_days=2, security="none", allow_anonymous=True
        )
        await server.setup()
        serving = asyncio.create_task(server.run())
        await server.serving.wait()
        proc = await asyncio.create_subprocess_exec(
            node, str(INTEROP / "client.js"), url, "3", stdout=subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        server.stop()
        await serving
        return json.loads(out.decode().strip().splitlines()[-1])

    seen = asyncio.run(main())
    assert "error" not in seen, seen
    assert seen["path"] == [config.plant.site, config.plant.area, config.plant.line, "BR-201"]
    assert seen["unitId"] == (ord("C") << 16) | (ord("E") << 8) | ord("L")
    assert seen["displayName"] == "°C" and seen["euRange"] == [0, 150]
    assert seen["values"] >= 10  # 10 twin samples per second for 3 s


def _json_line(stream) -> dict:
    """The next line of JSON the script prints (node-opcua may print notices before)."""
    for _ in range(50):
        line = stream.readline()
        if line.startswith("{"):
            return json.loads(line)
        if not line:
            break
    raise AssertionError("the node-opcua script printed no JSON line")


def test_our_ingest_stores_a_node_opcua_server(tmp_path, node):
    port = free_port()
    proc = subprocess.Popen(
        [
            node,
            str(INTEROP / "server.js"),
            "--port",
            str(port),
            "--tags",
            "20",
            "--rate",
            "10",
            "--seconds",
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = _json_line(proc.stdout)
        assert ready["ready"]
        url = f"opc.tcp://127.0.0.1:{port}/UA/node"
        historian = Historian(tmp_path / "historian")

        async def main():
            ingest = Ingest(url, historian, tmp_path / "spool", publishing_ms=100)
            job = asyncio.create_task(ingest.run())
            done = await asyncio.to_thread(_json_line, proc.stdout)
            await asyncio.sleep(1.5)
            ingest.stop()
            await job
            return done

        done = asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    ticks = done["ticks"]
    tags = historian.tags().set_index("tag")
    assert {"T00001", "T00020", "FloatTag", "IntTag", "Flag", "Broken", "Tick"} <= set(tags.index)
    assert tags.loc["FloatTag", "node_id"].endswith("i=5001")  # numeric node id
    assert tags.loc["T00001", "node_id"].endswith("s=Bench.T00001")  # string node id
    tick = historian.query(["Tick"])
    produced = set(range(1, ticks + 1))
    stored = set(tick["value"].astype(int))
    # every tick the server produced while subscribed is there once (tick 0 is the initial value)
    first = min(stored - {0})
    assert produced - set(range(1, first)) <= stored
    t1 = historian.query(["T00001"])
    assert not t1.duplicated("time").any()
    assert set(t1["value"].astype(int)) >= set(range(first, ticks + 1))
    broken = historian.query(["Broken"])
    assert len(broken) >= 1 and (broken["quality"] == 2).all()
    assert (broken["flags"] & FLAG_BAD_STATUS).all()
    flags = historian.query(["Flag"])
    assert set(flags["value"]) <= {0.0, 1.0} and len(flags) > 3
