"""The archiver's journal: the hash chain catches an edited, removed or reordered entry;
retention keeps the chain verifiable; search and export through the command line."""

from __future__ import annotations

import json
import mailbox
import sqlite3
import time
from pathlib import Path

from mxflow.store.archive import Archive
from tests.clirun import mxflow


def _filled(root: Path, n: int = 4, *, now: float | None = None) -> Archive:
    archive = Archive(root, fsync=False)
    base = now or time.time()
    for i in range(n):
        raw = f"From: a{i}@fabrikam.test\r\nSubject: {i}\r\n\r\nFrom the start {i}\r\n".encode()
        archive.append(
            raw,
            mail_from=f"a{i}@fabrikam.test",
            rcpt_tos=[f"bob{i % 2}@contoso.com"],
            now=base + i,
        )
    return archive


def test_an_intact_archive_verifies(tmp_path: Path) -> None:
    archive = _filled(tmp_path)
    assert archive.verify() == []
    assert [e.seq for e in archive.entries()] == [1, 2, 3, 4]


def test_an_edited_message_file_is_found(tmp_path: Path) -> None:
    archive = _filled(tmp_path)
    path = archive.path_of(2)
    path.write_bytes(path.read_bytes().replace(b"Subject: 1", b"Subject: X"))
    assert archive.verify() == ["entry 2: message file altered"]


def test_an_edited_index_row_is_found(tmp_path: Path) -> None:
    archive = _filled(tmp_path)
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("UPDATE archive_entries SET mail_from = 'x@evil.test' WHERE seq = 3")
    assert archive.verify() == ["entry 3: index row altered (hash mismatch)"]


def test_a_removed_entry_is_found(tmp_path: Path) -> None:
    archive = _filled(tmp_path)
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("DELETE FROM archive_entries WHERE seq = 2")
    archive.path_of(2).unlink()
    problems = archive.verify()
    assert "entry 2: missing (next is 3)" in problems
    assert "entry 3: does not chain to the entry before it" in problems


def test_removing_the_newest_entries_is_found(tmp_path: Path) -> None:
    archive = _filled(tmp_path)
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("DELETE FROM archive_entries WHERE seq = 4")
    assert any("entries removed" in p for p in archive.verify())


def test_reordered_entries_are_found(tmp_path: Path) -> None:
    archive = _filled(tmp_path)
    with sqlite3.connect(tmp_path / "index.sqlite") as db:  # swap entries 2 and 3 whole
        db.execute("UPDATE archive_entries SET seq = -2 WHERE seq = 2")
        db.execute("UPDATE archive_entries SET seq = 2 WHERE seq = 3")
        db.execute("UPDATE archive_entries SET seq = 3 WHERE seq = -2")
    two, three = archive.path_of(2), archive.path_of(3)
    data2, data3 = two.read_bytes(), three.read_bytes()
    two.write_bytes(data3)
    three.write_bytes(data2)
    problems = archive.verify()
    assert any("entry 2" in p for p in problems) and any("entry 3" in p for p in problems)


def test_retention_removes_the_oldest_and_the_chain_still_verifies(tmp_path: Path) -> None:
    archive = _filled(tmp_path, 5, now=time.time() - 100 * 86400)
    archive.append(
        b"Subject: new\r\n\r\nnew\r\n", mail_from="n@fabrikam.test", rcpt_tos=["bob@contoso.com"]
    )
    assert archive.expire(30 * 86400) == 5
    assert [e.seq for e in archive.entries()] == [6]
    assert archive.verify() == []
    assert not archive.path_of(1).exists()
    entry = archive.append(
        b"Subject: later\r\n\r\n", mail_from="l@fabrikam.test", rcpt_tos=["x@contoso.com"]
    )
    assert entry.seq == 7 and archive.verify() == []


async def test_the_command_line_verifies_searches_and_exports(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    _filled(root).close()
    code, out, _ = await mxflow("archive", "--archive", str(root), "verify")
    assert code == 0 and "4 entries, chain intact" in out
    code, out, _ = await mxflow(
        "archive", "--archive", str(root), "search", "--recipient", "bob1@contoso.com", "--json"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["seq"] for r in rows] == [2, 4]
    assert rows[0]["mail_from"] == "a1@fabrikam.test"
    code, out, _ = await mxflow(
        "archive", "--archive", str(root), "search", "--sender", "a0@fabrikam.test", "--since",
        "2000-01-01", "--until", "2100-01-01",
    )  # fmt: skip
    assert code == 0 and len(out.splitlines()) == 1
    mbox_path = tmp_path / "out.mbox"
    code, _, _ = await mxflow("archive", "--archive", str(root), "export", "--mbox", str(mbox_path))
    assert code == 0
    messages = list(mailbox.mbox(mbox_path))
    assert [m["Subject"] for m in messages] == ["0", "1", "2", "3"]
    # mboxrd quoting: a body line starting "From " is written ">From " (readers unquote it)
    assert messages[2].get_payload().strip() == ">From the start 2"
    Archive(root).path_of(1).write_bytes(b"tampered")
    code, out, _ = await mxflow("archive", "--archive", str(root), "verify")
    assert code == 1 and "entry 1: message file altered" in out
