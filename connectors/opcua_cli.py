"""``biotwin serve-opcua``, ``biotwin ingest`` and ``biotwin opcua-certs``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from connectors.cli import DataDir, data_dir

console = Console()
err_console = Console(stderr=True)
logger = logging.getLogger(__name__)


#: on a stop, the sessions are served this long after the last sample (a subscriber with a
#: publishing interval of up to 1 s receives it; docs/opcua.md "Stopping")
DRAIN_S = 1.5


def _fail(message: str) -> None:
    err_console.print("[bold red]error:[/] " + escape(message), soft_wrap=True)  # one line
    raise typer.Exit(code=2)


def _on_signals(stop) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


def serve_opcua(
    endpoint: Annotated[str, typer.Option(help="Endpoint URL to listen on.")] = (
        "opc.tcp://127.0.0.1:4840/biotwin/"
    ),
    speed: Annotated[float, typer.Option(help="Twin seconds per wall second.", min=0.001)] = 60.0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated plant.")] = 7,
    days: Annotated[float, typer.Option(help="Days simulated ahead at a time.", min=0.5)] = 3.0,
    continuous_days: Annotated[
        float,
        typer.Option(help="Days one plant runs continuously before a new one starts.", min=1.0),
    ] = 90.0,
    security: Annotated[
        str, typer.Option(help="Endpoints: none, sign, encrypt or all (Basic256Sha256).")
    ] = "all",
    config: Annotated[
        Path | None, typer.Option("--config", help="Plant TOML (default: shipped line).")
    ] = None,
    epoch: Annotated[
        Path | None,
        typer.Option(
            help="Plant epoch JSON (twin time 0 and seed; `biotwin up` writes one): serve that "
            "run from the sample after the historian's latest (see connectors/warm.py)."
        ),
    ] = None,
    allow_anonymous: Annotated[
        bool,
        typer.Option(
            "--allow-anonymous",
            help="Let anonymous clients read (off: sign in with a user or a trusted certificate).",
        ),
    ] = False,
    data_dir_: DataDir = None,
) -> None:
    """Serve the twin as a live plant over OPC UA until Ctrl-C."""
    from connectors.historian import Historian, HistorianError
    from connectors.security import load_users
    from connectors.server import TwinServer
    from connectors.warm import load_epoch, plant_config, resume_sample
    from twin.config import load_config
    from twin.errors import TwinError

    root = data_dir(data_dir_)
    first_sample, start = 0, None
    try:
        plant = load_config(config)
        if epoch is not None:
            timeline = load_epoch(epoch)
            plant, seed, start = plant_config(plant, timeline), timeline.seed, timeline.start_time
            first_sample = resume_sample(
                Historian(root / "historian"), timeline, plant.plant.sample_interval_min
            )
        if not allow_anonymous and not load_users(root / "users.toml"):
            err_console.print(
                f"[yellow]no users in {root / 'users.toml'}: only clients with a certificate "
                f"in {root / 'pki' / 'trusted'} can sign in (biotwin users add NAME --role ROLE)"
            )
        server = TwinServer(
            plant,
            endpoint,
            root,
            seed=seed,
            speed=speed,
            horizon_days=days,
            continuous_days=continuous_days,
            security=security,
            start=start,
            allow_anonymous=allow_anonymous,
            drain_s=DRAIN_S,
        )
    except (TwinError, ValueError, HistorianError) as exc:
        _fail(str(exc))

    async def main() -> None:
        await server.setup()
        _on_signals(server.stop)
        job = asyncio.create_task(server.run(first_sample=first_sample))
        await server.serving.wait()
        doors = "anonymous access ON (--allow-anonymous)" if allow_anonymous else "sign-in required"
        console.print(
            f"serving the twin at {endpoint} (speed {speed:g}; {doors}); Ctrl-C stops",
            soft_wrap=True,  # one line, also in a narrow terminal or a log
        )
        await job

    asyncio.run(main())
    console.print(f"stopped after {server.samples_published:,} samples")


def ingest(
    endpoint: Annotated[str, typer.Argument(help=r"opc.tcp://HOST:PORT\[/path]")],
    tag_map: Annotated[
        Path | None, typer.Option(help="CSV or TOML: node_id, tag[, unit, eng_unit, deadband].")
    ] = None,
    browse_root: Annotated[str | None, typer.Option(help="Node id to browse below.")] = None,
    sampling_ms: Annotated[float, typer.Option(help="Sampling interval (0: fastest).")] = 0.0,
    publishing_ms: Annotated[float, typer.Option(help="Publishing interval.")] = 500.0,
    queue_size: Annotated[int | None, typer.Option(help="Monitored item queue size.")] = None,
    deadband: Annotated[float | None, typer.Option(help="Absolute deadband.")] = None,
    user: Annotated[str | None, typer.Option(help="User name.")] = None,
    password_env: Annotated[
        str, typer.Option(help="Environment variable holding the password.")
    ] = "BIOTWIN_OPCUA_PASSWORD",
    security: Annotated[
        str | None, typer.Option(help="Sign or SignAndEncrypt (Basic256Sha256).")
    ] = None,
    cert: Annotated[Path | None, typer.Option(help="Client certificate (DER).")] = None,
    key: Annotated[Path | None, typer.Option(help="Client private key (PEM).")] = None,
    sessions: Annotated[
        int,
        typer.Option(
            help="Worker processes, one OPC UA session each; the tags are split over them.",
            min=1,
            max=64,
        ),
    ] = 1,
    on_clock_back: Annotated[
        str,
        typer.Option(
            help="Values older than the newest stored of their tag (a server clock gone "
            "back): flag (store them flagged, uncertain) or refuse; an alarm either way."
        ),
    ] = "flag",
    data_dir_: DataDir = None,
) -> None:
    """Subscribe to any OPC UA server and write the historian until Ctrl-C."""
    from connectors.historian import Historian
    from connectors.ingest import Ingest, IngestError, read_tag_map

    root = data_dir(data_dir_)
    try:
        specs = read_tag_map(tag_map) if tag_map else None
        options = dict(
            tag_map=specs,
            browse_root=browse_root,
            sampling_ms=sampling_ms,
            publishing_ms=publishing_ms,
            queue_size=queue_size,
            deadband=deadband,
            user=user,
            password=os.environ.get(password_env),
            security=security,
            certificate=cert,
            private_key=key,
            on_clock_back=on_clock_back,
        )
        if sessions > 1:
            _ingest_sharded(endpoint, root, sessions, options)
            return
        job = Ingest(endpoint, Historian(root / "historian"), root / "spool", **options)
    except IngestError as exc:
        _fail(str(exc))

    async def main() -> None:
        _on_signals(job.stop)
        await job.run()

    try:
        asyncio.run(main())
    except IngestError as exc:
        _fail(str(exc))
    console.print(
        f"stopped: {job.state.stored:,} values stored, {job.state.duplicates:,} duplicates "
        f"skipped, {job.reconnects} reconnects"
    )


def _ingest_sharded(endpoint: str, root: Path, sessions: int, options: dict) -> None:
    """``biotwin ingest --sessions N`` (N > 1): see connectors/ingest_shards.py."""
    from connectors.historian import Historian
    from connectors.ingest import IngestError
    from connectors.ingest_shards import ShardedIngest

    job = ShardedIngest(
        endpoint, Historian(root / "historian"), root / "spool", sessions=sessions, **options
    )
    job.on_event = lambda message: err_console.print("[yellow]" + escape(message))

    async def announce() -> None:
        await job.connected.wait()
        sizes = ", ".join(str(len(w.specs)) for w in job.workers)
        pids = ", ".join(str(p) for p in job.pids())
        console.print(
            f"ingesting from {endpoint} in {sessions} sessions ({sizes} tags; "
            f"pids {pids}); Ctrl-C stops"
        )

    async def main() -> None:
        _on_signals(job.stop)
        told = asyncio.create_task(announce())
        try:
            await job.run()
        finally:
            told.cancel()

    try:
        asyncio.run(main())
    except IngestError as exc:
        _fail(str(exc))
    t = job.totals()
    console.print(
        f"stopped: {int(t['stored']):,} values stored, {int(t['duplicates']):,} duplicates "
        f"skipped, {int(t['reconnects'])} reconnects, {job.restarts} worker restarts "
        f"({sessions} sessions)"
    )


def opcua_certs(
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust",
            help="Trust a client certificate (PEM or DER) of an OT writer or client; repeat "
            "for more.",
            dir_okay=False,
        ),
    ] = None,
    data_dir_: DataDir = None,
) -> None:
    """Generate the server and ingest certificates under DATA_DIR/pki (keys stay there);
    with --trust, trust client certificates."""
    from connectors.security import (
        UserError,
        client_certificate,
        server_certificate,
        trust_certificate,
    )
    from connectors.server import APPLICATION_URI

    pki = data_dir(data_dir_) / "pki"
    if trust:
        for path in trust:
            try:
                target = trust_certificate(pki, path)
            except UserError as exc:
                _fail(str(exc))
            console.print(f"trusted: {path} (copied to {target})")
        return

    async def main():
        server = await server_certificate(pki, APPLICATION_URI)
        client = await client_certificate(pki, "urn:biotwin:ingest")
        return server, client

    (s_cert, _), (c_cert, c_key) = asyncio.run(main())
    console.print(
        f"server certificate: {s_cert}\ningest certificate: {c_cert} (trusted), key {c_key}"
    )


def register_opcua(app: typer.Typer) -> None:
    """Add the OPC UA commands to *app*."""
    app.command("serve-opcua")(serve_opcua)
    app.command("ingest")(ingest)
    app.command("opcua-certs")(opcua_certs)
