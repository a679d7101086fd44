"""`mxflow serve --config node.toml`: run a node until SIGTERM.

With `[server] workers = N` (N > 1) this process starts N worker processes that listen on
the same ports (SO_REUSEPORT: the kernel spreads connections) and share the spool; it
forwards SIGTERM/SIGINT to them and exits when they have all stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
import sys
from types import FrameType

from mxflow.commands import Subparsers
from mxflow.config import load_config


def register(sub: Subparsers) -> None:
    """Add the `serve` subcommand to the `mxflow` parser."""
    p = sub.add_parser("serve", help="run a node (gateway, archiver, host) from its config")
    p.add_argument("--config", required=True, metavar="FILE", help="the node's TOML file")
    p.add_argument("--data-dir", metavar="DIR", help="spool, trace and certificates go here")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=run)


def setup_logging(level: str, name: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {name} %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, data_dir=args.data_dir)
    workers = config.server.workers
    if workers > 1 and args.worker is None:
        return _supervise(args, workers)
    from mxflow.roles.gateway import build_node

    worker = args.worker or 0
    setup_logging(args.log_level, f"{config.name}[{worker}]")

    async def main() -> None:
        node = build_node(config, worker=worker, workers=workers)
        await node.run()

    asyncio.run(main())
    return 0


def _supervise(args: argparse.Namespace, workers: int) -> int:
    base = [sys.executable, "-m", "mxflow", "serve", "--config", args.config]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    base += ["--log-level", args.log_level]
    # Worker 0 recovers the spool's tmp files first; all create their directories.
    procs = [subprocess.Popen([*base, "--worker", str(i)]) for i in range(workers)]

    def forward(signum: int, frame: FrameType | None) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for p in procs:
        status = max(status, p.wait())
    return status
