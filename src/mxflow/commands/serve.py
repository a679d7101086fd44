"""`mxflow serve --config node.toml`: run a node until SIGTERM.

With `[server] workers = N` (N > 1) this process starts N worker processes that listen on
the same ports (SO_REUSEPORT: the kernel spreads connections) and share the spool; it
forwards SIGTERM/SIGINT to them and exits when they have all stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
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


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, data_dir=args.data_dir)
    workers = config.server.workers
    if workers > 1 and args.worker is None:
        from mxflow.roles.node import ensure_certificates

        ensure_certificates(config)  # once, before the workers race to create them
        return _supervise(args, workers)
    from mxflow.roles.build import build_node
    from mxflow.roles.logs import setup_logging

    worker = args.worker or 0
    setup_logging(args.log_level, f"{config.name}[{worker}]")

    async def main() -> None:
        node = build_node(config, worker=worker, workers=workers)
        await node.run()

    asyncio.run(main())
    return 0


def _supervise(args: argparse.Namespace, workers: int) -> int:
    """Run `workers` worker processes; restart one that dies; forward SIGTERM/SIGINT."""
    base = [sys.executable, "-m", "mxflow", "serve", "--config", args.config]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    base += ["--log-level", args.log_level]
    procs = [subprocess.Popen([*base, "--worker", str(i)]) for i in range(workers)]
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not stopping:
        time.sleep(0.5)
        for i, p in enumerate(procs):
            if p.poll() is not None and not stopping:
                # A worker died (killed, crashed): its spooled messages are safe; start a
                # new one, which recovers them.
                print(
                    f"mxflow serve: worker {i} exited with {p.returncode}; restarting it",
                    file=sys.stderr,
                )
                time.sleep(1.0)
                procs[i] = subprocess.Popen([*base, "--worker", str(i)])
    status = 0
    for p in procs:
        status = max(status, p.wait())
    return status
