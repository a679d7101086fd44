"""The `mxflow` command: thin — it parses arguments, calls the library and prints.

Each area registers its own subcommands from a module in `mxflow.commands`, so the
areas stay independent. A command handler returns the process exit status; an
`MxflowError` becomes one line on stderr per problem (a config with three errors prints
three) and its `exit_status`, never a traceback. When the reader of our output goes away
(`mxflow ... | head`), the command stops quietly with status 141, as a shell tool killed
by SIGPIPE would (SIGPIPE itself stays ignored: `serve` must survive a peer that hangs up).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mxflow import __version__
from mxflow.commands import EXIT_STATUS_HELP
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
    "store",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mxflow",
        description="mxflow: gateway, archiver and mailbox host in one engine.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        sys.stdout.flush()
    except MxflowError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"mxflow: {line}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_gone()
    return status


def _reader_gone() -> int:
    """stdout's reader closed the pipe: drop what is still buffered and say nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


if __name__ == "__main__":
    sys.exit(main())
