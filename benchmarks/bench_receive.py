"""Benchmark: one OT writer pushing 20,000 values/s into `biotwin receive` (Good = durable).

A `biotwin receive` process (200 Double tags from a tag file, Basic256Sha256 SignAndEncrypt,
a user with the role ot-writer) takes WriteRequests of 1,000 values from one node-opcua
writer (connectors/interop/writer.js, one session) sending on a schedule: ``--rate`` values
per second for ``--seconds``, each value with its own SourceTimestamp (the samples follow
the clock), up to ``--concurrency`` requests in flight. Each request is answered only when
its values are committed to the historian (fsynced). Reported:

- values/s offered and achieved (values answered / wall time of the writer);
- round trip of a WriteRequest (sent -> answered, measured by the writer): p50, p95, max;
- every value stored: distinct (tag, source time) in the historian = values answered Good,
  each tag with every one of its samples;
- receiver CPU per value: user + system time of the receiver process over the run (its
  start-up excluded) / values; the writer's CPU for comparison;
- the machine (benchmarks/_machine.py) and the load average before and after.

Usage: ``python benchmarks/bench_receive.py [--rate 20000] [--seconds 20] [--batch 1000]
[--concurrency 4] [--tags 200] [--security SignAndEncrypt]`` (needs ``npm ci --prefix
connectors/interop``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connectors.historian import Historian
from connectors.security import add_user, client_certificate, trust_certificate

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT / "connectors" / "interop"
PASSWORD = "bench-writer-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepare(data: Path, n_tags: int) -> tuple[Path, Path, Path]:
    """Users, the writer's trusted certificate, the tag file."""
    add_user(data / "users.toml", "bench", password=PASSWORD, roles=["ot-writer"])
    cert, key = asyncio.run(client_certificate(data / "writer", "urn:biotwin:writer", trust=False))
    pem = data / "writer" / "writer-cert.pem"
    pem.write_bytes(x509.load_der_x509_certificate(cert.read_bytes()).public_bytes(Encoding.PEM))
    trust_certificate(data / "pki", pem)
    tags = data / "tags.csv"
    lines = ["tag,unit,eng_unit,eu_low,eu_high,data_type,description"]
    lines += [f"T{i:04d},U{i % 10},CEL,0,1000000000,Double,bench tag {i}" for i in range(n_tags)]
    tags.write_text("\n".join(lines) + "\n")
    return tags, pem, key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--tags", type=int, default=200)
    ap.add_argument("--security", default="SignAndEncrypt", choices=["Sign", "SignAndEncrypt"])
    args = ap.parse_args()
    node = shutil.which("node")
    if not node or not (INTEROP / "node_modules" / "node-opcua").is_dir():
        sys.exit("needs Node.js and `npm ci --prefix connectors/interop`")
    print(f"machine: {machine()}")
    load_before = os.getloadavg()
    data = Path(tempfile.mkdtemp(prefix="bench-receive-"))
    try:
        tags, pem, key = prepare(data, args.tags)
        url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/receive"
        receiver = subprocess.Popen(
            [sys.executable, "-m", "biotwin", "receive", "--endpoint", url, "--tags", str(tags),
             "--data-dir", str(data)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
        for line in receiver.stdout:
            if line.startswith("receiving at"):
                break
        else:
            sys.exit(f"biotwin receive did not start (exit {receiver.wait()})")
        cpu0 = cpu_seconds(receiver.pid)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        done = subprocess.run(
            [node, str(INTEROP / "writer.js"), "--url", url, "--user", "bench",
             "--password-env", "WRITER_PASSWORD", "--tags", str(tags), "--security",
             args.security, "--cert", str(pem), "--key", str(key), "--pki", str(data / "npki"),
             "--rate", str(args.rate), "--seconds", str(args.seconds), "--batch",
             str(args.batch), "--concurrency", str(args.concurrency)],
            capture_output=True, text=True, env={**os.environ, "WRITER_PASSWORD": PASSWORD},
        )  # fmt: skip
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = cpu_seconds(receiver.pid)
        os.killpg(receiver.pid, signal.SIGTERM)
        receiver.wait(60)
        lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        if not lines or "error" in lines[-1]:
            sys.exit(f"writer failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
        out = lines[-1]
        good = out["codes"].get("Good", 0)
        h = Historian(data / "historian")
        stored = h.count()
        per_tag = h.tags().set_index("tag")["rows"]
        expected_per_tag = out["values"] // args.tags
        complete = stored == good == out["values"] and (per_tag == expected_per_tag).all()
        writer_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        load_after = os.getloadavg()
        print(
            f"offered {args.rate:,.0f} values/s for {args.seconds:g} s in WriteRequests of "
            f"{args.batch:,} ({args.tags} tags, {args.security}, {args.concurrency} in flight)"
        )
        print(
            f"answered {out['values']:,} values in {out['seconds']:.1f} s = "
            f"{out['values'] / out['seconds']:,.0f} values/s; codes {out['codes']}"
        )
        print(
            f"round trip per request: p50 {out['p50']:.0f} ms, p95 {out['p95']:.0f} ms, "
            f"max {out['max']:.0f} ms ({out['requests']} requests)"
        )
        print(
            f"stored: {stored:,} distinct (tag, time) rows; every value stored exactly once: "
            f"{'yes' if complete else 'NO'}"
        )
        print(
            f"receiver CPU: {cpu1 - cpu0:.1f} s = {(cpu1 - cpu0) / max(good, 1) * 1e6:.1f} us "
            f"per value ({(cpu1 - cpu0) / wall:.0%} of a core); writer (node-opcua) CPU "
            f"{writer_cpu:.1f} s = {writer_cpu / max(good, 1) * 1e6:.1f} us per value"
        )
        print(
            "load average before "
            + ", ".join(f"{x:.2f}" for x in load_before)
            + "; after "
            + ", ".join(f"{x:.2f}" for x in load_after)
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
