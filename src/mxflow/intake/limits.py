"""Per-client connection limits counted in the shared database, for every worker and node.

Without a shared database the server counts each client's sessions per worker
(`[limits] max_connections_per_ip`, smtp/server.py) and the filter's rate check counts
concurrency and the rate per minute per process (checks/connection.py). With one, intake
counts every session once in the database when it opens (one round trip, before the
greeting) and uncounts it when it closes (one round trip, after the client has gone), so
both limits hold for the whole deployment, with the same replies:

* over `[limits] max_connections_per_ip`: `421 4.7.0 Too many connections from your
  address`, as the server answers;
* over the filter's `max_connections_per_ip` / `max_connections_per_minute`: the rate
  check gets the counts (`SharedCount`) and answers as it does today (421 4.7.1, or what
  the allow and block lists make of it);
* the database cannot count now (down, or no answer within a few seconds): `421 4.3.0`,
  as intake answers when it cannot record a message. A node does not take sessions it
  cannot count: the limits protect the whole deployment, and a sender retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mxflow.checks.connection import SharedCount, client_key
from mxflow.mail import MessageContext
from mxflow.store.counters import UNLIMITED, ConnectionCounters
from mxflow.store.sql import StoreError

log = logging.getLogger("mxflow.intake")

TOO_MANY = "421 4.7.0 Too many connections from your address"  # smtp/server.py's words
CANNOT_COUNT = "421 4.3.0 Service temporarily unavailable, try again later"


@dataclass(frozen=True)
class ClientLimits:
    """The limits one node applies to a client's sessions, counted on every node."""

    max_open: int  # [limits] max_connections_per_ip
    filter_open: int | None = None  # the rate check's max_connections_per_ip, when it runs
    filter_rate: int | None = None  # its max_connections_per_minute


class SharedLimits:
    """Admits and releases sessions against the shared counts (store/counters.py)."""

    def __init__(self, counters: ConnectionCounters, limits: ClientLimits) -> None:
        self.counters = counters
        self.limits = limits
        self._failures = 0

    async def admit(self, ctx: MessageContext) -> str | None:
        """A refusal for a new session of `ctx.client_ip`, or None (counts for the rate
        check left on the context)."""
        key = client_key(ctx.client_ip)
        limits = self.limits
        max_open = min(limits.max_open, limits.filter_open or UNLIMITED)
        try:
            admission = await self.counters.admit(
                key, max_open=max_open, max_rate=limits.filter_rate or UNLIMITED
            )
        except StoreError as exc:
            self._failures += 1
            if self._failures & (self._failures - 1) == 0:  # 1st, 2nd, 4th ...: not a flood
                log.error(
                    "connection limits: cannot count client=%s (%d in a row): %s",
                    ctx.client_ip,
                    self._failures,
                    exc,
                )
            return CANNOT_COUNT
        self._failures = 0
        if admission.open >= limits.max_open:
            return TOO_MANY
        shared = ctx.state(SharedCount)
        shared.known, shared.key, shared.counted = True, key, admission.counted
        shared.open, shared.started = admission.open, admission.started
        return None

    def release(self, ctx: MessageContext) -> None:
        """The session has ended: uncount it (in the background) if it was counted."""
        shared = ctx.state(SharedCount)
        if shared.counted:
            shared.counted = False
            self.counters.release_soon(shared.key)
