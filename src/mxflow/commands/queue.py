"""`mxflow queue list | show | retry | flush | hold | release | delete | drain` on a node's
spool.

The spool is found from `--config` (its `spool_dir`), `--spool DIR`, or `--data-dir DIR`
alone (DIR/spool, the default layout), so an operator can look at a queue without the
node's config file. `list` and `show` read the spool files and work whether or not the
node runs; the other commands leave a request in the spool's control directory that the
owning worker carries out within a second (or at its next start, before it schedules
anything). A held message is never attempted until released, also after a restart.

`drain` is how a node leaves a cluster without losing mail: it asks the running node (the
owner of the data directory's lock) to close its listeners, deliver what it holds and
exit, waits until it has, and lists what stayed in the spool (held or undeliverable
within the timeout: safe on disk, delivered when a node starts on that data dir again).
"""

from __future__ import annotations

import argparse
import datetime
import time
from dataclasses import dataclass
from pathlib import Path

from mxflow.commands import Subparsers, print_json
from mxflow.config import load_config
from mxflow.datadir import running_owner
from mxflow.errors import MxflowError, Unavailable
from mxflow.mail import header_section
from mxflow.queue.spool import Envelope, QueueState, Spool, SpoolError, request_drain

DRAIN_TIMEOUT = 300.0
# What the node may take beyond the drain's timeout: sessions in a transaction and
# deliveries in flight each get their grace period (10 s) as it stops.
STOP_MARGIN = 60.0

LIST_HEADER = (
    f"{'QUEUE-ID':<20}  {'SIZE':>8}  {'RECEIVED':<20}  {'AGE':>11}  {'NEXT':<20}  SENDER  STATE"
)


def register(sub: Subparsers) -> None:
    """Add the `queue` subcommands to the `mxflow` parser."""
    p = sub.add_parser(
        "queue", help="list, show, retry, flush, hold, release or delete mail; drain the node"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="FILE", help="the node's TOML file")
    where.add_argument("--spool", metavar="DIR", help="the spool directory itself")
    p.add_argument(
        "--data-dir", metavar="DIR", help="as `mxflow serve --data-dir` (alone: DIR/spool)"
    )
    qsub = p.add_subparsers(dest="queue_command", metavar="SUBCOMMAND", required=True)
    lst = qsub.add_parser("list", help="every queued or held message, with its recipients")
    lst.add_argument("--json", action="store_true", help="one JSON object per message")
    lst.set_defaults(handler=run_list)
    show = qsub.add_parser("show", help="envelope, state and headers of one message")
    show.add_argument("queue_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object (no headers)")
    show.set_defaults(handler=run_show)
    for name, text, func in (
        ("retry", "try a deferred message again now", run_retry),
        ("hold", "attempt a message no more until released (kept across restarts)", run_hold),
        ("release", "release a held message and try it now", run_release),
        ("delete", "remove a message without delivering it", run_delete),
    ):
        q = qsub.add_parser(name, help=text)
        q.add_argument("queue_id", metavar="ID")
        if name == "hold":
            q.add_argument("--reason", default="", help="why (shown by `queue list`)")
        q.set_defaults(handler=func)
    flush = qsub.add_parser("flush", help="try every deferred message now (held ones stay)")
    flush.set_defaults(handler=run_flush)
    drain = qsub.add_parser(
        "drain", help="the running node stops accepting, delivers what it holds, exits"
    )
    drain.add_argument(
        "--timeout",
        type=float,
        default=DRAIN_TIMEOUT,
        metavar="SECONDS",
        help=f"deliver for at most this long; the rest stays spooled (default {DRAIN_TIMEOUT:.0f})",
    )
    drain.add_argument(
        "--no-wait", action="store_true", help="ask and return; do not wait for the node to exit"
    )
    drain.set_defaults(handler=run_drain)


def _spool(args: argparse.Namespace) -> Spool:
    if args.spool:
        path = Path(args.spool)
    elif args.config:
        path = load_config(args.config, data_dir=args.data_dir).spool_dir
    elif args.data_dir:
        path = Path(args.data_dir) / "spool"
    else:
        raise MxflowError("say where the queue is: --data-dir DIR, --config FILE or --spool DIR")
    if not (path / "queue").is_dir():
        raise MxflowError(f"{path}: no spool here (expected {path / 'queue'})")
    return Spool(path)


def _when(ts: float) -> str:
    if not ts:
        return "now"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass
class _Entry:
    """One message as `list` shows it: envelope, state and the spool file's size."""

    queue_id: str
    env: Envelope
    state: QueueState
    size: int  # bytes of queue/<id>, as `ls -l` shows them

    def record(self) -> dict[str, object]:
        return {
            "queue_id": self.queue_id,
            "size": self.size,
            "message_size": self.env.size,
            "received": _when(self.env.received_at),
            "age": round(time.time() - self.env.received_at),
            "next_attempt": _when(self.state.next_attempt),
            "sender": self.env.mail_from,
            "recipients": {r: rs.status for r, rs in self.state.rcpts.items()},
            "replies": {r: rs.reply for r, rs in self.state.rcpts.items() if rs.reply},
            "pending": self.state.pending(),
            "attempts": self.state.attempts,
            "held": self.state.held,
        }

    def line(self) -> str:
        pending = self.state.pending()
        age = time.time() - self.env.received_at
        held = f"  held: {self.state.held}" if self.state.held is not None else ""
        return (
            f"{self.queue_id:<20}  {self.size:>8}  {_when(self.env.received_at):<20}"
            f"  age {age:>7.0f}s  next {_when(self.state.next_attempt)}  <{self.env.mail_from}>"
            f"  pending {len(pending)}/{len(self.env.rcpt_tos)}: {' '.join(pending)}{held}"
        )


