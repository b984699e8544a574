"""`biotwin receive` with an independent OT writer: node-opcua (connectors/interop/writer.js).

The writer signs in as an ot-writer (user name, password encrypted with the server's
certificate) over Basic256Sha256 SignAndEncrypt with a client certificate trusted the way
`biotwin opcua-certs --trust` trusts it. node-opcua is installed by `make test` (`npm ci
--prefix connectors/interop`); if it is missing these tests fail and say so.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connectors.historian import Historian
from connectors.receive import ReceiveServer
from connectors.receive_tags import read_tag_file
from connectors.security import add_user, client_certificate, trust_certificate
from tests.test_receive import free_port

INTEROP = Path(__file__).resolve().parents[1] / "connectors" / "interop"
ROOT = Path(__file__).resolve().parents[1]
PASSWORDS = {"gateway": "gateway-test-password", "viewer": "viewer-test-password"}
N_TAGS = 200


def _tags_csv(path: Path, n: int) -> Path:
    lines = ["tag,unit,eng_unit,eu_low,eu_high,data_type,description"]
    lines += [f"T{i:04d},U{i % 4},CEL,0,1000000,Double,tag {i}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    assert exe, "Node.js is needed for the interoperability tests (apt install nodejs)"
    assert (INTEROP / "node_modules" / "node-opcua").is_dir(), (
        "node-opcua is not installed: run `npm ci --prefix connectors/interop` (make test does)"
    )
    return exe


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A data dir with an ot-writer, a viewer and the writer's trusted client certificate."""
    data = tmp_path_factory.mktemp("receive-node")
    add_user(data / "users.toml", "gateway", password=PASSWORDS["gateway"], roles=["ot-writer"])
    add_user(data / "users.toml", "viewer", password=PASSWORDS["viewer"], roles=["viewer"])
    cert, _ = asyncio.run(client_certificate(data / "writer", "urn:biotwin:writer", trust=False))
    pem = data / "writer" / "writer-cert.pem"
    pem.write_bytes(x509.load_der_x509_certificate(cert.read_bytes()).public_bytes(Encoding.PEM))
    trust_certificate(data / "pki", pem)  # what `biotwin opcua-certs --trust` does
    _tags_csv(data / "tags.csv", N_TAGS)
    _tags_csv(data / "two.csv", 2)
    return data


