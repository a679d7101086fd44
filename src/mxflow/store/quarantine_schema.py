"""The quarantine's table and its history: the `quarantine` component of the store's schema.

One row per held message: the envelope, the verdict and its symbols, the expiry, and the
state (held → releasing → released; deleted and expired rows are removed). On SQLite the
message itself is a file beside the index (`messages/<id>.eml`), as before migrations
existed; on PostgreSQL it is the row's `raw` (BYTEA), so every node that shares the
database can preview, release and delete it. `released_rcpts` lists the recipients a
digest link released one by one (older SQLite files gain it at open).
"""

from __future__ import annotations

from mxflow.store import sqlite_files
from mxflow.store.schema import Component, Migration
from mxflow.store.sql import Database

_V1_SQLITE = """
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
    released_queue_id TEXT NOT NULL DEFAULT '',
    released_rcpts TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS quarantine_state ON quarantine(state, ts);
CREATE INDEX IF NOT EXISTS quarantine_expires ON quarantine(expires);
"""

_V1_POSTGRESQL = """
CREATE TABLE quarantine (
    id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    subject TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    scl INTEGER NOT NULL,
    reason TEXT NOT NULL,
    symbols TEXT NOT NULL,
    size BIGINT NOT NULL,
    released_ts DOUBLE PRECISION,
    released_queue_id TEXT NOT NULL DEFAULT '',
    released_rcpts TEXT NOT NULL DEFAULT '[]',
    raw BYTEA NOT NULL
);
CREATE INDEX quarantine_state ON quarantine(state, ts);
CREATE INDEX quarantine_expires ON quarantine(expires);
"""

QUARANTINE = Component(
    "quarantine",
    (Migration(1, "quarantine: held messages and their verdicts", _V1_SQLITE, _V1_POSTGRESQL),),
)

_ADDED = (("released_rcpts", "TEXT NOT NULL DEFAULT '[]'"),)  # after the first release


def ensure_schema(db: Database) -> None:
    """A SQLite quarantine index at this version (older files adopted); PostgreSQL is
    migrated by `mxflow store migrate`."""
    sqlite_files.ensure_schema(
        db, QUARANTINE, lambda tx: sqlite_files.add_missing_columns(tx, "quarantine", _ADDED)
    )
