"""`mxflow lab`: run the lab on loopback and print what happened to each message.

Interim behaviour (until the lab issue lands): a gateway and a downstream mailbox host,
a few messages through them (normal, relay attempt, too large, smuggling, unknown
mailbox, downstream down), and the outcome of each from the trace store.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from mxflow.commands import Subparsers


def register(sub: Subparsers) -> None:
    """Add the `lab` subcommand to the `mxflow` parser."""
    p = sub.add_parser("lab", help="run the mail flow on loopback and report on each message")
    p.add_argument(
        "--dir", default="lab-run", metavar="DIR", help="where the lab's files go (./lab-run)"
    )
    p.add_argument("--verbose", action="store_true", help="show the nodes' logs")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mxflow.lab.interim import run as run_lab

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return asyncio.run(run_lab(Path(args.dir).resolve()))
