"""Local delivery into Maildirs (one per recipient address), for sinks and mailbox hosts.

Each copy is written to `tmp/`, fsync'd, and renamed into `new/` (the Maildir protocol),
so a reader never sees a partial message and a delivered message survives a crash.
Blocking file work runs in a thread.

Mailboxes use the Maildir++ layout: the Inbox is the Maildir itself and a folder such as
Junk is the sub-Maildir `.Junk` (with its own `tmp/`, `new/`, `cur/` and the empty
`maildirfolder` marker), which IMAP servers such as Dovecot read as is. The caller picks
the folder (`folder_for_scl`: SCL 5-9 -> Junk, as the reference host files spam, unless
its policy quarantines the message instead). Given `mail_from`, each copy gets the
final-delivery headers `Return-Path` (RFC 5321 §4.4) and `Delivered-To`; without it (the
sink and the existing routes) the message is stored exactly as received.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from pathlib import Path

from mxflow.durable import fsync_dir
from mxflow.smtp.client import Reply

_UNSAFE = re.compile(r"[^A-Za-z0-9._+@=-]")
INBOX = "INBOX"
JUNK = "Junk"
_FOLDER = re.compile(r"^[A-Za-z0-9_+=-][A-Za-z0-9_+=.-]{0,63}$")


def mailbox_dir(root: Path, rcpt: str) -> Path:
    """The Maildir of `rcpt` under `root` (the address, made safe for a file name)."""
    return root / _UNSAFE.sub("_", rcpt.lower())


def folder_dir(box: Path, folder: str = INBOX) -> Path:
    """The Maildir++ directory of `folder` in the mailbox `box` (Inbox: `box` itself)."""
    if folder.upper() == INBOX:
        return box
    if not _FOLDER.match(folder) or ".." in folder:
        raise ValueError(f"bad folder name {folder!r}")
    return box / f".{folder}"


def folder_for_scl(scl: int) -> str:
    """Where the reference host files a delivered message: SCL 5-9 in Junk, else Inbox."""
    return JUNK if 5 <= scl <= 9 else INBOX


def delivery_headers(rcpt: str, mail_from: str) -> bytes:
    """`Return-Path` and `Delivered-To` for one delivered copy (null sender: `<>`)."""
    clean = "".join(c for c in mail_from if c.isprintable() and c not in "<>")
    return f"Return-Path: <{clean}>\r\nDelivered-To: {rcpt}\r\n".encode("utf-8", "replace")


def _ensure(box: Path, target: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    if target != box:
        for sub in ("tmp", "new", "cur"):
            (target / sub).mkdir(parents=True, exist_ok=True)
        (target / "maildirfolder").touch(exist_ok=True)


def deliver_one(
    root: Path,
    rcpt: str,
    queue_id: str,
    raw: bytes,
    fsync: bool = True,
    *,
    folder: str = INBOX,
    mail_from: str | None = None,
) -> str:
    """Store one copy for `rcpt` in `folder`; returns the file name (blocking)."""
    box = mailbox_dir(root, rcpt)
    target = folder_dir(box, folder)
    _ensure(box, target)
    if mail_from is not None:
        raw = delivery_headers(rcpt, mail_from) + raw
    name = f"{time.time_ns()}.{queue_id}.{os.getpid()}.{socket.gethostname()}"
    tmp = target / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(raw)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, target / "new" / name)
    if fsync:
        fsync_dir(target / "new")
    return name


async def deliver_maildir(
    root: Path,
    rcpts: list[str],
    queue_id: str,
    raw: bytes,
    *,
    fsync: bool = True,
    folder: str = INBOX,
    mail_from: str | None = None,
) -> dict[str, Reply]:
    """Write one copy per recipient; a Reply per recipient as if from an SMTP peer."""

    def work() -> dict[str, Reply]:
        result: dict[str, Reply] = {}
        where = "" if folder.upper() == INBOX else f" folder {folder}"
        for rcpt in rcpts:
            try:
                name = deliver_one(
                    root, rcpt, queue_id, raw, fsync, folder=folder, mail_from=mail_from
                )
                result[rcpt] = Reply(250, f"2.0.0 delivered to maildir{where} as {name}", "maildir")
            except OSError as exc:
                result[rcpt] = Reply(0, f"4.3.0 maildir write failed: {exc}", "maildir")
        return result

    return await asyncio.to_thread(work)


def read_maildir(root: Path, rcpt: str, folder: str = INBOX) -> list[bytes]:
    """Every message in `rcpt`'s `folder` `new/`, oldest first (for tests and the lab)."""
    new = folder_dir(mailbox_dir(root, rcpt), folder) / "new"
    if not new.exists():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.name)]
