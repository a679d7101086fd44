"""The store seam on both databases: the same SQL, transactions, migrations and the
schema check, against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxflow.store.schema import Component, Migration, SchemaMismatch, check, migrate
from mxflow.store.sql import Database, StoreUnavailable, open_database

NOTES_V1 = Migration(
    1,
    "notes",
    "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);",
    "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body BYTEA NOT NULL);",
)
NOTES_V2 = Migration(
    2,
    "note tags",
    "ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT '';\n"
    "CREATE INDEX notes_tag ON notes(tag);",
    "ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT '';\n"
    "CREATE INDEX notes_tag ON notes(tag);",
)
NOTES = Component("notes", (NOTES_V1, NOTES_V2))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (
        str(tmp_path / "s.sqlite")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    database = open_database(url)
    yield database
    database.close()


def test_migrate_creates_the_tables_once_and_the_same_sql_runs_on_both(db: Database) -> None:
    assert migrate(db, [NOTES]) == ["notes 1: notes", "notes 2: note tags"]
    assert migrate(db, [NOTES]) == []
    check(db, [NOTES])
    (row,) = db.query(
        "INSERT INTO notes (body, tag) VALUES (?, ?) RETURNING id", (b"\x00\xff", "a%b")
    )
    assert db.query("SELECT body, tag FROM notes WHERE id = ?", (row[0],)) == [(b"\x00\xff", "a%b")]
    assert db.query("SELECT count(*) FROM notes WHERE tag LIKE 'a%'") == [(1,)]


def test_a_database_at_the_previous_version_is_refused_until_migrated(db: Database) -> None:
    migrate(db, [NOTES], upto=1)
    db.execute("INSERT INTO notes (body) VALUES (?)", (b"old",))
    with pytest.raises(
        SchemaMismatch, match="version 1, this mxflow needs 2: run `mxflow store migrate"
    ):
        check(db, [NOTES])
    assert migrate(db, [NOTES]) == ["notes 2: note tags"]
    check(db, [NOTES])
    assert db.query("SELECT body, tag FROM notes") == [(b"old", "")]


def test_a_database_newer_than_this_mxflow_is_refused(db: Database) -> None:
    migrate(db, [NOTES])
    with pytest.raises(SchemaMismatch, match="newer than this mxflow knows"):
        check(db, [Component("notes", (NOTES_V1,))])


def test_an_empty_database_is_refused_naming_the_command(db: Database) -> None:
    with pytest.raises(SchemaMismatch, match="notes schema version 0"):
        check(db, [NOTES])


def test_a_failed_transaction_leaves_nothing(db: Database) -> None:
    migrate(db, [NOTES])
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute("INSERT INTO notes (body) VALUES (?)", (b"x",))
        raise RuntimeError("abort")
    assert db.query("SELECT count(*) FROM notes") == [(0,)]


def test_two_nodes_migrating_at_once_apply_each_migration_once(db: Database) -> None:
    other = open_database(db.url)
    results: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda d=d: results.append(migrate(d, [NOTES])))
        for d in (db, other)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert sum(len(r) for r in results) == 2
    check(db, [NOTES])


async def test_the_async_face_reads_what_the_sync_one_wrote(db: Database) -> None:
    migrate(db, [NOTES])
    db.execute("INSERT INTO notes (body, tag) VALUES (?, ?)", (b"m", "t"))
    assert await db.aquery("SELECT tag FROM notes") == [("t",)]
    async with db.atransaction() as tx:
        await tx.execute("UPDATE notes SET tag = ?", ("u",))
    assert db.query("SELECT tag FROM notes") == [("u",)]
    await db.aclose()


def test_an_unreachable_postgresql_is_store_unavailable() -> None:
    from mxflow.lab.postgres import free_port

    db = open_database(f"postgresql://mxflow@127.0.0.1:{free_port()}/mxflow")
    with pytest.raises(StoreUnavailable, match=r"PostgreSQL at postgresql://mxflow@127\.0\.0\.1"):
        db.query("SELECT 1")
    db.close()
