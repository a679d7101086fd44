"""`mxflow dns` subcommands (not yet implemented)."""

from __future__ import annotations

from mxflow.commands import Subparsers


def register(sub: Subparsers) -> None:
    """Add the `dns` subcommands to the `mxflow` parser."""
