"""The trace's tables and their history: the `trace` component of the store's schema.

Version 1 is the `events` table as SQLite trace files have had it since the columns of
issue 14 (sender, IPs, size, subject, verdict, reply); version 2 adds `uid`, a unique id
the writer gives each event, so that a batch retried after a commit whose outcome it never
heard (the connection to PostgreSQL died during COMMIT) is written once, not twice.

A SQLite trace belongs to its node(s) on one machine, which bring it up to date at open
(`ensure_schema`). Files written by versions before the migrations existed have no
`schema_versions` and may lack the later columns: they are adopted — the missing columns
added — before migration 1, whose statements are all `IF NOT EXISTS`, is recorded
(`mxflow.store.sqlite_files`). A PostgreSQL trace is migrated by the administrator
(`mxflow store migrate`), never by a node: nodes of two versions must not race to change
a shared schema.
"""

from __future__ import annotations

from mxflow.store import sqlite_files
from mxflow.store.schema import Component, Migration
from mxflow.store.sql import Database

# Columns added after the first release: a file that predates them gains them at open.
EXTRA_COLUMNS = (
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

_INDEXES = """
CREATE INDEX IF NOT EXISTS events_queue_id ON events(queue_id);
CREATE INDEX IF NOT EXISTS events_message_id ON events(message_id);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_sender ON events(sender);
"""

_V1_SQLITE = f"""
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    queue_id TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    event TEXT NOT NULL,
    recipient TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    {",".join(f"{name} {decl}" for name, decl in EXTRA_COLUMNS)}
);
{_INDEXES}
"""

_V1_POSTGRESQL = f"""
CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    queue_id TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    event TEXT NOT NULL,
    recipient TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    sender TEXT NOT NULL DEFAULT '',
    from_ip TEXT NOT NULL DEFAULT '',
    to_ip TEXT NOT NULL DEFAULT '',
    size BIGINT NOT NULL DEFAULT 0,
    subject TEXT NOT NULL DEFAULT '',
    scl INTEGER,
    score DOUBLE PRECISION,
    symbols TEXT NOT NULL DEFAULT '',
    auth_results TEXT NOT NULL DEFAULT '',
    reply TEXT NOT NULL DEFAULT ''
);
{_INDEXES}
"""

# NULLs are distinct in a unique index (both databases): rows from before v2 keep NULL.
_V2 = """
ALTER TABLE events ADD COLUMN uid TEXT;
CREATE UNIQUE INDEX events_uid ON events(uid);
"""

TRACE = Component(
    "trace",
    (
        Migration(1, "events: one row per event and recipient", _V1_SQLITE, _V1_POSTGRESQL),
        Migration(2, "events.uid: a batch retried after a lost COMMIT is written once", _V2, _V2),
    ),
)


def ensure_schema(db: Database) -> None:
    """A SQLite trace at this version (once per process and file); PostgreSQL untouched.

    Cheap after the first call, so every reader and writer calls it."""
    sqlite_files.ensure_schema(
        db, TRACE, lambda tx: sqlite_files.add_missing_columns(tx, "events", EXTRA_COLUMNS)
    )
