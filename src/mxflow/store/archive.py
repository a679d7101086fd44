"""The archiver's journal: an append-only archive of every message it relays.

Each entry is one file (the message exactly as relayed) plus one row in an SQLite index.
The row's hash covers the previous entry's hash, its sequence number, time, envelope and
the SHA-256 of the file, so the entries form a chain: editing a file or a row, removing
an entry or swapping two breaks it, and `verify()` names the first entry where it breaks.
The hash of the newest entry is also kept in a `HEAD` file beside the index, so cutting
entries off the end is seen too. Retention removes the oldest entries and records the
hash the first kept entry chains to (the anchor), so an expired archive still verifies.

Why files plus SQLite: the files are what an auditor exports (mbox) and what survives a
lost index; the index makes search by sender, recipient and time an indexed read.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mxflow.durable import fsync_dir

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    queue_id TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_ts ON entries (ts);
CREATE INDEX IF NOT EXISTS entries_from ON entries (mail_from);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ArchiveEntry:
    """One journalled message: its place in the chain and its envelope."""

    seq: int
    ts: float
    queue_id: str
    client_ip: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    body_sha256: str
    size: int
    prev: str
    hash: str

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "queue_id": self.queue_id,
            "client_ip": self.client_ip,
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "size": self.size,
            "sha256": self.body_sha256,
            "hash": self.hash,
        }


def entry_hash(
    prev: str, seq: int, ts: float, *, mail_from: str, rcpt_tos: Iterable[str], body_sha256: str
) -> str:
    """The chained hash of one entry (the previous hash is part of what is hashed)."""
    data = json.dumps([prev, seq, repr(ts), mail_from, list(rcpt_tos), body_sha256])
    return hashlib.sha256(data.encode()).hexdigest()


def _row_entry(row: tuple[object, ...]) -> ArchiveEntry:
    seq, ts, qid, ip, sender, rcpts, sha, size, prev, digest = row
    return ArchiveEntry(
        int(str(seq)),
        float(str(ts)),
        str(qid),
        str(ip),
        str(sender),
        tuple(json.loads(str(rcpts))),
        str(sha),
        int(str(size)),
        str(prev),
        str(digest),
    )


class Archive:
    """An archive directory: `messages/<seq>.eml`, `index.sqlite` and `HEAD`."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.messages = root / "messages"
        self.messages.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "index.sqlite", check_same_thread=False)
        self._db.executescript(SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def path_of(self, seq: int) -> Path:
        return self.messages / f"{seq:010d}.eml"

    def _meta(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _head(self) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        if row:
            return int(row[0]), str(row[1])
        return int(self._meta("anchor_seq", "0")), self._meta("anchor", GENESIS)

    def append(
        self,
        raw: bytes,
        *,
        mail_from: str,
        rcpt_tos: Iterable[str],
        queue_id: str = "",
        client_ip: str = "",
        now: float | None = None,
    ) -> ArchiveEntry:
        """Journal one message; on disk (file, directory and index) when it returns."""
        rcpts = tuple(rcpt_tos)
        sha = hashlib.sha256(raw).hexdigest()
        with self._lock:
            last_seq, prev = self._head()
            seq, ts = last_seq + 1, time.time() if now is None else now
            digest = entry_hash(prev, seq, ts, mail_from=mail_from, rcpt_tos=rcpts, body_sha256=sha)
            path = self.path_of(seq)
            with open(path, "wb") as f:
                f.write(raw)
                if self.fsync:
                    os.fsync(f.fileno())
            if self.fsync:
                fsync_dir(self.messages)
            self._db.execute(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, ts, queue_id, client_ip, mail_from, json.dumps(rcpts), sha, len(raw), prev,
                 digest),
            )  # fmt: skip
            self._db.commit()
            self._write_head(seq, digest)
        return ArchiveEntry(seq, ts, queue_id, client_ip, mail_from, rcpts, sha, len(raw), prev,
                            digest)  # fmt: skip

    def _write_head(self, seq: int, digest: str) -> None:
        tmp = self.root / "HEAD.tmp"
        tmp.write_text(f"{seq} {digest}\n")
        os.replace(tmp, self.root / "HEAD")

    def entries(self) -> Iterator[ArchiveEntry]:
        """Every entry, oldest first."""
        rows = self._db.execute("SELECT * FROM entries ORDER BY seq").fetchall()
        return (_row_entry(r) for r in rows)

    def read(self, entry: ArchiveEntry) -> bytes:
        return self.path_of(entry.seq).read_bytes()

    def search(
        self,
        *,
        sender: str | None = None,
        recipient: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[ArchiveEntry]:
        """Entries matching every given filter (addresses compared case-insensitively)."""
        out = []
        for entry in self.entries():
            if sender is not None and entry.mail_from.lower() != sender.lower():
                continue
            if recipient is not None and recipient.lower() not in (
                r.lower() for r in entry.rcpt_tos
            ):
                continue
            if since is not None and entry.ts < since:
                continue
            if until is not None and entry.ts >= until:
                continue
            out.append(entry)
        return out

    def verify(self) -> list[str]:
        """What is wrong with the chain (empty: intact), in archive order."""
        problems: list[str] = []
        expected_seq = int(self._meta("anchor_seq", "0")) + 1
        prev = self._meta("anchor", GENESIS)
        for e in self.entries():
            if e.seq != expected_seq:
                problems.append(f"entry {expected_seq}: missing (next is {e.seq})")
            if e.prev != prev:
                problems.append(f"entry {e.seq}: does not chain to the entry before it")
            digest = entry_hash(
                e.prev, e.seq, e.ts, mail_from=e.mail_from, rcpt_tos=e.rcpt_tos,
                body_sha256=e.body_sha256,
            )  # fmt: skip
            if digest != e.hash:
                problems.append(f"entry {e.seq}: index row altered (hash mismatch)")
            path = self.path_of(e.seq)
            if not path.exists():
                problems.append(f"entry {e.seq}: message file removed")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != e.body_sha256:
                problems.append(f"entry {e.seq}: message file altered")
            prev, expected_seq = e.hash, e.seq + 1
        problems += self._verify_head(expected_seq - 1, prev)
        return problems

    def _verify_head(self, last_seq: int, last_hash: str) -> list[str]:
        head = self.root / "HEAD"
        if not head.exists():
            return [] if last_seq == int(self._meta("anchor_seq", "0")) else ["HEAD missing"]
        seq_text, _, digest = head.read_text().strip().partition(" ")
        if int(seq_text) != last_seq or digest != last_hash:
            return [f"HEAD names entry {seq_text}, the index ends at {last_seq}: entries removed"]
        return []

    def expire(self, retention: float, *, now: float | None = None) -> int:
        """Remove entries older than `retention` seconds, oldest first; how many went."""
        cutoff = (time.time() if now is None else now) - retention
        removed = 0
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, hash FROM entries WHERE ts < ? ORDER BY seq", (cutoff,)
            ).fetchall()
            for seq, digest in rows:
                self._set_meta("anchor_seq", str(seq))
                self._set_meta("anchor", str(digest))
                self._db.execute("DELETE FROM entries WHERE seq = ?", (seq,))
                self.path_of(int(seq)).unlink(missing_ok=True)
                removed += 1
            self._db.commit()
            if removed and not self._db.execute("SELECT 1 FROM entries LIMIT 1").fetchone():
                self._write_head(*self._head())
        return removed


def mbox_from_line(entry: ArchiveEntry) -> bytes:
    """The mboxrd separator line for an entry."""
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(entry.ts))
    return f"From {entry.mail_from or 'MAILER-DAEMON'} {stamp}\n".encode()


def to_mbox(raw: bytes) -> bytes:
    """A message as an mboxrd body: LF line ends, `>`-quoted From lines, blank line after."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    quoted = [b">" + line if line.lstrip(b">").startswith(b"From ") else line for line in lines]
    text = b"\n".join(quoted)
    return text + (b"\n" if text.endswith(b"\n") else b"\n\n")
