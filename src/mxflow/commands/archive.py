"""`mxflow archive verify | search | export`: read the archiver's journal.

`verify` walks the hash chain and names every entry that was edited, removed or moved
(exit 1 when one was); `search` lists entries by sender, recipient and time (JSON Lines
with `--json`, one object per entry); `export --mbox` writes the messages as an mboxrd
file for an auditor's mail client.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from mxflow.commands import Subparsers
from mxflow.config import load_config
from mxflow.errors import MxflowError
from mxflow.store.archive import ARCHIVE, Archive, mbox_from_line, to_mbox
from mxflow.store.schema import check
from mxflow.store.sql import open_database


def register(sub: Subparsers) -> None:
    """Add the `archive` subcommands to the `mxflow` parser."""
    p = sub.add_parser("archive", help="verify, search or export the archiver's journal")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE", help="the archiver's TOML file")
    where.add_argument("--archive", metavar="DIR", help="the archive directory itself")
    p.add_argument("--data-dir", metavar="DIR", help="as `mxflow serve --data-dir`")
    asub = p.add_subparsers(dest="archive_command", metavar="SUBCOMMAND", required=True)
    asub.add_parser("verify", help="check the hash chain").set_defaults(handler=run_verify)
    s = asub.add_parser("search", help="entries by sender, recipient and time")
    _filters(s)
    s.add_argument("--json", action="store_true", help="JSON Lines, one entry per line")
    s.set_defaults(handler=run_search)
    e = asub.add_parser("export", help="write matching messages to a file")
    _filters(e)
    e.add_argument("--mbox", metavar="FILE", required=True, help="the mbox file to write")
    e.set_defaults(handler=run_export)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sender", help="MAIL FROM address")
    p.add_argument("--recipient", help="one of the RCPT TO addresses")
    p.add_argument("--since", type=_when, help="ISO date/time (UTC), inclusive")
    p.add_argument("--until", type=_when, help="ISO date/time (UTC), exclusive")


def _when(text: str) -> float:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date/time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _archive(args: argparse.Namespace) -> Archive:
    """The archive of `--archive DIR`, or of a node's config: with a shared database, the
    index there (one chain for every archiver) and this node's message files."""
    if args.archive:
        path = Path(args.archive)
    else:
        config = load_config(args.config, data_dir=args.data_dir)
        path = config.archive.dir if config.archive else config.data_dir / "archive"
        if config.shared_database is not None:
            database = open_database(config.shared_database)
            check(database, [ARCHIVE], where=f" at {getattr(database, 'display', database.url)}")
            return Archive(path, database=database, node=config.name)
    if not (path / "index.sqlite").exists():
        raise MxflowError(f"{path}: no archive here (expected {path / 'index.sqlite'})")
    return Archive(path)


def run_verify(args: argparse.Namespace) -> int:
    archive = _archive(args)
    problems = archive.verify()
    entries = list(archive.entries())
    count = len(entries)
    elsewhere = sum(1 for e in entries if archive.elsewhere(e))
    for problem in problems:
        print(problem)
    if problems:
        print(f"archive {archive.root}: {len(problems)} problem(s) in {count} entries")
        return 1
    note = ""
    if elsewhere:  # a shared chain: those files are on the disks of the other archivers
        note = f"; {elsewhere} message file(s) on other archivers (verify there too)"
    print(f"archive {archive.root}: {count} entries, chain intact{note}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    archive = _archive(args)
    for entry in archive.search(
        sender=args.sender, recipient=args.recipient, since=args.since, until=args.until
    ):
        if args.json:
            print(json.dumps(entry.to_json()))
        else:
            when = datetime.datetime.fromtimestamp(entry.ts, datetime.UTC).isoformat(
                timespec="seconds"
            )
            print(f"{entry.seq:>6} {when} <{entry.mail_from}> -> {', '.join(entry.rcpt_tos)}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    archive = _archive(args)
    entries = archive.search(
        sender=args.sender, recipient=args.recipient, since=args.since, until=args.until
    )
    with open(args.mbox, "wb") as out:
        for entry in entries:
            out.write(mbox_from_line(entry) + to_mbox(archive.read(entry)))
    print(f"{len(entries)} message(s) written to {args.mbox}", file=sys.stderr)
    return 0
