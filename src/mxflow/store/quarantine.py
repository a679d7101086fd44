"""The quarantine: messages held with their verdict, until released, deleted or expired.

Each message is one file (`messages/<id>.eml`, written and fsynced, directory too) and one
row in a SQLite index (`quarantine.sqlite`) with the envelope, the verdict, its symbols and
the expiry (spam 15 days, malware 30 by default, as the reference host keeps them).
`quarantine()` returns only when both are durable, because the SMTP client gets its 250 then.

Release re-injects the message to its original recipients through a callable the caller
supplies (the engine's spool, or SMTP to the node's listener), marked so it is not filtered
again; it is then recorded through the `on_event` callback (the message trace) and, when a
trainer is given, learnt as ham — a released message was a false positive. SQLite work runs
in a worker thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxflow.durable import fsync_dir
from mxflow.errors import MxflowError
from mxflow.mail import MessageContext, Verdict, message_id_of, needs_admin_release
from mxflow.mime import decode_header_value

Reinject = Callable[[str, list[str], bytes], Awaitable[str]]
EventHook = Callable[["QuarantineEntry", str, str], None]  # (entry, event, detail)
Learn = Callable[[bytes, bool], object]  # (raw, is_spam)
HELD = "held"
RELEASED = "released"
DELETED = "deleted"
DAY = 86_400.0
RELEASED_HEADER = "X-Mxflow-Released"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    expires REAL NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    subject TEXT NOT NULL,
    score REAL NOT NULL,
    scl INTEGER NOT NULL,
    reason TEXT NOT NULL,
    symbols TEXT NOT NULL,
    size INTEGER NOT NULL,
    released_ts REAL,
    released_queue_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS quarantine_state ON quarantine(state, ts);
"""
_COLUMNS = (
    "id, ts, expires, kind, state, queue_id, message_id, client_ip, mail_from, rcpt_tos, "
    "subject, score, scl, reason, symbols, size, released_ts, released_queue_id"
)


class QuarantineError(MxflowError):
    """No such message, or it cannot be released in its state."""


@dataclass(frozen=True)
class QuarantineEntry:
    id: str
    ts: float
    expires: float
    kind: str  # "spam" or "malware"
    state: str
    queue_id: str
    message_id: str
    client_ip: str
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    score: float
    scl: int
    reason: str
    symbols: list[tuple[str, float, str]]
    size: int
    released_ts: float | None = None
    released_queue_id: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "time": self.ts,
            "expires": self.expires,
            "kind": self.kind,
            "state": self.state,
            "queue_id": self.queue_id,
            "message_id": self.message_id,
            "client_ip": self.client_ip,
            "mail_from": self.mail_from,
            "rcpt_tos": self.rcpt_tos,
            "subject": self.subject,
            "score": self.score,
            "scl": self.scl,
            "reason": self.reason,
            "symbols": [{"name": n, "score": s, "detail": d} for n, s, d in self.symbols],
            "size": self.size,
            "released_queue_id": self.released_queue_id,
        }


def _entry(row: tuple[object, ...]) -> QuarantineEntry:
    (
        qid, ts, expires, kind, state, queue_id, message_id, client_ip, mail_from, rcpt_tos,
        subject, score, scl, reason, symbols, size, released_ts, released_queue_id,
    ) = row  # fmt: skip
    return QuarantineEntry(
        id=str(qid),
        ts=float(ts),  # type: ignore[arg-type]
        expires=float(expires),  # type: ignore[arg-type]
        kind=str(kind),
        state=str(state),
        queue_id=str(queue_id),
        message_id=str(message_id),
        client_ip=str(client_ip),
        mail_from=str(mail_from),
        rcpt_tos=list(json.loads(str(rcpt_tos))),
        subject=str(subject),
        score=float(score),  # type: ignore[arg-type]
        scl=int(scl),  # type: ignore[call-overload]
        reason=str(reason),
        symbols=[(str(n), float(s), str(d)) for n, s, d in json.loads(str(symbols))],
        size=int(size),  # type: ignore[call-overload]
        released_ts=None if released_ts is None else float(released_ts),  # type: ignore[arg-type]
        released_queue_id=str(released_queue_id),
    )


