"""Local delivery into Maildirs (one per recipient address), for sinks and mailbox hosts.

Each copy is written to `tmp/`, fsync'd, and renamed into `new/` (the Maildir protocol),
so a reader never sees a partial message and a delivered message survives a crash.
Blocking file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from pathlib import Path

from mxflow.smtp.client import Reply

_UNSAFE = re.compile(r"[^A-Za-z0-9._+@=-]")


def mailbox_dir(root: Path, rcpt: str) -> Path:
    """The Maildir of `rcpt` under `root` (the address, made safe for a file name)."""
    return root / _UNSAFE.sub("_", rcpt.lower())


def _deliver_one(root: Path, rcpt: str, queue_id: str, raw: bytes, fsync: bool) -> str:
    box = mailbox_dir(root, rcpt)
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}.{queue_id}.{os.getpid()}.{socket.gethostname()}"
    tmp = box / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(raw)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, box / "new" / name)
    if fsync:
        fd = os.open(box / "new", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return name


async def deliver_maildir(
    root: Path, rcpts: list[str], queue_id: str, raw: bytes, *, fsync: bool = True
) -> dict[str, Reply]:
    """Write one copy per recipient; a Reply per recipient as if from an SMTP peer."""

    def work() -> dict[str, Reply]:
        result: dict[str, Reply] = {}
        for rcpt in rcpts:
            try:
                name = _deliver_one(root, rcpt, queue_id, raw, fsync)
                result[rcpt] = Reply(250, f"2.0.0 delivered to maildir as {name}", "maildir")
            except OSError as exc:
                result[rcpt] = Reply(0, f"4.3.0 maildir write failed: {exc}", "maildir")
        return result

    return await asyncio.to_thread(work)


def read_maildir(root: Path, rcpt: str) -> list[bytes]:
    """Every message in `rcpt`'s Maildir `new/`, oldest first (for tests and the lab)."""
    new = mailbox_dir(root, rcpt) / "new"
    if not new.exists():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.name)]
