"""The trace on both databases: the same writer and readers on a SQLite file and on a real
PostgreSQL server; old SQLite trace files adopted; the writer when the database is down."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxflow.store.registry import COMPONENTS
from mxflow.store.schema import current_versions, migrate
from mxflow.store.sql import Database, open_database
from mxflow.store.trace import TraceStore, query_events
from mxflow.store.trace_query import TraceQuery, search, show
from tests.store.pg import private_cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A trace database of each kind, at this version's schema."""
    if request.param == "sqlite":
        database = open_database(tmp_path / "trace.sqlite")
    else:
        database = open_database(request.getfixturevalue("pg_url"))
        migrate(database, COMPONENTS)  # what `mxflow store migrate` does
    yield database
    database.close()


def _until(predicate: object, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within}s")
        time.sleep(0.05)


def test_two_writers_one_database_one_search(db: Database) -> None:
    """Two nodes' stores write to one database; a reader on it sees both hops as one
    message, and finds a recipient whatever its case (PostgreSQL's LIKE minds case)."""
    with TraceStore(db, node="gateway") as gw, TraceStore(db, node="host") as host:
        gw.record(
            "GQ1", "received", message_id="<m1@fabrikam.test>", recipient="Bob@Contoso.com",
            status="Pending", detail="from 127.9.0.5 helo=x sender=<a@fabrikam.test> size=42",
            subject="h\x00llo",
        )  # fmt: skip
        gw.record(
            "GQ1", "delivered", message_id="<m1@fabrikam.test>", recipient="Bob@Contoso.com",
            status="Delivered", reply="250 2.0.0 Ok: queued as HQ1 (127.20.0.1:25)",
            scl=1, score=0.5, symbols=[("SPF_PASS", -0.1, "pass")], size=10**30,  # type: ignore[arg-type]
        )  # fmt: skip
        host.record("HQ1", "received", recipient="Bob@Contoso.com", status="Pending")
        host.record("HQ1", "delivered", recipient="Bob@Contoso.com", status="Delivered")
        gw.flush()
        host.flush()
        assert gw.health().ok and host.health().ok
        assert [e.node for e in host.all()] == ["gateway", "gateway", "host", "host"]
    (row,) = search(db, TraceQuery(recipient="bob@contoso"))
    assert (row.status, row.nodes, row.size, row.from_ip) == (
        "Delivered",
        ["gateway", "host"],
        42,
        "127.9.0.5",
    )
    assert row.subject == "h\\x00llo"  # NUL, which PostgreSQL's text refuses, escaped
    assert search(db, TraceQuery(sender="A@FABRIKAM")) == [row]
    trace = show(db, "m1@fabrikam.test")
    assert trace is not None and [h.node for h in trace.hops] == ["gateway", "host"]
    assert trace.hops[0].events[1].symbols == (("SPF_PASS", -0.1, "pass"),)


def test_a_batch_written_twice_is_stored_once(db: Database) -> None:
    """The commit of a batch may succeed while the connection dies before its answer;
    the writer then writes the batch again, and the events' uids make that a no-op."""
    with TraceStore(db, node="gw") as store:
        store.record("Q1", "received", recipient="a@y")
        store.record("Q1", "delivered", recipient="a@y")
        store.flush()
        assert store._write(
            _rows_with_uids(store)
        )  # the retry of a batch that was in fact committed
        assert [e.event for e in store.by_queue_id("Q1")] == ["received", "delivered"]


def _rows_with_uids(store: TraceStore) -> list[tuple[object, ...]]:
    from mxflow.store.trace import COLUMNS

    return [tuple(r) for r in store.database.query(f"SELECT {COLUMNS}, uid FROM events")]


OLD_SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, node TEXT NOT NULL DEFAULT '',
    queue_id TEXT NOT NULL, message_id TEXT NOT NULL DEFAULT '', event TEXT NOT NULL,
    recipient TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_queue_id ON events(queue_id);
"""


def test_a_trace_file_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    """A trace.sqlite from the first release (nine columns, no schema_versions) gains the
    later columns and the uid, keeps its rows, and records trace version 2."""
    path = tmp_path / "trace.sqlite"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
        old.execute(
            "INSERT INTO events (ts, node, queue_id, event, recipient, status, detail)"
            " VALUES (1.0, 'gw', 'OLD1', 'received', 'a@y', 'Pending', 'from 127.9.0.1')"
        )
    old.close()
    with TraceStore(path, node="gw") as store:
        store.record("NEW1", "received", recipient="b@y", sender="c@z")
        store.flush()
        assert [e.queue_id for e in store.all()] == ["OLD1", "NEW1"]
        assert store.all()[1].sender == "c@z"
        assert current_versions(store.database) == {"trace": 2}
    assert [r.recipient for r in search(path, TraceQuery())] == ["b@y", "a@y"]


def test_the_writer_keeps_events_while_postgresql_is_down(tmp_path: Path) -> None:
    """The database crashes: events already recorded and those recorded meanwhile stay in
    memory, `refusal()` says new mail must wait, and when the server is back every event
    is written once and mail is welcome again."""
    with private_cluster() as cluster:
        db = open_database(cluster.url)
        migrate(db, COMPONENTS)
        store = TraceStore(db, node="gw")
        try:
            store.record("Q0", "received", recipient="a@y")
            store.flush()
            cluster.stop(mode="immediate")
            for i in range(1, 4):
                store.record(f"Q{i}", "received", recipient="a@y")
            _until(lambda: store.refusal() is not None)
            assert "database is unavailable" in str(store.refusal())
            health = store.health()
            assert health.database_down and not health.ok and health.dropped == 0
            assert health.pending == 3
            store.record("Q4", "delivered", recipient="a@y")  # delivery goes on meanwhile
            cluster.start()
            _until(lambda: store.refusal() is None)
            store.flush()
            assert [e.queue_id for e in store.all()] == ["Q0", "Q1", "Q2", "Q3", "Q4"]
            assert store.health().ok and store.health().written == 5
        finally:
            store.close()
            db.close()


def test_the_backlog_is_bounded_and_an_unwritable_rest_is_counted_at_close(
    tmp_path: Path,
) -> None:
    """Memory is not unbounded: past `backlog_limit` events are counted as lost (and
    logged), and what the database never took by the end of `close_grace` too."""
    with private_cluster() as cluster:
        db = open_database(cluster.url)
        migrate(db, COMPONENTS)
        cluster.stop(mode="immediate")
        store = TraceStore(db, node="gw", backlog_limit=3, close_grace=1.0)
        for i in range(5):
            store.record(f"Q{i}", "received")
        health = store.health()
        assert (health.pending, health.dropped) == (3, 2)
        assert "backlog full" in health.last_error
        started = time.monotonic()
        store.close()
        assert time.monotonic() - started < 30
        assert store.health().dropped == 5
        assert "unavailable at shutdown" in store.health().last_error
        db.close()


def test_query_events_reads_a_sqlite_path_or_a_database(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    with TraceStore(path, node="gw") as store:
        store.record("Q1", "received")
        store.flush()
        assert query_events(store.database, "queue_id = ?", ["Q1"]) == query_events(
            path, "queue_id = ?", ["Q1"]
        )
