"""Subcommands of ``biotwin`` that belong to the dashboard package.

``register(app)`` adds them to the top-level typer app (see biotwin/cli.py).
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's subcommands to *app*."""
    del app
