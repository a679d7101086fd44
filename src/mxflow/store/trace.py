"""The node's message trace: one SQLite table of events keyed by queue id and Message-ID.

Every step of a message (received, delivered, deferred, bounced, quarantined, released...)
is one row, per recipient where it applies, so a later tool can follow one message across
nodes by its Message-ID. Statuses use the reference host's vocabulary where they apply:
Delivered, Failed, Pending, Quarantined, FilteredAsSpam, Expanded.

`record()` never blocks the event loop: it appends to an in-memory list that a writer
thread commits in batches (one transaction per batch, WAL mode), so tracing costs the
SMTP hot path a list append. Several processes (workers, the CLI) may share one database.
Call `flush()` to wait for pending rows, and `close()` (or use `with`) before exiting.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

STATUS_DELIVERED = "Delivered"
STATUS_FAILED = "Failed"
STATUS_PENDING = "Pending"
STATUS_QUARANTINED = "Quarantined"
STATUS_FILTERED_AS_SPAM = "FilteredAsSpam"
STATUS_EXPANDED = "Expanded"

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
"""


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


_Row = tuple[float, str, str, str, str, str, str, str]


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
        with self._connect() as db:
            db.executescript(_SCHEMA)
        self._thread = threading.Thread(target=self._writer, name="trace-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

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
    ) -> None:
        """Add one event (e.g. "delivered", status "Delivered") for `queue_id`.

        Returns at once; the row is written by a background thread within ~50 ms.
        """
        row: _Row = (
            time.time(),
            self.node if node is None else node,
            queue_id,
            message_id,
            event,
            recipient,
            status,
            detail,
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("TraceStore is closed")
            self._pending.append(row)
            self._seq_queued += 1
            self._wake.notify()

    def _writer(self) -> None:
        db = self._connect()
        try:
            while True:
                with self._lock:
                    while not self._pending and not self._closed:
                        self._wake.wait()
                    if not self._pending and self._closed:
                        return
                    batch, self._pending = self._pending, []
                    target = self._seq_queued
                for attempt in range(20):
                    try:
                        with db:
                            db.executemany(
                                "INSERT INTO events (ts, node, queue_id, message_id, event,"
                                " recipient, status, detail) VALUES (?,?,?,?,?,?,?,?)",
                                batch,
                            )
                        break
                    except sqlite3.OperationalError:  # locked by another process
                        time.sleep(0.05 * (attempt + 1))
                with self._lock:
                    self._seq_written = target
                    self._written.notify_all()
                time.sleep(self._flush_interval)  # let the next batch gather
        finally:
            db.close()

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
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            rows = db.execute(
                "SELECT ts, node, queue_id, message_id, event, recipient, status, detail"
                f" FROM events WHERE {where} ORDER BY ts, id",
                args,
            ).fetchall()
        finally:
            db.close()
        return [TraceEvent(*row) for row in rows]

    def by_queue_id(self, queue_id: str) -> list[TraceEvent]:
        return self._query("queue_id = ?", (queue_id,))

    def by_message_id(self, message_id: str) -> list[TraceEvent]:
        """Events whose Message-ID matches, with or without the angle brackets."""
        bare = message_id.strip().strip("<>")
        return self._query("message_id IN (?, ?)", (bare, f"<{bare}>"))

    def all(self) -> list[TraceEvent]:
        return self._query("1 = 1", ())
