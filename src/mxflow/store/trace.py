"""The message trace: one SQLite table of events keyed by queue id and Message-ID.

Every step of a message (received, delivered, deferred, bounced, quarantined, released...)
is one row, per recipient where it applies. By default each node writes `trace.sqlite` in
its own data dir; nodes that set the same `[store] url` share one file, so a message can be
followed across hops. Statuses use the reference host's vocabulary: Delivered, Failed,
Pending, Quarantined, FilteredAsSpam, Expanded. Reading (search, one message's hops) lives
in `mxflow.store.trace_query`, which groups these events into one row per recipient.

`record()` never blocks the event loop: it appends to an in-memory list that a writer
thread commits in batches (one transaction per batch, WAL mode), so tracing costs the
SMTP hot path a list append. The writer must survive any input (a 0xFF byte in EHLO used to
kill it, and every later event was lost without a word): values are made storable, a batch
that fails is retried row by row, and what still cannot be written is counted and logged
and shown by `health()` — never dropped silently. Call `flush()` to wait for pending rows,
and `close()` (or use `with`) before exiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    queue_id TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    event TEXT NOT NULL,
    recipient TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_queue_id ON events(queue_id);
CREATE INDEX IF NOT EXISTS events_message_id ON events(message_id);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
"""
# Columns added after the first release: an older trace.sqlite gains them on open.
_EXTRA_COLUMNS = (
    ("sender", "TEXT NOT NULL DEFAULT ''"),
    ("from_ip", "TEXT NOT NULL DEFAULT ''"),
    ("to_ip", "TEXT NOT NULL DEFAULT ''"),
    ("size", "INTEGER NOT NULL DEFAULT 0"),
    ("subject", "TEXT NOT NULL DEFAULT ''"),
    ("scl", "INTEGER"),
    ("score", "REAL"),
    ("symbols", "TEXT NOT NULL DEFAULT ''"),  # JSON [[name, score, detail], ...]
    ("auth_results", "TEXT NOT NULL DEFAULT ''"),
    ("reply", "TEXT NOT NULL DEFAULT ''"),  # the next hop's (or our) SMTP reply
)
COLUMNS = (
    "ts, node, queue_id, message_id, event, recipient, status, detail, "
    "sender, from_ip, to_ip, size, subject, scl, score, symbols, auth_results, reply"
)
_INSERT = f"INSERT INTO events ({COLUMNS}) VALUES ({','.join('?' * 18)})"

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
    """Any value as text SQLite accepts: lone surrogates (undecodable bytes a client
    sent, kept by surrogateescape) become \\udcff escapes instead of an encode error."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


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


def _number(value: object, kind: type[int] | type[float]) -> int | float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
        return int(number) if kind is int else number
    except (TypeError, ValueError, OverflowError):
        return None


def storable(row: _Row) -> _Row:
    """`row` with every value made safe to insert, and the fields old callers put in
    `detail` (client IP, sender, size; the remote of a reply) filled in from there."""
    (ts, node, qid, mid, event, rcpt, status, detail, sender, from_ip, to_ip, size,
     subject, scl, score, symbols, auth, reply) = row  # fmt: skip
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
    )


def open_db(path: Path, *, attempts: int = 100) -> sqlite3.Connection:
    """A connection with the schema (and the columns newer versions added) in place.

    The workers of one node (and the lab's nodes) open the same file at the same moment;
    switching to WAL and creating the schema need the write lock, and SQLite answers
    "database is locked" at once for the journal-mode switch rather than waiting, so the
    open is tried again for a few seconds before it fails.
    """
    for attempt in range(attempts):
        try:
            return _open_db(path)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def _open_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    with db:
        db.executescript(_SCHEMA)
        have = {r[1] for r in db.execute("PRAGMA table_info(events)")}
        for name, decl in _EXTRA_COLUMNS:
            if name not in have:
                # another process may have added it meanwhile
                with contextlib.suppress(sqlite3.OperationalError):
                    db.execute(f"ALTER TABLE events ADD COLUMN {name} {decl}")
        db.execute("CREATE INDEX IF NOT EXISTS events_sender ON events(sender)")
    return db


@dataclass
class TraceHealth:
    """What the writer has done; `ok` is False once any event could not be stored."""

    writer_alive: bool
    pending: int
    written: int
    errors: int
    dropped: int
    last_error: str

    @property
    def ok(self) -> bool:
        return self.writer_alive and self.dropped == 0

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, **vars(self)}


Observer = Callable[[tuple[object, ...]], None]  # gets each row, in COLUMNS order


class TraceStore:
    """Append-only event log in SQLite; `record` is cheap and thread-safe."""

    def __init__(self, path: str | Path, *, node: str = "", flush_interval: float = 0.05) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.node = node
        self._flush_interval = flush_interval
        self._pending: list[_Row] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._written = threading.Condition(self._lock)
        self._seq_queued = 0
        self._seq_written = 0
        self._closed = False
        self.observers: list[Observer] = []  # e.g. the node's metrics; called on record()
        self.rows_written = 0
        self.errors = 0
        self.dropped = 0
        self.last_error = ""
        open_db(self.path).close()
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
        written by a background thread within ~50 ms. Never raises for odd values.
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
        with self._lock:
            if self._closed:
                raise RuntimeError("TraceStore is closed")
            self._pending.append(row)
            self._seq_queued += 1
            self._wake.notify()
        for observer in self.observers:
            try:
                observer(row)
            except Exception:  # metrics must never break tracing
                log.exception("trace observer failed")

    def _writer(self) -> None:
        """Commit batches until closed; survives every error (see the module docstring)."""
        db: sqlite3.Connection | None = None
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending and self._closed:
                    break
                batch, self._pending = self._pending, []
                target = self._seq_queued
            try:
                if db is None:
                    db = open_db(self.path)
                self._write(db, batch)
            except Exception as exc:  # even a bug here must not stop the trace
                self._failed(len(batch), f"trace writer: {exc!r}")
                if db is not None:
                    db.close()
                db = None
            with self._lock:
                self._seq_written = target
                self._written.notify_all()
            time.sleep(self._flush_interval)  # let the next batch gather
        if db is not None:
            db.close()

    def _write(self, db: sqlite3.Connection, batch: list[_Row]) -> None:
        rows = [storable(r) for r in batch]
        for attempt in range(40):
            try:
                with db:
                    db.executemany(_INSERT, rows)
                self.rows_written += len(rows)
                return
            except sqlite3.OperationalError as exc:  # locked by another process, disk full
                self.last_error = f"{exc} (attempt {attempt + 1})"
                time.sleep(min(0.05 * (attempt + 1), 1.0))
            except sqlite3.Error:
                break  # a bad row: find it below
        for row in rows:  # one by one, so one bad row costs only itself
            try:
                with db:
                    db.execute(_INSERT, row)
                self.rows_written += 1
            except sqlite3.Error as exc:
                self._failed(1, f"trace row for {row[2]!r} {row[4]!r} not stored: {exc}")

    def _failed(self, count: int, message: str) -> None:
        self.errors += 1
        self.dropped += count
        self.last_error = message
        log.error("%s (%d event(s) lost, %d so far)", message, count, self.dropped)

    def health(self) -> TraceHealth:
        """For /healthz and metrics: is the writer running, has anything been lost."""
        with self._lock:
            pending = len(self._pending)
        return TraceHealth(
            writer_alive=self._thread.is_alive() or self._closed,
            pending=pending,
            written=self.rows_written,
            errors=self.errors,
            dropped=self.dropped,
            last_error=self.last_error,
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
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- queries

    def _query(self, where: str, args: tuple[str, ...]) -> list[TraceEvent]:
        return query_events(self.path, where, args)

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


def query_events(
    path: Path, where: str, args: Iterable[object], *, newest: int | None = None
) -> list[TraceEvent]:
    """Events matching an SQL condition, oldest first (any process); with `newest`, only
    that many of the most recent ones."""
    if newest is not None:
        where = f"id IN (SELECT id FROM events WHERE {where} ORDER BY ts DESC LIMIT {int(newest)})"
    db = read_db(path)
    try:
        rows = db.execute(
            f"SELECT {COLUMNS} FROM events WHERE {where} ORDER BY ts, id", tuple(args)
        ).fetchall()
    finally:
        db.close()
    return [event_of(row) for row in rows]


_CURRENT: set[Path] = set()  # stores known to have this version's columns


def read_db(path: Path) -> sqlite3.Connection:
    """A connection for reading: the schema is brought up to date (a write) only the first
    time a process meets a store that lacks this version's columns."""
    if path not in _CURRENT:
        db = sqlite3.connect(path, timeout=30.0)
        try:
            have = {r[1] for r in db.execute("PRAGMA table_info(events)")}
        finally:
            db.close()
        if not {name for name, _ in _EXTRA_COLUMNS} <= have:
            open_db(path).close()
        _CURRENT.add(path)
    return sqlite3.connect(path, timeout=30.0)
