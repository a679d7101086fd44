"""The quarantine: messages held with their verdict, until released, deleted or expired.

A node of its own keeps each message as one file (`messages/<id>.eml`, written and
fsynced, directory too) and one row in a SQLite index (`quarantine.sqlite`, synchronous
FULL) with the envelope, the verdict, its symbols and the expiry (spam 15 days, malware 30
by default, as the reference host keeps them). Nodes that share a PostgreSQL database
(`[store] url`) keep index and message in one row there, so any of them can list,
preview, release and delete what another held. `quarantine()` returns only when the
message is durable, because the SMTP client gets its 250 then; a database that cannot
take it raises `StoreUnavailable`, which the SMTP side answers with 4xx.

Every change of state is one conditional statement (`UPDATE … WHERE state = 'held'
RETURNING`, `DELETE … RETURNING`), so two nodes acting on one message at once act once:
one release re-injects it, one expiry traces it.

Release re-injects the message to its original recipients through a callable the caller
supplies (the engine's spool, or SMTP to the node's listener), marked so it is not filtered
again; it is then recorded through the `on_event` callback (the message trace) and, when a
trainer is given, learnt as ham — a released message was a false positive. Database and
file work runs in a worker thread (or on the async pool) so the event loop never waits.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxflow.durable import fsync_dir
from mxflow.errors import MxflowError
from mxflow.mail import MessageContext, Verdict, message_id_of, needs_admin_release
from mxflow.mime import decode_header_value
from mxflow.store.quarantine_schema import ensure_schema
from mxflow.store.sql import Database, SqliteDatabase, StoreError

Reinject = Callable[[str, list[str], bytes], Awaitable[str]]
EventHook = Callable[["QuarantineEntry", str, str], None]  # (entry, event, detail)
Learn = Callable[[bytes, bool], object]  # (raw, is_spam)
HELD = "held"
RELEASING = "releasing"  # claimed by one node's release, being re-injected
RELEASED = "released"
DELETED = "deleted"
DAY = 86_400.0
RELEASED_HEADER = "X-Mxflow-Released"
CLAIM_TIMEOUT = 900.0  # a release claim this old is taken over (its node died mid-release)

_COLUMNS = (
    "id, ts, expires, kind, state, queue_id, message_id, client_ip, mail_from, rcpt_tos, "
    "subject, score, scl, reason, symbols, size, released_ts, released_queue_id, released_rcpts"
)
_INSERT = f"INSERT INTO quarantine ({_COLUMNS}) VALUES ({','.join('?' * 19)})"
_INSERT_SHARED = f"INSERT INTO quarantine ({_COLUMNS}, raw) VALUES ({','.join('?' * 20)})"
_Row = tuple[object, ...]


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
    released_rcpts: list[str] = field(default_factory=list)  # released one by one

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
        released_rcpts,
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
        released_rcpts=[str(r) for r in json.loads(str(released_rcpts or "[]"))],
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
    """Quarantined messages; the `QuarantineSink` the server calls.

    Without `database`, the node's own: a SQLite index and one file per message under
    `directory`. With `database` (the PostgreSQL every node of a deployment shares), index
    and message bodies are rows there and `directory` is not used. The caller closes a
    database it passed; `close()` closes the SQLite index this opened."""

    def __init__(
        self,
        directory: str | Path,
        *,
        retention_spam_days: int = 15,
        retention_malware_days: int = 30,
        on_event: EventHook | None = None,
        database: Database | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.messages = self.directory / "messages"
        self.retention = {
            "spam": retention_spam_days * DAY,
            "malware": retention_malware_days * DAY,
        }
        self.on_event = on_event
        self.shared = database is not None  # bodies in the database, not in files
        if database is not None:
            self.db = database
            self._owns = False
            return
        self._owns = True
        try:
            self.messages.mkdir(parents=True, exist_ok=True)
            self.db = SqliteDatabase(self.directory / "quarantine.sqlite", synchronous="FULL")
            ensure_schema(self.db)
        except (OSError, StoreError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise MxflowError(f"{self.directory}: cannot open the quarantine ({reason})") from None

    def close(self) -> None:
        if self._owns:
            self.db.close()

    def path_of(self, qid: str) -> Path:
        if not qid.isalnum():
            raise QuarantineError(f"no quarantined message {qid!r}")
        return self.messages / f"{qid}.eml"

    # ------------------------------------------------------------------ storing

    async def quarantine(self, ctx: MessageContext, verdict: Verdict) -> str:
        """Store the message with its verdict, durably; returns the quarantine id.

        On PostgreSQL one INSERT on the event loop's async pool, in autocommit (one round
        trip, no thread); with files, the fsyncs run in a worker thread. `StoreUnavailable`
        when the database cannot take it: the SMTP side answers 4xx."""
        if not self.shared:
            return await asyncio.to_thread(self.store, ctx, verdict)
        row, detail = self._row(ctx, verdict, time.time())
        await self.db.astatement(_INSERT_SHARED, (*row, ctx.raw))
        self._event(_entry(row), "quarantined", detail)
        return str(row[0])

    def store(self, ctx: MessageContext, verdict: Verdict, *, now: float | None = None) -> str:
        row, detail = self._row(ctx, verdict, time.time() if now is None else now)
        qid = str(row[0])
        if self.shared:
            self.db.execute(_INSERT_SHARED, (*row, ctx.raw))
        else:
            path = self.path_of(qid)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(ctx.raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(self.messages)
            self.db.execute(_INSERT, row)
        self._event(_entry(row), "quarantined", detail)
        return qid

    def _row(self, ctx: MessageContext, verdict: Verdict, now: float) -> tuple[_Row, str]:
        """The index row for a new message (in `_COLUMNS` order), and the event's detail."""
        kind = "malware" if any(needs_admin_release(s) for s in verdict.symbols) else "spam"
        qid = f"{int(now * 1000):x}{secrets.token_hex(4)}"
        symbols = [(s.name, s.score, s.detail) for s in verdict.symbols]
        row: _Row = (
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
            "[]",
        )
        return row, f"{kind}: {verdict.reason}"

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
        return [_entry(r) for r in self.db.query(sql + " ORDER BY ts DESC, id DESC", args)]

    def get(self, qid: str) -> QuarantineEntry:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM quarantine WHERE id = ?", (qid,))
        if not rows:
            raise QuarantineError(f"no quarantined message {qid!r}")
        return _entry(rows[0])

    def show(self, qid: str) -> tuple[QuarantineEntry, bytes]:
        """The entry and the message as stored."""
        if self.shared:
            rows = self.db.query(f"SELECT {_COLUMNS}, raw FROM quarantine WHERE id = ?", (qid,))
            if not rows:
                raise QuarantineError(f"no quarantined message {qid!r}")
            return _entry(rows[0][:-1]), bytes(rows[0][-1])
        entry = self.get(qid)
        return entry, self._file(entry)

    def _file(self, entry: QuarantineEntry) -> bytes:
        try:
            return self.path_of(entry.id).read_bytes()
        except FileNotFoundError:
            raise QuarantineError(
                f"message {entry.id} is {entry.state}; its file is gone"
            ) from None

    def verify_release(self, raw: bytes) -> str | None:
        """The quarantine id when `raw` is a message this quarantine is releasing.

        The release stamp is trusted only if the id is held, being released or was
        released here and the bytes after the stamp are exactly the stored message, so a
        sender cannot forge it.
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
        if entry.state not in (HELD, RELEASING, RELEASED) or raw[end + 2 :] != stored:
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
        filtering it again. Malware is released only with `allow_malware`. Exactly once,
        even when two nodes release it at the same moment: the first to move it from held
        to releasing (one conditional UPDATE) re-injects it, the other is told it is not
        held. Recipients a digest link already released are not sent it again.
        """
        entry = await asyncio.to_thread(self.get, qid)
        if entry.kind == "malware" and not allow_malware:
            raise QuarantineError(f"message {qid} is malware; releasing it needs --allow-malware")
        entry, raw = await asyncio.to_thread(self._claim, qid)
        done = {r.lower() for r in entry.released_rcpts}
        rcpts = [r for r in entry.rcpt_tos if r.lower() not in done]
        stamp = f"{RELEASED_HEADER}: {qid}\r\n".encode()
        try:
            queue_id = await reinject(entry.mail_from, rcpts, stamp + raw)
        except BaseException:
            await asyncio.to_thread(self._unclaim, qid)
            raise
        await asyncio.to_thread(self._released, qid, queue_id, entry.rcpt_tos)
        self._event(entry, "released", f"re-injected as {queue_id} to {', '.join(rcpts)}")
        if learn is not None and entry.kind == "spam":
            await asyncio.to_thread(learn, raw, False)
        return queue_id

    def _claim(self, qid: str) -> tuple[QuarantineEntry, bytes]:
        """held → releasing, atomically (or a claim older than CLAIM_TIMEOUT, whose node
        died mid-release); QuarantineError when another release got there first."""
        now = time.time()
        body = ", raw" if self.shared else ""
        rows = self.db.query(
            f"UPDATE quarantine SET state = ?, released_ts = ? WHERE id = ? AND (state = ?"
            f" OR (state = ? AND released_ts < ?)) RETURNING {_COLUMNS}{body}",
            (RELEASING, now, qid, HELD, RELEASING, now - CLAIM_TIMEOUT),
        )
        if not rows:
            entry = self.get(qid)
            raise QuarantineError(f"message {qid} is {entry.state}, not held")
        if self.shared:
            return _entry(rows[0][:-1]), bytes(rows[0][-1])
        entry = _entry(rows[0])
        try:
            return entry, self._file(entry)
        except QuarantineError:
            self._unclaim(qid)
            raise

    def _unclaim(self, qid: str) -> None:
        """The re-injection failed: the message is held again, for a later try."""
        self.db.execute(
            "UPDATE quarantine SET state = ?, released_ts = NULL WHERE id = ? AND state = ?",
            (HELD, qid, RELEASING),
        )

    def _released(self, qid: str, queue_id: str, rcpts: builtins.list[str]) -> None:
        self.db.execute(
            "UPDATE quarantine SET state = ?, released_ts = ?, released_queue_id = ?,"
            " released_rcpts = ? WHERE id = ?",
            (RELEASED, time.time(), queue_id, json.dumps(rcpts), qid),
        )

    def delete(self, qid: str) -> None:
        """Delete a message for good (once: a second delete, from any node, is an error)."""
        rows = self.db.query(f"DELETE FROM quarantine WHERE id = ? RETURNING {_COLUMNS}", (qid,))
        if not rows:
            raise QuarantineError(f"no quarantined message {qid!r}")
        entry = _entry(rows[0])
        self._unlink(entry.id)
        self._event(entry, "deleted", "")

    def _unlink(self, qid: str) -> None:
        if not self.shared:
            self.path_of(qid).unlink(missing_ok=True)

    def expire(self, *, now: float | None = None) -> builtins.list[str]:
        """Delete every message past its retention (and released ones past theirs).

        One `DELETE … RETURNING`: when several nodes expire at once, each message is
        removed — and traced as expired — by exactly one of them. A message being
        released right now is left for the next round."""
        now = time.time() if now is None else now
        rows = self.db.query(
            f"DELETE FROM quarantine WHERE expires <= ? AND state <> ? RETURNING {_COLUMNS}",
            (now, RELEASING),
        )
        expired = sorted((_entry(r) for r in rows), key=lambda e: e.ts)
        for entry in expired:
            self._unlink(entry.id)
            self._event(entry, "expired", f"after {entry.kind} retention")
        return [e.id for e in expired]

    # --------------------------------------------------- release to one recipient

    def claim_recipient(self, qid: str, rcpt: str) -> tuple[QuarantineEntry, bytes, str]:
        """Add `rcpt` to the recipients released one by one, atomically (compare-and-set
        on the list, so two links clicked at once each release their own recipient once);
        the last one moves the message to releasing. Returns the entry, the message and
        the recipient as addressed."""
        for _ in range(20):
            entry, raw = self.show(qid)
            wanted = _check_recipient(entry, rcpt)
            done = [*entry.released_rcpts, wanted]
            finished = len({r.lower() for r in done}) >= len({r.lower() for r in entry.rcpt_tos})
            changed = self.db.execute(
                "UPDATE quarantine SET released_rcpts = ?, state = ?, released_ts = ?"
                " WHERE id = ? AND state = ? AND released_rcpts = ?",
                (
                    json.dumps(done),
                    RELEASING if finished else HELD,
                    time.time(),
                    qid,
                    HELD,
                    json.dumps(entry.released_rcpts),
                ),
            )
            if changed == 1:
                return entry, raw, wanted
        raise QuarantineError(f"message {qid} is busy; try again")

    def unclaim_recipient(self, qid: str, rcpt: str) -> None:
        """The re-injection to `rcpt` failed: it is held for that recipient again."""
        for _ in range(20):
            entry = self.get(qid)
            left = [r for r in entry.released_rcpts if r.lower() != rcpt.lower()]
            changed = self.db.execute(
                "UPDATE quarantine SET released_rcpts = ?, state = ? WHERE id = ?"
                " AND released_rcpts = ? AND state IN (?, ?)",
                (json.dumps(left), HELD, qid, json.dumps(entry.released_rcpts), HELD, RELEASING),
            )
            if changed == 1 or entry.state not in (HELD, RELEASING):
                return

    def recipient_released(self, qid: str, queue_id: str) -> None:
        self.db.execute(
            "UPDATE quarantine SET released_ts = ?, released_queue_id = ?,"
            " state = CASE WHEN state = ? THEN ? ELSE state END WHERE id = ?",
            (time.time(), queue_id, RELEASING, RELEASED, qid),
        )


