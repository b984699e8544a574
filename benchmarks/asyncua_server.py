"""The benchmark's tick server on asyncua: the same address space and protocol as
connectors/interop/server.js, so that bench_ingest.py measures the ingest against our own
OPC UA stack as well as node-opcua's.

    python benchmarks/asyncua_server.py --port 4841 --tags 100 --rate 10

Objects/Bench holds ``ns=1;s=Bench.T00001`` ... Double tags that take the value k at tick
k, and ``ns=1;s=Bench.Tick`` (UInt32, the number of ticks so far). Prints one JSON line
``{"ready": true, ...}`` when listening; at SIGUSR2 it stops producing and prints
``{"done": true, "ticks": n}`` but keeps serving; SIGTERM / SIGINT stop it.

Tick k is due at t0 + k / rate (a late tick runs at once). asyncua's server costs about
100 us per value change, so one process offers at most ~8,000 values/s on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from datetime import UTC, datetime, timedelta

from asyncua import Server, ua


async def serve(port: int, n_tags: int, rate: float) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/UA/asyncua")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:biotwin:bench")
    bench = await server.nodes.objects.add_object(ua.NodeId("Bench", idx), "Bench")
    tags = []
    for i in range(1, n_tags + 1):
        name = f"T{i:05d}"
        var = await bench.add_variable(ua.NodeId(f"Bench.{name}", idx), name, 0.0)
        tags.append(var.nodeid)
    tick = await bench.add_variable(
        ua.NodeId("Bench.Tick", idx), "Tick", 0, varianttype=ua.VariantType.UInt32
    )
    loop = asyncio.get_running_loop()
    producing = asyncio.Event()
    producing.set()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR2, producing.clear)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    write = server.write_attribute_value
    async with server:
        print(json.dumps({"ready": True, "endpoint": f"opc.tcp://127.0.0.1:{port}/UA/asyncua"}))
        sys.stdout.flush()
        n, t0 = 0, loop.time()
        last = datetime.now(UTC)
        while producing.is_set() and not stop.is_set():
            await asyncio.sleep(max(0.0, t0 + (n + 1) / rate - loop.time()))
            n += 1
            # one timestamp per tick, strictly increasing: (tag, source time) is a key
            stamp = max(datetime.now(UTC), last + timedelta(milliseconds=1))
            last = stamp
            value = ua.DataValue(ua.Variant(float(n), ua.VariantType.Double), SourceTimestamp=stamp)
            for nid in tags:
                await write(nid, value)
            await write(
                tick.nodeid,
                ua.DataValue(ua.Variant(n, ua.VariantType.UInt32), SourceTimestamp=stamp),
            )
        print(json.dumps({"done": True, "ticks": n}))
        sys.stdout.flush()
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4841)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port, args.tags, args.rate))


if __name__ == "__main__":
    main()
