"""`mxflow config check FILE`: validate a node's configuration without starting it.

Every error is printed (one line each, naming file and key) and the exit status is 2;
warnings (allowed but risky settings) go to stderr as `mxflow: warning: ...` and leave the
exit status 0. A PostgreSQL `[store] url` is also tried: a database `serve` would refuse
(unreachable, or not at this version's schema) is a warning naming what to do.
"""

from __future__ import annotations

import argparse
import sys

from mxflow.commands import Subparsers, print_json
from mxflow.config import NodeConfig, config_warnings, load_config


def register(sub: Subparsers) -> None:
    """Add the `config` subcommands to the `mxflow` parser."""
    p = sub.add_parser("config", help="work with node configuration files")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    check = csub.add_parser("check", help="validate FILE; every error names file, key and fix")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--data-dir", metavar="DIR", help="as `mxflow serve --data-dir`")
    check.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object instead"
    )
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    config = load_config(args.file, data_dir=args.data_dir)
    listeners = ", ".join(f"{x.address}:{x.port} ({x.tls})" for x in config.listeners)
    domains = ", ".join(f"{d.domain} ({d.type})" for d in config.accepted_domains) or "none"
    routes = ", ".join(
        f"{'/'.join(r.domains)} -> "
        + (
            "MX"
            if r.mx
            else f"maildir {r.maildir}"
            if r.maildir
            else " ".join(f"{h.host}:{h.port}" for h in r.smart_hosts)
        )
        + f" (tls {r.tls})"
        for r in config.routes
    )
    warnings = config_warnings(config)
    store = _shared_store(config, warnings)
    for warning in warnings:
        print(f"mxflow: warning: {warning}", file=sys.stderr)
    if args.json:
        print_json(
            {
                "file": args.file,
                "node": config.name,
                "role": config.role,
                "hostname": config.hostname,
                "listeners": [f"{x.address}:{x.port}" for x in config.listeners],
                "accepted_domains": [d.domain for d in config.accepted_domains],
                "routes": [r.name for r in config.routes],
                "spool": str(config.spool_dir),
                "trace": str(config.trace_db),
                "store": store,
                "warnings": warnings,
            }
        )
        return 0
    print(f"{args.file}: OK — node {config.name} ({config.role}), {config.hostname}")
    print(f"  listeners: {listeners}")
    print(f"  accepted domains: {domains}")
    print(f"  routes: {routes or 'none'}")
    if config.dns_resolver:
        print(f"  dns resolver: {config.dns_resolver}")
    if store is None:
        print(f"  spool: {config.spool_dir}  trace: {config.trace_db}")
    else:
        print(f"  spool: {config.spool_dir}  shared store (trace, quarantine): {store}")
    for warning in config.host.warnings:
        print(f"  warning: {warning}")
    return 0


def _shared_store(config: NodeConfig, warnings: list[str]) -> str | None:
    """The shared PostgreSQL database (password left out), or None; a database `serve`
    would refuse (unreachable, or at another schema version) is a warning, since the file
    itself is valid: the warning says what to run."""
    url = config.shared_database
    if url is None:
        return None
    from mxflow.store.registry import check_shared
    from mxflow.store.sql import StoreError, open_database

    database = open_database(url)
    shown = str(getattr(database, "display", url))
    try:
        check_shared(database)
    except StoreError as exc:
        warnings.append(f"{config.file}: store.url: {exc}")
    finally:
        database.close()
    return shown
