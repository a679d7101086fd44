"""`mxflow web`: the admin web UI of a node, and its accounts.

    mxflow web --config NODE.toml [--data-dir DIR] [--listen IP:PORT]
    mxflow web --config NODE.toml user add NAME --role admin|domain-admin [--domain D ...]
    mxflow web --config NODE.toml user list

The password of `user add` is read from a prompt (twice) on a terminal, else as one line
from standard input — never from the command line, where `ps` and shell history would
show it. The UI listens on `[web] listen` (default 127.0.0.1:8025); put a TLS-terminating
proxy in front of it for anything but loopback (its cookies are Secure).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from mxflow.commands import Subparsers
from mxflow.errors import MxflowError

if TYPE_CHECKING:
    from mxflow.config import NodeConfig
    from mxflow.web.accounts import Accounts


def register(sub: Subparsers) -> None:
    """Add the `web` command (serve) and `web user` to the `mxflow` parser."""
    p = sub.add_parser("web", help="the admin web UI (trace, quarantine, queue, DNS health)")
    p.add_argument("--config", required=True, metavar="NODE.toml", help="the node to manage")
    p.add_argument("--data-dir", metavar="DIR", help="as `mxflow serve --data-dir`")
    p.add_argument("--listen", metavar="IP:PORT", help="instead of [web] listen")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(handler=run_serve)
    wsub = p.add_subparsers(dest="web_command", metavar="SUBCOMMAND")
    user = wsub.add_parser("user", help="accounts of the web UI")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = usub.add_parser("add", help="create (or reset) an account; password from stdin")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["admin", "domain-admin"])
    add.add_argument("--domain", action="append", default=[], help="(domain-admin) repeatable")
    add.set_defaults(handler=run_user_add)
    usub.add_parser("list", help="every account and its role").set_defaults(handler=run_user_list)
    digest = wsub.add_parser("digest", help="send quarantine digests now (e.g. from cron)")
    digest.set_defaults(handler=run_digest)


def _config(args: argparse.Namespace) -> NodeConfig:
    from mxflow.config import load_config

    return load_config(args.config, data_dir=args.data_dir)


def _accounts(config: NodeConfig) -> Accounts:
    from mxflow.web.accounts import Accounts

    return Accounts(config.web.users_db or config.data_dir / "web.sqlite")


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise MxflowError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def run_user_add(args: argparse.Namespace) -> int:
    accounts = _accounts(_config(args))
    domains = [d.strip().lower().rstrip(".") for d in args.domain if d.strip()]
    if args.role == "admin" and domains:
        raise MxflowError("--domain is for domain administrators (an admin sees every domain)")
    accounts.add_user(args.name, _read_password(), args.role, domains)
    scope = f" for {', '.join(domains)}" if domains else ""
    print(f"user {args.name} ({args.role}{scope}) saved")
    return 0


def run_user_list(args: argparse.Namespace) -> int:
    for user in _accounts(_config(args)).users():
        print(f"{user.name:20} {user.role:13} {', '.join(user.domains)}")
    return 0


def run_digest(args: argparse.Namespace) -> int:
    """One round of quarantine digests, queued into the node's spool."""
    import asyncio
    import types

    from mxflow.queue.spool import Spool
    from mxflow.store.trace import TraceStore
    from mxflow.web.digest import send_digests

    config = _config(args)
    if config.filter is None:
        raise MxflowError(f"{args.config}: the node has no [filter], so no quarantine")
    from mxflow.checks.node import node_quarantine
    from mxflow.roles.build import open_shared_database

    database = open_shared_database(config)  # PostgreSQL: the quarantine nodes share
    trace = TraceStore(database or config.trace_db, node=config.name)
    spool = Spool(config.spool_dir, fsync=config.server.fsync)
    state = types.SimpleNamespace(
        config=config,
        quarantine=node_quarantine(config, trace, database),
        accounts=_accounts(config),
        spool=spool,
        trace=trace,
    )
    try:
        sent = asyncio.run(send_digests(state, config.web.public_url))
    finally:
        spool.close()
        trace.close()
        if database is not None:
            database.close()
    print(f"{sent} digest(s) queued")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mxflow.config import load_config
    from mxflow.dns.resolver import parse_endpoint
    from mxflow.roles.logs import setup_logging
    from mxflow.web.app import create_app

    config = load_config(args.config, data_dir=args.data_dir)
    host, port = config.web.listen
    if args.listen:
        host, port = parse_endpoint(args.listen, 8025)
    setup_logging(args.log_level, f"{config.name}[web]")
    app = create_app(config)
    print(f"mxflow web: http://{host}:{port}/ for node {config.name}", file=sys.stderr)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=args.log_level.lower(),
        access_log=False,
        server_header=False,
    )
    return 0