def _header(raw: bytes, name: str) -> str:
    """A header's value from the raw head, unfolded; '' when absent (cheap, no parser)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    wanted = name.lower().encode() + b":"
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(wanted):
            value = line[len(wanted) :]
            for cont in lines[i + 1 :]:
                if cont[:1] in (b" ", b"\t"):
                    value += b" " + cont.strip()
                else:
                    break
            return decode_header_value(value.decode("utf-8", "replace").strip()[:2000])[:500]
    return ""


class Quarantine:
    """Quarantined messages under `directory`; the `QuarantineSink` the server calls."""

    def __init__(
        self,
        directory: str | Path,
        *,
        retention_spam_days: int = 15,
        retention_malware_days: int = 30,
        on_event: EventHook | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.messages = self.directory / "messages"
        self.db_path = self.directory / "quarantine.sqlite"
        self.retention = {
            "spam": retention_spam_days * DAY,
            "malware": retention_malware_days * DAY,
        }
        self.on_event = on_event
        try:
            self.messages.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(_SCHEMA)
            db.close()
        except (OSError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise MxflowError(f"{self.directory}: cannot open the quarantine ({reason})") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def path_of(self, qid: str) -> Path:
        if not qid.isalnum():
            raise QuarantineError(f"no quarantined message {qid!r}")
        return self.messages / f"{qid}.eml"

    # ------------------------------------------------------------------ storing

    async def quarantine(self, ctx: MessageContext, verdict: Verdict) -> str:
        """Store the message with its verdict, durably; returns the quarantine id."""
        return await asyncio.to_thread(self.store, ctx, verdict)

    def store(self, ctx: MessageContext, verdict: Verdict, *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        kind = "malware" if any(needs_admin_release(s) for s in verdict.symbols) else "spam"
        qid = f"{int(now * 1000):x}{secrets.token_hex(4)}"
        path = self.path_of(qid)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(ctx.raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self.messages)
        symbols = [(s.name, s.score, s.detail) for s in verdict.symbols]
        row = (
            qid,
            now,
            now + self.retention[kind],
            kind,
            HELD,
            ctx.queue_id,
            _header(ctx.raw, "message-id"),
            ctx.client_ip,
            ctx.mail_from,
            json.dumps(list(ctx.rcpt_tos)),
            _header(ctx.raw, "subject"),
            verdict.score,
            verdict.scl,
            verdict.reason,
            json.dumps(symbols),
            len(ctx.raw),
            None,
            "",
        )
        with self._connect() as db:
            db.execute(f"INSERT INTO quarantine ({_COLUMNS}) VALUES ({','.join('?' * 18)})", row)
        db.close()
        entry = _entry(row)
        self._event(entry, "quarantined", f"{kind}: {verdict.reason}")
        return qid

    def _event(self, entry: QuarantineEntry, event: str, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(entry, event, detail)

    # ------------------------------------------------------------------ reading

    def list(self, *, state: str | None = HELD, kind: str | None = None) -> list[QuarantineEntry]:
        """Entries, newest first; `state=None` lists every state."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = f"SELECT {_COLUMNS} FROM quarantine"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY ts DESC, id DESC", args).fetchall()
        db.close()
        return [_entry(r) for r in rows]

    def get(self, qid: str) -> QuarantineEntry:
        with self._connect() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM quarantine WHERE id = ?", (qid,)).fetchone()
        db.close()
        if row is None:
            raise QuarantineError(f"no quarantined message {qid!r}")
        return _entry(row)

    def show(self, qid: str) -> tuple[QuarantineEntry, bytes]:
        """The entry and the message as stored."""
        entry = self.get(qid)
        try:
            raw = self.path_of(qid).read_bytes()
        except FileNotFoundError:
            raise QuarantineError(f"message {qid} is {entry.state}; its file is gone") from None
        return entry, raw

    def verify_release(self, raw: bytes) -> str | None:
        """The quarantine id when `raw` is a message this quarantine is releasing.

        The release stamp is trusted only if the id is held or was released here and the
        bytes after the stamp are exactly the stored message, so a sender cannot forge it.
        """
        marker = f"\r\n{RELEASED_HEADER}: ".encode()
        at = (b"\r\n" + raw).find(marker)
        if at < 0:
            return None
        start = at + len(marker) - 2  # offset in raw of the id
        end = raw.find(b"\r\n", start)
        if end < 0:
            return None
        qid = raw[start:end].decode("ascii", "replace").strip()
        try:
            entry, stored = self.show(qid)
        except QuarantineError:
            return None
        if entry.state not in (HELD, RELEASED) or raw[end + 2 :] != stored:
            return None
        return qid

    # ------------------------------------------------------------------ acting

    async def release(
        self,
        qid: str,
        reinject: Reinject,
        *,
        learn: Learn | None = None,
        allow_malware: bool = False,
    ) -> str:
        """Re-inject a held message to its original recipients; returns the new queue id.

        The message gets an `X-Mxflow-Released` header so the receiving node can skip
        filtering it again. Malware is released only with `allow_malware`.
        """
        entry, raw = await asyncio.to_thread(self.show, qid)
        if entry.state != HELD:
            raise QuarantineError(f"message {qid} is {entry.state}, not held")
        if entry.kind == "malware" and not allow_malware:
            raise QuarantineError(f"message {qid} is malware; releasing it needs --allow-malware")
        stamp = f"{RELEASED_HEADER}: {qid}\r\n".encode()
        queue_id = await reinject(entry.mail_from, entry.rcpt_tos, stamp + raw)
        now = time.time()

        def mark() -> None:
            with self._connect() as db:
                db.execute(
                    "UPDATE quarantine SET state = ?, released_ts = ?, released_queue_id = ?"
                    " WHERE id = ?",
                    (RELEASED, now, queue_id, qid),
                )
            db.close()

        await asyncio.to_thread(mark)
        self._event(entry, "released", f"re-injected as {queue_id} to {', '.join(entry.rcpt_tos)}")
        if learn is not None and entry.kind == "spam":
            await asyncio.to_thread(learn, raw, False)
        return queue_id

    def delete(self, qid: str) -> None:
        entry = self.get(qid)
        self._remove(qid)
        self._event(entry, "deleted", "")

    def _remove(self, qid: str) -> None:
        self.path_of(qid).unlink(missing_ok=True)
        with self._connect() as db:
            db.execute("DELETE FROM quarantine WHERE id = ?", (qid,))
        db.close()

    def expire(self, *, now: float | None = None) -> builtins.list[str]:
        """Delete every message past its retention (and released ones past theirs)."""
        now = time.time() if now is None else now
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM quarantine WHERE expires <= ?", (now,)
            ).fetchall()
        db.close()
        expired = [_entry(r) for r in rows]
        for entry in expired:
            self._remove(entry.id)
            self._event(entry, "expired", f"after {entry.kind} retention")
        return [e.id for e in expired]


