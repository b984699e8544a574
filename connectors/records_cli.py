"""``biotwin keys init`` and ``biotwin audit verify``: the records signing key and the
audit trail's check (``biotwin models verify`` is in :mod:`quality.cli`).

Exit codes of the verify commands: 0 the log verifies and every line is readable, 1 it
does not (where and why printed), 2 no usable signing key.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from connectors.cli import DataDir
from connectors.signed_log import (
    RecordsError,
    Verification,
    ensure_key,
    init_key,
    key_path,
    load_key,
)

__all__ = ["ensure_key_announced", "print_verification", "register", "require_key"]

console = Console()
err_console = Console(stderr=True)


keys = typer.Typer(
    help="The records signing key (audit trail, model registry).", no_args_is_help=True
)
audit = typer.Typer(help="The audit trail of QA decisions.", no_args_is_help=True)


def _data_dir(value: Path | None) -> Path:
    return value if value is not None else Path(os.environ.get("BIOTWIN_DATA_DIR", "var"))


def require_key():
    """The signing key, or exit 2 with one line."""
    try:
        return load_key()
    except RecordsError as exc:
        err_console.print("[bold red]error:[/] " + escape(str(exc)))
        raise typer.Exit(code=2) from None


def ensure_key_announced(out: Console) -> None:
    """`biotwin up`: the signing key, created when missing and said so loudly, once; exit 2
    with one line when a key file is there but unusable."""
    try:
        key, created = ensure_key()
    except RecordsError as exc:
        err_console.print("[bold red]error:[/] " + escape(str(exc)))
        raise typer.Exit(code=2) from None
    if created:
        out.print(
            f"[bold yellow]records signing key created:[/] [bold]{key.path}[/] (key id "
            f"{key.key_id}, mode 0600). The audit trail and the model registry are signed "
            "with it: keep a copy apart from the data dir; without it they cannot be verified "
            "(docs/records.md)."
        )


def print_verification(title: str, path: Path, check: Verification) -> bool:
    """Print what was checked and where the chain breaks; True when all is well."""
    state = "[green]verified[/]" if check.ok else "[bold red]NOT verified[/]"
    console.print(f"{escape(title)}: {escape(str(path))}: {state}")
    console.print(
        f"  {check.records} readable records; {check.verified} verified (seq, SHA-256 chain, "
        f"HMAC with key {check.key_id or '-'}, anchor of the newest record)"
    )
    if check.adopted:
        console.print(f"  {check.adopted} records before an adoption record, vouched for by it")
    for note in check.notes:
        console.print(f"  note: {escape(note)}")
    if not check.intact:
        where = f"seq {check.first_bad}" + (f", line {check.line}" if check.line else "")
        console.print(f"  [red]breaks at {where}:[/] {escape(check.problem)}")
    for line, why in check.malformed:
        console.print(f"  [yellow]line {line} unreadable, skipped and kept in place:[/] {why}")
    return check.ok


@keys.command("init")
def keys_init(
    adopt: Annotated[
        bool,
        typer.Option(
            "--adopt",
            help="Also sign the existing audit trail and model registry of the data dir as "
            "they are (an 'adopted' record each); uses the existing key if there is one.",
        ),
    ] = False,
    reason: Annotated[
        str, typer.Option(help="With --adopt: why the records are adopted.")
    ] = "records written before signing keys existed, adopted as found",
    data_dir: DataDir = None,
) -> None:
    """Create the signing key (32 random bytes, mode 0600) at $BIOTWIN_KEY_FILE or
    ~/.config/biotwin/records.key; an existing key is never replaced."""
    path = key_path()
    if path.exists() and adopt:
        key = require_key()
        console.print(f"signing key {path} (key id {key.key_id}) is used")
    else:
        try:
            key = init_key(path)
        except RecordsError as exc:
            err_console.print("[bold red]error:[/] " + escape(str(exc)))
            raise typer.Exit(code=2) from None
        console.print(
            f"signing key created: [bold]{path}[/] (key id {key.key_id}, mode 0600); keep a "
            "copy apart from the data dir: records signed with it verify only with it"
        )
    if adopt:
        _adopt(_data_dir(data_dir), reason)


def _adopt(store: Path, reason: str) -> None:
    from dashboard.audit import AuditTrail
    from quality.registry import Registry

    user = f"{getpass.getuser()} (operator, biotwin keys init --adopt)"
    trail = AuditTrail(store / "audit", store / "users.toml")
    registry = Registry(store / "models")
    for name, log, path in (
        ("audit trail", trail, trail.path),
        ("model registry", registry, registry.log),
    ):
        if not path.exists():
            console.print(f"{name}: none at {path}")
            continue
        if log.state().verification.ok:
            console.print(f"{name}: {path} verifies; nothing to adopt")
            continue
        record = log.adopt(user=user, reason=reason)
        console.print(f"{name}: {path} adopted as found (record seq {record['seq']})")


@audit.command("verify")
def audit_verify(data_dir: DataDir = None) -> None:
    """Verify the audit trail: chain, signatures, the anchor of the newest record."""
    from dashboard.audit import AuditTrail

    store = _data_dir(data_dir)
    require_key()
    trail = AuditTrail(store / "audit", store / "users.toml")
    if not print_verification("audit trail", trail.path, trail.verify()):
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``keys`` and ``audit`` to *app*."""
    app.add_typer(keys, name="keys")
    app.add_typer(audit, name="audit")
