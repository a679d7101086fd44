"""Connection checks: DNS blocklists, forward-confirmed reverse DNS, HELO sanity, rate limits.

These look only at the client (IP, HELO name), so the blocklist, FCrDNS and rate checks
run at CONNECT and HELO at ENVELOPE; their symbols also count in the message's score.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import deque
from dataclasses import dataclass, field

import dns.asyncresolver

from mxflow.checks.dnsquery import (
    LookupFailed,
    addresses,
    ptr_names,
    query_zones,
    reversed_ip,
    zone_label,
)
from mxflow.config.filter import FilterPolicy
from mxflow.mail import Action, CheckResult, MessageContext, Phase

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?$", re.I
)
_ADDRESS_LITERAL = re.compile(r"^\[(ipv6:)?([0-9a-f:.]+)\]$", re.I)


@dataclass
class DnsblCheck:
    """The client IP against each configured DNS blocklist zone (`RBL_<ZONE>` symbols).

    A listing scores the zone's weight, or the best of its `return_codes` scores; an answer
    that is no listing (127.0.0.1, 127.255.255.x: a refused query) is `RBL_<ZONE>_FAIL`
    with score 0, never a listing.
    """

    policy: FilterPolicy
    resolver: dns.asyncresolver.Resolver
    name: str = "dnsbl"
    phase: Phase = Phase.CONNECT

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        try:
            query = reversed_ip(ctx.client_ip)
        except ValueError:
            return result
        zones = sorted(self.policy.dnsbl_zones.items())
        codes = self.policy.return_codes
        judged = await query_zones(
            self.resolver, [(query, zone, weight, codes.get(zone, {})) for zone, weight in zones]
        )
        for (zone, _), listed in zip(zones, judged, strict=True):
            symbol = f"RBL_{zone_label(zone)}"
            if isinstance(listed, str):
                result.add(f"{symbol}_FAIL", 0.0, listed)
            elif listed is not None:
                score, found = listed
                result.add(
                    symbol,
                    self.policy.score(symbol, score),
                    f"{ctx.client_ip} listed in {zone} ({', '.join(found)})",
                )
        return result


@dataclass
class FcrdnsCheck:
    """Forward-confirmed reverse DNS: a PTR name that resolves back to the client IP."""

    policy: FilterPolicy
    resolver: dns.asyncresolver.Resolver
    name: str = "fcrdns"
    phase: Phase = Phase.CONNECT

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        try:
            names = await ptr_names(self.resolver, ctx.client_ip)
        except LookupFailed as exc:
            result.add("RDNS_FAIL", 0.0, str(exc))
            return result
        except ValueError:
            return result
        if not names:
            result.add(
                "RDNS_NONE", self.policy.score("RDNS_NONE", 1.5), f"no PTR for {ctx.client_ip}"
            )
            return result
        rdtype = "AAAA" if ":" in ctx.client_ip else "A"
        for host in names[:5]:
            try:
                forward = await addresses(self.resolver, host, rdtype)
            except LookupFailed:
                continue
            if _same_ip(ctx.client_ip, forward):
                ctx.client_hostname = host
                result.add("FCRDNS_OK", self.policy.score("FCRDNS_OK", -0.5), host)
                return result
        result.add(
            "FCRDNS_MISMATCH",
            self.policy.score("FCRDNS_MISMATCH", 1.0),
            f"PTR {names[0]} does not resolve back to {ctx.client_ip}",
        )
        return result


def _same_ip(ip: str, answers: list[str]) -> bool:
    try:
        wanted = ipaddress.ip_address(ip)
        return any(ipaddress.ip_address(a) == wanted for a in answers)
    except ValueError:
        return False


@dataclass
class HeloCheck:
    """HELO sanity: a fully qualified name or an address literal matching the client."""

    policy: FilterPolicy
    name: str = "helo"
    phase: Phase = Phase.ENVELOPE

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        helo = ctx.helo.strip()
        if not helo:  # unknown (e.g. `mxflow filter check` without --helo): nothing to judge
            return result
        literal = _ADDRESS_LITERAL.match(helo)
        if literal:
            if not _same_ip(ctx.client_ip, [literal.group(2)]):
                result.add(
                    "HELO_IP_MISMATCH",
                    self.policy.score("HELO_IP_MISMATCH", 2.0),
                    f"HELO {helo} from {ctx.client_ip}",
                )
            return result
        try:
            ipaddress.ip_address(helo)
            result.add("HELO_BARE_IP", self.policy.score("HELO_BARE_IP", 1.5), helo)
            return result
        except ValueError:
            pass
        if not _HOSTNAME.match(helo):
            result.add("HELO_NOT_FQDN", self.policy.score("HELO_NOT_FQDN", 1.0), helo)
            return result
        lowered = helo.lower().rstrip(".")
        local = ctx.local_hostname.lower().rstrip(".")
        if local and lowered == local:
            result.add("HELO_IS_OURS", self.policy.score("HELO_IS_OURS", 3.0), helo)
        return result


@dataclass
class _Client:
    starts: deque[float] = field(default_factory=deque)
    open: int = 0


class RateLimiter:
    """Per-client-IP connection rate (per minute) and concurrency, counted at CONNECT
    (IPv6 clients by their /64, see `client_key`).

    The server calls `closed(ctx)` when a session ends (only sessions that were counted are
    uncounted); `RATE_LIMIT` / `CONCURRENCY_LIMIT` ask for TEMPFAIL, so a legitimate sender
    retries later while a flood is slowed down. Idle clients are swept periodically, so
    the table stays as small as the set of recently active IPs. With a shared database the
    counting is intake's (intake/limits.py, store/counters.py) and this only judges it.
    """

    name = "rate"
    phase = Phase.CONNECT
    SWEEP_EVERY = 1000

    def __init__(self, policy: FilterPolicy) -> None:
        self.policy = policy
        self.clients: dict[str, _Client] = {}
        self._checks = 0

    async def check(self, ctx: MessageContext) -> CheckResult:
        shared = ctx.state(SharedCount)
        if shared.known:  # counted in the shared database by intake: judge its counts
            return self._judge(ctx, shared.open, shared.started) or CheckResult()
        now = time.monotonic()
        self._checks += 1
        if self._checks % self.SWEEP_EVERY == 0:
            self._sweep(now)
        client = self.clients.setdefault(client_key(ctx.client_ip), _Client())
        while client.starts and now - client.starts[0] > 60.0:
            client.starts.popleft()
        refusal = self._judge(ctx, client.open, len(client.starts))
        if refusal is not None:
            return refusal
        client.starts.append(now)
        client.open += 1
        ctx.state(_Counted).counted = True
        return CheckResult()

    def _judge(self, ctx: MessageContext, sessions: int, started: int) -> CheckResult | None:
        """A TEMPFAIL when `sessions` open, or `started` in the last minute, reach a limit."""
        result = CheckResult()
        if sessions >= self.policy.max_connections_per_ip:
            result.add("CONCURRENCY_LIMIT", 0.0, f"{sessions} sessions open")
            result.action = Action.TEMPFAIL
            result.reason = f"too many concurrent connections from {ctx.client_ip}"
            return result
        if started >= self.policy.max_connections_per_minute:
            result.add("RATE_LIMIT", 0.0, f"{started} connections in the last minute")
            result.action = Action.TEMPFAIL
            result.reason = f"too many connections from {ctx.client_ip}, try again later"
            return result
        return None

    def closed(self, session: MessageContext | str) -> None:
        """A session has ended: a context counted at CONNECT, or (trusted) a client IP."""
        if isinstance(session, MessageContext):
            counted = session.state(_Counted)
            if not counted.counted:
                return
            counted.counted = False
            key = client_key(session.client_ip)
        else:
            key = client_key(session)
        client = self.clients.get(key)
        if client is None:
            return
        client.open = max(0, client.open - 1)
        if client.open == 0 and not client.starts:
            del self.clients[key]

    def _sweep(self, now: float) -> None:
        for ip in [
            ip
            for ip, c in self.clients.items()
            if c.open == 0 and (not c.starts or now - c.starts[-1] > 60.0)
        ]:
            del self.clients[ip]


@dataclass
class SharedCount:
    """A session's counts from the shared database (store/counters.py), put on the context
    by intake before the CONNECT checks: with them the rate check judges the counts of
    every node instead of counting in this process's memory."""

    known: bool = False
    key: str = ""  # what was counted: `client_key` of the client IP
    open: int = 0  # the client's sessions open on every node, before this one
    started: int = 0  # the client's sessions started in the last minute, before this one
    counted: bool = False  # counted in the database: released when the session ends


@dataclass
class _Counted:
    """Whether the rate limiter counted this session at CONNECT (so it uncounts it once)."""

    counted: bool = False


def client_key(ip: str) -> str:
    """What the limits count by: an IPv4 address, or an IPv6 client's /64 — one host owns
    a whole /64 and could otherwise open every session from a fresh address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
