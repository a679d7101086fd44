"""`mxflow spf` subcommands (not yet implemented)."""

from __future__ import annotations

from mxflow.commands import Subparsers


def register(sub: Subparsers) -> None:
    """Add the `spf` subcommands to the `mxflow` parser."""
