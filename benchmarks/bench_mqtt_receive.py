"""Benchmark: OPC UA PubSub JSON over MQTT into the historian, values per second and CPU.

A mosquitto of its own (127.0.0.1, free port) and a publisher process (paho-mqtt, QoS 1)
that sends ``--rate`` values/s for ``--seconds``: NetworkMessages of one DataSetMessage of
``--fields`` fields each (DataValue-encoded with a SourceTimestamp, ``--encoding datavalue``,
or raw values with the DataSetMessage Timestamp, ``--encoding raw``), from ``--writers``
DataSetWriters with SequenceNumbers. Our subscriber (:func:`connectors.mqtt_receive.subscribe`
with :func:`~connectors.mqtt_receive.historian_sink`, what ``biotwin receive --mqtt`` runs)
stores them in a temporary historian. Reported per run, medians over ``--runs``:

- values/s offered by the publisher, and stored by us from its first message to the last
  value stored;
- completeness: distinct (tag, source time) rows in the historian against the values the
  broker acknowledged to the publisher, after the publisher ended (the subscriber then
  drains what is left, up to 30 s);
- latency from source time to committed (sink returned), p50 / p95;
- our CPU microseconds per value: process time of this process (decoder, paho's network
  thread, the historian's commits) over the window / values stored; the publisher's and
  mosquitto's CPU (% of one core) beside it;
- gaps and refusals counted (0 expected).

Usage: ``python benchmarks/bench_mqtt_receive.py [--seconds 20] [--rate 20000] [--fields 100]
[--writers 2] [--encoding datavalue|raw] [--runs 1]``; needs mosquitto (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import machine

from connectors.historian import Historian
from connectors.mqtt_receive import historian_sink, subscribe
from connectors.push_sources import PushSource


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tag_names(writers: int, fields: int) -> list[str]:
    return [f"W{w}.F{f:03d}" for w in range(1, writers + 1) for f in range(fields)]


# --------------------------------------------------------------------------- publisher
def publish_main(args) -> None:
    """The publisher process: paced QoS 1 NetworkMessages; prints what the broker acked."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked = [0]
    client.on_publish = lambda c, u, mid, rc, props: acked.__setitem__(0, acked[0] + 1)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    per_s = args.rate / (args.fields * args.writers)  # messages per second per writer
    seq = {w: 0 for w in range(1, args.writers + 1)}
    sent = 0
    start = time.time()
    end = start + args.seconds
    due = 0
    while True:
        now = time.time()
        if now >= end:
            break
        target = int((now - start) * per_s) + 1
        while due < target:
            due += 1
            stamp = pd.Timestamp(start + (due - 1) / per_s, unit="s", tz="UTC").isoformat(
                timespec="microseconds"
            )
            for w in seq:
                seq[w] += 1
                if args.encoding == "datavalue":
                    payload = {
                        f"W{w}.F{f:03d}": {"Value": seq[w] + f / 1000, "SourceTimestamp": stamp}
                        for f in range(args.fields)
                    }
                    header = {}
                else:
                    payload = {f"W{w}.F{f:03d}": seq[w] + f / 1000 for f in range(args.fields)}
                    header = {"Timestamp": stamp}
                message = {
                    "MessageId": f"{w}-{seq[w]}",
                    "MessageType": "ua-data",
                    "PublisherId": "bench",
                    "Messages": [
                        {
                            "DataSetWriterId": w,
                            "SequenceNumber": seq[w],
                            "MessageType": "ua-keyframe",
                            **header,
                            "Payload": payload,
                        }
                    ],
                }
                client.publish(
                    f"opcua/json/data/bench/group/{w}", json.dumps(message).encode(), qos=1
                )
                sent += 1
        time.sleep(0.002)
    deadline = time.time() + 30
    while acked[0] < sent and time.time() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    print(
        json.dumps(
            {"start": start, "sent": sent, "acked": acked[0], "values": acked[0] * args.fields}
        )
    )


