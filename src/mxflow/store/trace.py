"""The message trace: one table of events keyed by queue id and Message-ID.

Every step of a message (received, delivered, deferred, bounced, quarantined, released...)
is one row, per recipient where it applies. By default each node writes `trace.sqlite` in
its own data dir; nodes that set the same `[store] url` share one SQLite file (one
machine) or one PostgreSQL database (several), so a message can be followed across hops
and any node's reader sees every node's events. The table and its versions are in
`mxflow.store.trace_schema`. Statuses use the reference host's vocabulary: Delivered, Failed,
Pending, Quarantined, FilteredAsSpam, Expanded. Reading (search, one message's hops) lives
in `mxflow.store.trace_query`, which groups these events into one row per recipient.

`record()` never blocks the event loop: it appends to an in-memory list that a writer
thread commits in batches (one transaction per batch, WAL mode), so tracing costs the
SMTP hot path a list append. Each event carries a uid (`ON CONFLICT (uid) DO NOTHING`),
so a batch retried after a commit whose outcome was lost is written once. The writer must
survive any input (a 0xFF byte in EHLO used to
kill it, and every later event was lost without a word): values are made storable, a batch
that fails is retried row by row, and what still cannot be written is counted and logged
and shown by `health()` — never dropped silently. Call `flush()` to wait for pending rows,
and `close()` (or use `with`) before exiting.

When the database cannot be reached (PostgreSQL down, a SQLite file locked or on a full
disk) nothing is lost while the process lives: the batch stays at the head of the backlog
and is retried (0.2 s, doubling to 2 s) until the database takes it. Meanwhile `refusal()`
tells the SMTP side to answer new mail with a 4xx (intake/pipeline.py, intake/store.py),
so the backlog holds only events of mail acknowledged before the outage was seen (and of
its delivery). The backlog is bounded (`backlog_limit`); beyond it events are counted as
lost, as is what is still unwritten when `close()` gives up after `close_grace` seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from mxflow.store.sql import Database, SqliteDatabase, StoreError, StoreUnavailable
from mxflow.store.trace_schema import ensure_schema

log = logging.getLogger("mxflow.trace")

STATUS_DELIVERED = "Delivered"
STATUS_FAILED = "Failed"
STATUS_PENDING = "Pending"
STATUS_QUARANTINED = "Quarantined"
STATUS_FILTERED_AS_SPAM = "FilteredAsSpam"
STATUS_EXPANDED = "Expanded"
STATUSES = (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_PENDING,
    STATUS_QUARANTINED,
    STATUS_FILTERED_AS_SPAM,
    STATUS_EXPANDED,
)

COLUMNS = (
    "ts, node, queue_id, message_id, event, recipient, status, detail, "
    "sender, from_ip, to_ip, size, subject, scl, score, symbols, auth_results, reply"
)
_INSERT = (
    f"INSERT INTO events ({COLUMNS}, uid) VALUES ({','.join('?' * 19)})"
    " ON CONFLICT (uid) DO NOTHING"
)

# What today's callers put in `detail`, parsed when they did not pass the keywords.
_FROM = re.compile(r"\bfrom \[?([0-9A-Fa-f]*[.:][0-9A-Fa-f.:]*)\]?")
_SENDER = re.compile(r"\bsender=<([^>]*)>")
_SIZE = re.compile(r"\bsize=(\d+)")
_REMOTE = re.compile(r"\(\[?([0-9A-Fa-f]*[.:][0-9A-Fa-f.:]*?)\]?:\d+\)\s*$")


@dataclass(frozen=True)
class TraceEvent:
    ts: float
    node: str
    queue_id: str
    message_id: str
    event: str
    recipient: str
    status: str
    detail: str
    sender: str = ""
    from_ip: str = ""
    to_ip: str = ""
    size: int = 0
    subject: str = ""
    scl: int | None = None
    score: float | None = None
    symbols: tuple[tuple[str, float, str], ...] = ()
    auth_results: str = ""
    reply: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.ts,
            "node": self.node,
            "queue_id": self.queue_id,
            "message_id": self.message_id,
            "event": self.event,
            "recipient": self.recipient,
            "status": self.status,
            "detail": self.detail,
            "from_ip": self.from_ip,
            "to_ip": self.to_ip,
            "scl": self.scl,
            "score": self.score,
            "symbols": [{"name": n, "score": s, "detail": d} for n, s, d in self.symbols],
            "auth_results": self.auth_results,
            "reply": self.reply,
        }


_Row = tuple[object, ...]


def _text(value: object, limit: int = 4000) -> str:
    """Any value as text both databases accept: lone surrogates (undecodable bytes a
    client sent, kept by surrogateescape) become \\udcff escapes instead of an encode
    error, and NUL (which PostgreSQL's text refuses) becomes \\x00."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def _symbols(value: object) -> str:
    if not value:
        return ""
    if isinstance(value, str):
        return _text(value, 20000)
    out = []
    for item in value if isinstance(value, Iterable) else ():
        if isinstance(item, tuple | list) and item:
            name, score, detail = (*item, 0.0, "")[:3]
        else:  # a Symbol-like object
            name = getattr(item, "name", item)
            score = getattr(item, "score", 0.0)
            detail = getattr(item, "detail", "")
        try:
            number = float(score)
        except (TypeError, ValueError):
            number = 0.0
        out.append([_text(name, 200), number, _text(detail, 500)])
    return json.dumps(out)


_INT_LIMIT = 2**31 - 1  # PostgreSQL's INTEGER (scl); sizes are far below it too


def _number(value: object, kind: type[int] | type[float]) -> int | float | None:
    """A number or None; integers clamped to what an INTEGER column holds."""
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
        if kind is int:
            return max(-_INT_LIMIT, min(_INT_LIMIT, int(number)))
        return number
    except (TypeError, ValueError, OverflowError):
        return None


def storable(row: _Row) -> _Row:
    """`row` with every value made safe to insert, and the fields old callers put in
    `detail` (client IP, sender, size; the remote of a reply) filled in from there. What
    follows the 18 columns (the writer's uid) is passed through."""
    (ts, node, qid, mid, event, rcpt, status, detail, sender, from_ip, to_ip, size,
     subject, scl, score, symbols, auth, reply) = row[:18]  # fmt: skip
    detail_t = _text(detail)
    sender_t, from_t, to_t = _text(sender, 500), _text(from_ip, 100), _text(to_ip, 100)
    size_n = _number(size, int) or 0
    if event == "received":
        if not from_t and (m := _FROM.search(detail_t)):
            from_t = m.group(1).strip("[]")
        if not sender_t and (m := _SENDER.search(detail_t)):
            sender_t = m.group(1)
        if not size_n and (m := _SIZE.search(detail_t)):
            size_n = int(m.group(1))
    reply_t = _text(reply, 1000)
    if event in ("delivered", "deferred", "bounced") and not reply_t:
        reply_t = detail_t
    if not to_t and (m := _REMOTE.search(reply_t)):
        to_t = m.group(1).strip("[]")
    return (
        _number(ts, float) or time.time(),
        _text(node, 200),
        _text(qid, 200),
        _text(mid, 1000),
        _text(event, 100),
        _text(rcpt, 500),
        _text(status, 50),
        detail_t,
        sender_t,
        from_t,
        to_t,
        size_n,
        _text(subject, 500),
        _number(scl, int),
        _number(score, float),
        _symbols(symbols),
        _text(auth, 4000),
        reply_t,
        *row[18:],
    )


BACKLOG_LIMIT = 50_000  # events kept in memory while the database cannot be written
REFUSE_AT = 10_000  # a backlog this long refuses new mail even while writes succeed
BATCH_LIMIT = 2_000  # events per transaction
CLOSE_GRACE = 10.0  # seconds `close()` keeps trying to write a backlog to a database that is down
RETRY_FIRST, RETRY_MAX = 0.2, 2.0  # the writer's pause after a failed write, doubling


@dataclass
class TraceHealth:
    """What the writer has done; `ok` is False once any event could not be stored, and
    while the database is down (`database_down`: the last write could not reach it)."""

    writer_alive: bool
    pending: int
    written: int
    errors: int
    dropped: int
    last_error: str
    database_down: bool = False
    down_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.writer_alive and self.dropped == 0 and not self.database_down

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, **vars(self)}


