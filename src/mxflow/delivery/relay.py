"""The SMTP relay target: a route's smart hosts in order, or the recipient domain's MX.

Each next hop is tried address by address (smart hosts in the configured order; MX hosts
by preference, then each address of a host) until one gives a session; a reply from a
session, good or bad, ends the search for that transaction.
"""

from __future__ import annotations

import ipaddress

import dns.asyncresolver

from mxflow.config import Route
from mxflow.delivery.mx import MxError, resolve_mx
from mxflow.delivery.mx import _addresses as resolve_addresses
from mxflow.delivery.target import Parcel
from mxflow.smtp.client import ConnectionPool, Endpoint, Reply, send


class SmtpRelayTarget:
    """Relay over SMTP through `route` (smart hosts, or MX when `route.mx`)."""

    def __init__(
        self,
        route: Route,
        pool: ConnectionPool,
        resolver: dns.asyncresolver.Resolver | None,
    ) -> None:
        self.name = f"{'mx' if route.mx else 'smtp'}:{route.name}"
        self.route = route
        self.pool = pool
        self.resolver = resolver

    def _endpoint(self, address: str, port: int, name: str | None) -> Endpoint:
        route = self.route
        return Endpoint(
            address=address,
            port=port,
            tls=route.tls,
            tls_name=route.tls_name or name,
            ca_file=route.ca_file,
            client_cert=route.client_cert,
            client_key=route.client_key,
        )

    async def endpoints(self, domain: str) -> list[Endpoint]:
        """Every address to try for `domain`, in order (raises MxError when there are none)."""
        route = self.route
        found: list[Endpoint] = []
        if route.mx:
            if self.resolver is None:
                raise MxError("4.4.3", "no DNS resolver configured", permanent=False)
            for host in await resolve_mx(self.resolver, domain):
                found += [self._endpoint(a, route.port, host.name) for a in host.addresses]
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
            found += [self._endpoint(a, smart.port, name) for a in addrs]
        return found

    async def deliver(self, parcel: Parcel) -> dict[str, Reply]:
        rcpts = parcel.rcpts
        try:
            endpoints = await self.endpoints(parcel.domain)
        except MxError as exc:
            code = 550 if exc.permanent else 0
            return {r: Reply(code, f"{exc.status} {exc.text}") for r in rcpts}
        last: dict[str, Reply] = {r: Reply(0, "4.4.1 no address to try") for r in rcpts}
        for ep in endpoints:
            result = await send(
                self.pool,
                ep,
                parcel.mail_from,
                rcpts,
                parcel.raw,
                body_8bit=parcel.body_8bit,
                smtputf8=parcel.smtputf8,
            )
            if any(reply.code for reply in result.values()):
                return result
            last = result  # no session here: try the next address
        return last
