"""The OPC UA server's doors: anonymous off unless allowed, no password in clear on the wire,
certificate identities only when trusted, private keys 0600 (connectors/opcua_doors.py).

Real servers and real asyncua clients on 127.0.0.1; a small TCP relay between them records
every byte a client sends, so "never in clear" is checked on the wire itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto import security_policies

from connectors.historian import Historian
from connectors.ingest import Ingest, IngestError
from connectors.security import add_user, client_certificate, server_certificate
from connectors.server import APPLICATION_URI, NAMESPACE_URI, TwinServer

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery-staple"
BASIC256SHA256 = security_policies.SecurityPolicyBasic256Sha256.URI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


@pytest.fixture
def store(tmp_path) -> Path:
    add_user(tmp_path / "users.toml", "eve", password=PASSWORD, roles=["engineer"])
    return tmp_path


class Tap:
    """A TCP relay on a free port that records every byte clients send to ``target``."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.sent = target_port, bytearray()

    async def _pipe(self, reader, writer, record: bool) -> None:
        try:
            while data := await reader.read(65536):
                if record:
                    self.sent += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _relay(self, client_reader, client_writer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pipe(client_reader, writer, True), self._pipe(reader, client_writer, False)
        )

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"opc.tcp://127.0.0.1:{port}/biotwin/"

    async def __aexit__(self, *exc) -> None:
        self.server.close()


class PlainPasswordClient(Client):
    """A client that ignores the server's user token policy and sends its password in
    clear (what a naive or hostile client does)."""

    def server_policy(self, token_type):
        policy = super().server_policy(token_type)
        if token_type == ua.UserTokenType.UserName:
            none = security_policies.SecurityPolicyNone.URI
            return dataclasses.replace(policy, SecurityPolicyUri=none)
        return policy


async def serving(config, store, **options) -> tuple[TwinServer, asyncio.Task, str]:
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/"
    server = TwinServer(config, url, store, speed=60, horizon_days=1, **options)
    await server.setup()
    task = asyncio.create_task(server.run(until_samples=1))
    await server.serving.wait()
    return server, task, url


async def read_a_tag(client: Client) -> str:
    """The browse name of a tag, read through the session (the value may still be
    BadWaitingForInitialData)."""
    idx = await client.get_namespace_index(NAMESPACE_URI)
    return (await client.get_node(ua.NodeId("BR-201.TIC-201.PV", idx)).read_browse_name()).Name


async def token_types(url: str) -> set[str]:
    """Every identity token type the server's endpoints advertise."""
    endpoints = await Client(url).connect_and_get_server_endpoints()
    return {t.TokenType.name for e in endpoints for t in e.UserIdentityTokens}


def test_anonymous_is_refused_and_not_offered_unless_allowed(config, store, caplog):
    caplog.set_level(logging.WARNING, logger="connectors.opcua_doors")

    async def main():
        found = {}
        server, task, url = await serving(config, store)
        found["offered"] = await token_types(url)
        with pytest.raises(ua.UaStatusCodeError) as err:
            async with Client(url) as client:
                await read_a_tag(client)
        found["refused"] = type(err.value).__name__
        server.stop()
        await task
        server, task, url = await serving(config, store, allow_anonymous=True)
        found["offered_when_allowed"] = await token_types(url)
        async with Client(url) as client:
            found["read"] = await read_a_tag(client)
        server.stop()
        await task
        return found

    found = run(main())
    assert found["offered"] == {"UserName", "Certificate"}
    assert found["refused"] == "BadIdentityTokenRejected"
    refusals = [r.getMessage() for r in caplog.records if "sign-in refused" in r.getMessage()]
    assert any("from 127.0.0.1:" in m and "anonymous access is off" in m for m in refusals), (
        refusals
    )
    assert found["offered_when_allowed"] == {"Anonymous", "UserName", "Certificate"}
    assert found["read"] == "TIC-201.PV"


def test_a_password_never_crosses_the_wire_in_clear_with_security_none(config, store, caplog):
    caplog.set_level(logging.WARNING, logger="connectors.opcua_doors")

    async def main():
        server, task, url = await serving(config, store, security="none")
        endpoints = await Client(url).connect_and_get_server_endpoints()
        policies = {
            t.SecurityPolicyUri
            for e in endpoints
            for t in e.UserIdentityTokens
            if t.TokenType == ua.UserTokenType.UserName
        }
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        good, naive = Tap(port), Tap(port)
        async with good as via:
            client = Client(via)
            client.set_user("eve")
            client.set_password(PASSWORD)
            async with client:
                value = await read_a_tag(client)
        async with naive as via:
            client = PlainPasswordClient(via)
            client.set_user("eve")
            client.set_password(PASSWORD)
            with pytest.raises(ua.UaStatusCodeError) as err:
                async with client:
                    await read_a_tag(client)
        server.stop()
        await task
        return policies, value, bytes(good.sent), bytes(naive.sent), type(err.value).__name__

    policies, value, good, naive, refused = run(main())
    assert policies == {BASIC256SHA256}  # the None endpoint asks for an encrypted password
    assert value == "TIC-201.PV"  # ...and the user signed in with it
    assert b"eve" in good and PASSWORD.encode() not in good
    # a client that sends its password in clear anyway is refused (the tap sees it: the
    # check above would have caught a clear password)
    assert PASSWORD.encode() in naive and refused == "BadIdentityTokenRejected"
    assert any("password not encrypted" in r.getMessage() for r in caplog.records)


