"""`mxflow trace search | show`: the message trace of a node (or of every node sharing
its `[store] url`), one row per recipient, and one message's hops.

    mxflow trace (--config NODE.toml [--data-dir DIR] | --data-dir DIR) search
        [--sender S] [--recipient R] [--since T] [--until T] [--status S]
        [--message-id ID] [--limit N] [--json]
    mxflow trace ... show ID [--json]

The store is found as `mxflow serve` finds it: the config's `[store] url` (a PostgreSQL
database holds every node's events, so any node's config finds them all) or `trace_db`,
relative to `--data-dir` when given; with only `--data-dir`, its `trace.sqlite`. Times are
ISO 8601 in UTC ("2026-12-04T13:00") or relative ("2h" ago). `--json` prints JSON Lines:
one object per recipient row (`show`: one per row, then one per hop event).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mxflow.commands import Subparsers
from mxflow.errors import MxflowError

if TYPE_CHECKING:
    from mxflow.store.sql import Database


def register(sub: Subparsers) -> None:
    """Add the `trace` subcommands to the `mxflow` parser."""
    p = sub.add_parser("trace", help="message trace: search, and one message across hops")
    p.add_argument("--config", metavar="NODE.toml", help="the node whose trace to read")
    p.add_argument("--data-dir", metavar="DIR", help="as `mxflow serve --data-dir`")
    tsub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", required=True)
    s = tsub.add_parser("search", help="one row per recipient, newest first")
    s.add_argument("--sender", default="", help="part of the envelope sender")
    s.add_argument("--recipient", default="", help="part of a recipient address")
    s.add_argument("--since", help='from this time (ISO 8601 UTC, or "2h" ago)')
    s.add_argument("--until", help="up to this time")
    s.add_argument(
        "--status",
        default="",
        help="Delivered, Failed, Pending, Quarantined, FilteredAsSpam or Expanded",
    )
    s.add_argument("--message-id", default="", help="with or without <angle brackets>")
    s.add_argument("--limit", type=int, default=500)
    s.add_argument("--json", action="store_true", help="JSON Lines, one object per row")
    s.set_defaults(handler=run_search)
    show = tsub.add_parser("show", help="one message (Message-ID or queue id), hop by hop")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=run_show)


@contextlib.contextmanager
def trace_source(args: argparse.Namespace) -> Iterator[Path | Database]:
    """The trace named by --config and/or --data-dir: the shared PostgreSQL database of
    the config's `[store] url` (every node's events), else the SQLite file (it must
    exist)."""
    if args.config:
        from mxflow.config import load_config
        from mxflow.roles.build import open_shared_database

        config = load_config(args.config, data_dir=args.data_dir)
        database = open_shared_database(config)
        if database is not None:
            try:
                yield database
            finally:
                database.close()
            return
        path = config.trace_db
    elif args.data_dir:
        path = Path(args.data_dir) / "trace.sqlite"
    else:
        raise MxflowError("trace needs --config NODE.toml and/or --data-dir DIR")
    if not path.is_file():  # a typo must not create an empty trace
        raise MxflowError(f"{path}: no trace store here (has the node run?)")
    yield path


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def run_search(args: argparse.Namespace) -> int:
    from mxflow.store.trace import STATUSES
    from mxflow.store.trace_query import TraceQuery, parse_when, search

    status = args.status
    if status:
        match = [s for s in STATUSES if s.lower() == status.lower()]
        if not match:
            raise MxflowError(f"--status {status}: expected one of {', '.join(STATUSES)}")
        status = match[0]
    try:
        since = parse_when(args.since) if args.since else None
        until = parse_when(args.until) if args.until else None
    except ValueError as exc:
        raise MxflowError(str(exc)) from None
    query = TraceQuery(
        sender=args.sender,
        recipient=args.recipient,
        since=since,
        until=until,
        status=status,
        message_id=args.message_id,
        limit=max(1, args.limit),
    )
    with trace_source(args) as source:
        rows = search(source, query)
    for row in rows:
        if args.json:
            print(json.dumps(row.to_json()))
        else:
            print(
                f"{_when(row.received)}  {row.status:14} {row.sender or '<>'} -> {row.recipient}"
                f"  {row.from_ip or '-'} -> {row.to_ip or '-'}  {row.size:>7}  "
                f"{row.subject[:40]!r}  {row.id}"
            )
    if not rows and not args.json:
        print("no messages match")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from mxflow.store.trace_query import show

    with trace_source(args) as source:
        trace = show(source, args.id)
    if trace is None:
        raise MxflowError(f"no message {args.id!r} in the trace")
    if args.json:
        for row in trace.rows:
            print(json.dumps({"row": row.to_json()}))
        for hop in trace.hops:
            for e in hop.events:
                print(json.dumps({"hop": e.to_json()}))
        return 0
    print(f"message {trace.message_id or '(no Message-ID)'}")
    for row in trace.rows:
        print(
            f"  {row.recipient:32} {row.status:14} from {row.from_ip or '-'} to "
            f"{row.to_ip or '-'}  size {row.size}  {row.subject!r}"
        )
    for hop in trace.hops:
        print(f"\n{hop.node or '(node)'}  queue id {hop.queue_id}")
        for e in hop.events:
            line = f"  {_when(e.ts)}  {e.event:20} {e.status:14} {e.recipient}"
            print(line.rstrip())
            if e.scl is not None or e.symbols:
                syms = ", ".join(f"{n} {s:+.1f}" for n, s, _ in e.symbols)
                print(f"      SCL {e.scl}  score {e.score}  {syms}")
            if e.auth_results:
                print(f"      auth: {e.auth_results}")
            if e.reply or e.detail:
                print(f"      {e.reply or e.detail}")
    return 0
