"""The node's DNS answer cache: one lookup per name and TTL, negative answers included,
shared by every check that holds the node's resolver."""

from __future__ import annotations

import dns.resolver
import pytest

from mxflow.checks.connection import DnsblCheck
from mxflow.config.filter import FilterPolicy
from mxflow.dns.resolver import NodeCache, resolver_from_endpoint
from tests.dnsserver import serve_zone_text
from tests.filter.helpers import context

ZONE = """\
$ORIGIN bl.lab.test.
$TTL 300
@           IN SOA ns.lab.test. host.lab.test. 1 3600 600 86400 60
9.0.66.127  IN A   127.0.0.2
short       5 IN A 127.0.0.3
"""


async def test_answers_and_negative_answers_are_asked_once_per_ttl() -> None:
    async with serve_zone_text(ZONE) as server:
        resolver = resolver_from_endpoint(f"{server.host}:{server.port}")
        for _ in range(3):
            answer = await resolver.resolve("9.0.66.127.bl.lab.test", "A")
            assert [r.to_text() for r in answer] == ["127.0.0.2"]
            with pytest.raises(dns.resolver.NXDOMAIN):
                await resolver.resolve("1.0.66.127.bl.lab.test", "A")
        assert server.queries == 2  # one positive, one negative answer, each asked once
        uncached = resolver_from_endpoint(f"{server.host}:{server.port}", cache=False)
        await uncached.resolve("9.0.66.127.bl.lab.test", "A")
        await uncached.resolve("9.0.66.127.bl.lab.test", "A")
        assert server.queries == 4


async def test_an_expired_answer_is_asked_again() -> None:
    async with serve_zone_text(ZONE) as server:
        resolver = resolver_from_endpoint(f"{server.host}:{server.port}")
        await resolver.resolve("short.bl.lab.test", "A")
        cache = resolver.cache
        assert isinstance(cache, NodeCache)
        for key in list(cache.data):  # let the 5 s TTL pass without waiting for it
            cache.data[key].value.expiration = 0.0
        await resolver.resolve("short.bl.lab.test", "A")
        assert server.queries == 2


def test_lifetimes_are_capped() -> None:
    cache = NodeCache(max_ttl=10.0)

    class Answer:  # the one attribute the cache reads and writes
        expiration = 1e12

    cache.put(("k", 1, 1), Answer())  # type: ignore[arg-type]
    value = cache.get(("k", 1, 1))
    assert value is not None and value.expiration < 1e12


async def test_every_check_shares_the_cache() -> None:
    async with serve_zone_text(ZONE) as server:
        resolver = resolver_from_endpoint(f"{server.host}:{server.port}")
        policy = FilterPolicy(dnsbl_zones={"bl.lab.test": 5.0})
        first, second = DnsblCheck(policy, resolver), DnsblCheck(policy, resolver)
        for check in (first, second, first):
            result = await check.check(context(b"", ip="127.66.0.9"))
            assert [s.name for s in result.symbols] == ["RBL_BL_LAB_TEST"]
        assert server.queries == 1
