"""`mxflow store migrate | status`: the schema of the database that nodes share.

    mxflow store migrate --config NODE.toml [--json]
    mxflow store status --config NODE.toml [--json]

Both use that node's `[store] url`. `migrate` applies the migrations this mxflow knows
and the database lacks (idempotent; two nodes running it at once apply each once);
`status` prints each component's version in the database beside the one this mxflow
needs and exits 1 when they differ (a node would refuse to start). A node whose state is
SQLite files (no PostgreSQL `[store] url`) migrates its own files at start: nothing to do.
"""

from __future__ import annotations

import argparse

from mxflow.commands import EXIT_NEGATIVE, EXIT_OK, Subparsers, print_json


def register(sub: Subparsers) -> None:
    """Add the `store` subcommands to the `mxflow` parser."""
    p = sub.add_parser("store", help="the shared database's schema: migrate, status")
    ssub = p.add_subparsers(dest="store_command", metavar="SUBCOMMAND", required=True)
    for name, handler, text in (
        ("migrate", run_migrate, "apply the schema migrations the shared database lacks"),
        ("status", run_status, "each component's schema version, database and needed"),
    ):
        s = ssub.add_parser(name, help=text)
        s.add_argument("--config", metavar="NODE.toml", required=True)
        s.add_argument("--json", action="store_true", help="one JSON object per component")
        s.set_defaults(handler=handler)


def _database_url(args: argparse.Namespace) -> str | None:
    from mxflow.config import load_config

    url = load_config(args.config).shared_database
    if url is None:
        print(f"{args.config}: no PostgreSQL [store] url; a node migrates its SQLite files itself")
    return url


def run_migrate(args: argparse.Namespace) -> int:
    from mxflow.store.registry import COMPONENTS
    from mxflow.store.schema import migrate
    from mxflow.store.sql import open_database

    url = _database_url(args)
    if url is None:
        return EXIT_OK
    db = open_database(url)
    try:
        done = migrate(db, COMPONENTS)
    finally:
        db.close()
    for line in done:
        print_json({"applied": line}) if args.json else print(f"applied {line}")
    if not done and not args.json:
        print("the schema is up to date")
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    from mxflow.store.registry import COMPONENTS
    from mxflow.store.schema import current_versions
    from mxflow.store.sql import open_database

    url = _database_url(args)
    if url is None:
        return EXIT_OK
    db = open_database(url)
    try:
        have = current_versions(db)
    finally:
        db.close()
    status = EXIT_OK
    for c in COMPONENTS:
        version = have.get(c.name, 0)
        status = status if version == c.latest else EXIT_NEGATIVE
        if args.json:
            print_json({"component": c.name, "version": version, "needed": c.latest})
        else:
            print(f"{c.name:<12} {version:>3} (needed {c.latest})")
    return status