def unstamped(raw: bytes) -> bytes:
    """The stored message without the release stamp `Quarantine.release` put on top (it
    only tells a filtering receiver to skip the message; a spool does not filter)."""
    if raw.startswith(RELEASED_HEADER.encode() + b":"):
        return raw[raw.index(b"\r\n") + 2 :]
    return raw


async def release_into_spool(
    quarantine: Quarantine,
    qid: str,
    spool: Any,
    trace: Any,
    *,
    learn: Learn | None = None,
    allow_malware: bool = False,
    by: str = "",
    recipient: str | None = None,
) -> str:
    """Release `qid` (to `recipient` only, when given) into a node's spool.

    The spool is a `queue.spool.Spool`; the running node picks the message up within a
    second. It is not filtered again, and is traced as `received` under the new queue id with
    the same Message-ID, so the message trace follows it. Used by `mxflow quarantine
    release`, the web UI and digest links; returns the new queue id."""

    async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        raw = unstamped(raw)
        message_id = message_id_of(raw)
        env = await spool.inject(
            mail_from, rcpts, raw, message_id=message_id, helo="quarantine-release"
        )
        who = f" by {by}" if by else ""
        for rcpt in rcpts:
            trace.record(
                env.queue_id,
                "received",
                message_id=message_id,
                recipient=rcpt,
                status="Pending",
                detail=f"released from quarantine {qid}{who}, not filtered again",
                sender=mail_from,
                size=len(raw),
                subject=_header(raw, "subject"),
            )
        return str(env.queue_id)

    if recipient is not None:
        return await release_recipient(quarantine, qid, recipient, reinject, learn=learn)
    return await quarantine.release(qid, reinject, learn=learn, allow_malware=allow_malware)


