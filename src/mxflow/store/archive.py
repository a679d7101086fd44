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

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mxflow.durable import fsync_dir
from mxflow.store.schema import Component, Migration, migrate
from mxflow.store.sql import Cursor, Database, Row, SqliteDatabase

GENESIS = "0" * 64

_ENTRIES = """
CREATE TABLE {ine}{prefix}entries (
    seq {int} PRIMARY KEY,
    ts {real} NOT NULL,
    queue_id TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    size {int} NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX {ine}{prefix}entries_ts ON {prefix}entries (ts);
CREATE INDEX {ine}{prefix}entries_from ON {prefix}entries (mail_from);
CREATE TABLE {ine}{prefix}meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# which archiver holds the message file (files stay on the archiver's disk); not hashed,
# so the chains written before it verify as they did
_NODE = "ALTER TABLE archive_entries ADD COLUMN node TEXT NOT NULL DEFAULT '';\n"
# an index.sqlite from before the store seam has the tables without the prefix
_SQLITE_V1 = (
    _ENTRIES.format(ine="IF NOT EXISTS ", prefix="", int="INTEGER", real="REAL")
    + "ALTER TABLE entries RENAME TO archive_entries;\n"
    + "ALTER TABLE meta RENAME TO archive_meta;\n"
    + _NODE
)
ARCHIVE = Component(
    "archive",
    (
        Migration(
            1,
            "the journal's index: entries (hash chain) and meta (anchor)",
            _SQLITE_V1,
            _ENTRIES.format(ine="", prefix="archive_", int="BIGINT", real="DOUBLE PRECISION")
            + _NODE,
        ),
    ),
)
_COLUMNS = "seq, ts, queue_id, client_ip, mail_from, rcpt_tos, body_sha256, size, prev, hash"


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
    node: str = ""  # the archiver that holds the message file ("": this one)

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


def _row_entry(row: Row) -> ArchiveEntry:
    seq, ts, qid, ip, sender, rcpts, sha, size, prev, digest, node = row
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
        str(node),
    )


class Archive:
    """An archive directory (`messages/<seq>.eml`, `HEAD`) and its index: `index.sqlite`
    beside them, or the shared database's tables.

    With a shared database several archivers append to one chain: each append takes a
    lock on the database (an advisory lock), reads the head, writes its file under the
    next number and commits the row, so the chain has no gap or fork whatever the order
    of the nodes. Each entry names its node (`node`), whose disk holds the file; `verify`
    checks the whole chain and the files this node can see.
    """

    def __init__(
        self, root: Path, *, fsync: bool = True, database: Database | None = None, node: str = ""
    ) -> None:
        self.root = root
        self.messages = root / "messages"
        self.messages.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.node = node if database is not None else ""
        self._lock = threading.Lock()
        self._own = database is None
        self.db = database if database is not None else SqliteDatabase(root / "index.sqlite")
        if database is None:
            migrate(self.db, [ARCHIVE])

    def close(self) -> None:
        if self._own:
            self.db.close()

    def path_of(self, seq: int) -> Path:
        return self.messages / f"{seq:010d}.eml"

    def _meta(self, key: str, default: str, tx: Cursor | None = None) -> str:
        sql, args = "SELECT value FROM archive_meta WHERE key = ?", (key,)
        rows = tx.query(sql, args) if tx is not None else self.db.query(sql, args)
        return str(rows[0][0]) if rows else default

    def _set_meta(self, tx: Cursor, key: str, value: str) -> None:
        tx.execute(
            "INSERT INTO archive_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _head(self, tx: Cursor) -> tuple[int, str]:
        rows = tx.query("SELECT seq, hash FROM archive_entries ORDER BY seq DESC LIMIT 1")
        if rows:
            return int(rows[0][0]), str(rows[0][1])
        return int(self._meta("anchor_seq", "0", tx)), self._meta("anchor", GENESIS, tx)

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
        """Journal one message; on disk (file, directory and index) when it returns.

        The file is written and synced first under a temporary name (no lock held), then
        named for its number while the chain is locked, then the row is committed."""
        rcpts = tuple(rcpt_tos)
        sha = hashlib.sha256(raw).hexdigest()
        tmp = self.messages / f".{uuid.uuid4().hex}.tmp"
        with self._lock:
            try:
                self._write_file(tmp, raw)
                with self.db.transaction() as tx:
                    self.db.lock(tx, "mxflow-archive")
                    last_seq, prev = self._head(tx)
                    seq, ts = last_seq + 1, time.time() if now is None else now
                    digest = entry_hash(
                        prev, seq, ts, mail_from=mail_from, rcpt_tos=rcpts, body_sha256=sha
                    )
                    os.replace(tmp, self.path_of(seq))
                    if self.fsync:
                        fsync_dir(self.messages)
                    tx.execute(
                        f"INSERT INTO archive_entries ({_COLUMNS}, node)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (seq, ts, queue_id, client_ip, mail_from, json.dumps(rcpts), sha,
                         len(raw), prev, digest, self.node),
                    )  # fmt: skip
            finally:
                tmp.unlink(missing_ok=True)
            self._write_head(seq, digest)
        return ArchiveEntry(seq, ts, queue_id, client_ip, mail_from, rcpts, sha, len(raw), prev,
                            digest, self.node)  # fmt: skip

    def _write_file(self, path: Path, raw: bytes) -> None:
        with open(path, "wb") as f:
            f.write(raw)
            if self.fsync:
                os.fsync(f.fileno())

    def _write_head(self, seq: int, digest: str) -> None:
        """`HEAD`: the newest entry this node wrote (kept outside the index, so cutting
        entries off the end of the index is seen)."""
        tmp = self.root / "HEAD.tmp"
        tmp.write_text(f"{seq} {digest}\n")
        os.replace(tmp, self.root / "HEAD")

    def entries(self) -> Iterator[ArchiveEntry]:
        """Every entry, oldest first."""
        rows = self.db.query(f"SELECT {_COLUMNS}, node FROM archive_entries ORDER BY seq")
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

    def elsewhere(self, entry: ArchiveEntry) -> bool:
        """Whether the entry's file is on another archiver's disk (not checked here)."""
        return entry.node not in ("", self.node) and not self.path_of(entry.seq).exists()

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
            problems += self._verify_file(e)
            prev, expected_seq = e.hash, e.seq + 1
        problems += self._verify_head(expected_seq - 1, prev)
        return problems

    def _verify_file(self, e: ArchiveEntry) -> list[str]:
        path = self.path_of(e.seq)
        if self.elsewhere(e):
            return []
        if not path.exists():
            return [f"entry {e.seq}: message file removed"]
        if hashlib.sha256(path.read_bytes()).hexdigest() != e.body_sha256:
            return [f"entry {e.seq}: message file altered"]
        return []

    def _verify_head(self, last_seq: int, last_hash: str) -> list[str]:
        head = self.root / "HEAD"
        anchor = int(self._meta("anchor_seq", "0"))
        if not head.exists():
            return [] if last_seq == anchor or self.node else ["HEAD missing"]
        seq_text, _, digest = head.read_text().strip().partition(" ")
        if self.node:  # shared: HEAD is this node's newest entry, the others may follow it
            seq = int(seq_text)
            found = self.db.query("SELECT hash FROM archive_entries WHERE seq = ?", (seq,))
            if seq <= anchor or (found and found[0][0] == digest):
                return []
        elif int(seq_text) == last_seq and digest == last_hash:
            return []
        return [f"HEAD names entry {seq_text}, the index ends at {last_seq}: entries removed"]

    def expire(self, retention: float, *, now: float | None = None) -> int:
        """Remove entries older than `retention` seconds, oldest first (only the front of
        the chain: an old entry after a newer one waits for it); how many went."""
        cutoff = (time.time() if now is None else now) - retention
        with self._lock:
            with self.db.transaction() as tx:
                self.db.lock(tx, "mxflow-archive")
                removed = self._expire_front(tx, cutoff)
                empty = not tx.query("SELECT 1 FROM archive_entries LIMIT 1")
                head = self._head(tx)
            for seq in removed:
                self.path_of(seq).unlink(missing_ok=True)
            if removed and empty and not self.node:
                self._write_head(*head)
            self._sweep_expired()
        return len(removed)

    def _expire_front(self, tx: Cursor, cutoff: float) -> list[int]:
        rows = tx.query(
            "SELECT seq, hash, ts FROM archive_entries WHERE ts < ? ORDER BY seq", (cutoff,)
        )
        removed: list[int] = []
        expected = int(self._meta("anchor_seq", "0", tx)) + 1
        for seq, digest, _ in rows:
            if int(seq) != expected:
                break
            self._set_meta(tx, "anchor_seq", str(seq))
            self._set_meta(tx, "anchor", str(digest))
            removed.append(int(seq))
            expected += 1
        if removed:
            tx.execute("DELETE FROM archive_entries WHERE seq <= ?", (removed[-1],))
        return removed

    def _sweep_expired(self) -> None:
        """Shared: delete this disk's files of entries another archiver expired (each
        number once: `EXPIRED` keeps how far this disk is swept)."""
        if not self.node:
            return
        marker = self.root / "EXPIRED"
        with contextlib.suppress(OSError, ValueError):
            done = int(marker.read_text().strip() or 0) if marker.exists() else 0
            anchor = int(self._meta("anchor_seq", "0"))
            for seq in range(done + 1, anchor + 1):
                self.path_of(seq).unlink(missing_ok=True)
            if anchor > done:
                marker.write_text(f"{anchor}\n")


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