Observer = Callable[[tuple[object, ...]], None]  # gets each row, in COLUMNS order


def _unreachable(exc: BaseException) -> bool:
    """Whether a failed write says "the database, not this row": keep the batch, retry."""
    if isinstance(exc, StoreUnavailable):
        return True
    text = str(exc).lower()
    transient = ("locked", "busy", "disk", "full", "i/o", "unable to open", "readonly")
    return isinstance(exc, sqlite3.OperationalError) and any(t in text for t in transient)


class TraceStore:
    """Append-only event log in a `Database` (a SQLite file, or PostgreSQL shared by the
    nodes); `record` is cheap and thread-safe. Given a path, the store opens (and closes)
    its own SQLite file; given a Database, the caller closes it."""

    def __init__(
        self,
        target: str | Path | Database,
        *,
        node: str = "",
        flush_interval: float = 0.05,
        backlog_limit: int = BACKLOG_LIMIT,
        refuse_at: int = REFUSE_AT,
        close_grace: float = CLOSE_GRACE,
    ) -> None:
        self.database = target if isinstance(target, Database) else SqliteDatabase(Path(target))
        self._owns_database = not isinstance(target, Database)
        self.path: Path | None = getattr(self.database, "path", None)
        try:
            ensure_schema(self.database)
        except (StoreError, sqlite3.Error) as exc:
            self.close_database()
            raise StoreError(f"cannot open the trace database {self.database.url}: {exc}") from None
        self.node = node
        self._flush_interval = flush_interval
        self._backlog_limit = backlog_limit
        self._refuse_at = refuse_at
        self._close_grace = close_grace
        self._close_deadline = 0.0
        self._pending: list[_Row] = []  # oldest first; the writer removes what it wrote
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._written = threading.Condition(self._lock)
        self._uid = f"{secrets.token_hex(6)}-"  # this store's events: uid = prefix + seq
        self._seq_queued = 0
        self._seq_written = 0
        self._closed = False
        self._down_since: float | None = None  # monotonic time the database became unwritable
        self.observers: list[Observer] = []  # e.g. the node's metrics; called on record()
        self.rows_written = 0
        self.errors = 0
        self.dropped = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._writer, name="trace-writer", daemon=True)
        self._thread.start()

    def record(
        self,
        queue_id: str,
        event: str,
        *,
        message_id: str = "",
        recipient: str = "",
        status: str = "",
        detail: str = "",
        node: str | None = None,
        sender: str = "",
        from_ip: str = "",
        to_ip: str = "",
        size: int = 0,
        subject: str = "",
        scl: int | None = None,
        score: float | None = None,
        symbols: object = None,
        auth_results: str | list[str] = "",
        reply: str = "",
    ) -> None:
        """Add one event (e.g. "delivered", status "Delivered") for `queue_id`.

        The keywords after `node` describe the hop: the envelope sender, the client's IP
        (`from_ip`) and the next hop's (`to_ip`), size and subject, the verdict (`scl`,
        `score`, `symbols` as Symbols or (name, score, detail) tuples), the
        Authentication-Results and the next hop's `reply`. Returns at once; the row is
        written by a background thread within ~50 ms (or, while the database is down, kept
        in memory up to `backlog_limit` events and written when it returns). Never raises
        for odd values.
        """
        if isinstance(auth_results, list):
            auth_results = "; ".join(str(a) for a in auth_results)
        row: _Row = (
            time.time(),
            self.node if node is None else node,
            queue_id,
            message_id,
            event,
            recipient,
            status,
            detail,
            sender,
            from_ip,
            to_ip,
            size,
            subject,
            scl,
            score,
            symbols,
            auth_results,
            reply,
        )
        self._enqueue(row)
        for observer in self.observers:
            try:
                observer(row)
            except Exception:  # metrics must never break tracing
                log.exception("trace observer failed")

    def _enqueue(self, row: _Row) -> None:
        """Append `row` (with its uid) for the writer, unless the backlog is full."""
        with self._lock:
            if self._closed:
                raise RuntimeError("TraceStore is closed")
            full = len(self._pending) >= self._backlog_limit
            if not full:
                self._seq_queued += 1
                self._pending.append((*row, f"{self._uid}{self._seq_queued:x}"))
                self._wake.notify()
        if full:
            self._overflow(row)

    def _overflow(self, row: _Row) -> None:
        """The backlog is full (the database has been down long): count the event as lost,
        logging the first and every 1000th so an outage does not flood the log."""
        self.dropped += 1
        self.last_error = f"trace backlog full ({self._backlog_limit} events): event lost"
        if self.dropped % 1000 == 1:
            log.error("%s: %r %r (%d lost so far)", self.last_error, row[2], row[4], self.dropped)

    def _writer(self) -> None:
        """Commit batches until closed and written; survives every error (see the module
        docstring). A batch the database cannot take now stays at the head of the backlog
        and is tried again, with a growing pause, until it can."""
        retry = RETRY_FIRST
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    break
                batch = self._pending[:BATCH_LIMIT]
                closing = self._closed
            try:
                written = self._write(batch)
            except Exception as exc:  # a bug: the batch is lost, counted, and the trace goes on
                self._failed(len(batch), f"trace writer: {exc!r}")
                self._settle(len(batch), reachable=None)
                continue
            if written:
                self._settle(len(batch))
                retry = RETRY_FIRST
                time.sleep(self._flush_interval)  # let the next batch gather
            elif closing and time.monotonic() >= self._close_deadline:
                self._give_up()
            else:
                self._settle(0, reachable=False)
                time.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)

    def _write(self, batch: list[_Row]) -> bool:
        """Insert a batch in one transaction; False when the database cannot be reached
        (nothing counted as lost). A row the database refuses costs only itself."""
        rows = [storable(r) for r in batch]
        try:
            with self.database.transaction() as tx:
                tx.executemany(_INSERT, rows)
            self.rows_written += len(rows)
            return True
        except Exception as exc:
            self.last_error = str(exc)
            if _unreachable(exc):
                return False
        for row in rows:  # one by one: the uid makes rows already written no-ops
            try:
                with self.database.transaction() as tx:
                    tx.execute(_INSERT, row)
                self.rows_written += 1
            except Exception as exc:
                if _unreachable(exc):
                    self.last_error = str(exc)
                    return False
                self._failed(1, f"trace row for {row[2]!r} {row[4]!r} not stored: {exc}")
        return True

    def _settle(self, written: int, *, reachable: bool | None = True) -> None:
        """After a write: drop what was written (or lost) from the backlog and note whether
        the database is reachable (logged once per outage, and when it is back); with
        `reachable=None` nothing is known of it."""
        with self._lock:
            if written:
                del self._pending[:written]
                self._seq_written += written
                self._written.notify_all()
            if reachable is None:
                return
            if reachable:
                back, self._down_since = self._down_since, None
                if back is not None:
                    log.warning(
                        "trace database reachable again after %.1fs; writing the backlog"
                        " (%d event(s) left), new mail accepted",
                        time.monotonic() - back,
                        len(self._pending),
                    )
            elif self._down_since is None:
                self._down_since = time.monotonic()
                log.error(
                    "trace database unavailable (%s): %d event(s) kept, new mail refused "
                    "until it is back",
                    self.last_error,
                    len(self._pending),
                )

    def _give_up(self) -> None:
        """Closing, and the database stayed down past the grace: the backlog is lost."""
        with self._lock:
            lost = len(self._pending)
            self._pending.clear()
            self._seq_written = self._seq_queued
            self._written.notify_all()
        self._failed(lost, f"trace database unavailable at shutdown ({self.last_error})")

    def _failed(self, count: int, message: str) -> None:
        self.errors += 1
        self.dropped += count
        self.last_error = message
        log.error("%s (%d event(s) lost, %d so far)", message, count, self.dropped)

    def refusal(self) -> str | None:
        """Why the node must not acknowledge new mail now, or None.

        The trace cannot record while its database is known to be down (the last write
        could not reach it), while the backlog is `refuse_at` events long (the database
        is far behind), or if the writer has stopped. Events of mail already acknowledged
        stay in the backlog and are written when the database is back; new mail gets a
        4xx and comes again. Lock-free: it is asked for every connection and message."""
        if self._down_since is not None:
            return "the message trace cannot be written now (its database is unavailable)"
        if len(self._pending) >= self._refuse_at:
            return f"the message trace is behind ({len(self._pending)} events not written)"
        if not self._thread.is_alive() and not self._closed:
            return "the message trace writer has stopped"
        return None

    def health(self) -> TraceHealth:
        """For /healthz and metrics: is the writer running, has anything been lost, can the
        database be written."""
        with self._lock:
            pending = len(self._pending)
            since = self._down_since
        return TraceHealth(
            writer_alive=self._thread.is_alive() or self._closed,
            pending=pending,
            written=self.rows_written,
            errors=self.errors,
            dropped=self.dropped,
            last_error=self.last_error,
            database_down=since is not None,
            down_seconds=0.0 if since is None else round(time.monotonic() - since, 1),
        )

    def flush(self, timeout: float = 10.0) -> None:
        """Block until every event recorded so far is committed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._seq_queued
            self._wake.notify()
            while self._seq_written < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("trace store did not flush in time")
                self._written.wait(left)

    def close(self) -> None:
        """Write what is pending (trying for `close_grace` seconds if the database is
        down), stop the writer and close the SQLite file this store opened."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_deadline = time.monotonic() + self._close_grace
            self._wake.notify()
        self._thread.join(timeout=self._close_grace + 30)
        self.close_database()

    def close_database(self) -> None:
        if self._owns_database:
            self.database.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- queries

    def _query(self, where: str, args: tuple[str, ...]) -> list[TraceEvent]:
        return query_events(self.database, where, args)

    def by_queue_id(self, queue_id: str) -> list[TraceEvent]:
        return self._query("queue_id = ?", (queue_id,))

    def by_message_id(self, message_id: str) -> list[TraceEvent]:
        """Events whose Message-ID matches, with or without the angle brackets."""
        bare = message_id.strip().strip("<>")
        return self._query("message_id IN (?, ?)", (bare, f"<{bare}>"))

    def all(self) -> list[TraceEvent]:
        return self._query("1 = 1", ())


