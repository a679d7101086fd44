"""Routing: recipient domain -> next hop (a route's smart hosts, or the domain's MX hosts).

Recipients of one message that share a next hop travel in one SMTP transaction. Each
next hop is tried address by address (smart hosts in the configured order; MX hosts by
preference, then each address of a host) until one gives a session; a reply from a
session, good or bad, ends the search for that transaction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.asyncresolver

from mxflow.config import NodeConfig, Route
from mxflow.delivery.mailbox import deliver_maildir
from mxflow.delivery.mx import MxError, resolve_mx
from mxflow.delivery.mx import _addresses as resolve_addresses
from mxflow.smtp.client import ConnectionPool, Endpoint, Reply, send

DEFAULT_MX_ROUTE = Route(name="default-mx", domains=("*",), mx=True, port=25)


@dataclass(frozen=True)
class NextHop:
    key: str  # recipients with the same key share a transaction
    route: Route | None
    domain: str


class Router:
    def __init__(
        self,
        config: NodeConfig,
        pool: ConnectionPool,
        resolver: dns.asyncresolver.Resolver | None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.resolver = resolver

    def next_hop(self, rcpt: str) -> NextHop:
        domain = rcpt.rpartition("@")[2].lower()
        route = self.config.route_for(domain)
        if route is None and self.resolver is not None:
            route = DEFAULT_MX_ROUTE
        if route is None:
            return NextHop(f"none:{domain}", None, domain)
        if route.mx:
            return NextHop(f"mx:{route.name}:{domain}", route, domain)
        if route.maildir is not None:
            return NextHop(f"maildir:{route.name}", route, domain)
        return NextHop(f"route:{route.name}", route, domain)

    def _endpoint(self, route: Route, address: str, port: int, name: str | None) -> Endpoint:
        return Endpoint(
            address=address,
            port=port,
            tls=route.tls,
            tls_name=route.tls_name or name,
            ca_file=route.ca_file,
            client_cert=route.client_cert,
            client_key=route.client_key,
        )

    async def endpoints(self, hop: NextHop) -> list[Endpoint]:
        """Every address to try for `hop`, in order (raises MxError when there are none)."""
        route = hop.route
        if route is None:
            raise MxError("5.4.4", f"no route to {hop.domain}", permanent=True)
        found: list[Endpoint] = []
        if route.mx:
            if self.resolver is None:
                raise MxError("4.4.3", "no DNS resolver configured", permanent=False)
            for host in await resolve_mx(self.resolver, hop.domain):
                found += [self._endpoint(route, a, route.port, host.name) for a in host.addresses]
            return found
        for smart in route.smart_hosts:
            try:
                ipaddress.ip_address(smart.host)
                addrs: tuple[str, ...] = (smart.host,)
                name = None
            except ValueError:
                if self.resolver is None:
                    raise MxError(
                        "4.4.3", f"cannot resolve {smart.host}: no DNS", permanent=False
                    ) from None
                addrs = await resolve_addresses(self.resolver, smart.host)
                name = smart.host
            found += [self._endpoint(route, a, smart.port, name) for a in addrs]
        return found

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
    ) -> dict[str, Reply]:
        if hop.route is not None and hop.route.maildir is not None:
            return await deliver_maildir(
                hop.route.maildir, rcpts, queue_id, raw, fsync=self.config.server.fsync
            )
        try:
            endpoints = await self.endpoints(hop)
        except MxError as exc:
            code = 550 if exc.permanent else 0
            return {r: Reply(code, f"{exc.status} {exc.text}") for r in rcpts}
        last: dict[str, Reply] = {r: Reply(0, "4.4.1 no address to try") for r in rcpts}
        for ep in endpoints:
            result = await send(
                self.pool, ep, mail_from, rcpts, raw, body_8bit=body_8bit, smtputf8=smtputf8
            )
            if any(reply.code for reply in result.values()):
                return result
            last = result  # no session here: try the next address
        return last
