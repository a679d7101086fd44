"""The PostgreSQL side of the store seam (psycopg 3 with its connection pools).

Several nodes share one database: a sync pool serves the threads (trace writer, CLI, web)
and an async pool serves the event loop, so a node's SMTP sessions wait on the database
without tying up threads. Both open lazily, so a command that never touches the database
never connects. Pools are per process (a node's workers each have their own). A pooled
connection is checked (one empty round trip) before it is handed out, so after the server
restarts the first transaction gets a fresh connection instead of a dead one: a node
recovers by itself when the database returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool

from mxflow.store.sql import (
    CONNECT_TIMEOUT,
    Args,
    AsyncCursor,
    Cursor,
    Database,
    Row,
    StoreUnavailable,
    to_pyformat,
)

POOL_SIZE = 8  # connections per process and pool; PostgreSQL's default limit is 100
# A pool's reconnection attempt backs off (1 s, 2 s, 4 s…) until it gives up; after that
# the next request starts a fresh one. psycopg's default (300 s) lets the backoff reach
# minutes, so a node would notice a returned database late; 10 s keeps it within seconds.
RECONNECT_TIMEOUT = 10.0

# The pool warns (two lines) at every failed connection attempt: during an outage that is
# a line a second per pool. The stores say it once per outage, and what failed is in the
# StoreUnavailable every caller gets, so the pool keeps only its errors.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _redacted(url: str) -> str:
    """The URL without a password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}@{host}"


class _Cursor:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Args = ()) -> int:
        return self._conn.execute(to_pyformat(sql), tuple(args)).rowcount

    def executemany(self, sql: str, rows: Sequence[Args]) -> int:
        with self._conn.cursor() as cur:
            cur.executemany(to_pyformat(sql), [tuple(r) for r in rows])
            return cur.rowcount

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        return self._conn.execute(to_pyformat(sql), tuple(args)).fetchall()


class _AsyncCursor:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Args = ()) -> int:
        cur = await self._conn.execute(to_pyformat(sql), tuple(args))
        return cur.rowcount

    async def query(self, sql: str, args: Args = ()) -> list[Row]:
        cur = await self._conn.execute(to_pyformat(sql), tuple(args))
        return await cur.fetchall()


class PostgresDatabase(Database):
    """One PostgreSQL database shared by every node of a deployment."""

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.display = _redacted(url)
        self._size = pool_size
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._apool: psycopg_pool.AsyncConnectionPool | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None

    def _sync_pool(self) -> psycopg_pool.ConnectionPool:
        if self._pool is None:
            self._pool = psycopg_pool.ConnectionPool(
                self.url,
                min_size=1,
                max_size=self._size,
                open=True,
                timeout=CONNECT_TIMEOUT,
                reconnect_timeout=RECONNECT_TIMEOUT,
                check=psycopg_pool.ConnectionPool.check_connection,
            )
        return self._pool

    async def _async_pool(self) -> psycopg_pool.AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        if self._apool is None or self._aloop is not loop:
            self._apool = psycopg_pool.AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self._size,
                open=False,
                timeout=CONNECT_TIMEOUT,
                reconnect_timeout=RECONNECT_TIMEOUT,
                check=psycopg_pool.AsyncConnectionPool.check_connection,
            )
            self._aloop = loop
            await self._apool.open()
        return self._apool

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        try:
            with self._sync_pool().connection() as conn, conn.transaction():
                yield _Cursor(conn)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as e:
            raise StoreUnavailable(f"PostgreSQL at {self.display}: {e}") from e

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[AsyncCursor]:
        try:
            pool = await self._async_pool()
            async with pool.connection() as conn, conn.transaction():
                yield _AsyncCursor(conn)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as e:
            raise StoreUnavailable(f"PostgreSQL at {self.display}: {e}") from e

    async def astatement(self, sql: str, args: Args = ()) -> list[Row]:
        """One statement in autocommit: one round trip instead of BEGIN, it, COMMIT."""
        try:
            pool = await self._async_pool()
            async with pool.connection() as conn:
                await conn.set_autocommit(True)
                try:
                    cur = await conn.execute(to_pyformat(sql), tuple(args))
                    return await cur.fetchall() if cur.description else []
                finally:
                    await conn.set_autocommit(False)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as e:
            raise StoreUnavailable(f"PostgreSQL at {self.display}: {e}") from e

    def lock(self, tx: Cursor, name: str) -> None:
        """A transaction-scoped advisory lock: two nodes migrating at once take turns."""
        tx.query("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(name.encode()),))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def aclose(self) -> None:
        if self._apool is not None:
            await self._apool.close()
            self._apool = None
        await asyncio.to_thread(self.close)
