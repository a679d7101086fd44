"""`mxflow quarantine list | show | release | delete | expire`.

    mxflow quarantine (--config NODE.toml | --dir DIR) list [--all] [--kind spam|malware] [--json]
    mxflow quarantine ... show ID [--raw]
    mxflow quarantine ... release ID [--via HOST:PORT] [--allow-malware] [--no-learn]
    mxflow quarantine ... delete ID
    mxflow quarantine ... expire

Release re-injects the message to its original recipients by SMTP — to `--via`, or to the
node's first listener — with an `X-Mxflow-Released` header so it is not filtered again, then
records it in the node's trace and trains the node's classifier with it as ham.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
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
        if args.config:
            from mxflow.checks.node import node_quarantine
            from mxflow.config import load_config
            from mxflow.store.trace import TraceStore

            self.config = load_config(args.config)
            self.trace = TraceStore(self.config.trace_db, node=self.config.name)
            self.quarantine = node_quarantine(self.config, self.trace)
        else:
            self.quarantine = Quarantine(args.dir)

    def close(self) -> None:
        if self.trace is not None:
            self.trace.close()


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


def _endpoint(node: _Node, via: str | None) -> tuple[str, int]:
    from mxflow.dns.resolver import parse_endpoint

    if via:
        return parse_endpoint(via, 25)
    if node.config is None or not node.config.listeners:
        raise MxflowError("release needs --via HOST:PORT (or --config with a listener)")
    listener = node.config.listeners[0]
    return str(listener.address), int(listener.port)


async def smtp_reinject(host: str, port: int, mail_from: str, rcpts: list[str], raw: bytes) -> str:
    """Send `raw` to an SMTP listener; returns the queue id from its 250 reply."""
    import aiosmtplib

    try:
        errors, reply = await aiosmtplib.send(
            raw, sender=mail_from, recipients=rcpts, hostname=host, port=port, timeout=30
        )
    except aiosmtplib.SMTPException as exc:
        raise MxflowError(f"re-injection to {host}:{port} failed: {exc}") from None
    if errors:
        refused = ", ".join(f"{rcpt} ({err.code} {err.message})" for rcpt, err in errors.items())
        raise MxflowError(f"re-injection to {host}:{port}: recipients refused: {refused}")
    words = reply.split()
    return words[-1] if words else ""


def run_release(args: argparse.Namespace) -> int:
    def work(node: _Node) -> int:
        host, port = _endpoint(node, args.via)
        learn = None
        if node.config is not None and not args.no_learn:
            from mxflow.checks.node import node_trainer

            trainer = node_trainer(node.config)
            learn = trainer.train

        async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
            return await smtp_reinject(host, port, mail_from, rcpts, raw)

        queue_id = asyncio.run(
            node.quarantine.release(
                args.id, reinject, learn=learn, allow_malware=args.allow_malware
            )
        )
        print(f"released {args.id} via {host}:{port}: queued as {queue_id}")
        return 0

    return _with_node(args, work)


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
