"""Routing: recipient domain -> the route that serves it -> that route's delivery target.

Recipients of one message that share a next hop travel in one transaction. A route
names its target (smart hosts, MX, or local Maildirs); a recipient domain no route
covers goes by MX when the node has a resolver, and fails permanently otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.asyncresolver

from mxflow.config import NodeConfig, Route
from mxflow.delivery.relay import SmtpRelayTarget
from mxflow.delivery.target import DeliveryTarget, MaildirTarget, Parcel
from mxflow.smtp.client import ConnectionPool, Reply

DEFAULT_MX_ROUTE = Route(name="default-mx", domains=("*",), mx=True, port=25)


@dataclass(frozen=True)
class NextHop:
    key: str  # recipients with the same key share a transaction
    target: DeliveryTarget | None  # None: no route to the domain
    domain: str


class Router:
    def __init__(
        self,
        config: NodeConfig,
        pool: ConnectionPool,
        resolver: dns.asyncresolver.Resolver | None,
        *,
        mailboxes: bool = False,
    ) -> None:
        self.config = config
        self.mailboxes = mailboxes  # Maildir routes are a mailbox host's mailboxes
        self.pool = pool
        self.resolver = resolver
        self._targets: dict[str, DeliveryTarget] = {}

    def reconfigure(self, config: NodeConfig) -> None:
        self.config = config
        self._targets.clear()

    def target_for(self, route: Route) -> DeliveryTarget:
        """The route's delivery target (built once per route)."""
        found = self._targets.get(route.name)
        if found is None:
            if route.maildir is not None:
                found = MaildirTarget(
                    route.maildir, fsync=self.config.server.fsync, mailboxes=self.mailboxes
                )
            else:
                found = SmtpRelayTarget(route, self.pool, self.resolver)
            self._targets[route.name] = found
        return found

    def next_hop(self, rcpt: str) -> NextHop:
        domain = rcpt.rpartition("@")[2].lower()
        route = self.config.route_for(domain)
        if route is None and self.resolver is not None:
            route = DEFAULT_MX_ROUTE
        if route is None:
            return NextHop(f"none:{domain}", None, domain)
        target = self.target_for(route)
        if route.mx:
            return NextHop(f"mx:{route.name}:{domain}", target, domain)
        return NextHop(f"{target.name}", target, domain)

    async def deliver(
        self,
        hop: NextHop,
        mail_from: str,
        rcpts: list[str],
        raw: bytes,
        *,
        body_8bit: bool = False,
        smtputf8: bool = False,
        queue_id: str = "",
        junk: bool = False,
    ) -> dict[str, Reply]:
        if hop.target is None:
            return {r: Reply(550, f"5.4.4 no route to {hop.domain}") for r in rcpts}
        parcel = Parcel(mail_from, rcpts, raw, hop.domain, queue_id, body_8bit, smtputf8, junk)
        return await hop.target.deliver(parcel)
