"""One database seam for the stores: SQLite for one node, PostgreSQL for several.

A store (trace, quarantine, directory, …) writes its SQL once: `?` placeholders,
`ON CONFLICT … DO …` upserts and `RETURNING`, which SQLite (3.35+) and PostgreSQL both
speak; only the placeholders are rewritten for psycopg. Types that differ (BLOB / BYTEA,
autoincrement keys) live in each store's migrations, which carry one script per dialect.

The interface is synchronous, for the threads that already do the stores' I/O (the trace
writer, `asyncio.to_thread` around quarantine and directory calls, the CLI), and has
async twins for the event loop: on PostgreSQL they use psycopg's async pool, so a node
waits on the network without a thread; on SQLite they run the sync call in a thread.
Every failure to reach the database is `StoreUnavailable`, which the SMTP side turns into
a 4xx: a node never acknowledges what it cannot record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from mxflow.errors import MxflowError, Unavailable

Row = tuple[Any, ...]
Args = Sequence[object]
CONNECT_TIMEOUT = 5.0  # seconds to get a connection before the store counts as down


class StoreError(MxflowError):
    """A store's database refused an operation."""


class StoreUnavailable(StoreError, Unavailable):
    """The database cannot be reached now (down, pool exhausted, locked): try again later.

    An `Unavailable` (exit status 3), so a node that cannot reach its database at start is
    restarted by its service manager rather than taken for a bad configuration."""


class Cursor(Protocol):
    """What a transaction offers: statements on one connection, committed together."""

    def execute(self, sql: str, args: Args = ()) -> int: ...

    def executemany(self, sql: str, rows: Sequence[Args]) -> int:
        """One statement for many rows (psycopg pipelines them: one round trip)."""
        ...

    def query(self, sql: str, args: Args = ()) -> list[Row]: ...


class AsyncCursor(Protocol):
    async def execute(self, sql: str, args: Args = ()) -> int: ...

    async def query(self, sql: str, args: Args = ()) -> list[Row]: ...


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """`?` placeholders → `%s` (and a literal `%` → `%%`) for psycopg."""
    return re.sub(r"\?", "%s", sql.replace("%", "%%"))


def statements(script: str) -> list[str]:
    """A migration script's statements (split at `;` ending a line; no `;` inside strings).

    A `$$`-quoted body (a PostgreSQL function's) stays whole: its own lines end in `;`."""
    found: list[str] = []
    pending = ""
    for piece in re.split(r";\s*$", script, flags=re.M):
        pending = f"{pending};\n{piece}" if pending else piece
        if pending.count("$$") % 2 == 0:
            if pending.strip():
                found.append(pending.strip())
            pending = ""
    if pending.strip():
        found.append(pending.strip())
    return found


class Database:
    """The interface every store talks to; `open_database` picks the implementation."""

    dialect: str = ""
    url: str = ""

    def execute(self, sql: str, args: Args = ()) -> int:
        with self.transaction() as tx:
            return tx.execute(sql, args)

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        with self.transaction() as tx:
            return tx.query(sql, args)

    def transaction(self) -> contextlib.AbstractContextManager[Cursor]:
        raise NotImplementedError

    async def aexecute(self, sql: str, args: Args = ()) -> int:
        async with self.atransaction() as tx:
            return await tx.execute(sql, args)

    async def aquery(self, sql: str, args: Args = ()) -> list[Row]:
        async with self.atransaction() as tx:
            return await tx.query(sql, args)

    def atransaction(self) -> contextlib.AbstractAsyncContextManager[AsyncCursor]:
        raise NotImplementedError

    async def astatement(self, sql: str, args: Args = ()) -> list[Row]:
        """One statement that commits on its own. On PostgreSQL it is one network round trip
        (no BEGIN and COMMIT around it), for the SMTP hot path: connection counting."""
        return await self.aquery(sql, args)

    def run_script(self, tx: Cursor, script: str) -> None:
        for statement in statements(script):
            tx.execute(statement)

    def lock(self, tx: Cursor, name: str) -> None:
        """Serialise with other nodes for this transaction (migrations): no-op on SQLite."""

    def close(self) -> None:
        """Release connections (the async pool is closed by `aclose`)."""

    async def aclose(self) -> None:
        self.close()