def event_of(row: tuple[object, ...]) -> TraceEvent:
    """A TraceEvent from a row selected with `COLUMNS`."""
    symbols: list[list[object]] = []
    if row[15]:
        try:
            symbols = json.loads(str(row[15]))
        except ValueError:
            symbols = []
    return TraceEvent(
        ts=float(row[0]),  # type: ignore[arg-type]
        node=str(row[1]),
        queue_id=str(row[2]),
        message_id=str(row[3]),
        event=str(row[4]),
        recipient=str(row[5]),
        status=str(row[6]),
        detail=str(row[7]),
        sender=str(row[8]),
        from_ip=str(row[9]),
        to_ip=str(row[10]),
        size=int(row[11] or 0),  # type: ignore[call-overload]
        subject=str(row[12]),
        scl=None if row[13] is None else int(row[13]),  # type: ignore[call-overload]
        score=None if row[14] is None else float(row[14]),  # type: ignore[arg-type]
        symbols=tuple((str(s[0]), float(s[1]), str(s[2])) for s in symbols if len(s) >= 3),  # type: ignore[arg-type]
        auth_results=str(row[16]),
        reply=str(row[17]),
    )


TraceSource = Database | Path | str  # a Database, or the path of a SQLite trace file


@contextlib.contextmanager
def trace_database(source: TraceSource) -> Iterator[Database]:
    """The Database a reader queries: `source` itself, or its SQLite file opened (at this
    version's schema) for the duration."""
    if isinstance(source, Database):
        yield source
        return
    db = SqliteDatabase(Path(source))
    try:
        ensure_schema(db)
        yield db
    finally:
        db.close()


def query_events(
    source: TraceSource, where: str, args: Iterable[object], *, newest: int | None = None
) -> list[TraceEvent]:
    """Events matching an SQL condition, oldest first (any process, any node); with
    `newest`, only that many of the most recent ones."""
    if newest is not None:
        where = f"id IN (SELECT id FROM events WHERE {where} ORDER BY ts DESC LIMIT {int(newest)})"
    with trace_database(source) as db:
        rows = db.query(f"SELECT {COLUMNS} FROM events WHERE {where} ORDER BY ts, id", list(args))
    return [event_of(row) for row in rows]
