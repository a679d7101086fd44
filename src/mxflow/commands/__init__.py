"""Subcommands of `mxflow`, one module per area; each defines `register(subparsers)`.

A handler is set with `parser.set_defaults(handler=func)`; `func(args) -> int` returns
the exit status.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