# ------------------------------------------------------- release to one recipient


def _released_column(db: sqlite3.Connection) -> None:
    """Add `released_rcpts` (JSON list) to a quarantine made before digests existed."""
    have = {r[1] for r in db.execute("PRAGMA table_info(quarantine)")}
    if "released_rcpts" not in have:
        with contextlib.suppress(sqlite3.OperationalError):  # another process added it
            db.execute(
                "ALTER TABLE quarantine ADD COLUMN released_rcpts TEXT NOT NULL DEFAULT '[]'"
            )


def released_recipients(quarantine: Quarantine, qid: str) -> builtins.list[str]:
    """The recipients a held message was already released to, one by one."""
    with quarantine._connect() as db:
        _released_column(db)
        row = db.execute("SELECT released_rcpts FROM quarantine WHERE id = ?", (qid,)).fetchone()
    db.close()
    return [] if row is None else [str(r) for r in json.loads(row[0])]


async def release_recipient(
    quarantine: Quarantine, qid: str, rcpt: str, reinject: Reinject, *, learn: Learn | None = None
) -> str:
    """Release a held spam message to `rcpt` only (the recipient who asked, from a digest
    link); the others keep it held until they ask too. Malware is never released this way:
    that is an administrator's decision. Returns the new queue id."""
    entry, raw = await asyncio.to_thread(quarantine.show, qid)
    if entry.state != HELD:
        raise QuarantineError(f"message {qid} is {entry.state}, not held")
    if entry.kind == "malware":
        raise QuarantineError(f"message {qid} is malware: only an administrator may release it")
    wanted = next((r for r in entry.rcpt_tos if r.lower() == rcpt.lower()), None)
    done = await asyncio.to_thread(released_recipients, quarantine, qid)
    if wanted is None:
        raise QuarantineError(f"message {qid} was not addressed to {rcpt}")
    if wanted.lower() in (r.lower() for r in done):
        raise QuarantineError(f"message {qid} was already released to {rcpt}")
    stamp = f"{RELEASED_HEADER}: {qid}\r\n".encode()
    queue_id = await reinject(entry.mail_from, [wanted], stamp + raw)
    done.append(wanted)
    finished = len({r.lower() for r in done}) >= len({r.lower() for r in entry.rcpt_tos})

    def mark() -> None:
        with quarantine._connect() as db:
            db.execute(
                "UPDATE quarantine SET released_rcpts = ?, state = ?, released_ts = ?,"
                " released_queue_id = ? WHERE id = ?",
                (json.dumps(done), RELEASED if finished else HELD, time.time(), queue_id, qid),
            )
        db.close()

    await asyncio.to_thread(mark)
    quarantine._event(entry, "released", f"re-injected as {queue_id} to {wanted} only")
    if learn is not None:
        await asyncio.to_thread(learn, raw, False)
    return queue_id