def open_database(url: str | Path) -> Database:
    """A `postgresql://` URL, or a SQLite file (`sqlite:///abs`, `sqlite:rel` or a path)."""
    text = str(url)
    if is_postgres_url(text):
        from mxflow.store.postgres import PostgresDatabase

        return PostgresDatabase(text)
    if text.startswith("sqlite:"):
        text = text.removeprefix("sqlite:").removeprefix("//")
    return SqliteDatabase(Path(text))


class _SqliteCursor:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, args: Args = ()) -> int:
        return self._db.execute(sql, tuple(args)).rowcount

    def executemany(self, sql: str, rows: Sequence[Args]) -> int:
        return self._db.executemany(sql, [tuple(r) for r in rows]).rowcount

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        return self._db.execute(sql, tuple(args)).fetchall()


class _SqliteAsyncCursor:
    """The async face of a SQLite transaction: each statement in a thread."""

    def __init__(self, cursor: _SqliteCursor) -> None:
        self._cursor = cursor

    async def execute(self, sql: str, args: Args = ()) -> int:
        return await asyncio.to_thread(self._cursor.execute, sql, args)

    async def query(self, sql: str, args: Args = ()) -> list[Row]:
        return await asyncio.to_thread(self._cursor.query, sql, args)


class SqliteDatabase(Database):
    """A SQLite file in WAL mode, one connection per thread; shared by a node's workers.

    `synchronous` is SQLite's: NORMAL (the default) may lose the last commits to a power
    cut but never corrupts; FULL syncs every commit, for what a 250 depends on (the
    quarantine's index)."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous={synchronous!r}: NORMAL or FULL")
        self.path = path
        self.synchronous = synchronous
        self.url = f"sqlite:///{path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = _connect_sqlite(self.path, self.synchronous)
            self._local.db = db
            with self._guard:
                self._all.append(db)
        return db

    def execute(self, sql: str, args: Args = ()) -> int:
        with self._single():
            return self._connection().execute(sql, tuple(args)).rowcount

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        """One statement in autocommit: in WAL mode a read never waits for the write lock,
        so the host's directory lookups (inline, at RCPT) cost what a plain read costs."""
        with self._single():
            return self._connection().execute(sql, tuple(args)).fetchall()

    @contextlib.contextmanager
    def _single(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise StoreUnavailable(f"{self.path}: {e}") from e
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"{self.path}: {e}") from e
        try:
            yield _SqliteCursor(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[AsyncCursor]:
        db = await asyncio.to_thread(_connect_sqlite, self.path, self.synchronous)
        try:
            await asyncio.to_thread(db.execute, "BEGIN IMMEDIATE")
            try:
                yield _SqliteAsyncCursor(_SqliteCursor(db))
            except BaseException:
                await asyncio.to_thread(db.execute, "ROLLBACK")
                raise
            await asyncio.to_thread(db.execute, "COMMIT")
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"{self.path}: {e}") from e
        finally:
            db.close()

    def close(self) -> None:
        with self._guard:
            for db in self._all:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._all.clear()
        self._local = threading.local()


def _connect_sqlite(
    path: Path, synchronous: str = "NORMAL", attempts: int = 100
) -> sqlite3.Connection:
    """WAL, autocommit (transactions are explicit); retried while another process holds
    the write lock for the journal-mode switch, which SQLite refuses at once."""
    for attempt in range(attempts):
        try:
            db = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            return db
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise StoreUnavailable(f"{path}: {exc}") from exc
            time.sleep(0.05)
    raise AssertionError("unreachable")