def _check_recipient(entry: QuarantineEntry, rcpt: str) -> str:
    """`rcpt` as the message addresses it, if a digest link may release it to them."""
    if entry.state != HELD:
        raise QuarantineError(f"message {entry.id} is {entry.state}, not held")
    if entry.kind == "malware":
        raise QuarantineError(
            f"message {entry.id} is malware: only an administrator may release it"
        )
    wanted = next((r for r in entry.rcpt_tos if r.lower() == rcpt.lower()), None)
    if wanted is None:
        raise QuarantineError(f"message {entry.id} was not addressed to {rcpt}")
    if wanted.lower() in (r.lower() for r in entry.released_rcpts):
        raise QuarantineError(f"message {entry.id} was already released to {rcpt}")
    return wanted


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


def released_recipients(quarantine: Quarantine, qid: str) -> builtins.list[str]:
    """The recipients a held message was already released to, one by one."""
    try:
        return quarantine.get(qid).released_rcpts
    except QuarantineError:
        return []


async def release_recipient(
    quarantine: Quarantine, qid: str, rcpt: str, reinject: Reinject, *, learn: Learn | None = None
) -> str:
    """Release a held spam message to `rcpt` only (the recipient who asked, from a digest
    link); the others keep it held until they ask too. Malware is never released this way:
    that is an administrator's decision. Returns the new queue id."""
    entry, raw, wanted = await asyncio.to_thread(quarantine.claim_recipient, qid, rcpt)
    stamp = f"{RELEASED_HEADER}: {qid}\r\n".encode()
    try:
        queue_id = await reinject(entry.mail_from, [wanted], stamp + raw)
    except BaseException:
        await asyncio.to_thread(quarantine.unclaim_recipient, qid, wanted)
        raise
    await asyncio.to_thread(quarantine.recipient_released, qid, queue_id)
    quarantine._event(entry, "released", f"re-injected as {queue_id} to {wanted} only")
    if learn is not None:
        await asyncio.to_thread(learn, raw, False)
    return queue_id