class _Background:
    """A receiver serving in its own thread and event loop."""

    def __init__(self, data: Path) -> None:
        self.url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/receive"
        self.loop = asyncio.new_event_loop()
        self.server = ReceiveServer(read_tag_file(data / "tags.csv"), self.url, data)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.setup(), self.loop).result(60)
        self.job = asyncio.run_coroutine_threadsafe(self.server.run(), self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self.job.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def receiver(store, node):
    background = _Background(store)
    yield background
    background.close()


def write(node, store: Path, url: str, *args, user: str = "gateway", tags: str = "tags.csv"):
    """Run the node-opcua writer; returns its summary line (and the ack lines)."""
    cmd = [
        node, str(INTEROP / "writer.js"), "--url", url, "--user", user,
        "--password-env", "WRITER_PASSWORD", "--tags", str(store / tags),
        "--security", "SignAndEncrypt", "--cert", str(store / "writer" / "writer-cert.pem"),
        "--key", str(store / "writer" / "writer-key.pem"), "--pki", str(store / "node-pki"),
        *map(str, args),
    ]  # fmt: skip
    env = {**os.environ, "WRITER_PASSWORD": PASSWORDS[user]}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert lines and "error" not in lines[-1], (done.stdout[-2000:], done.stderr[-2000:])
    return lines[-1]


def _disk_rows(data: Path) -> int:
    """Rows of every segment file on disk (duplicates included)."""
    files = sorted((data / "historian" / "segments").rglob("*.parquet"))
    listed = ", ".join(f"'{f}'" for f in files)
    con = duckdb.connect()
    try:
        return con.execute(f"SELECT count(*) FROM read_parquet([{listed}])").fetchone()[0]
    finally:
        con.close()


def test_a_node_opcua_writer_stores_200_tags_exactly_once(receiver, store, node):
    start = (datetime.now(UTC) - timedelta(minutes=30)).replace(microsecond=0)
    args = ("--samples", 12, "--batch", 1000, "--start", start.isoformat())
    first = write(node, store, receiver.url, *args)
    assert first["codes"] == {"Good": N_TAGS * 12} and first["requests"] == 3  # 1000, 1000, 400
    h = Historian(store / "historian")
    tags = [f"T{i:04d}" for i in range(N_TAGS)]
    rows = h.query(tags, start, start + timedelta(seconds=12))
    assert len(rows) == N_TAGS * 12
    i = rows["tag"].str[1:].astype(int)
    k = ((rows["time"] - pd.Timestamp(start)) / pd.Timedelta(seconds=1)).astype(int)
    assert (rows["value"] == i * 1000 + k).all()  # each value at its own source time
    assert sorted(set(k)) == list(range(12)) and rows.groupby("tag").size().eq(12).all()
    assert _disk_rows(store) == N_TAGS * 12
    again = write(node, store, receiver.url, *args)  # the writer retries everything
    assert again["codes"] == {"Good": N_TAGS * 12}
    assert _disk_rows(store) == N_TAGS * 12  # nothing stored twice, not even on disk


def test_a_viewer_gets_bad_user_access_denied(receiver, store, node):
    out = write(node, store, receiver.url, "--samples", 1, user="viewer")
    assert out["codes"] == {"BadUserAccessDenied": N_TAGS}


def test_a_string_written_to_a_double_gets_bad_type_mismatch(receiver, store, node):
    out = write(node, store, receiver.url, "--samples", 1, "--string")
    assert out["codes"] == {"BadTypeMismatch": N_TAGS}


def test_history_update_insert_fills_a_one_hour_gap(receiver, store, node):
    t0 = (datetime.now(UTC) - timedelta(hours=5)).replace(second=0, microsecond=0)
    # three hours a minute apart, the second hour missing (an outage of the writer's link)
    out = write(node, store, receiver.url, "--samples", 180, "--step-ms", 60_000, "--start",
                t0.isoformat(), "--skip-from", 60, "--skip-to", 120, tags="two.csv")  # fmt: skip
    assert out["codes"] == {"Good": 240}
    h = Historian(store / "historian")
    before = h.query(["T0000"], t0, t0 + timedelta(hours=3))
    assert len(before) == 120 and before["time"].diff().max() == pd.Timedelta(minutes=61)
    # the gap backfilled by HistoryUpdate, PerformUpdateType Insert
    middle = (t0 + timedelta(hours=1)).isoformat()
    out = write(node, store, receiver.url, "--samples", 60, "--step-ms", 60_000, "--start",
                middle, "--value-offset", 60, "--mode", "insert", tags="two.csv")  # fmt: skip
    assert out["codes"] == {"GoodEntryInserted": 120}
    after = h.query(["T0000", "T0001"], t0, t0 + timedelta(hours=3))
    assert after.groupby("tag").size().tolist() == [180, 180]
    t = after[after["tag"] == "T0000"]
    assert t["time"].diff().dropna().max() == pd.Timedelta(minutes=1)  # no gap left
    assert t["value"].tolist() == list(range(180))


def _start_receiver(data: Path, url: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "biotwin", "receive", "--endpoint", url, "--tags",
         str(data / "tags.csv"), "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    for line in proc.stdout:
        if line.startswith("receiving at"):
            return proc
    raise AssertionError(f"biotwin receive did not start (exit {proc.wait()})")


def test_sigkill_right_after_good_answers_loses_nothing(store, node, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(store, data, ignore=shutil.ignore_patterns("historian", "receive"))
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/receive"
    proc = _start_receiver(data, url)
    start = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    cmd = [
        node, str(INTEROP / "writer.js"), "--url", url, "--user", "gateway",
        "--password-env", "WRITER_PASSWORD", "--tags", str(data / "tags.csv"),
        "--security", "SignAndEncrypt", "--cert", str(data / "writer" / "writer-cert.pem"),
        "--key", str(data / "writer" / "writer-key.pem"), "--pki", str(data / "node-pki"),
        "--samples", 100, "--batch", 1000, "--start", start.isoformat(), "--step-ms", 1000,
        "--acks",
    ]  # fmt: skip
    env = {**os.environ, "WRITER_PASSWORD": PASSWORDS["gateway"]}
    writer = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, text=True, env=env)
    acked = []
    try:
        for line in writer.stdout:
            if line.startswith('{"ack"'):
                acked.append(json.loads(line))
                if len(acked) == 3:  # the next request is on its way: kill now
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
        proc.wait(10)
        writer.wait(60)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert all(a["good"] == a["hi"] - a["lo"] for a in acked)
    proc = _start_receiver(data, url)  # the store opens after the kill; the receiver serves
    try:
        rows = Historian(data / "historian").query()
        keys = zip(rows["tag"], rows["time"], strict=True)
        stored = dict(zip(keys, rows["value"], strict=True))
        for n in range(acked[-1]["hi"]):  # every value of an acknowledged request
            i, k = n % N_TAGS, n // N_TAGS
            key = (f"T{i:04d}", pd.Timestamp(start + timedelta(seconds=k)))
            assert stored.get(key) == i * 1000 + k, key
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
