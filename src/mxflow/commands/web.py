"""`mxflow web`: the admin web UI (placeholder while it is built)."""

from __future__ import annotations

from mxflow.commands import Subparsers


def register(sub: Subparsers) -> None:
    """Add the `web` command to the `mxflow` parser."""
    sub.add_parser("web", help="the admin web UI")
