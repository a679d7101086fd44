"""`mxflow serve --config node.toml`: run a node until SIGTERM.

With `[server] workers = N` (N > 1) this process starts N worker processes that listen on
the same ports (SO_REUSEPORT: the kernel spreads connections) and share the spool; it
forwards SIGTERM/SIGINT to them and exits when they have all stopped.

Before anything runs, the data directory is checked and locked (`mxflow.datadir`: one
node per data directory; a second `serve` on it exits with status 3) and each listener's
certificate and key are loaded once, so an operator's mistake is one line naming the
problem and a non-zero exit, not a traceback: a config that is not UTF-8 or not valid
(2), a data dir that is a file (2), a bad TLS key (2), a port in use (3).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

from mxflow.commands import EXIT_UNAVAILABLE, EXIT_USAGE, Subparsers
from mxflow.config import NodeConfig, load_config
from mxflow.datadir import DataDirLock, lock
from mxflow.errors import MxflowError, Unavailable
from mxflow.queue.spool import clear_drain, drain_requested

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def register(sub: Subparsers) -> None:
    """Add the `serve` subcommand to the `mxflow` parser."""
    p = sub.add_parser("serve", help="run a node (gateway, archiver, host) from its config")
    p.add_argument("--config", required=True, metavar="FILE", help="the node's TOML file")
    p.add_argument("--data-dir", metavar="DIR", help="spool, trace and certificates go here")
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="DEBUG, INFO, WARNING, ERROR (default INFO)",
    )
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, data_dir=args.data_dir)
    workers = config.server.workers
    held = None if args.worker is not None else lock(config.data_dir)
    if held is not None:
        clear_drain(config.spool_dir)  # asked of a node that died before it drained
    try:
        check_tls(config)
        if workers > 1 and args.worker is None:
            assert held is not None
            return _supervise(args, workers, held, config)
        return _serve(args, config, workers)
    finally:
        if held is not None:
            held.release()


def check_tls(config: NodeConfig) -> None:
    """Create the certificates `generate_cert` asks for, then load every listener's pair
    once: a bad key is a config error now, not a traceback at the first STARTTLS."""
    from mxflow.roles.node import ensure_certificates
    from mxflow.smtp.tls import server_context

    try:
        ensure_certificates(config)
    except (OSError, ValueError) as exc:
        raise MxflowError(f"{config.file}: cannot create listener certificates: {exc}") from None
    for i, listener in enumerate(config.listeners):
        if listener.tls == "none" or listener.cert is None or listener.key is None:
            continue
        try:
            server_context(listener.cert, listener.key, listener.client_ca)
        except (ssl.SSLError, OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise MxflowError(
                f"{config.file}: listeners[{i}]: cert {listener.cert} / key {listener.key}:"
                f" not a usable certificate and key ({why})"
            ) from None


def _serve(args: argparse.Namespace, config: NodeConfig, workers: int) -> int:
    from mxflow.logjson import use_json
    from mxflow.roles.build import build_node
    from mxflow.roles.logs import setup_logging

    worker = args.worker or 0
    setup_logging(args.log_level, f"{config.name}[{worker}]")
    if config.log.format == "json":
        use_json(f"{config.name}[{worker}]")

    async def main() -> None:
        node = build_node(config, worker=worker, workers=workers)
        await node.run()

    try:
        with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
            runner.run(main())
    except OSError as exc:
        raise _os_failure(config, exc) from None
    except sqlite3.Error as exc:  # mostly: the trace store cannot be opened
        raise MxflowError(f"database error: {exc} (trace database {config.trace_db})") from None
    return 0


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop `[server] event_loop` names: uvloop (the default) or asyncio's own."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _os_failure(config: NodeConfig, exc: OSError) -> MxflowError:
    """An OSError while starting (mostly from bind) as one line an operator can act on."""
    where = ", ".join(f"{x.address}:{x.port}" for x in config.listeners)
    if exc.errno == errno.EADDRINUSE:
        return Unavailable(f"cannot listen on {where}: address already in use by another process")
    if exc.errno == errno.EADDRNOTAVAIL:
        return MxflowError(f"cannot listen on {where}: no such address on this machine")
    if exc.errno == errno.EACCES and exc.filename is None:
        return MxflowError(f"cannot listen on {where}: permission denied (ports below 1024)")
    name = f"{exc.filename}: " if exc.filename else ""
    return MxflowError(f"{name}{exc.strerror or exc}")


def _supervise(args: argparse.Namespace, workers: int, held: DataDirLock, cfg: NodeConfig) -> int:
    """Run `workers` worker processes; restart one that dies; forward SIGTERM/SIGINT (stop)
    and SIGHUP (reload). During a drain (`mxflow queue drain`: each worker sees the request
    and exits when done) no worker is restarted, and this exits when they all have.

    The workers inherit the data-dir lock's descriptor, so the directory stays owned while
    any of them runs, even if this process is killed.
    """
    base = [sys.executable, "-m", "mxflow", "serve", "--config", args.config]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    base += ["--log-level", args.log_level]

    def start(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*base, "--worker", str(i)], pass_fds=(held.fd,))

    procs = [start(i) for i in range(workers)]
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    def reload(signum: int, frame: FrameType | None) -> None:
        for p in procs:  # each worker re-reads the config; a bad one it refuses and logs
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, reload)
    draining = False
    while not stopping:
        time.sleep(0.5)
        draining = draining or drain_requested(cfg.spool_dir) is not None
        if draining and all(p.poll() is not None for p in procs):
            clear_drain(cfg.spool_dir)
            break
        for i, p in enumerate(procs):
            if p.poll() in (EXIT_USAGE, EXIT_UNAVAILABLE) and not stopping:
                # A start-up failure (it printed why): starting it again would fail again.
                forward(signal.SIGTERM, None)
                return max(x.wait() for x in procs)
            if p.poll() is not None and not stopping and not draining:
                # A worker died (killed, crashed): its spooled messages are safe; start a
                # new one, which recovers them.
                print(
                    f"mxflow serve: worker {i} exited with {p.returncode}; restarting it",
                    file=sys.stderr,
                )
                time.sleep(1.0)
                procs[i] = start(i)
    status = 0
    for p in procs:
        status = max(status, p.wait())
    return status
