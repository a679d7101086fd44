"""The archive's index in a shared database (a real PostgreSQL server): two archivers
append to one hash chain at the same time and it verifies; tampering is still found;
retention by one archiver removes the other's files too."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxflow.store.archive import ARCHIVE, Archive
from mxflow.store.schema import migrate
from mxflow.store.sql import Database, open_database


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = open_database(pg_url)
    migrate(database, [ARCHIVE])
    yield database
    database.close()


def _append(archive: Archive, n: int, tag: str, now: float | None = None) -> None:
    for i in range(n):
        archive.append(
            f"Subject: {tag} {i}\r\n\r\nbody {tag} {i}\r\n".encode(),
            mail_from=f"{tag}@fabrikam.test",
            rcpt_tos=[f"bob{i % 3}@contoso.com"],
            now=now,
        )


def test_two_archivers_append_to_one_chain_at_once(db: Database, tmp_path: Path) -> None:
    a = Archive(tmp_path / "a", fsync=False, database=db, node="arch-a")
    b = Archive(tmp_path / "b", fsync=False, database=db, node="arch-b")
    threads = [
        threading.Thread(target=_append, args=(archive, 25, archive.node))
        for archive in (a, b, a, b)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = list(a.entries())
    assert [e.seq for e in entries] == list(range(1, 101))
    assert {e.node for e in entries} == {"arch-a", "arch-b"}
    assert a.verify() == [] and b.verify() == []
    assert sum(a.elsewhere(e) for e in entries) == 50  # b's files are on b's disk
    assert [e.seq for e in a.search(sender="arch-b@fabrikam.test")] == [
        e.seq for e in entries if e.node == "arch-b"
    ]


def test_tampering_with_a_shared_chain_is_found(db: Database, tmp_path: Path) -> None:
    a = Archive(tmp_path / "a", fsync=False, database=db, node="arch-a")
    b = Archive(tmp_path / "b", fsync=False, database=db, node="arch-b")
    _append(a, 2, "a")
    _append(b, 2, "b")
    db.execute("UPDATE archive_entries SET mail_from = 'x@evil.test' WHERE seq = 3")
    assert b.verify() == ["entry 3: index row altered (hash mismatch)"]
    db.execute("DELETE FROM archive_entries WHERE seq = 4")  # b's newest entry: its HEAD
    problems = b.verify()
    assert any("HEAD names entry 4" in p for p in problems)
    a.path_of(1).unlink()
    assert "entry 1: message file removed" in a.verify()
    assert "entry 1: message file removed" not in b.verify()  # not b's to check


def test_retention_on_one_archiver_removes_the_others_files(db: Database, tmp_path: Path) -> None:
    old = time.time() - 100 * 86400
    a = Archive(tmp_path / "a", fsync=False, database=db, node="arch-a")
    b = Archive(tmp_path / "b", fsync=False, database=db, node="arch-b")
    _append(a, 2, "a", now=old)
    _append(b, 2, "b", now=old)
    _append(a, 1, "a")
    assert a.expire(30 * 86400) == 4
    assert [e.seq for e in a.entries()] == [5]
    assert not a.path_of(1).exists() and b.path_of(3).exists()
    assert b.expire(30 * 86400) == 0
    assert not b.path_of(3).exists() and not b.path_of(4).exists()
    assert a.verify() == [] and b.verify() == []
    _append(b, 1, "b")
    assert [e.seq for e in b.entries()] == [5, 6] and a.verify() == []
