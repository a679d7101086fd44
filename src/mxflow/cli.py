"""The `mxflow` command: thin — it parses arguments, calls the library and prints.

Each area registers its own subcommands from a module in `mxflow.commands`, so the
areas stay independent. A command handler returns the process exit status; an
`MxflowError` becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mxflow import __version__
from mxflow.errors import MxflowError

# Modules in mxflow.commands, each with `register(subparsers)`.
COMMAND_MODULES = (
    "serve",
    "config",
    "queue",
    "dns",
    "spf",
    "dkim",
    "auth",
    "filter",
    "quarantine",
    "lab",
    "host",
    "trace",
    "web",
    "archive",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mxflow", description="mxflow: gateway, archiver and mailbox host in one engine."
    )
    parser.add_argument("--version", action="version", version=f"mxflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"mxflow.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        status: int = handler(args)
    except MxflowError as exc:
        print(f"mxflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
