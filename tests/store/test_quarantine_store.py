"""The quarantine on both databases, and several nodes sharing one: every node sees what
any node held, a release is done once even when two nodes release at the same moment,
and an expiry run on every node expires each message once."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mxflow.mail import Action, MessageContext, Symbol, Verdict
from mxflow.store.quarantine import Quarantine, QuarantineEntry, QuarantineError, release_recipient
from mxflow.store.registry import COMPONENTS
from mxflow.store.schema import current_versions, migrate
from mxflow.store.sql import Database, open_database

SPAM = Verdict(
    action=Action.QUARANTINE,
    score=11.5,
    scl=7,
    reason="spam score 11.5",
    symbols=[Symbol("BAYES_SPAM", 11.5, "p=0.999")],
)
RAW = (
    b"From: a@fabrikam.test\r\nSubject: pills\r\nMessage-ID: <q1@fabrikam.test>\r\n\r\n"
    b"\x00\xffbody\r\n"  # bytes no text column would take
)


def ctx() -> MessageContext:
    return MessageContext(
        client_ip="127.66.0.9",
        mail_from="spammer@bad.example",
        rcpt_tos=["bob@contoso.com", "carol@contoso.com"],
        raw=RAW,
        queue_id="Q123",
    )


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Database]:
    """A migrated database; closed on the test's loop (its async pool lives there)."""
    database = open_database(pg_url)
    migrate(database, COMPONENTS)
    yield database
    await database.aclose()


@pytest.fixture(params=["sqlite", "postgresql"])
def two_nodes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Quarantine, Quarantine]]:
    """Two nodes' view of one quarantine: one folder (two processes of a node), or one
    PostgreSQL database (two nodes); each with its own event log."""
    if request.param == "sqlite":
        yield Quarantine(tmp_path / "q"), Quarantine(tmp_path / "q")
        return
    database = request.getfixturevalue("pg")
    a = Quarantine(tmp_path / "a", database=database)
    b = Quarantine(tmp_path / "b", database=database)
    yield a, b


def _log(q: Quarantine) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []

    def on_event(entry: QuarantineEntry, event: str, detail: str) -> None:
        events.append((entry.id, event))

    q.on_event = on_event
    return events


async def test_what_one_node_holds_another_lists_shows_and_deletes(
    pg: Database, tmp_path: Path
) -> None:
    a = Quarantine(tmp_path / "a", database=pg)
    b = Quarantine(tmp_path / "b", database=pg)
    qid = await a.quarantine(ctx(), SPAM)
    assert not (tmp_path / "a").exists()  # index and body are rows, not files
    (entry,) = b.list()
    assert entry.id == qid and entry.subject == "pills" and entry.rcpt_tos == ctx().rcpt_tos
    shown, raw = b.show(qid)
    assert shown == entry and raw == RAW
    assert b.verify_release(f"X-Mxflow-Released: {qid}\r\n".encode() + RAW) == qid
    assert b.verify_release(f"X-Mxflow-Released: {qid}\r\n".encode() + RAW + b"x") is None
    b.delete(qid)
    with pytest.raises(QuarantineError, match="no quarantined message"):
        a.delete(qid)
    assert a.list(state=None) == []


async def test_two_nodes_releasing_at_once_deliver_once(
    two_nodes: tuple[Quarantine, Quarantine],
) -> None:
    a, b = two_nodes
    qid = a.store(ctx(), SPAM)
    sent: list[tuple[str, list[str]]] = []

    async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        sent.append((mail_from, rcpts))
        await asyncio.sleep(0.2)  # the other release runs meanwhile
        return "NEWQ"

    results = await asyncio.gather(
        a.release(qid, reinject), b.release(qid, reinject), return_exceptions=True
    )
    assert sorted(map(str, results)) == ["NEWQ", f"message {qid} is releasing, not held"]
    assert sent == [("spammer@bad.example", ["bob@contoso.com", "carol@contoso.com"])]
    entry = b.get(qid)
    assert (entry.state, entry.released_queue_id) == ("released", "NEWQ")
    with pytest.raises(QuarantineError, match="released, not held"):
        await b.release(qid, reinject)


