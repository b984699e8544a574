"""``biotwin receive``: the OPC UA endpoint OT systems push into (and PubSub over MQTT).

``register_receive(app)`` adds the command to the top-level typer app (connectors/cli.py).
"""

from __future__ import annotations

import asyncio
import logging
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

#: ``--topic`` default: every PubSub JSON data message (OPC UA Part 14 topic tree)
DEFAULT_TOPIC = "opcua/json/data/#"


def _fail(message: str) -> None:
    err_console.print("[bold red]error:[/] " + escape(message), soft_wrap=True)
    raise typer.Exit(code=2)


def receive(
    endpoint: Annotated[str, typer.Option(help="Endpoint URL to listen on.")] = (
        "opc.tcp://127.0.0.1:4850/biotwin/receive"
    ),
    tags: Annotated[
        Path | None,
        typer.Option(
            "--tags",
            help="Tag file (CSV: tag, unit, eng_unit, eu_low, eu_high, data_type, description"
            "[, hard_low, hard_high, site, area, line]); default: the plant config's tags.",
            dir_okay=False,
        ),
    ] = None,
    security: Annotated[
        str,
        typer.Option(
            help="Endpoints (Basic256Sha256): secure (Sign and SignAndEncrypt), sign, "
            "encrypt, all (also None) or none."
        ),
    ] = "secure",
    retention_days: Annotated[
        float,
        typer.Option(
            help="Values older than this many days are refused (BadInvalidTimestamp).", min=0.001
        ),
    ] = 365.0,
    config: Annotated[
        Path | None, typer.Option("--config", help="Plant TOML (default: shipped line).")
    ] = None,
    mqtt: Annotated[
        str | None,
        typer.Option(
            "--mqtt",
            help="Also subscribe to PubSub JSON over this MQTT broker "
            "(mqtt://[user[:password]@]host[:port]).",
        ),
    ] = None,
    topic: Annotated[
        str, typer.Option(help="MQTT topic filter of the PubSub data messages (with --mqtt).")
    ] = DEFAULT_TOPIC,
    data_dir_: DataDir = None,
) -> None:
    """Take values, history updates and lab results pushed by OT systems until Ctrl-C."""
    from connectors.receive import ReceiveError, ReceiveServer
    from connectors.receive_tags import TagFileError, plant_tags, read_tag_file
    from connectors.security import OT_WRITER, load_users
    from twin.config import load_config
    from twin.errors import TwinError

    root = data_dir(data_dir_)
    try:
        plant = load_config(config)
        table = read_tag_file(tags) if tags is not None else plant_tags(plant)
        server = ReceiveServer(
            table,
            endpoint,
            root,
            security=security,
            retention_days=retention_days,
            site=plant.plant.site,
            area=plant.plant.area,
            line=plant.plant.line,
        )
    except (TagFileError, ReceiveError, TwinError, ValueError) as exc:
        _fail(str(exc))
    writers = [
        u for u, e in load_users(root / "users.toml").items() if OT_WRITER in e.get("roles", [])
    ]
    if not writers:
        err_console.print(
            f"[yellow]no user with the role {OT_WRITER} in {root / 'users.toml'}: nobody can "
            f"write yet (biotwin users add NAME --role {OT_WRITER} --data-dir {root})",
            soft_wrap=True,
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.setup()
        except OSError as exc:
            _fail(f"cannot serve at {endpoint}: {exc}")
        job = asyncio.create_task(server.run())
        await server.serving.wait()
        mqtt_job = None
        if mqtt is not None:
            mqtt_job = asyncio.create_task(_mqtt(server, mqtt, topic, table, root, stop))
        console.print(
            f"receiving at {endpoint} ({len(server.specs)} tags, security {security}, writers: "
            f"role {OT_WRITER})"
            + (f"; PubSub from {mqtt} {topic}" if mqtt else "")
            + "; Ctrl-C stops",
            soft_wrap=True,
        )
        await stop.wait()
        if mqtt_job is not None:
            await mqtt_job  # the current batch stored and acknowledged first
        server.stop()
        await job

    asyncio.run(main())
    status = server.source.status()
    console.print(
        f"stopped: {status['values_total']:,} values stored, "
        f"{sum(status['rejected'].values()):,} refused"
    )


async def _mqtt(server, url: str, topic: str, table, root: Path, stop: asyncio.Event) -> None:
    """The PubSub-over-MQTT path (connectors.mqtt_receive), storing through the receiver's
    durable path; imported when asked for only."""
    from connectors.push_sources import PushSource

    try:
        from connectors.mqtt_receive import subscribe
    except ImportError as exc:
        err_console.print(f"[red]--mqtt: PubSub over MQTT is not available ({exc})")
        return
    source = PushSource("mqtt", f"{url} {topic}", root)

    async def sink(rows) -> int:
        return await server.store_rows(rows, source=source, user="mqtt")

    try:
        await subscribe(
            url, topic, table, sink, source=source, client_id="biotwin-receive", stop=stop
        )
    except ValueError as exc:  # a bad URL, topic or tag table: one line
        err_console.print(f"[red]--mqtt: {escape(str(exc))}", soft_wrap=True)


def register_receive(app: typer.Typer) -> None:
    """Add ``biotwin receive`` to *app*."""
    app.command("receive")(receive)
