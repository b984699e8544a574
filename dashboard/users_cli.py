"""``biotwin users``: the people who may sign in (command center, OPC UA) and sign records.

``add``, ``passwd``, ``disable``, ``enable`` change ``DATA_DIR/users.toml`` (written
atomically, 0600; comments are not kept, see docs/security.md); ``list`` shows each user
with their sign-in record from ``DATA_DIR/security/sign_ins.jsonl``, never a hash. A
password is read from a prompt that does not echo, or, when standard input is not a
terminal, from its first line (for scripts: ``printf '%s\\n' "$PW" | biotwin users add ...``).
``register(app)`` adds the group to the top-level typer app (see biotwin/cli.py).
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connectors.cli import DataDir, data_dir
from connectors.security import (
    MIN_PASSWORD_LENGTH,
    ROLES,
    UserError,
    add_user,
    check_password_rule,
    check_roles,
    load_users,
    set_disabled,
    set_password,
    sign_in_summary,
)

__all__ = ["register", "users"]

console = Console()
err_console = Console(stderr=True)
users = typer.Typer(help="Users who may sign in and sign (users.toml).", no_args_is_help=True)


def _fail(message: str) -> None:
    err_console.print("[bold red]error:[/] " + escape(message))
    raise typer.Exit(code=2)


def _read_password(name: str) -> str:
    """The new password of ``name``: typed twice at a no-echo prompt, or the first line of
    standard input when it is not a terminal; checked against the length rule."""
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name} (at least {MIN_PASSWORD_LENGTH} chars): ")
        check_password_rule(password)
        if getpass.getpass("the same password again: ") != password:
            raise UserError("password: the two entries differ; got two different passwords")
        return password
    password = sys.stdin.readline().rstrip("\r\n")
    check_password_rule(password)
    return password


@users.command("add")
def add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, '.', '_', '-').")],
    role: Annotated[
        list[str], typer.Option("--role", help=f"A role ({', '.join(ROLES)}); repeat for more.")
    ],
    full_name: Annotated[
        str | None, typer.Option("--full-name", help="Shown with the user's signatures.")
    ] = None,
    data_dir_: DataDir = None,
) -> None:
    """Add a user; the password is asked for (or read from standard input)."""
    path = data_dir(data_dir_) / "users.toml"
    try:
        check_roles(role)  # before asking for a password
        if name in load_users(path):
            raise UserError(f"user name: {name!r} exists already (use `biotwin users passwd`)")
        entry = add_user(path, name, password=_read_password(name), roles=role, full_name=full_name)
    except (UserError, OSError) as exc:
        _fail(str(exc))
    console.print(f"user {name} ({entry['full_name']}) added with roles {', '.join(role)}")


@users.command("list")
def list_users(data_dir_: DataDir = None) -> None:
    """Users with their roles, state and sign-in record (never password hashes)."""
    path = data_dir(data_dir_) / "users.toml"
    try:
        known, record = load_users(path), sign_in_summary(path)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    table = Table(title=f"{len(known)} users in {path}", title_justify="left")
    for col in ("user", "full name", "roles", "disabled", "last sign-in", "failures", "locked"):
        table.add_column(col)
    for name, entry in known.items():
        seen = record.get(name, {})
        table.add_row(
            name,
            str(entry.get("full_name") or name),
            ", ".join(entry.get("roles", [])),
            "yes" if entry.get("disabled") else "no",
            seen.get("last_sign_in") or "never",
            str(seen.get("failures", 0)),
            f"until {seen['locked_until']}" if seen.get("locked_until") else "",
        )
    console.print(table)


@users.command("passwd")
def passwd(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir_: DataDir = None,
) -> None:
    """Set a user's password (asked for, or read from standard input)."""
    path = data_dir(data_dir_) / "users.toml"
    try:
        if name not in load_users(path):
            raise UserError(f"user name: no user {name!r} in {path}")
        set_password(path, name, _read_password(name))
    except (UserError, OSError) as exc:
        _fail(str(exc))
    console.print(f"password of {name} changed")


def _set_disabled(name: str, data_dir_, disabled: bool) -> None:
    try:
        set_disabled(data_dir(data_dir_) / "users.toml", name, disabled)
    except (UserError, OSError) as exc:
        _fail(str(exc))
    console.print(f"user {name} {'disabled: cannot sign in' if disabled else 'enabled'}")


@users.command("disable")
def disable(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir_: DataDir = None,
) -> None:
    """Disable a user: no more sign-ins (the user's earlier records keep the name)."""
    _set_disabled(name, data_dir_, True)


@users.command("enable")
def enable(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir_: DataDir = None,
) -> None:
    """Enable a disabled user again."""
    _set_disabled(name, data_dir_, False)


def register(app: typer.Typer) -> None:
    """Add ``biotwin users`` to *app*."""
    app.add_typer(users, name="users")
