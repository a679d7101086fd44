"""Connection checks against the embedded DNS server: DNSBL, FCrDNS, URIBL; HELO; limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mxflow import mime
from mxflow.checks import uribl
from mxflow.checks.connection import DnsblCheck, FcrdnsCheck, HeloCheck, RateLimiter
from mxflow.checks.pipeline import FilterPipeline
from mxflow.checks.uribl import MAX_LOOKUPS, UriblCheck, url_domains
from mxflow.config.filter import FilterPolicy
from mxflow.mail import Action, MessageContext, Phase
from tests.dnsserver import serve_zone_text
from tests.filter.helpers import context, message

BLOCKLIST = """\
$ORIGIN bl.lab.test.
9.0.66.127  IN A   127.0.0.2
9.0.66.127  IN TXT "listed: spam source"
"""
SLOW_LIST = """\
$ORIGIN slow.lab.test.
9.0.66.127  IN A   127.0.0.2
"""
REVERSE = """\
$ORIGIN 66.127.in-addr.arpa.
10.0  IN PTR good.sender.test.
11.0  IN PTR liar.sender.test.
"""
FORWARD = """\
$ORIGIN sender.test.
good  IN A 127.66.0.10
liar  IN A 127.1.1.1
"""
URIBL = """\
$ORIGIN uribl.lab.test.
bad-pills.test  IN A 127.0.0.2
9.0.66.127      IN A 127.0.0.4
evil.co.uk      IN A 127.0.0.2
co.uk           IN A 127.0.0.2
phish.sites.example.com IN A 127.0.0.2
refused.test    IN A 127.255.255.254
"""
CODED = """\
$ORIGIN zen.lab.test.
9.0.66.127   IN A   127.0.0.2
9.0.66.127   IN A   127.0.0.4
10.0.66.127  IN A   127.0.0.10
11.0.66.127  IN A   127.255.255.254
12.0.66.127  IN A   127.0.0.1
13.0.66.127  IN A   10.0.0.1
"""
POLICY = FilterPolicy(
    dnsbl_zones={"bl.lab.test": 6.0}, uribl_zones={"uribl.lab.test": 5.0}, check_timeout=1.0
)


async def test_dnsbl_lists_the_spam_source_and_not_others() -> None:
    async with serve_zone_text(BLOCKLIST) as server:
        check = DnsblCheck(POLICY, server.resolver())
        listed = await check.check(MessageContext("127.66.0.9"))
        clean = await check.check(MessageContext("127.66.0.10"))
    (symbol,) = listed.symbols
    assert (symbol.name, symbol.score) == ("RBL_BL_LAB_TEST", 6.0)
    assert "127.66.0.9 listed in bl.lab.test" in symbol.detail
    assert clean.symbols == []


async def test_dnsbl_return_codes_score_by_policy_and_error_codes_never_list() -> None:
    policy = FilterPolicy(
        dnsbl_zones={"zen.lab.test": 3.0},
        return_codes={"zen.lab.test": {"127.0.0.4": 6.0, "127.0.0.10": 0.5}},
    )
    async with serve_zone_text(CODED) as server:
        check = DnsblCheck(policy, server.resolver())
        results = {
            ip: (await check.check(MessageContext(f"127.66.0.{ip}"))).symbols
            for ip in (9, 10, 11, 12, 13)
        }
    (both,) = results[9]  # SBL (zone weight) and XBL (6.0): the best code counts
    assert (both.name, both.score) == ("RBL_ZEN_LAB_TEST", 6.0)
    assert "127.0.0.2" in both.detail and "127.0.0.4" in both.detail
    assert [(s.name, s.score) for s in results[10]] == [("RBL_ZEN_LAB_TEST", 0.5)]
    for ip in (11, 12, 13):  # a refused query, a broken list, a wildcard: no listing
        (fail,) = results[ip]
        assert (fail.name, fail.score) == ("RBL_ZEN_LAB_TEST_FAIL", 0.0)
        assert "not a listing" in fail.detail


async def test_fcrdns_confirms_mismatches_and_misses() -> None:
    async with serve_zone_text(REVERSE, FORWARD) as server:
        check = FcrdnsCheck(POLICY, server.resolver())
        good_ctx = MessageContext("127.66.0.10")
        good = await check.check(good_ctx)
        liar = await check.check(MessageContext("127.66.0.11"))
        none = await check.check(MessageContext("127.66.0.12"))
    assert [s.name for s in good.symbols] == ["FCRDNS_OK"]
    assert good_ctx.client_hostname == "good.sender.test"
    assert [s.name for s in liar.symbols] == ["FCRDNS_MISMATCH"]
    assert [s.name for s in none.symbols] == ["RDNS_NONE"]


async def test_uribl_finds_listed_domains_and_ips_in_text_and_html() -> None:
    raw = message(
        "Visit https://shop.bad-pills.test/buy now\n",
        html='<a href="http://127.66.0.9/x">x</a> <a href="https://example.org/">ok</a>',
    )
    async with serve_zone_text(URIBL) as server:
        result = await UriblCheck(POLICY, server.resolver()).check(context(raw))
        clean = await UriblCheck(POLICY, server.resolver()).check(context(message()))
    (symbol,) = result.symbols  # one symbol per zone, however many hits
    assert symbol.name == "URIBL_URIBL_LAB_TEST" and symbol.score == 5.0
    assert clean.symbols == []


async def test_uribl_looks_up_registered_domains_by_the_psl_and_full_hosts() -> None:
    async with serve_zone_text(URIBL) as server:
        check = UriblCheck(POLICY, server.resolver())

        async def hits(body: str) -> list[str]:
            return [s.detail for s in (await check.check(context(message(body)))).symbols]

        assert await hits("https://shop.evil.co.uk/cart") == [
            "in uribl.lab.test: evil.co.uk (127.0.0.2)"
        ]
        # a public suffix is never looked up: co.uk's listing must not hit every .co.uk link
        assert await hits("https://www.innocent.co.uk/") == []
        assert await hits("go to http://phish.sites.example.com/login") == [
            "in uribl.lab.test: phish.sites.example.com (127.0.0.2)"
        ]
        assert await hits("http://www.bad-pills.test/ and https://a.evil.co.uk/") == [
            "in uribl.lab.test: bad-pills.test (127.0.0.2), evil.co.uk (127.0.0.2)"
        ]  # one symbol, every listed name
        assert await hits("http://refused.test/") == []  # 127.255.255.254: refused query


def test_uribl_lookups_are_capped_per_message() -> None:
    body = " ".join(f"http://host{i}.example{i}.com/" for i in range(200))
    names = url_domains(mime.view(context(message(body))), MAX_LOOKUPS)
    assert len(names) == MAX_LOOKUPS
    assert names[:2] == ["example0.com", "host0.example0.com"]


async def test_dns_results_count_in_the_message_verdict() -> None:
    async with serve_zone_text(BLOCKLIST, URIBL, REVERSE, FORWARD) as server:
        pipeline = FilterPipeline(POLICY, resolver=server.resolver())
        ctx = context(
            message("see http://bad-pills.test/\n"), ip="127.66.0.9", helo="mx.sender.test"
        )
        connect = await pipeline.evaluate(ctx, Phase.CONNECT)
        data = await pipeline.evaluate(ctx, Phase.DATA)
    assert "RBL_BL_LAB_TEST" in {s.name for s in connect.symbols}
    names = {s.name for s in data.symbols}
    assert {"RBL_BL_LAB_TEST", "URIBL_URIBL_LAB_TEST", "RDNS_NONE"} <= names
    assert "DNS_CHECKS_SKIPPED" not in names
    assert any(n.startswith("SPF_") for n in names)  # the sender-auth check ran too
    assert any(a.startswith("spf=") for a in data.auth_results)
    assert data.action in (Action.QUARANTINE, Action.REJECT)


async def test_a_dns_server_that_never_answers_cannot_stall_the_message() -> None:
    async with serve_zone_text(SLOW_LIST) as server:
        server.silence("9.0.66.127.slow.lab.test")
        policy = FilterPolicy(dnsbl_zones={"slow.lab.test": 6.0}, check_timeout=0.5)
        pipeline = FilterPipeline(policy, resolver=server.resolver(timeout=5, lifetime=10))
        started = time.perf_counter()
        verdict = await pipeline.evaluate(context(message(), ip="127.66.0.9"), Phase.DATA)
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    assert "DNSBL_TIMEOUT" in {s.name for s in verdict.symbols}
    assert verdict.action is Action.DELIVER


def test_without_a_resolver_dns_checks_are_skipped_and_said_so() -> None:
    verdict = asyncio.run(FilterPipeline(POLICY).evaluate(context(message()), Phase.DATA))
    skipped = [s for s in verdict.symbols if s.name == "DNS_CHECKS_SKIPPED"]
    assert skipped and "dnsbl" in skipped[0].detail and "uribl" in skipped[0].detail


async def test_helo_sanity() -> None:
    check = HeloCheck(FilterPolicy())

    async def names(helo: str, ip: str = "127.66.0.10") -> list[str]:
        result = await check.check(MessageContext(ip, helo=helo, local_hostname="gw.contoso.test"))
        return [s.name for s in result.symbols]

    assert await names("mail.sender.test") == []
    assert await names("[127.66.0.10]") == []
    assert await names("[127.66.0.99]") == ["HELO_IP_MISMATCH"]
    assert await names("127.66.0.10") == ["HELO_BARE_IP"]
    assert await names("localhost") == ["HELO_NOT_FQDN"]
    assert await names("GW.contoso.test") == ["HELO_IS_OURS"]


async def test_rate_and_concurrency_limits_per_client_ip() -> None:
    limiter = RateLimiter(FilterPolicy(max_connections_per_ip=2, max_connections_per_minute=3))
    a, b = MessageContext("127.66.1.1"), MessageContext("127.66.1.2")
    assert (await limiter.check(a)).action is None
    assert (await limiter.check(a)).action is None
    busy = await limiter.check(a)
    assert busy.action is Action.TEMPFAIL and "concurrent" in busy.reason
    assert (await limiter.check(b)).action is None  # another client is not affected
    limiter.closed("127.66.1.1")
    assert (await limiter.check(a)).action is None  # third connection this minute
    limiter.closed("127.66.1.1")
    limiter.closed("127.66.1.1")
    flood = await limiter.check(a)
    assert flood.action is Action.TEMPFAIL and [s.name for s in flood.symbols] == ["RATE_LIMIT"]


async def test_an_ipv6_client_is_limited_by_its_slash_64() -> None:
    limiter = RateLimiter(FilterPolicy(max_connections_per_ip=2))
    hopping = [MessageContext(f"2001:db8:1:2::{n:x}") for n in range(1, 4)]
    assert (await limiter.check(hopping[0])).action is None
    assert (await limiter.check(hopping[1])).action is None
    third = await limiter.check(hopping[2])  # a fresh address in the same /64 is no escape
    assert third.action is Action.TEMPFAIL
    assert (await limiter.check(MessageContext("2001:db8:1:3::1"))).action is None
    limiter.closed(hopping[0])
    assert (await limiter.check(hopping[2])).action is None
    for ctx in hopping[1:]:
        limiter.closed(ctx)
    assert limiter.clients["2001:db8:1:2::/64"].open == 0


async def test_rate_limit_is_part_of_the_connect_phase() -> None:
    pipeline = FilterPipeline(FilterPolicy(max_connections_per_ip=1))
    session, refused = MessageContext("127.66.2.1"), MessageContext("127.66.2.1")
    first = await pipeline.evaluate(session, Phase.CONNECT)
    second = await pipeline.evaluate(refused, Phase.CONNECT)
    assert first.action is Action.DELIVER
    assert second.action is Action.TEMPFAIL and "127.66.2.1" in second.reason
    pipeline.connection_closed(refused)  # was never counted: changes nothing
    assert (await pipeline.evaluate(MessageContext("127.66.2.1"), Phase.CONNECT)).action is (
        Action.TEMPFAIL
    )
    pipeline.connection_closed(session)
    third = await pipeline.evaluate(MessageContext("127.66.2.1"), Phase.CONNECT)
    assert third.action is Action.DELIVER


async def test_uribl_extracts_urls_of_a_long_text_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offloaded: list[object] = []
    real = asyncio.to_thread

    async def spy(func: Any, /, *args: Any) -> Any:
        offloaded.append(func)
        return await real(func, *args)

    monkeypatch.setattr(uribl.asyncio, "to_thread", spy)
    async with serve_zone_text(URIBL) as server:
        check = UriblCheck(POLICY, server.resolver())
        await check.check(context(message("see http://bad-pills.test/\n")))
        assert offloaded == []
        hostile = await check.check(context(message("http://x.y@" * 30_000 + " bad-pills.test")))
    assert offloaded == [url_domains]
    assert hostile.symbols == []
