"""The one way mxflow code gets a resolver.

No mxflow code calls the system resolver: every component that needs DNS takes a
`dns.asyncresolver.Resolver` built here, pointed at an explicit nameserver and port (the
embedded server in tests and in the lab, a real recursive resolver in production).

A node's resolver (`resolver_from_endpoint`, which roles/node.py uses) carries an answer
cache, shared by every check that gets the resolver (DNSBL, FCrDNS, URIBL, SPF, DKIM,
DMARC): without it each message repeated the same lookups (about 3 ms a message on the
bench). It is dnspython's LRU cache, which honours each answer's TTL and caches negative
answers (NXDOMAIN, no record of that type) for the SOA minimum of the reply (RFC 2308);
`NodeCache` caps every lifetime at `MAX_TTL`, so a listing removed from a blocklist is
seen within that time whatever TTL the zone gave. Answers are not shared between
processes.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import dns.asyncresolver
import dns.resolver

from mxflow.errors import MxflowError


def parse_endpoint(text: str, default_port: int = 53) -> tuple[str, int]:
    """Split `IP[:PORT]` (or `[IPv6]:PORT`) into address and port; ValueError if malformed.

    The port is range-checked here because an out-of-range one only fails later, inside
    the event loop's socket call, as a traceback instead of an error message.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    else:
        host, port = text, default_port
    if not host or not 0 <= port <= 65535:
        raise ValueError(f"bad endpoint {text!r}")
    return host, port


MAX_TTL = 3600.0  # seconds any answer is kept at most
CACHE_SIZE = 50_000  # answers


class NodeCache(dns.resolver.LRUCache):
    """dnspython's LRU answer cache (TTL-honouring, negative answers included) with every
    lifetime capped at `max_ttl`."""

    def __init__(self, max_size: int = CACHE_SIZE, max_ttl: float = MAX_TTL) -> None:
        super().__init__(max_size)
        self.max_ttl = max_ttl

    def put(self, key: Any, value: dns.resolver.Answer) -> None:
        value.expiration = min(value.expiration, time.time() + self.max_ttl)
        super().put(key, value)


def make_resolver(
    nameserver: str,
    port: int = 53,
    *,
    timeout: float = 2.0,
    lifetime: float = 5.0,
    cache: dns.resolver.LRUCache | None = None,
) -> dns.asyncresolver.Resolver:
    """A resolver that asks only `nameserver:port`, never /etc/resolv.conf; with `cache`,
    answers are kept for their TTL (no cache by default: tools and tests see the zone as
    it is now)."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [nameserver]
    resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = lifetime
    resolver.cache = cache
    return resolver


def resolver_from_endpoint(endpoint: str, *, cache: bool = True) -> dns.asyncresolver.Resolver:
    """`make_resolver` from an `IP:PORT` string as a node's config or the command line
    gives it, with a `NodeCache` unless `cache` is False."""
    host, port = parse_endpoint(endpoint)
    ipaddress.ip_address(host)  # a name here would need a resolver to find the resolver
    if port == 0:
        raise ValueError(f"bad endpoint {endpoint!r}: port 0")
    return make_resolver(host, port, cache=NodeCache() if cache else None)


def resolver_option(endpoint: str, option: str = "--resolver") -> dns.asyncresolver.Resolver:
    """`resolver_from_endpoint` for a command-line option: a bad value is one clear line."""
    try:
        return resolver_from_endpoint(endpoint)
    except ValueError as exc:
        raise MxflowError(f"{option} {endpoint!r}: expected IP[:PORT]") from exc


def describe_dns_error(exc: BaseException) -> str:
    """One line for a failed lookup, e.g. `no answer from 127.0.0.53:5353 (timed out)`."""
    import dns.exception
    import dns.resolver

    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "the name does not exist"
    if isinstance(exc, dns.exception.Timeout):
        return "the resolver did not answer (timed out)"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "the resolver refused or failed the query (SERVFAIL/REFUSED)"
    if isinstance(exc, dns.resolver.NoAnswer):
        return "no record of that type"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text
