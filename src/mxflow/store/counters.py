"""Per-client connection counts shared by every worker and node (PostgreSQL).

Without a shared database each process counts its own clients in memory
(checks/connection.py, smtp/server.py), so N workers on M nodes let a client open N * M
times the limit. With one, every process counts here, and a limit holds for the whole
deployment:

* `counter_open` holds, per client and per node (a node's worker process), the sessions
  that node has open now. A node's rows count only while its lease in `counter_nodes` is
  current: each node renews it every `HEARTBEAT` seconds, so the sessions of a node that
  died (killed, host lost) stop counting `LEASE` seconds later, and a later sweep by any
  node deletes them. A node clears its own rows when it starts (what a crash left) and
  when it stops. Its own count is kept in memory as well: when a decrement could not be
  written (the database was down), the next heartbeat writes the true count back.
* `counter_starts` counts new sessions per client in `BUCKET`-second buckets (upserted);
  the rate is the sum of the buckets of the last minute (55 to 60 seconds, by the bucket
  edge), and old buckets are swept.

Admission is one statement, one round trip: on PostgreSQL the function
`mxflow_conn_admit` takes a transaction-scoped advisory lock on the client, sums, and
counts the session only when it is under both limits, so two nodes admitting the same
client at the same moment take turns and the limit is exact. The tables are UNLOGGED:
counts are worth nothing after a database crash, and a commit then needs no WAL flush.
Times are the nodes' clocks (keep them in step with NTP, as the trace needs anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass

from mxflow.store.schema import Component, Migration
from mxflow.store.sql import Database, StoreError, StoreUnavailable

log = logging.getLogger("mxflow.store")

LEASE = 30.0  # seconds a node's counts stay in force after its last heartbeat
HEARTBEAT = 10.0
BUCKET = 5  # seconds per rate bucket
WINDOW = 60  # the rate limit's window, seconds
TIMEOUT = 3.0  # the longest a session waits for its admission before a 4xx
UNLIMITED = 2**31 - 1

_TABLES = """
CREATE {unlogged}TABLE counter_nodes (
    node TEXT PRIMARY KEY,
    lease {real} NOT NULL
);
CREATE {unlogged}TABLE counter_open (
    ip TEXT NOT NULL,
    node TEXT NOT NULL,
    sessions INTEGER NOT NULL,
    PRIMARY KEY (ip, node)
);
CREATE INDEX counter_open_node ON counter_open (node);
CREATE {unlogged}TABLE counter_starts (
    ip TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    started INTEGER NOT NULL,
    PRIMARY KEY (ip, bucket)
);
CREATE INDEX counter_starts_bucket ON counter_starts (bucket);
"""

_ADMIT_FUNCTION = """
CREATE FUNCTION mxflow_conn_admit(
    p_ip TEXT, p_node TEXT, p_bucket BIGINT, p_since BIGINT, p_now DOUBLE PRECISION,
    p_max_open INTEGER, p_max_rate INTEGER
) RETURNS TABLE (open_before BIGINT, started_before BIGINT, counted BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
    n_open BIGINT;
    n_started BIGINT;
BEGIN
    -- one admission per client at a time, on every node; each statement below takes a
    -- fresh snapshot, so the sums see every admission committed before this one
    PERFORM pg_advisory_xact_lock(hashtextextended('mxflow-conn:' || p_ip, 0));
    SELECT coalesce(sum(c.sessions), 0) INTO n_open
      FROM counter_open c JOIN counter_nodes n ON n.node = c.node
     WHERE c.ip = p_ip AND n.lease >= p_now;
    SELECT coalesce(sum(s.started), 0) INTO n_started
      FROM counter_starts s WHERE s.ip = p_ip AND s.bucket >= p_since;
    IF n_open >= p_max_open OR n_started >= p_max_rate THEN
        RETURN QUERY SELECT n_open, n_started, false;
        RETURN;
    END IF;
    INSERT INTO counter_open AS c (ip, node, sessions) VALUES (p_ip, p_node, 1)
        ON CONFLICT (ip, node) DO UPDATE SET sessions = c.sessions + 1;
    INSERT INTO counter_starts AS s (ip, bucket, started) VALUES (p_ip, p_bucket, 1)
        ON CONFLICT (ip, bucket) DO UPDATE SET started = s.started + 1;
    RETURN QUERY SELECT n_open, n_started, true;
END
$$;
"""

COUNTERS = Component(
    "counters",
    (
        Migration(
            1,
            "per-client connection counts, node leases, rate buckets",
            _TABLES.format(unlogged="", real="REAL"),
            _TABLES.format(unlogged="UNLOGGED ", real="DOUBLE PRECISION") + _ADMIT_FUNCTION,
        ),
    ),
)

_OPEN_SUM = (
    "SELECT coalesce(sum(c.sessions), 0) FROM counter_open c"
    " JOIN counter_nodes n ON n.node = c.node WHERE c.ip = ? AND n.lease >= ?"
)
_RATE_SUM = "SELECT coalesce(sum(started), 0) FROM counter_starts WHERE ip = ? AND bucket >= ?"
_COUNT_OPEN = (
    "INSERT INTO counter_open (ip, node, sessions) VALUES (?, ?, 1) ON CONFLICT (ip, node)"
    " DO UPDATE SET sessions = counter_open.sessions + 1"
)
_COUNT_START = (
    "INSERT INTO counter_starts (ip, bucket, started) VALUES (?, ?, 1) ON CONFLICT (ip, bucket)"
    " DO UPDATE SET started = counter_starts.started + 1"
)
_RELEASE = (
    "UPDATE counter_open SET sessions = sessions - 1 WHERE ip = ? AND node = ? AND sessions > 0"
)
_REGISTER = (
    "INSERT INTO counter_nodes (node, lease) VALUES (?, ?)"
    " ON CONFLICT (node) DO UPDATE SET lease = excluded.lease"
)


@dataclass(frozen=True)
class Admission:
    """What the database answered for one new session of a client."""

    open: int  # the client's sessions open on every live node, before this one
    started: int  # the client's sessions started in the last minute, before this one
    counted: bool  # under both limits: counted (and to be released when it ends)


def buckets(now: float) -> tuple[int, int]:
    """The bucket `now` falls in, and the oldest bucket of the rate window."""
    return int(now // BUCKET), int((now - WINDOW) // BUCKET) + 1


class ConnectionCounters:
    """One node's (one worker process's) side of the shared counts.

    `node` names the process ("gw1/0": node name, worker); it must be unique in the
    deployment, as node names already are for the trace.
    """

    def __init__(
        self,
        db: Database,
        node: str,
        *,
        lease: float | None = None,
        heartbeat: float | None = None,
    ) -> None:
        self.db = db
        self.node = node
        self.lease = LEASE if lease is None else lease
        self.heartbeat = HEARTBEAT if heartbeat is None else heartbeat
        self.mine: Counter[str] = Counter()  # this process's open sessions per client
        self._registered = False
        self._dirty = False  # a release was lost: write `mine` back at the next beat
        self._pending: set[asyncio.Task[None]] = set()
        self._beating: asyncio.Task[None] | None = None
        self._failures = 0

    # ------------------------------------------------------------ the hot path

    async def admit(self, key: str, *, max_open: int, max_rate: int) -> Admission:
        """Count a new session of `key` if it is under both limits: one round trip.

        StoreUnavailable when the database cannot answer within `TIMEOUT` seconds."""
        try:
            async with asyncio.timeout(TIMEOUT):
                if not self._registered:
                    await self._register()
                admission = await self._admit(
                    key, min(max_open, UNLIMITED), min(max_rate, UNLIMITED)
                )
        except BaseException as exc:
            self._dirty = True  # counted or not, nobody knows: the next beat writes the truth
            if isinstance(exc, TimeoutError):
                raise StoreUnavailable(f"no answer from the counters in {TIMEOUT:g}s") from exc
            raise
        if admission.counted:
            self.mine[key] += 1
        return admission

    async def _admit(self, key: str, max_open: int, max_rate: int) -> Admission:
        now = time.time()
        bucket, since = buckets(now)
        if self.db.dialect == "postgresql":
            ((n_open, n_started, counted),) = await self.db.astatement(
                "SELECT open_before, started_before, counted"
                " FROM mxflow_conn_admit(?, ?, ?, ?, ?, ?, ?)",
                (key, self.node, bucket, since, now, max_open, max_rate),
            )
            return Admission(int(n_open), int(n_started), bool(counted))
        # SQLite: the whole transaction in one thread (one writer at a time anyway)
        return await asyncio.to_thread(self._admit_sync, key, max_open, max_rate, now)

    def _admit_sync(self, key: str, max_open: int, max_rate: int, now: float) -> Admission:
        bucket, since = buckets(now)
        with self.db.transaction() as tx:
            ((n_open,),) = tx.query(_OPEN_SUM, (key, now))
            ((n_started,),) = tx.query(_RATE_SUM, (key, since))
            if n_open >= max_open or n_started >= max_rate:
                return Admission(int(n_open), int(n_started), False)
            tx.execute(_COUNT_OPEN, (key, self.node))
            tx.execute(_COUNT_START, (key, bucket))
        return Admission(int(n_open), int(n_started), True)

    def release_soon(self, key: str) -> None:
        """A counted session of `key` has ended: uncount it in the background (the
        session is over; nobody waits for this)."""
        self.mine[key] -= 1
        if self.mine[key] <= 0:
            del self.mine[key]
        task = asyncio.get_running_loop().create_task(self.release(key))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def release(self, key: str) -> None:
        """Uncount one session of `key` in the database: one round trip. A failure is
        repaired by the next heartbeat (it writes this node's true counts)."""
        try:
            async with asyncio.timeout(TIMEOUT):
                await self.db.astatement(_RELEASE, (key, self.node))
        except (StoreError, TimeoutError) as exc:
            self._dirty = True
            self._log_failure("release", exc)

    # ------------------------------------------------------------ the node's lease

    async def start(self) -> None:
        """Clear what an earlier life of this node left, take a lease, and keep it."""
        async with self.db.atransaction() as tx:
            await tx.execute("DELETE FROM counter_open WHERE node = ?", (self.node,))
            await tx.execute(_REGISTER, (self.node, time.time() + self.lease))
        self._registered = True
        self._beating = asyncio.get_running_loop().create_task(self._beat_forever())

    async def _register(self) -> None:
        await self.db.astatement(_REGISTER, (self.node, time.time() + self.lease))
        self._registered = True

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.beat()
            except Exception as exc:  # the database is down, or worse: keep beating
                self._log_failure("heartbeat", exc)

    async def beat(self) -> None:
        """Renew the lease; write this node's counts back if they were lost; sweep."""
        now = time.time()
        async with asyncio.timeout(TIMEOUT):
            renewed = await self.db.aexecute(
                "UPDATE counter_nodes SET lease = ? WHERE node = ?", (now + self.lease, self.node)
            )
            if not renewed:  # swept as dead (a long stall): our rows went with the lease
                await self._register()
                self._dirty = True
            if self._dirty:
                await self._resync()
            await self._sweep(now)
        self._failures = 0

    async def _resync(self) -> None:
        """Make this node's rows its true counts (after a lost release or a sweep)."""
        self._dirty = False
        try:
            async with self.db.atransaction() as tx:
                await tx.execute("DELETE FROM counter_open WHERE node = ?", (self.node,))
                for key, sessions in sorted(self.mine.items()):
                    await tx.execute(
                        "INSERT INTO counter_open (ip, node, sessions) VALUES (?, ?, ?)",
                        (key, self.node, sessions),
                    )
        except BaseException:
            self._dirty = True
            raise

    async def _sweep(self, now: float) -> None:
        """Delete the rows of nodes dead for a lease, empty rows, and past buckets."""
        dead = now - self.lease
        async with self.db.atransaction() as tx:
            await tx.execute(
                "DELETE FROM counter_open WHERE node = ? AND sessions <= 0", (self.node,)
            )
            await tx.execute(
                "DELETE FROM counter_open WHERE node IN"
                " (SELECT node FROM counter_nodes WHERE lease < ?)",
                (dead,),
            )
            await tx.execute("DELETE FROM counter_nodes WHERE lease < ?", (dead,))
            await tx.execute("DELETE FROM counter_starts WHERE bucket < ?", (buckets(now)[1],))

    async def stop(self) -> None:
        """Stop the heartbeat, finish the releases in flight, and withdraw this node's rows."""
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=TIMEOUT)
        with contextlib.suppress(StoreError, TimeoutError):
            async with asyncio.timeout(TIMEOUT), self.db.atransaction() as tx:
                await tx.execute("DELETE FROM counter_open WHERE node = ?", (self.node,))
                await tx.execute("DELETE FROM counter_nodes WHERE node = ?", (self.node,))
        self._registered = False

    def _log_failure(self, what: str, exc: BaseException) -> None:
        """Log the 1st, 2nd, 4th, 8th ... failure in a row: an outage is not a flood."""
        self._failures += 1
        if self._failures & (self._failures - 1) == 0:
            log.error("connection counters: %s failed (%d in a row): %s", what, self._failures, exc)