async def test_a_failed_reinjection_leaves_the_message_held(
    two_nodes: tuple[Quarantine, Quarantine],
) -> None:
    a, b = two_nodes
    qid = a.store(ctx(), SPAM)

    async def broken(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        raise ConnectionError("next hop down")

    with pytest.raises(ConnectionError):
        await a.release(qid, broken)
    assert b.get(qid).state == "held"


async def test_digest_links_release_each_recipient_once(
    two_nodes: tuple[Quarantine, Quarantine],
) -> None:
    """Bob and Carol click their links at the same moment on two nodes, and Bob twice:
    each gets the message once; then it is released, and an administrator's release
    has nobody left to send it to."""
    a, b = two_nodes
    qid = a.store(ctx(), SPAM)
    sent: list[str] = []

    async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        sent.extend(rcpts)
        await asyncio.sleep(0.05)
        return f"Q{len(sent)}"

    results = await asyncio.gather(
        release_recipient(a, qid, "BOB@contoso.com", reinject),
        release_recipient(b, qid, "carol@contoso.com", reinject),
        release_recipient(b, qid, "bob@contoso.com", reinject),
        return_exceptions=True,
    )
    assert sorted(sent) == ["bob@contoso.com", "carol@contoso.com"]
    errors = [str(r) for r in results if isinstance(r, QuarantineError)]
    assert len(errors) == 1, results  # already released to bob, or no longer held at all
    assert "already released to" in errors[0] or "not held" in errors[0]
    assert a.get(qid).state == "released"
    assert sorted(b.get(qid).released_rcpts) == ["bob@contoso.com", "carol@contoso.com"]


async def test_every_node_expiring_at_once_expires_each_message_once(
    two_nodes: tuple[Quarantine, Quarantine],
) -> None:
    a, b = two_nodes
    old = [a.store(ctx(), SPAM, now=1_000_000.0) for _ in range(20)]
    kept = a.store(ctx(), SPAM)
    a_events, b_events = _log(a), _log(b)
    gone_a, gone_b = await asyncio.gather(asyncio.to_thread(a.expire), asyncio.to_thread(b.expire))
    assert sorted(gone_a + gone_b) == sorted(old)
    assert len(a_events) + len(b_events) == 20
    assert {e for _, e in a_events + b_events} == {"expired"}
    assert [e.id for e in b.list()] == [kept]


async def test_a_message_being_released_is_not_expired_under_it(
    two_nodes: tuple[Quarantine, Quarantine],
) -> None:
    a, b = two_nodes
    qid = a.store(ctx(), SPAM, now=1_000_000.0)
    started = asyncio.Event()

    async def slow(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "NEWQ"

    release = asyncio.create_task(a.release(qid, slow))
    await started.wait()
    assert await asyncio.to_thread(b.expire) == []
    assert await release == "NEWQ"
    assert await asyncio.to_thread(b.expire) == [qid]  # released: its retention still ends


OLD_INDEX = """
CREATE TABLE quarantine (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, expires REAL NOT NULL, kind TEXT NOT NULL,
    state TEXT NOT NULL, queue_id TEXT NOT NULL, message_id TEXT NOT NULL,
    client_ip TEXT NOT NULL, mail_from TEXT NOT NULL, rcpt_tos TEXT NOT NULL,
    subject TEXT NOT NULL, score REAL NOT NULL, scl INTEGER NOT NULL, reason TEXT NOT NULL,
    symbols TEXT NOT NULL, size INTEGER NOT NULL, released_ts REAL,
    released_queue_id TEXT NOT NULL DEFAULT ''
);
"""


async def test_a_quarantine_folder_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    """An index without `released_rcpts` or `schema_versions` keeps its messages."""
    folder = tmp_path / "q"
    (folder / "messages").mkdir(parents=True)
    (folder / "messages" / "abc123.eml").write_bytes(RAW)
    with sqlite3.connect(folder / "quarantine.sqlite") as old:
        old.executescript(OLD_INDEX)
        old.execute(
            "INSERT INTO quarantine VALUES ('abc123', 1.0, 9e12, 'spam', 'held', 'Q1', '<q1@x>',"
            " '127.0.0.1', 'a@b', '[\"bob@contoso.com\"]', 's', 9.0, 7, 'spam', '[]', 10,"
            " NULL, '')"
        )
    old.close()
    q = Quarantine(folder)
    assert current_versions(q.db) == {"quarantine": 1}
    entry, raw = q.show("abc123")
    assert (entry.released_rcpts, raw) == ([], RAW)
    sent: list[str] = []

    async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        sent.extend(rcpts)
        return "NEWQ"

    assert await release_recipient(q, "abc123", "bob@contoso.com", reinject) == "NEWQ"
    assert sent == ["bob@contoso.com"] and q.get("abc123").state == "released"


async def test_a_release_claim_left_by_a_dead_node_is_taken_over(
    two_nodes: tuple[Quarantine, Quarantine],
) -> None:
    """A node that died between claiming and re-injecting leaves the message 'releasing':
    a fresh claim is respected, one older than CLAIM_TIMEOUT is taken over."""
    from mxflow.store.quarantine import CLAIM_TIMEOUT

    a, b = two_nodes
    qid = a.store(ctx(), SPAM)

    async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        return "NEWQ"

    claimed = time.time()
    a.db.execute("UPDATE quarantine SET state = 'releasing', released_ts = ?", (claimed,))
    with pytest.raises(QuarantineError, match="releasing, not held"):
        await b.release(qid, reinject)
    stale = claimed - CLAIM_TIMEOUT - 1
    a.db.execute("UPDATE quarantine SET released_ts = ?", (stale,))
    assert await b.release(qid, reinject) == "NEWQ"
    assert a.get(qid).state == "released"
