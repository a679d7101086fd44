"""The shared connection counts against a real SQLite file and a real PostgreSQL server:
limits over several nodes, exact under concurrent admissions, a dead node's sessions
expiring with its lease, lost releases repaired by the heartbeat."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxflow.store.counters import COUNTERS, ConnectionCounters
from mxflow.store.schema import migrate
from mxflow.store.sql import Database, StoreUnavailable, open_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (
        str(tmp_path / "c.sqlite")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    database = open_database(url)
    migrate(database, [COUNTERS])
    yield database
    database.close()


async def test_the_limit_on_open_sessions_holds_across_nodes(db: Database) -> None:
    a, b = ConnectionCounters(db, "a/0"), ConnectionCounters(db, "b/0")
    await a.start()
    await b.start()
    for n in range(3):
        admitted = await (a if n % 2 else b).admit("192.0.2.1", max_open=3, max_rate=100)
        assert admitted.counted and admitted.open == n
    refused = await a.admit("192.0.2.1", max_open=3, max_rate=100)
    assert (refused.counted, refused.open, refused.started) == (False, 3, 3)
    assert (await b.admit("192.0.2.2", max_open=3, max_rate=100)).counted  # another client
    await b.release("192.0.2.1")
    assert (await a.admit("192.0.2.1", max_open=3, max_rate=100)).counted
    await a.stop()
    await b.stop()
    await db.aclose()


async def test_the_rate_counts_admitted_sessions_of_the_last_minute(db: Database) -> None:
    a, b = ConnectionCounters(db, "a/0"), ConnectionCounters(db, "b/0")
    for counters in (a, b):
        for _ in range(2):
            admitted = await counters.admit("192.0.2.1", max_open=100, max_rate=4)
            assert admitted.counted
            await counters.release("192.0.2.1")
    refused = await a.admit("192.0.2.1", max_open=100, max_rate=4)
    assert (refused.counted, refused.open, refused.started) == (False, 0, 4)
    refused = await b.admit("192.0.2.1", max_open=100, max_rate=4)
    assert refused.started == 4  # a refusal is not counted as a start
    await db.aexecute("UPDATE counter_starts SET bucket = bucket - 13")  # a minute ago
    assert (await b.admit("192.0.2.1", max_open=100, max_rate=4)).counted
    await db.aclose()


async def test_a_dead_nodes_sessions_stop_counting_when_its_lease_ends(db: Database) -> None:
    dead = ConnectionCounters(db, "dead/0", lease=0.5)
    await dead.start()
    for _ in range(2):
        assert (await dead.admit("192.0.2.9", max_open=2, max_rate=100)).counted
    dead._beating.cancel()  # type: ignore[union-attr]  # killed: no more heartbeats, no stop
    live = ConnectionCounters(db, "live/0", lease=0.5)
    await live.start()
    assert not (await live.admit("192.0.2.9", max_open=2, max_rate=100)).counted
    await asyncio.sleep(0.6)
    admitted = await live.admit("192.0.2.9", max_open=2, max_rate=100)
    assert admitted.counted and admitted.open == 0
    await asyncio.sleep(0.6)
    await live.beat()  # any live node sweeps the dead one's rows
    assert await db.aquery("SELECT node FROM counter_open") == [("live/0",)]
    assert await db.aquery("SELECT node FROM counter_nodes") == [("live/0",)]
    await live.stop()
    assert await db.aquery("SELECT count(*) FROM counter_open") == [(0,)]
    await db.aclose()


async def test_a_restarted_node_clears_what_its_earlier_life_left(db: Database) -> None:
    before = ConnectionCounters(db, "gw/0")
    await before.start()
    assert (await before.admit("192.0.2.3", max_open=1, max_rate=100)).counted
    before._beating.cancel()  # type: ignore[union-attr]
    again = ConnectionCounters(db, "gw/0")
    await again.start()
    assert (await again.admit("192.0.2.3", max_open=1, max_rate=100)).counted
    await again.stop()
    await db.aclose()


async def test_a_lost_release_is_written_back_by_the_next_heartbeat(db: Database) -> None:
    counters = ConnectionCounters(db, "gw/0")
    await counters.start()
    for _ in range(2):
        assert (await counters.admit("192.0.2.4", max_open=2, max_rate=100)).counted
    counters.mine["192.0.2.4"] -= 1  # released in memory; the database never heard of it
    counters._dirty = True
    assert not (await counters.admit("192.0.2.4", max_open=2, max_rate=100)).counted
    await counters.beat()
    assert (await counters.admit("192.0.2.4", max_open=2, max_rate=100)).counted
    await counters.stop()
    await db.aclose()


async def test_concurrent_admissions_from_many_nodes_never_pass_the_limit(db: Database) -> None:
    nodes = [ConnectionCounters(db, f"n{i}/0") for i in range(4)]
    for node in nodes:
        await node.start()
    results = await asyncio.gather(
        *(nodes[i % 4].admit("192.0.2.5", max_open=5, max_rate=1000) for i in range(24))
    )
    assert sum(r.counted for r in results) == 5
    for node in nodes:
        await node.stop()
    await db.aclose()


async def test_an_unreachable_database_is_store_unavailable() -> None:
    from mxflow.lab.postgres import free_port

    db = open_database(f"postgresql://mxflow@127.0.0.1:{free_port()}/mxflow")
    counters = ConnectionCounters(db, "gw/0")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await counters.admit("192.0.2.1", max_open=5, max_rate=5)
    assert time.monotonic() - started < 6
    await db.aclose()