# --------------------------------------------------------------------------- one run
def start_broker(folder: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        sys.exit("mosquitto is not installed: apt-get install mosquitto mosquitto-clients")
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_queued_bytes 0\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("mosquitto did not start")
            time.sleep(0.05)


async def one_run(args, folder: Path) -> dict:
    broker, port = start_broker(folder)
    data_dir = folder / "data"
    tags = pd.DataFrame({"tag": tag_names(args.writers, args.fields), "data_type": "Double"})
    source = PushSource("mqtt", f"mqtt://127.0.0.1:{port}")
    inner = historian_sink(data_dir)
    lags: list[np.ndarray] = []

    async def sink(rows: pd.DataFrame) -> None:
        await inner(rows)
        now = pd.Timestamp.now(tz="UTC")
        lags.append(((now - rows["time"]).dt.total_seconds()).to_numpy())

    stop = asyncio.Event()
    task = asyncio.create_task(
        subscribe(
            f"mqtt://127.0.0.1:{port}",
            "opcua/json/data/#",
            tags,
            sink,
            source=source,
            client_id="bench-receive",
            stop=stop,
        )
    )
    await asyncio.sleep(1.0)  # connected and subscribed
    pub = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--publish",
        "--port",
        str(port),
        "--seconds",
        str(args.seconds),
        "--rate",
        str(args.rate),
        "--fields",
        str(args.fields),
        "--writers",
        str(args.writers),
        "--encoding",
        args.encoding,
        stdout=asyncio.subprocess.PIPE,
    )
    t0, cpu0, stored0 = time.perf_counter(), time.process_time(), source.values_total
    broker_cpu0, pub_cpu0 = cpu_s(broker.pid), cpu_s(pub.pid)
    pub_cpu1 = pub_cpu0
    while pub.returncode is None:  # sample the publisher's CPU before it exits
        try:
            pub_cpu1 = cpu_s(pub.pid)
        except (OSError, IndexError):
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pub.wait(), 0.5)
    out, _ = await pub.communicate()
    published = json.loads(out.decode().strip().splitlines()[-1])
    window = time.perf_counter() - t0
    deadline = time.monotonic() + 30
    while source.values_total < published["values"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    drained = time.perf_counter() - t0
    span = time.time() - published["start"]  # first publish to last value stored
    cpu = time.process_time() - cpu0
    broker_cpu = cpu_s(broker.pid) - broker_cpu0
    stored = source.values_total - stored0
    stop.set()
    await task
    broker.terminate()
    broker.wait()
    rows = Historian(data_dir / "historian").count()
    lag = np.concatenate(lags) if lags else np.array([np.nan])
    status = source.status()
    return {
        "offered_per_s": published["values"] / args.seconds,
        "stored_per_s": stored / span,
        "drain_s": drained - window,
        "completeness": rows / published["values"],
        "rows": rows,
        "published": published["values"],
        "lag_p50_s": float(np.percentile(lag, 50)),
        "lag_p95_s": float(np.percentile(lag, 95)),
        "cpu_us_per_value": cpu / max(stored, 1) * 1e6,
        "our_cpu_pct": 100 * cpu / drained,
        "broker_cpu_pct": 100 * broker_cpu / drained,
        "publisher_cpu_pct": 100 * (pub_cpu1 - pub_cpu0) / window,
        "gaps": status["sequence_gaps"],
        "rejected": sum(status["rejected"].values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=20_000, help="values per second offered")
    parser.add_argument("--fields", type=int, default=100, help="fields per DataSetMessage")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--encoding", choices=("datavalue", "raw"), default="datavalue")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        publish_main(args)
        return
    print(machine())
    print(
        f"{args.rate:,} values/s offered for {args.seconds:g} s: {args.writers} writers x "
        f"{args.fields} fields per DataSetMessage, {args.encoding} encoding, QoS 1"
    )
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
            r = asyncio.run(one_run(args, Path(tmp)))
        results.append(r)
        print(
            f"run {i + 1}: stored {r['stored_per_s']:,.0f}/s "
            f"(offered {r['offered_per_s']:,.0f}/s), "
            f"completeness {100 * r['completeness']:.2f} % ({r['rows']:,} of "
            f"{r['published']:,}), drained {r['drain_s']:.1f} s after the publisher, latency "
            f"p50 {r['lag_p50_s']:.2f} s / p95 {r['lag_p95_s']:.2f} s, our CPU "
            f"{r['cpu_us_per_value']:.1f} us/value ({r['our_cpu_pct']:.0f} % of a core), "
            f"mosquitto {r['broker_cpu_pct']:.0f} %, publisher {r['publisher_cpu_pct']:.0f} %, "
            f"gaps {r['gaps']}, refused {r['rejected']}"
        )
    if args.runs > 1:
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(
            f"median: stored {med['stored_per_s']:,.0f}/s, completeness "
            f"{100 * med['completeness']:.2f} %, latency p50 {med['lag_p50_s']:.2f} / p95 "
            f"{med['lag_p95_s']:.2f} s, {med['cpu_us_per_value']:.1f} us/value"
        )


if __name__ == "__main__":
    main()
