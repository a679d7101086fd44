"""Subcommands of `mxflow`, one module per area; each defines `register(subparsers)`.

A handler is set with `parser.set_defaults(handler=func)`; `func(args) -> int` returns
the exit status.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# The DNS server every command asks by default: the address `mxflow dns serve` listens on
# by default, so the two work together out of the box (mxflow never asks the system
# resolver unless told to).
DEFAULT_RESOLVER = "127.0.0.53:5353"

# Exit statuses every command uses; `mxflow --help` prints EXIT_STATUS_HELP and
# docs/operations.md repeats it.
EXIT_OK = 0  # done; for a check: the answer is "pass" / "clean" / "valid"
EXIT_NEGATIVE = 1  # the check ran and the answer is "no" (auth fail, SPF fail, ...)
EXIT_USAGE = 2  # bad arguments, a bad config file, a file that cannot be read
EXIT_UNAVAILABLE = 3  # something needed is in use or missing: a port, a locked data dir
EXIT_PIPE = 141  # the reader of the output went away (`mxflow ... | head`)

EXIT_STATUS_HELP = """exit status:
  0    done; for a check, the result is good (pass, none, neutral, valid)
  1    a check ran and its result is bad: auth check compauth=fail; spf eval anything
       but pass; spf lint, dns check an error found; dkim verify no passing signature;
       queue drain mail stayed in the spool; lab run a claim failed
  2    usage or configuration error (bad option, bad config file, unreadable input)
  3    unavailable at run time: a port in use, a data directory another node owns, no
       node to drain, no PostgreSQL server (lab run --nodes 2)
  141  the reader of the output went away (mxflow ... | head)
  130  interrupted (Ctrl-C)"""


def print_json(record: object) -> None:
    """One JSON Lines record on stdout (`--json` of every command that prints records)."""
    import json

    print(json.dumps(record, ensure_ascii=False, default=str), flush=True)
