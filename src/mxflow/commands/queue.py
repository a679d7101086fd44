"""`mxflow queue list | show ID | retry ID | delete ID` against a node's spool.

Works while the node runs: `list` and `show` read the spool files; `retry` and `delete`
leave a request in the spool's control directory that the owning worker carries out
within a second (it also removes a message when it is mid-delivery, once that ends).
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

from mxflow.commands import Subparsers
from mxflow.config import load_config
from mxflow.errors import MxflowError
from mxflow.mail import header_section
from mxflow.queue.spool import Spool, SpoolError


def register(sub: Subparsers) -> None:
    """Add the `queue` subcommands to the `mxflow` parser."""
    p = sub.add_parser("queue", help="list, show, retry or delete queued messages")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE", help="the node's TOML file")
    where.add_argument("--spool", metavar="DIR", help="the spool directory itself")
    p.add_argument("--data-dir", metavar="DIR", help="as `mxflow serve --data-dir`")
    qsub = p.add_subparsers(dest="queue_command", metavar="SUBCOMMAND", required=True)
    qsub.add_parser("list", help="every queued message").set_defaults(handler=run_list)
    for name, text, func in (
        ("show", "envelope, state and headers of one message", run_show),
        ("retry", "try a deferred message again now", run_retry),
        ("delete", "remove a message without delivering it", run_delete),
    ):
        q = qsub.add_parser(name, help=text)
        q.add_argument("queue_id", metavar="ID")
        q.set_defaults(handler=func)


def _spool(args: argparse.Namespace) -> Spool:
    if args.spool:
        path = Path(args.spool)
    else:
        path = load_config(args.config, data_dir=args.data_dir).spool_dir
    if not (path / "queue").is_dir():
        raise MxflowError(f"{path}: no spool here (expected {path / 'queue'})")
    return Spool(path)


def _when(ts: float) -> str:
    if not ts:
        return "now"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def run_list(args: argparse.Namespace) -> int:
    spool = _spool(args)
    shown = 0
    for queue_id in spool.ids():
        try:
            env = spool.load_envelope(queue_id)
            state = spool.load_state(queue_id, env)
        except (OSError, SpoolError):
            continue  # delivered meanwhile, or still being written
        shown += 1
        size = (spool.queue / queue_id).stat().st_size if spool.exists(queue_id) else 0
        pending = state.pending()
        age = time.time() - env.received_at
        print(
            f"{queue_id}  {size:>8}  {_when(env.received_at)}  age {age:>7.0f}s"
            f"  next {_when(state.next_attempt)}  <{env.mail_from}>"
            f"  pending {len(pending)}/{len(env.rcpt_tos)}: {' '.join(pending)}"
        )
    print(f"{shown} message(s) in {spool.path}")
    return 0


def _existing(spool: Spool, queue_id: str) -> str:
    queue_id = queue_id.upper()
    if not spool.exists(queue_id):
        raise MxflowError(f"no message {queue_id} in {spool.queue} (delivered, or wrong id?)")
    return queue_id


def run_show(args: argparse.Namespace) -> int:
    spool = _spool(args)
    queue_id = _existing(spool, args.queue_id)
    try:
        env, raw = spool.load(queue_id)
    except SpoolError as exc:
        raise MxflowError(str(exc)) from None
    state = spool.load_state(queue_id, env)
    print(f"Queue-ID: {queue_id}")
    print(f"Message-ID: {env.message_id or '-'}")
    print(f"Received: {_when(env.received_at)} from {env.client_ip} (helo {env.helo or '-'})")
    print(f"Sender: <{env.mail_from}>")
    print(f"Size: {len(raw)}  Attempts: {state.attempts}  Next: {_when(state.next_attempt)}")
    for rcpt, rs in state.rcpts.items():
        print(f"Recipient: <{rcpt}> {rs.status} {rs.reply}".rstrip())
    print()
    print(header_section(raw).decode("utf-8", "replace").replace("\r\n", "\n"), end="")
    return 0


def run_retry(args: argparse.Namespace) -> int:
    spool = _spool(args)
    queue_id = _existing(spool, args.queue_id)
    spool.request(queue_id, "retry")
    print(f"{queue_id}: retry requested")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    spool = _spool(args)
    queue_id = _existing(spool, args.queue_id)
    spool.request(queue_id, "delete")
    print(f"{queue_id}: delete requested")
    return 0