def _entries(spool: Spool) -> list[_Entry]:
    entries: list[_Entry] = []
    for queue_id in spool.ids():
        try:
            env = spool.load_envelope(queue_id)
            state = spool.load_state(queue_id, env)
            size = (spool.queue / queue_id).stat().st_size
        except (OSError, SpoolError):
            continue  # delivered meanwhile, or still being written
        entries.append(_Entry(queue_id, env, state, size))
    return entries


def run_list(args: argparse.Namespace) -> int:
    spool = _spool(args)
    entries = _entries(spool)
    if args.json:
        for entry in entries:
            print_json(entry.record())
        return 0
    print(LIST_HEADER)
    for entry in entries:
        print(entry.line())
    held = sum(e.state.held is not None for e in entries)
    print(f"{len(entries)} message(s) in {spool.path}" + (f", {held} held" if held else ""))
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
    if args.json:
        size = (spool.queue / queue_id).stat().st_size
        print_json(_Entry(queue_id, env, state, size).record())
        return 0
    print(f"Queue-ID: {queue_id}")
    print(f"Message-ID: {env.message_id or '-'}")
    print(f"Received: {_when(env.received_at)} from {env.client_ip} (helo {env.helo or '-'})")
    print(f"Sender: <{env.mail_from}>")
    print(f"Size: {len(raw)}  Attempts: {state.attempts}  Next: {_when(state.next_attempt)}")
    if state.held is not None:
        print(f"Held: {state.held}")
    for rcpt, rs in state.rcpts.items():
        print(f"Recipient: <{rcpt}> {rs.status} {rs.reply}".rstrip())
    print()
    print(header_section(raw).decode("utf-8", "replace").replace("\r\n", "\n"), end="")
    return 0


def _request(args: argparse.Namespace, op: str, detail: str = "") -> int:
    spool = _spool(args)
    queue_id = _existing(spool, args.queue_id)
    spool.request(queue_id, op, detail)
    print(f"{queue_id}: {op} requested")
    return 0


def run_retry(args: argparse.Namespace) -> int:
    spool = _spool(args)
    queue_id = _existing(spool, args.queue_id)
    held = spool.load_state(queue_id).held
    if held is not None:
        raise MxflowError(f"{queue_id} is held ({held}): `mxflow queue release {queue_id}`")
    return _request(args, "retry")


def run_hold(args: argparse.Namespace) -> int:
    return _request(args, "hold", args.reason)


def run_release(args: argparse.Namespace) -> int:
    return _request(args, "release")


def run_delete(args: argparse.Namespace) -> int:
    return _request(args, "delete")


def run_flush(args: argparse.Namespace) -> int:
    spool = _spool(args)
    asked = 0
    for entry in _entries(spool):
        if entry.state.held is None and entry.state.pending():
            spool.request(entry.queue_id, "flush")
            asked += 1
    print(f"flush requested for {asked} message(s)")
    return 0


def _where(args: argparse.Namespace) -> tuple[Path, Path]:
    """(data dir, spool dir) of the node a drain is asked of: it needs the data dir, whose
    lock says whether a node runs there."""
    if args.config:
        config = load_config(args.config, data_dir=args.data_dir)
        return config.data_dir, config.spool_dir
    if args.data_dir and not args.spool:
        return Path(args.data_dir), Path(args.data_dir) / "spool"
    raise MxflowError("drain needs the node's --config FILE or --data-dir DIR (not --spool)")


def run_drain(args: argparse.Namespace) -> int:
    data_dir, spool_dir = _where(args)
    pid = running_owner(data_dir)
    if pid is None:
        queued = len(Spool(spool_dir).ids()) if (spool_dir / "queue").is_dir() else 0
        raise Unavailable(
            f"no mxflow node is running on {data_dir}: nothing to drain ({queued} message(s)"
            " in its spool are delivered when a node starts on it)"
        )
    if args.timeout < 0:
        raise MxflowError(f"--timeout {args.timeout:g}: expected 0 or more seconds")
    request_drain(spool_dir, args.timeout)
    print(f"drain asked of the node on {data_dir} (pid {pid}); timeout {args.timeout:g} s")
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.timeout + STOP_MARGIN
    while running_owner(data_dir) is not None:
        if time.monotonic() > deadline:
            raise Unavailable(f"the node on {data_dir} (pid {pid}) is still running")
        time.sleep(0.2)
    entries = _entries(Spool(spool_dir))
    for entry in entries:
        print(entry.line())
    print(
        f"node stopped; {len(entries)} message(s) left in {spool_dir}"
        + (" (delivered when a node starts on this data dir)" if entries else "")
    )
    return 0 if not entries else 1
