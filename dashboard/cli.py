"""``biotwin dashboard`` and ``biotwin up`` (everything on localhost, supervised).

``register(app)`` adds them to the top-level typer app (see biotwin/cli.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from biotwin.children import STOP_TIMEOUT_S, run_group, start_group, stop_groups, stop_signals
from connectors.cli import DataDir, data_dir
from dashboard.scenario_cli import FallbackLocal, Scheduler

console = Console()
err_console = Console(stderr=True)
logger = logging.getLogger(__name__)
APP = Path(__file__).with_name("app.py")


def _streamlit_command(port: int) -> list[str]:
    """``streamlit run dashboard/app.py`` with its imports done before the server listens
    (dashboard/serve.py)."""
    return [
        sys.executable, "-m", "dashboard.serve",
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


#: ``--kiosk``: pages readable without signing in, read-only, as role viewer
Kiosk = Annotated[
    bool,
    typer.Option(
        "--kiosk",
        help="Read-only kiosk: pages readable without signing in, as role viewer "
        "(off by default; env BIOTWIN_KIOSK=1).",
    ),
]


def _sweeps_env(env: dict, scheduler: str | None, fallback_local: bool) -> None:
    """Where the command center's sweeps and PM searches run: the scheduler (or
    $DASK_SCHEDULER_ADDRESS) checked now, put in the dashboard's environment
    (docs/cluster.md). Unreachable: one error line and exit 2, or with ``fallback_local``
    a warning (each sweep tries the cluster again and runs locally meanwhile)."""
    from biotwin.execution import (
        ENV_FALLBACK,
        ENV_SCHEDULER,
        LOCAL,
        ExecutionError,
        check_scheduler,
        resolve_scheduler,
    )

    address = resolve_scheduler(scheduler)
    if scheduler is not None:
        env[ENV_SCHEDULER] = address or LOCAL
    if fallback_local:
        env[ENV_FALLBACK] = "1"
    if address is None:
        return
    try:
        where = check_scheduler(address)
    except ExecutionError as exc:
        if not fallback_local:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(code=2) from None
        console.print(
            f"[yellow]warning:[/] {escape(exc.summary)}; the command center's sweeps run on "
            "the local pool until it answers (--fallback-local)",
            soft_wrap=True,
        )
        return
    console.print(f"scenario sweeps and PM searches run on the {where}", soft_wrap=True)


def dashboard(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8501,
    kiosk: Kiosk = False,
    scheduler: Scheduler = None,
    fallback_local: FallbackLocal = False,
    data_dir_: DataDir = None,
) -> None:
    """Start the Streamlit command center on 127.0.0.1 (sign-in required, unless --kiosk)."""
    env = {**os.environ, "BIOTWIN_DATA_DIR": str(data_dir(data_dir_))}
    if kiosk:
        env["BIOTWIN_KIOSK"] = "1"
    _sweeps_env(env, scheduler, fallback_local)
    # Streamlit in its own process group, stopped with it on SIGTERM / SIGINT to this command
    raise typer.Exit(run_group(_streamlit_command(port), env=env))


#: first words of a log line that reports a failure (an uncaught exception's last line)
ERROR_PREFIXES = ("Traceback", "Error:", "error:")
#: a failed cycle of a loop that keeps running (``HH:MM:SS scoring failed: ...``)
FAILED_CYCLE = re.compile(r"^\d\d:\d\d:\d\d [\w ]+ failed: ")


class _Service:
    """A child process that is restarted (and reported) when it dies."""

    def __init__(self, name: str, argv: list[str], env: dict, logs: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log = logs / f"{name}.log"
        # errors of earlier runs are in the log already: report only new ones
        self._seen = self.log.stat().st_size if self.log.exists() else 0
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        # own process group and session: a Ctrl-C in the terminal reaches the supervisor
        # only, which then stops every service's group (biotwin/children.py)
        with open(self.log, "a") as out:
            self.proc = start_group(self.argv, env=self.env, stdout=out, stderr=out)

    def errors(self) -> list[str]:
        """Lines logged since the last call that report an error (ERROR, CRITICAL, a
        traceback's last line), so that the terminal shows a failing service, not only its
        log."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self._seen)
                data = f.read()
                self._seen = f.tell()
        except OSError:
            return []
        lines = data.decode("utf-8", "replace").splitlines()
        return [
            line.strip()
            for line in lines
            if " ERROR " in line
            or " CRITICAL " in line
            or line.startswith(ERROR_PREFIXES)
            or FAILED_CYCLE.match(line)
        ]

    def check(self, stopping: threading.Event | None = None) -> None:
        """Report new error lines; restart a dead child after a back-off (cut short when
        ``stopping`` is set: then it is not restarted)."""
        for line in self.errors():
            console.print(f"[red]{self.name}: {escape(line[:300])}[/] (log {self.log})")
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            self.restarts += 1
            line = f"{self.name} stopped (exit {code}); restarting (restart {self.restarts})"
            console.print(f"[yellow]{line}, log {self.log}[/]")
            try:  # into the service's log too: the Alarms & events page reads it there
                with open(self.log, "a") as f:
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
                    f.write(f"{stamp} supervisor: {line}\n")
            except OSError:
                pass
            self._seen = self.log.stat().st_size if self.log.exists() else 0
            if (stopping or threading.Event()).wait(min(30, 2**self.restarts)):
                return
            self.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the child's whole process group (:func:`biotwin.children.stop_groups`)."""
        if self.proc is not None:
            stop_groups([self.proc], timeout_s=timeout_s)


#: the first start's steps and their usual seconds on a 2-core machine (for "time left")
FIRST_START_STEPS = {
    "simulating two years of training history": 25,
    "reading batch histories": 10,
    "training the deviation model": 50,
    "reading asset histories": 5,
    "training the maintenance model": 35,
}


class _Steps:
    """A status line that names the step, counts steps and shows the time taken and, from
    the usual durations, the time left; refreshed every second (no silent spinner)."""

    def __init__(self, usual: dict[str, float]) -> None:
        self.usual, self.names = usual, list(usual)
        self.step, self.t0, self.t_step = "", time.monotonic(), time.monotonic()
        self._stop = threading.Event()

    def __call__(self, step: str) -> None:
        if self.step:
            console.print(f"  done: {self.step} ({time.monotonic() - self.t_step:.0f} s)")
        self.step, self.t_step = step, time.monotonic()

    def _text(self) -> str:
        k = self.names.index(self.step) if self.step in self.names else 0
        spent = time.monotonic() - self.t_step
        left = max(self.usual.get(self.step, 0) - spent, 0) + sum(
            self.usual[n] for n in self.names[k + 1 :]
        )
        return (
            f"first start, step {k + 1} of {len(self.names)}: {self.step} ({spent:.0f} s; "
            f"about {left:.0f} s left, {time.monotonic() - self.t0:.0f} s so far)"
        )

    def __enter__(self) -> _Steps:
        self._status = console.status(self._text())
        self._status.__enter__()

        def tick() -> None:
            while not self._stop.wait(1.0):
                self._status.update(self._text())

        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._status.__exit__(*exc)
        if exc[0] is None and self.step:
            console.print(f"  done: {self.step} ({time.monotonic() - self.t_step:.0f} s)")


def _metrics_table(family: str, metrics: dict):
    """A model's headline metrics as a readable table."""
    from rich.table import Table

    labels = {
        "chosen_pipeline": "pipeline chosen by cross-validation",
        "auc_p25": "ROC AUC at 25 % of the batch",
        "auc_p50": "ROC AUC at 50 % of the batch",
        "auc_p100": "ROC AUC at the end of the batch",
        "envelope_auc_p50": "golden-batch envelope rule, ROC AUC at 50 %",
        "test_batches": "held-out batches (latest 30 %)",
        "auc_fail_within_horizon": "ROC AUC, failure within the horizon",
        "rul_rmse": "remaining-life RMSE (h)",
        "test_runs": "held-out runs",
    }
    table = Table(title=f"{family} model, held-out figures", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.get("headline", {}).items():
        if isinstance(value, float):
            text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"
        else:
            text = str(value)
        table.add_row(labels.get(key, key.replace("_", " ")), text)
    return table


def _trained_versions(registry) -> dict[str, str]:
    """The newest registered version of each model family (approved or not)."""
    table = registry.versions()
    if table.empty:
        return {}
    return {str(f): str(rows["version"].iloc[-1]) for f, rows in table.groupby("family")}


def _loadable(registry, version: str | None) -> bool:
    """A version whose model file this biotwin reads (not one of the old pickle format)."""
    from quality.artefact import MODEL_FILE

    return version is not None and (registry.root / version / MODEL_FILE).exists()


def _ensure_models(root: Path, *, demo: bool) -> None:
    """First start: simulate training history and train both families (unless versions are
    registered already); in demo mode only, approve the versions that have no approval.

    The demo approval is a named demo step, not a QA decision: it is signed in the registry
    by the demo set-up signer (user ``demo-setup``, "Demo set-up (not a person)", with a
    one-time random password, see :func:`connectors.security.demo_signer`) with a reason
    that says so, and the Models page shows it as an automatic demo approval. Without
    ``--demo`` the trained versions wait for a QA reviewer (`biotwin models approve`).
    """
    from connectors.security import DEMO_SIGNER, demo_signer
    from quality.jobs import ensure_training_data, train_all
    from quality.registry import Registry

    registry = Registry(root / "models")
    families = ("deviation", "maintenance")
    if all(_loadable(registry, registry.approved(f)) for f in families):
        return
    trained = {f: v for f, v in _trained_versions(registry).items() if _loadable(registry, v)}
    if set(families) <= set(trained):  # trained at an earlier start, or beforehand
        done = {f: (trained[f], registry.meta(trained[f]).get("metrics", {})) for f in families}
    else:
        with _Steps(FIRST_START_STEPS) as steps:
            steps("simulating two years of training history")
            source = ensure_training_data(root)
            done = train_all(source, registry, progress=steps)
    password = None
    for family, (version, metrics) in done.items():
        how = "already approved"
        current = registry.approved(family)
        if _loadable(registry, current):
            version, metrics = current, registry.meta(current).get("metrics", {})
        elif not demo:
            how = f"awaiting QA approval (`biotwin models approve {version}`); not scored before"
        else:
            how = "approved automatically for the demo (not a QA decision)"
            password = password or demo_signer(root / "users.toml")
            registry.approve(
                version,
                user=DEMO_SIGNER,
                password=password,
                reason=(
                    "automatic demo approval by the demo set-up at first start of `biotwin up`: "
                    "no QA review took place (a QA reviewer approves on a real site)"
                ),
                users_file=root / "users.toml",
            )
        console.print(f"model {version}: {how}")
        console.print(_metrics_table(family, metrics))


def _ensure_users(root: Path, *, demo: bool) -> bool:
    """Refuse to start without users (one line saying what to do); in demo mode, make the
    demo users on a data dir without any and print their passwords once, in a table.

    Returns whether the data dir is a demo one (its demo users made by demo mode, now or
    before): ``--demo`` on a data dir with users of its own approves nothing by itself."""
    from rich.table import Table

    from connectors.security import (
        DEMO_CREDENTIALS,
        DEMO_FULL_NAMES,
        DEMO_USERS,
        ensure_demo_users,
        load_users,
    )

    users_file = root / "users.toml"
    made = ensure_demo_users(users_file) if demo else {}
    if not load_users(users_file):
        console.print(
            f"[bold red]error:[/] no users in {users_file}: add one with `biotwin users add "
            f"NAME --role qa --data-dir {root}`, or start the demo with `biotwin up --demo`",
            soft_wrap=True,
        )
        raise typer.Exit(code=2)
    is_demo = demo and (bool(made) or (root / DEMO_CREDENTIALS).exists())
    if demo and not is_demo:
        console.print(
            f"--demo: {users_file} has users of its own; no demo users made and no model "
            "approved automatically",
            soft_wrap=True,
        )
    if not made:
        return is_demo
    table = Table(title="demo users of this install (passwords shown once)", title_justify="left")
    for col in ("user", "full name", "roles", "password"):
        table.add_column(col)
    for user, roles in DEMO_USERS:
        table.add_row(user, DEMO_FULL_NAMES.get(user, user), ", ".join(roles), made[user])
    console.print(table)
    console.print(
        f"the passwords are kept for you in {root / DEMO_CREDENTIALS} (readable by you "
        "only); `biotwin users passwd NAME` changes one"
    )
    return is_demo


def up(
    port: Annotated[int, typer.Option(help="Dashboard port on 127.0.0.1.")] = 8501,
    opcua_port: Annotated[int, typer.Option(help="OPC UA server port.")] = 4840,
    speed: Annotated[float, typer.Option(help="Twin seconds per wall second.")] = 60.0,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Demo mode: on a data dir without users, make the demo users (random "
            "passwords, printed once and kept in DATA_DIR/demo-credentials.txt) and approve "
            "the first models automatically.",
        ),
    ] = False,
    kiosk: Kiosk = False,
    scheduler: Scheduler = None,
    fallback_local: FallbackLocal = False,
    receive_port: Annotated[
        int, typer.Option(help="Port of the OPC UA endpoint OT systems push into (receive).")
    ] = 4850,
    no_receive: Annotated[
        bool,
        typer.Option(
            "--no-receive",
            help="Do not start `biotwin receive` (the endpoint OT systems push into).",
        ),
    ] = False,
    data_dir_: DataDir = None,
) -> None:
    """Start the twin over OPC UA, the ingest, the receiver and the dashboard; supervise
    until Ctrl-C."""
    from connectors.historian import Historian
    from connectors.records_cli import ensure_key_announced
    from connectors.security import DEMO_CREDENTIALS, client_certificate
    from connectors.warm import WARM_DAYS, close_open_context, ensure_epoch, warm_history
    from twin.config import load_config

    # SIGTERM during the first start (history, training) stops it as Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    root = data_dir(data_dir_).resolve()
    sweeps_env: dict = {}
    _sweeps_env(sweeps_env, scheduler, fallback_local)  # a wrong address stops us first
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    demo = _ensure_users(root, demo=demo)
    ensure_key_announced(console)  # the records signing key, made on first start
    historian = Historian(root / "historian")
    epoch, _ = ensure_epoch(root, load_config())
    if historian.tags().empty:
        t0 = time.monotonic()
        with console.status(f"first start: the plant's last {WARM_DAYS:g} days...") as status:
            done = []

            def step(what: str) -> None:
                done.append(what)
                status.update(
                    f"first start: loading the plant's last {WARM_DAYS:g} days into the "
                    f"historian: {what} ({len(done)} of 14 steps, {time.monotonic() - t0:.0f} s)"
                )

            counts = warm_history(historian, load_config(), epoch, progress=step)
        console.print(
            f"history: {sum(v for k, v in counts.items() if k != 'batch_context'):,} values of "
            f"{WARM_DAYS:g} days loaded in {time.monotonic() - t0:.0f} s (plant epoch "
            f"{epoch.start}, seed {epoch.seed})"
        )
    closed = close_open_context(historian)
    if closed:
        console.print(f"closed {closed} batch-context records left open by the last stop")
    from quality.errors import RegistryError

    try:
        _ensure_models(root, demo=demo)
    except RegistryError as exc:  # e.g. a registry whose chain does not verify
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    env = {**os.environ, **sweeps_env, "BIOTWIN_DATA_DIR": str(root), "PYTHONUNBUFFERED": "1"}
    if kiosk:
        env["BIOTWIN_KIOSK"] = "1"
    endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/biotwin/"
    # the ingest signs in with its own certificate (trusted in pki/trusted), not anonymously
    cert, key = asyncio.run(client_certificate(root / "pki", "urn:biotwin:ingest"))
    me = [sys.executable, "-m", "biotwin"]
    services = [
        _Service(
            "twin-opcua",
            [*me, "serve-opcua", "--endpoint", endpoint, "--speed", str(speed),
             "--epoch", str(root / "twin" / "epoch.json"), "--data-dir", str(root)],
            env, logs,
        ),
        _Service(
            "ingest",
            [*me, "ingest", endpoint, "--publishing-ms", "1000", "--data-dir", str(root),
             "--security", "SignAndEncrypt", "--cert", str(cert), "--key", str(key)],
            env, logs,
        ),
        _Service("scoring", [*me, "score", "--every", "60", "--data-dir", str(root)], env, logs),
        _Service("dashboard", _streamlit_command(port), env, logs),
    ]  # fmt: skip
    receive_endpoint = f"opc.tcp://127.0.0.1:{receive_port}/biotwin/receive"
    if not no_receive:  # OT writers push here (docs/receive.md); users with role ot-writer
        services.insert(2, _Service(
            "receive",
            [*me, "receive", "--endpoint", receive_endpoint, "--data-dir", str(root)],
            env, logs,
        ))  # fmt: skip
    stopping = threading.Event()
    with stop_signals(lambda _signum: stopping.set()):
        try:
            services[0].start()
            if not stopping.wait(8):  # the twin simulates its first horizon before it listens
                for service in services[1:]:
                    service.start()
                console.print(
                    f"command center: [bold]http://127.0.0.1:{port}[/]   OPC UA: {endpoint}"
                    + ("" if no_receive else f"   OT writers push to: {receive_endpoint}")
                )
                if (root / DEMO_CREDENTIALS).exists():
                    console.print(f"demo users and their passwords: {root / DEMO_CREDENTIALS}")
                console.print(f"logs: {logs}; Ctrl-C stops everything")
            while not stopping.is_set():
                for service in services:
                    if not stopping.is_set():
                        service.check(stopping)
                stopping.wait(1.0)
        finally:  # every service's process group: SIGTERM, then SIGKILL after 15 s
            # the twin first: it serves its last sample to the ingest, which is still
            # running, then closes; the ingest then stores it and flushes on its own stop
            started = [s.proc for s in services if s.proc is not None]
            stop_groups(started[:1], timeout_s=15)
            stop_groups(started[:0:-1], timeout_s=15)
            console.print("stopped")


def register(app: typer.Typer) -> None:
    """Add this package's subcommands to *app*."""
    app.command("dashboard")(dashboard)
    app.command("up")(up)
