"""`mxflow quarantine list | show | release | delete | expire`.

    mxflow quarantine (--config NODE.toml | --dir DIR) list [--all] [--kind spam|malware] [--json]
    mxflow quarantine ... show ID [--raw]
    mxflow quarantine ... release ID [--via HOST:PORT] [--allow-malware] [--no-learn]
    mxflow quarantine ... delete ID
    mxflow quarantine ... expire

With `--config`, the node's quarantine: its folder, or, when its `[store] url` is
PostgreSQL, the quarantine every node of the deployment shares (any node lists, shows,
releases and deletes what any node held; a release is done once even if two nodes
release the same message at the same moment).

Release re-injects the message to its original recipients WITHOUT filtering it again: with
`--config`, straight into the node's spool (`Spool.inject`, which the running node picks up
within a second, or at its next start); with `--via HOST:PORT`, by SMTP to a listener of a
node that shares this quarantine (the `X-Mxflow-Released` stamp, checked against the stored
copy, makes that node skip its filter). Either way it is recorded in the node's trace
(`quarantine-released`, and `received` under the new queue id) and the node's classifier
learns it as ham.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from mxflow.commands import Subparsers
from mxflow.errors import MxflowError


def register(sub: Subparsers) -> None:
    """Add the `quarantine` subcommands to the `mxflow` parser."""
    p = sub.add_parser("quarantine", help="list, show, release or delete quarantined messages")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="NODE.toml", help="the node whose quarantine to use")
    where.add_argument("--dir", metavar="DIR", help="a quarantine folder")
    qsub = p.add_subparsers(dest="quarantine_command", metavar="SUBCOMMAND", required=True)
    lst = qsub.add_parser("list", help="held messages, newest first")
    lst.add_argument("--all", action="store_true", help="released ones too")
    lst.add_argument("--kind", choices=["spam", "malware"])
    lst.add_argument("--json", action="store_true", help="one JSON object per message")
    lst.set_defaults(handler=run_list)
    show = qsub.add_parser("show", help="a message's verdict, symbols and headers")
    show.add_argument("id")
    show.add_argument("--raw", action="store_true", help="print the whole message")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=run_show)
    release = qsub.add_parser("release", help="deliver to the original recipients")
    release.add_argument("id")
    release.add_argument("--via", metavar="HOST:PORT", help="SMTP listener to re-inject into")
    release.add_argument("--allow-malware", action="store_true", help="release malware too")
    release.add_argument("--no-learn", action="store_true", help="do not train it as ham")
    release.set_defaults(handler=run_release)
    delete = qsub.add_parser("delete", help="delete a message for good")
    delete.add_argument("id")
    delete.set_defaults(handler=run_delete)
    expire = qsub.add_parser("expire", help="delete messages past their retention")
    expire.set_defaults(handler=run_expire)


class _Node:
    """The quarantine (and, with --config, trace and trainer) the command works on."""

    def __init__(self, args: argparse.Namespace) -> None:
        from mxflow.store.quarantine import Quarantine

        self.config: Any = None
        self.trace: Any = None
        self.database: Any = None
        if args.config:
            from mxflow.checks.node import node_quarantine
            from mxflow.config import load_config
            from mxflow.roles.build import open_shared_database
            from mxflow.store.trace import TraceStore

            self.config = load_config(args.config)
            # a PostgreSQL [store] url: the quarantine every node shares, from any node
            self.database = open_shared_database(self.config)
            self.trace = TraceStore(self.database or self.config.trace_db, node=self.config.name)
            self.quarantine = node_quarantine(self.config, self.trace, self.database)
        else:
            if not Path(args.dir).is_dir():  # a typo must not create an empty quarantine
                raise MxflowError(f"--dir {args.dir}: no such quarantine folder")
            self.quarantine = Quarantine(args.dir)

    def close(self) -> None:
        if self.trace is not None:
            self.trace.close()
        self.quarantine.close()
        if self.database is not None:
            self.database.close()


def _with_node(args: argparse.Namespace, work: Any) -> int:
    from mxflow.store.quarantine import QuarantineError

    node = _Node(args)
    try:
        status: int = work(node)
        return status
    except QuarantineError as exc:
        raise MxflowError(str(exc)) from None
    finally:
        node.close()


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def run_list(args: argparse.Namespace) -> int:
    def work(node: _Node) -> int:
        entries = node.quarantine.list(state=None if args.all else "held", kind=args.kind)
        for e in entries:
            if args.json:
                print(json.dumps(e.to_json()))
                continue
            print(
                f"{e.id}  {_when(e.ts)}  {e.kind:7} {e.state:8} SCL {e.scl:>2} "
                f"score {e.score:6.1f}  {e.mail_from or '<>'} -> {', '.join(e.rcpt_tos)}  "
                f"{e.subject[:50]!r}"
            )
        if not entries and not args.json:
            print("quarantine is empty")
        return 0

    return _with_node(args, work)


def run_show(args: argparse.Namespace) -> int:
    def work(node: _Node) -> int:
        entry, raw = node.quarantine.show(args.id)
        if args.json:
            print(json.dumps(entry.to_json()))
            return 0
        print(f"id:         {entry.id} ({entry.kind}, {entry.state})")
        print(
            f"received:   {_when(entry.ts)} from {entry.client_ip}; expires {_when(entry.expires)}"
        )
        print(f"envelope:   {entry.mail_from or '<>'} -> {', '.join(entry.rcpt_tos)}")
        print(f"message-id: {entry.message_id}")
        print(f"subject:    {entry.subject}")
        print(f"verdict:    score {entry.score:.2f}, SCL {entry.scl}: {entry.reason}")
        for name, score, detail in entry.symbols:
            print(f"    {name:24} {score:7.2f}  {detail}")
        if args.raw:
            print()
            print(raw.decode("utf-8", "replace"))
        return 0

    return _with_node(args, work)


async def smtp_reinject(host: str, port: int, mail_from: str, rcpts: list[str], raw: bytes) -> str:
    """Send `raw` to an SMTP listener (mxflow's own client); returns the queue id from its
    250 reply."""
    from mxflow.smtp.client import ConnectionPool, Endpoint, send

    pool = ConnectionPool(
        local_hostname="localhost", source_address=None, connect_timeout=30, command_timeout=60
    )
    try:
        replies = await send(pool, Endpoint(host, port, "opportunistic"), mail_from, rcpts, raw)
    finally:
        pool.close()
    refused = ", ".join(f"{r} ({x.code} {x.text})" for r, x in replies.items() if not x.ok)
    if refused:
        raise MxflowError(f"re-injection to {host}:{port}: recipients refused: {refused}")
    words = next(iter(replies.values())).text.split() if replies else []
    return words[-1] if words else ""


def run_release(args: argparse.Namespace) -> int:
    """Release into the node's own spool (no filter on that path, works while it runs),
    or with `--via HOST:PORT` by SMTP to a listener that shares this quarantine."""

    def work(node: _Node) -> int:
        if args.via is None and node.config is None:
            raise MxflowError("release needs --config NODE.toml (or --via HOST:PORT)")
        learn = None
        if node.config is not None and not args.no_learn:
            from mxflow.checks.node import node_trainer

            trainer = node_trainer(node.config)
            learn = trainer.train
        if args.via:
            from mxflow.dns.resolver import parse_endpoint

            host, port = parse_endpoint(args.via, 25)
            where = f"via {host}:{port}"

            async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
                return await smtp_reinject(host, port, mail_from, rcpts, raw)

            queue_id = asyncio.run(
                node.quarantine.release(
                    args.id, reinject, learn=learn, allow_malware=args.allow_malware
                )
            )
        else:
            queue_id = asyncio.run(_release_to_spool(node, args, learn))
            where = "into the node's spool"
        print(f"released {args.id} {where}: queued as {queue_id}")
        return 0

    return _with_node(args, work)


async def _release_to_spool(node: _Node, args: argparse.Namespace, learn: Any) -> str:
    from mxflow.queue.spool import Spool
    from mxflow.store.quarantine import release_into_spool

    config = node.config
    spool = Spool(config.spool_dir, fsync=config.server.fsync)
    try:
        return await release_into_spool(
            node.quarantine,
            args.id,
            spool,
            node.trace,
            learn=learn,
            allow_malware=args.allow_malware,
            by="mxflow quarantine release",
        )
    finally:
        spool.close()


def run_delete(args: argparse.Namespace) -> int:
    def work(node: _Node) -> int:
        node.quarantine.delete(args.id)
        print(f"deleted {args.id}")
        return 0

    return _with_node(args, work)


def run_expire(args: argparse.Namespace) -> int:
    def work(node: _Node) -> int:
        expired = node.quarantine.expire()
        print(f"expired {len(expired)} message(s)")
        return 0

    return _with_node(args, work)