def test_the_ingest_signs_in_with_its_trusted_certificate_not_anonymously(config, store, caplog):
    caplog.set_level(logging.WARNING)

    async def main():
        server, task, url = await serving(config, store)
        historian = Historian(store / "historian")
        outcomes = {}
        with pytest.raises(IngestError) as err:
            await Ingest(url, historian, store / "spool").run()
        outcomes["anonymous"] = str(err.value)
        cert, key = await client_certificate(store / "pki", "urn:biotwin:ingest")
        good = Ingest(
            url,
            historian,
            store / "spool",
            security="SignAndEncrypt",
            certificate=cert,
            private_key=key,
        )
        job = asyncio.create_task(good.run())
        await asyncio.wait_for(good.connected.wait(), 60)
        good.stop()
        await job
        # a trusted channel does not make an untrusted certificate identity trusted
        rogue, rogue_key = await client_certificate(
            store / "rogue", "urn:biotwin:rogue", trust=False
        )
        client = Client(url)
        client.application_uri = "urn:biotwin:ingest"
        await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
        await client.load_client_certificate(str(rogue))
        await client.load_private_key(str(rogue_key))
        with pytest.raises(ua.UaStatusCodeError) as err:
            async with client:
                await read_a_tag(client)
        outcomes["rogue"] = type(err.value).__name__
        server.stop()
        await task
        return outcomes

    outcomes = run(main())
    assert "refused anonymous access" in outcomes["anonymous"]
    assert outcomes["rogue"] == "BadUserAccessDenied"
    messages = [r.getMessage() for r in caplog.records]
    assert any("certificate identity: certificate not in pki/trusted" in m for m in messages)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_keys_are_written_0600_and_readable_ones_fixed(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="connectors.security")
    pki = tmp_path / "pki"
    old_umask = os.umask(0o022)  # the usual umask: files 0644 unless written otherwise
    try:
        s_cert, s_key = run(server_certificate(pki, APPLICATION_URI))
        c_cert, c_key = run(client_certificate(pki, "urn:biotwin:ingest"))
        modes = {p.name: mode(p) for p in (s_cert, s_key, c_cert, c_key)}
        key_before, cert_before = s_key.read_bytes(), s_cert.read_bytes()
        os.chmod(s_key, 0o644)  # a key written by an earlier version
        run(server_certificate(pki, APPLICATION_URI))
    finally:
        os.umask(old_umask)
    assert modes == {
        "server-cert.der": 0o644,
        "server-key.pem": 0o600,
        "ingest-cert.der": 0o644,
        "ingest-key.pem": 0o600,
    }
    assert mode(s_key) == 0o600
    assert (s_key.read_bytes(), s_cert.read_bytes()) == (key_before, cert_before)  # kept
    fixed = [r.getMessage() for r in caplog.records if "readable by others" in r.getMessage()]
    assert len(fixed) == 1 and "server-key.pem" in fixed[0] and "0644" in fixed[0]


def test_serve_opcua_requires_sign_in_unless_allow_anonymous(tmp_path):
    """The real command, without and with the flag (side by side): its start-up line says
    which; an anonymous client is refused without the flag and reads with it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    add_user(tmp_path / "users.toml", "eve", password=PASSWORD, roles=["engineer"])
    runs = {}
    for flag in ("", "--allow-anonymous"):
        url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/"
        argv = [sys.executable, "-m", "biotwin", "serve-opcua", "--endpoint", url]
        argv += ["--security", "none", "--days", "0.5", "--data-dir", str(tmp_path / flag)]
        (tmp_path / flag).mkdir(exist_ok=True)
        runs[flag] = (
            url,
            subprocess.Popen(
                [*argv, flag] if flag else argv,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )

    async def anonymous(url):
        try:
            async with Client(url) as client:
                return await read_a_tag(client)
        except ua.UaStatusCodeError as exc:
            return type(exc).__name__

    seen = {}
    try:
        for flag, (url, proc) in runs.items():
            lines = []
            while not any("serving the twin" in line for line in lines) and len(lines) < 30:
                lines.append(proc.stdout.readline())  # ends with the process at worst
            assert "serving the twin" in lines[-1], lines
            seen[flag] = lines[-1], run(anonymous(url))
    finally:
        for _, proc in runs.values():
            proc.send_signal(signal.SIGINT)
        logs = {flag: proc.communicate(timeout=30)[0] for flag, (_, proc) in runs.items()}
    line, outcome = seen[""]
    assert "sign-in required" in line and outcome == "BadIdentityTokenRejected"
    assert "OPC UA sign-in refused from 127.0.0.1:" in logs[""]
    line, outcome = seen["--allow-anonymous"]
    assert "anonymous access ON (--allow-anonymous)" in line and outcome == "TIC-201.PV"
