"""The queue runner: delivers spooled messages, retries with back-off, bounces, and obeys
`mxflow queue` requests.

Fresh messages come straight from the SMTP server with their bytes in memory (no re-read);
deferred and recovered ones are read from the spool. A message's recipients are grouped
by next hop, one transaction per group. Per recipient: 2xx -> delivered, 5xx -> bounced
(one DSN per attempt listing them all), 4xx or no session -> deferred until the next
attempt (the retry schedule, its last interval repeated) unless the message is older than
the lifetime, in which case it is bounced with 4.4.7 made permanent.

Draining (`mxflow queue drain`, seen in the control directory like the other requests)
attempts every scheduled message at once and waits until none is left to attempt (held
ones stay held) or the drain's timeout passes; the node then stops (roles/node.py).

Stopping (SIGTERM) stops taking new work, lets in-flight attempts finish for a grace
period, and cancels the rest: their messages stay in the spool and are retried at the
next start, so nothing is lost, at worst delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable

from mxflow.config import NodeConfig
from mxflow.delivery.router import NextHop, Router
from mxflow.mail import message_id_of
from mxflow.queue.dsn import build_dsn
from mxflow.queue.spool import (
    BOUNCED,
    DEFERRED,
    DELIVERED,
    Envelope,
    QueueState,
    RecipientState,
    Spool,
    SpoolError,
    drain_requested,
)
from mxflow.smtp.client import Reply
from mxflow.store.trace import (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_FILTERED_AS_SPAM,
    STATUS_PENDING,
    TraceStore,
)

log = logging.getLogger("mxflow.delivery")

CONTROL_POLL = 0.5
FRESH_LIMIT = 5000  # messages whose bytes we keep in memory while they wait for a worker


MAX_LOCAL_FAILURES = 3  # attempts that raise before a message is held


class Scheduler:
    def __init__(
        self,
        config: NodeConfig,
        spool: Spool,
        trace: TraceStore,
        router: Router,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.spool = spool
        self.trace = trace
        self.router = router
        self.clock = clock
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._fresh: dict[str, tuple[Envelope, bytes]] = {}
        self._timers: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}  # queue id -> time it is due
        self._active: set[str] = set()
        self._deleted: set[str] = set()
        self._local_failures: dict[str, int] = {}  # attempts that raised, in a row
        self._holding: dict[str, str] = {}  # held while an attempt was in flight: reason
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self.drain_asked = asyncio.Event()  # `mxflow queue drain` asked this node to leave
        self.drain_timeout = 0.0

    def reconfigure(self, config: NodeConfig) -> None:
        """A reload: new routes, retry schedule and lifetime for the next attempts."""
        self.config = config
        self.router.reconfigure(config)

    # ----------------------------------------------------------------- lifecycle

    async def start(self, *, recover: bool = True) -> None:
        if recover:
            self.recover()
        n = self.config.delivery.concurrency
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(n)]
        self._tasks.append(asyncio.create_task(self._timer_loop()))
        self._tasks.append(asyncio.create_task(self._control_loop()))

    def recover(self) -> int:
        """Schedule every message this worker owns (after a restart or a crash)."""
        removed = self.spool.clean_incomplete()
        if removed:
            log.warning("removed %d incomplete (never acknowledged) spool files", removed)
        self.apply_requests()  # a hold asked for while the node was down comes first
        count = held = 0
        for queue_id in self.spool.owned_ids():
            try:
                state = self.spool.load_state(queue_id)
            except (SpoolError, OSError, ValueError) as exc:
                log.error("recover id=%s unreadable: %s", queue_id, exc)
                continue
            if state.held is not None:
                held += 1  # never attempted until `mxflow queue release`
                continue
            self._schedule(queue_id, state.next_attempt)
            count += 1
        if count or held:
            log.info("recovered %d queued messages (%d held, not scheduled)", count, held)
        return count

    async def stop(self, grace: float = 10.0) -> None:
        """Finish in-flight attempts for up to `grace` seconds; the rest stay spooled."""
        self._stopping = True
        self._wake.set()
        workers = self._tasks
        deadline = time.monotonic() + grace
        while self._active and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._tasks = []

    # ----------------------------------------------------------------- scheduling

    def submit(self, env: Envelope, raw: bytes) -> None:
        """A freshly spooled message: try it now, with the bytes we already hold."""
        if len(self._fresh) < FRESH_LIMIT:  # beyond that, read it back from the spool
            self._fresh[env.queue_id] = (env, raw)
        self._scheduled[env.queue_id] = 0.0
        self._ready.put_nowait(env.queue_id)

    def _schedule(self, queue_id: str, when: float) -> None:
        self._scheduled[queue_id] = when
        if when <= self.clock():
            self._ready.put_nowait(queue_id)
        else:
            heapq.heappush(self._timers, (when, queue_id))
            self._wake.set()

    def retry_now(self, queue_id: str) -> bool:
        if queue_id in self._active or not self.spool.exists(queue_id):
            return False
        self._schedule(queue_id, 0.0)
        return True

    async def _timer_loop(self) -> None:
        while not self._stopping:
            now = self.clock()
            while self._timers and self._timers[0][0] <= now:
                when, queue_id = heapq.heappop(self._timers)
                if self._scheduled.get(queue_id) == when:
                    self._ready.put_nowait(queue_id)
            delay = self._timers[0][0] - now if self._timers else 3600.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(delay, 3600.0))):
                    await self._wake.wait()

    async def _control_loop(self) -> None:
        while not self._stopping:
            self.apply_requests()
            if not self.drain_asked.is_set():
                timeout = drain_requested(self.spool.path)
                if timeout is not None:
                    self.drain_timeout = timeout
                    self.drain_asked.set()
            await asyncio.sleep(CONTROL_POLL)

    async def drain(self, within: float) -> None:
        """Attempt every scheduled message now, then wait until none is left to attempt
        or `within` seconds have passed; what is left stays in the spool.

        A message deferred during the drain is attempted again on its retry schedule
        (not in a loop: the next hop said "later"); a held message is not attempted.
        Call it after the listeners stopped, or new mail keeps it waiting.
        """
        for queue_id in list(self._scheduled):
            self.retry_now(queue_id)
        deadline = time.monotonic() + within
        while (self._scheduled or self._active) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def apply_requests(self) -> None:
        """Carry out the `mxflow queue` requests left in the spool's control directory.

        retry / flush: attempt now (not a held message: release it first); hold: record
        the reason in the state file and attempt no more (also after a restart); release:
        clear it and attempt now; delete: remove it (after an attempt in flight ends).
        """
        for queue_id, op, detail in self.spool.take_requests_with_detail():
            if op in ("retry", "flush"):
                ok = not self._is_held(queue_id) and self.retry_now(queue_id)
                log.info("queue %s id=%s scheduled=%s", op, queue_id, ok)
            elif op == "hold":
                self._hold(queue_id, detail.strip() or "held by the administrator")
            elif op == "release":
                self._release(queue_id)
            elif op == "delete":
                self._deleted.add(queue_id)
                self._scheduled.pop(queue_id, None)
                self._fresh.pop(queue_id, None)
                self._holding.pop(queue_id, None)
                if queue_id not in self._active:
                    self._delete(queue_id)

    def _local_failure(self, queue_id: str, exc: Exception) -> None:
        """An attempt that raised (a bug, a message we cannot handle), not a reply: try a
        few more times, then hold it with the reason — a poison message must not be
        retried forever nor stall the queue. `mxflow queue list` and the trace show it."""
        failures = self._local_failures.get(queue_id, 0) + 1
        self._local_failures[queue_id] = failures
        if failures < MAX_LOCAL_FAILURES:
            log.warning("delivery id=%s failed locally (%d): %r; retrying", queue_id, failures, exc)
            intervals = self.config.delivery.retry_intervals
            self._schedule(queue_id, self.clock() + intervals[min(failures, len(intervals) - 1)])
            return
        log.exception("delivery id=%s held after %d local failures", queue_id, failures)
        self._local_failures.pop(queue_id, None)
        reason = f"local error {failures} times: {type(exc).__name__}: {exc}"[:300]
        self._active.discard(queue_id)  # no attempt is in flight to record the hold
        self._hold(queue_id, reason)
        self.trace.record(queue_id, "held", status=STATUS_PENDING, detail=reason)

    def _is_held(self, queue_id: str) -> bool:
        if queue_id in self._holding:
            return True
        try:
            return self.spool.load_state(queue_id).held is not None
        except (OSError, SpoolError, ValueError):
            return False

    def _hold(self, queue_id: str, reason: str) -> None:
        """Attempt `queue_id` no more; an attempt in flight records the hold as it ends."""
        self._scheduled.pop(queue_id, None)
        if queue_id in self._active:
            self._holding[queue_id] = reason
        elif not self._set_held(queue_id, reason):
            return
        self._fresh.pop(queue_id, None)
        log.info("queue hold id=%s reason=%r", queue_id, reason)

    def _set_held(self, queue_id: str, reason: str | None) -> bool:
        try:
            state = self.spool.load_state(queue_id)
        except (OSError, SpoolError, ValueError) as exc:
            log.info("queue hold/release id=%s not possible: %s", queue_id, exc)
            return False
        state.held = reason
        self.spool.save_state(queue_id, state)
        return True

    def _release(self, queue_id: str) -> None:
        self._holding.pop(queue_id, None)
        if queue_id in self._active or not self._set_held(queue_id, None):
            return
        log.info("queue release id=%s", queue_id)
        self._schedule(queue_id, 0.0)

    def _delete(self, queue_id: str) -> None:
        try:
            env = self.spool.load_envelope(queue_id)
        except (OSError, SpoolError):
            env = None
        self.spool.remove(queue_id)
        self._deleted.discard(queue_id)
        for rcpt in env.rcpt_tos if env else [""]:
            self.trace.record(
                queue_id,
                "deleted",
                message_id=env.message_id if env else "",
                recipient=rcpt,
                status=STATUS_FAILED,
                detail="deleted by the administrator",
            )
        log.info("queue delete id=%s", queue_id)

    # ----------------------------------------------------------------- delivery

    async def _worker(self) -> None:
        while not self._stopping:
            queue_id = await self._ready.get()
            if queue_id in self._active or queue_id not in self._scheduled:
                continue
            if self._scheduled[queue_id] > self.clock():
                continue  # rescheduled later meanwhile; the timer will bring it back
            del self._scheduled[queue_id]
            self._active.add(queue_id)
            try:
                await self._attempt(queue_id)
                self._local_failures.pop(queue_id, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._local_failure(queue_id, exc)
            finally:
                self._active.discard(queue_id)
                if queue_id in self._deleted:
                    self._delete(queue_id)

    async def _attempt(self, queue_id: str) -> None:
        fresh = self._fresh.pop(queue_id, None)
        if fresh is not None:
            env, raw = fresh
            state = QueueState(rcpts={r: RecipientState() for r in env.rcpt_tos})
        else:
            try:
                env, raw, state = await asyncio.to_thread(self._load, queue_id)
            except (SpoolError, OSError):
                return  # deleted meanwhile
        had_state = fresh is None
        if state.held is not None:
            return  # held: attempted only once released
        pending = state.pending()
        if not pending:
            self.spool.remove_later(queue_id)
            return
        state.attempts += 1
        results = await self._deliver(env, raw, pending)
        now = self.clock()
        bounced, deferred = self._outcome(env, state, results, now)
        if bounced:
            await self._bounce(env, raw, bounced)
        if deferred and queue_id not in self._deleted:
            if self._delay_warning_due(env, state, now):
                state.warned = True
                await self._notify_delayed(env, raw, deferred, state)
            intervals = self.config.delivery.retry_intervals
            delay = intervals[min(state.attempts - 1, len(intervals) - 1)]
            state.next_attempt = now + delay
            state.held = self._holding.pop(queue_id, None)  # held during this attempt
            await asyncio.to_thread(self.spool.save_state, queue_id, state)
            if state.held is None:
                self._schedule(queue_id, state.next_attempt)
        else:
            self._holding.pop(queue_id, None)
            self.spool.remove_later(queue_id, has_state=had_state)

    async def _deliver(
        self, env: Envelope, raw: bytes, pending: list[str]
    ) -> list[dict[str, Reply]]:
        """One attempt: recipients grouped by next hop, one transaction per group."""
        groups: dict[str, tuple[NextHop, list[str]]] = {}
        for rcpt in pending:
            hop = self.router.next_hop(rcpt)
            groups.setdefault(hop.key, (hop, []))[1].append(rcpt)
        return list(
            await asyncio.gather(
                *(
                    self.router.deliver(
                        hop,
                        env.mail_from,
                        rcpts,
                        raw,
                        body_8bit=env.body_8bit,
                        smtputf8=env.smtputf8,
                        queue_id=env.queue_id,
                        junk=env.action == "junk",
                    )
                    for hop, rcpts in groups.values()
                )
            )
        )

    def _outcome(
        self, env: Envelope, state: QueueState, results: list[dict[str, Reply]], now: float
    ) -> tuple[list[tuple[str, Reply]], list[tuple[str, Reply]]]:
        """Record each recipient's reply; the ones to bounce and the ones deferred."""
        expired = now - env.received_at >= self.config.delivery.lifetime
        bounced: list[tuple[str, Reply]] = []
        deferred: list[tuple[str, Reply]] = []
        for result in results:
            for rcpt, reply in result.items():
                rs = state.rcpts.setdefault(rcpt, RecipientState())
                rs.attempts += 1
                rs.reply = str(reply)
                if reply.ok:
                    rs.status = DELIVERED
                    # delivered with spam headers, for the next hop to file as junk
                    ok = STATUS_FILTERED_AS_SPAM if env.action == "junk" else STATUS_DELIVERED
                    self._event(env, "delivered", rcpt, ok, reply)
                elif reply.permanent or expired:
                    final = reply
                    if not reply.permanent:
                        final = Reply(reply.code, _expired_text(reply), reply.remote)
                    rs.status = BOUNCED
                    bounced.append((rcpt, final))
                    self._event(env, "bounced", rcpt, STATUS_FAILED, final)
                else:
                    rs.status = DEFERRED
                    deferred.append((rcpt, reply))
                    self._event(env, "deferred", rcpt, STATUS_PENDING, reply)
        return bounced, deferred

    def _delay_warning_due(self, env: Envelope, state: QueueState, now: float) -> bool:
        """Postfix's delay_warning_time: once, when a message has waited that long."""
        after = self.config.delivery.delay_warning
        return (
            after > 0
            and not state.warned
            and not env.is_dsn
            and env.mail_from != ""
            and now - env.received_at >= after
        )

    def _load(self, queue_id: str) -> tuple[Envelope, bytes, QueueState]:
        env, raw = self.spool.load(queue_id)
        return env, raw, self.spool.load_state(queue_id, env)

    def _event(self, env: Envelope, event: str, rcpt: str, status: str, reply: Reply) -> None:
        log.info("delivery id=%s to=<%s> status=%s reply=%r", env.queue_id, rcpt, event, str(reply))
        self.trace.record(
            env.queue_id,
            event,
            message_id=env.message_id,
            recipient=rcpt,
            status=status,
            detail=str(reply),
            sender=env.mail_from,
            to_ip=reply.remote.rpartition(":")[0].strip("[]"),
            reply=str(reply),
        )

    async def _bounce(self, env: Envelope, raw: bytes, failed: list[tuple[str, Reply]]) -> None:
        if env.mail_from == "" or env.is_dsn:
            self.trace.record(
                env.queue_id,
                "dsn-suppressed",
                message_id=env.message_id,
                detail="null sender: no DSN is sent for a bounce",
            )
            return
        dsn = build_dsn(reporting_mta=self.config.hostname, envelope=env, raw=raw, failed=failed)
        await self._send_dsn(env, dsn, f"DSN queued as {{}} for {len(failed)} recipient(s)")

    async def _notify_delayed(
        self, env: Envelope, raw: bytes, deferred: list[tuple[str, Reply]], state: QueueState
    ) -> None:
        """RFC 3464 `Action: delayed` to the sender: still trying, and until when."""
        until = env.received_at + self.config.delivery.lifetime
        dsn = build_dsn(
            reporting_mta=self.config.hostname,
            envelope=env,
            raw=raw,
            failed=deferred,
            delayed_until=until,
        )
        await self._send_dsn(env, dsn, f"delay DSN queued as {{}} for {len(deferred)} recipient(s)")

    async def _send_dsn(self, env: Envelope, dsn: bytes, detail: str) -> None:
        new = await self.spool.enqueue(
            "", [env.mail_from], dsn, message_id=message_id_of(dsn), is_dsn=True
        )
        self.trace.record(
            env.queue_id,
            "dsn",
            message_id=env.message_id,
            recipient=env.mail_from,
            detail=detail.format(new.queue_id),
        )
        self.trace.record(
            new.queue_id,
            "received",
            message_id=new.message_id,
            recipient=env.mail_from,
            status=STATUS_PENDING,
            detail=f"DSN for {env.queue_id}",
        )
        self.submit(new, dsn)


def _expired_text(reply: Reply) -> str:
    return f"5.4.7 delivery time expired; last error: {reply}"
