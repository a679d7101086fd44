"""check_host() beyond the suites: the reference's record, headers, limits, mapped IPv6."""

from __future__ import annotations

import pytest

from mxflow.auth.spf import (
    PermError,
    auth_results_part,
    check_host,
    check_mail_from,
    parse_record,
    received_spf_header,
)
from tests.dnsserver import serve_zone_text

CONTOSO = """\
$ORIGIN example.test.
reference   TXT "v=spf1 ipv4: 10.10.10.1 include:spf.host.test -all"
fixed       TXT "v=spf1 ip4:127.10.10.1 include:spf.host.test -all"
fixed       TXT "MS=ms12345678"
explained   TXT "v=spf1 -all exp=why.example.test"
why         TXT "%{i} may not send for %{d}; ask postmaster@%{o}"
chain       TXT "v=spf1 include:c1.example.test include:c2.example.test -all"
c1          TXT ( "v=spf1 a:n1.example.test a:n2.example.test a:n3.example.test"
              " a:n4.example.test ?all" )
c2          TXT ( "v=spf1 a:n5.example.test a:n6.example.test a:n7.example.test"
              " a:n8.example.test a:n9.example.test ?all" )
n1          A 127.0.0.9
n2          A 127.0.0.9
n3          A 127.0.0.9
n4          A 127.0.0.9
n5          A 127.0.0.9
n6          A 127.0.0.9
n7          A 127.0.0.9
n8          A 127.0.0.9
n9          A 127.0.0.9
voids       TXT "v=spf1 a:v1.example.test a:v2.example.test a:v3.example.test -all"
two         TXT "v=spf1 -all"
two         TXT "v=spf1 +all"
"""
HOST = """\
$ORIGIN host.test.
spf TXT "v=spf1 ip4:127.40.1.0/24 ip6:fd00:40::/64 -all"
"""


async def test_the_reference_record_is_a_permerror_everywhere() -> None:
    async with serve_zone_text(CONTOSO, HOST) as server:
        for ip in ("10.10.10.1", "127.40.1.5", "192.0.2.1"):
            result = await check_host(
                ip, "reference.example.test", "a@reference.example.test", resolver=server.resolver()
            )
            assert result.result == "permerror"
            assert (
                result.reason
                == "unknown mechanism 'ipv4' in the SPF record of reference.example.test"
            )
            assert result.mechanism == "ipv4:"


async def test_fixed_record_pass_and_fail_with_deciding_term() -> None:
    async with serve_zone_text(CONTOSO, HOST) as server:
        resolver = server.resolver()
        gateway = await check_host(
            "127.10.10.1", "fixed.example.test", "a@fixed.example.test", resolver=resolver
        )
        assert (gateway.result, gateway.mechanism) == ("pass", "ip4:127.10.10.1")
        host = await check_host(
            "127.40.1.200", "fixed.example.test", "a@fixed.example.test", resolver=resolver
        )
        assert (host.result, host.mechanism) == ("pass", "include:spf.host.test")
        assert host.lookups == 1
        other = await check_host(
            "127.66.0.1", "fixed.example.test", "a@fixed.example.test", resolver=resolver
        )
        assert (other.result, other.mechanism) == ("fail", "-all")
        assert (
            other.explanation
            == "127.66.0.1 is not one of fixed.example.test's designated mail servers"
        )
        ipv6 = await check_host(
            "2001:db8::1", "fixed.example.test", "a@fixed.example.test", resolver=resolver
        )  # the default explanation names the client as written, not in %{i} nibbles
        assert ipv6.explanation == (
            "2001:db8::1 is not one of fixed.example.test's designated mail servers"
        )


async def test_ipv4_mapped_ipv6_client_is_evaluated_as_ipv4() -> None:
    async with serve_zone_text(CONTOSO, HOST) as server:
        result = await check_host(
            "::ffff:127.10.10.1",
            "fixed.example.test",
            "a@fixed.example.test",
            resolver=server.resolver(),
        )
        assert result.result == "pass"
        assert result.ip == "127.10.10.1"
        six = await check_host(
            "fd00:40::7", "fixed.example.test", "a@fixed.example.test", resolver=server.resolver()
        )
        assert six.result == "pass"


async def test_explanation_macros() -> None:
    async with serve_zone_text(CONTOSO) as server:
        result = await check_host(
            "192.0.2.7",
            "explained.example.test",
            "joe@explained.example.test",
            resolver=server.resolver(),
        )
        assert result.result == "fail"
        assert result.explanation == (
            "192.0.2.7 may not send for explained.example.test; "
            "ask postmaster@explained.example.test"
        )


async def test_lookup_limit_counts_across_includes() -> None:
    async with serve_zone_text(CONTOSO) as server:
        result = await check_host(
            "192.0.2.1", "chain.example.test", "a@chain.example.test", resolver=server.resolver()
        )
        assert result.result == "permerror"
        assert "more than 10" in result.reason
        assert result.mechanism == "a:n9.example.test"


async def test_void_lookup_limit() -> None:
    async with serve_zone_text(CONTOSO) as server:
        result = await check_host(
            "192.0.2.1", "voids.example.test", "a@voids.example.test", resolver=server.resolver()
        )
        assert result.result == "permerror"
        assert result.void_lookups == 3
        assert "void" in result.reason


async def test_two_records_are_a_permerror_and_none_is_none() -> None:
    async with serve_zone_text(CONTOSO) as server:
        two = await check_host(
            "192.0.2.1", "two.example.test", "a@two.example.test", resolver=server.resolver()
        )
        assert two.result == "permerror" and "2 SPF records" in two.reason
        none = await check_host(
            "192.0.2.1", "n1.example.test", "a@n1.example.test", resolver=server.resolver()
        )
        assert none.result == "none"


async def test_resolver_that_does_not_answer_is_temperror() -> None:
    async with serve_zone_text(CONTOSO) as server:
        server.silence("fixed.example.test")
        result = await check_host(
            "192.0.2.1",
            "fixed.example.test",
            "a@fixed.example.test",
            resolver=server.resolver(timeout=0.2, lifetime=0.4),
        )
        assert result.result == "temperror"
        assert "timed out" in result.reason


async def test_refused_lookup_is_temperror_with_a_readable_reason() -> None:
    async with serve_zone_text(CONTOSO) as server:  # not authoritative for elsewhere.test
        result = await check_host(
            "192.0.2.1", "elsewhere.test", "a@elsewhere.test", resolver=server.resolver()
        )
    assert result.result == "temperror"
    assert result.reason == (
        "DNS error looking up elsewhere.test TXT: "
        "the resolver refused or failed the query (SERVFAIL/REFUSED)"
    )


async def test_null_sender_checks_helo_identity() -> None:
    async with serve_zone_text(CONTOSO, HOST) as server:
        result = await check_mail_from(
            "127.10.10.1", "", helo="fixed.example.test", resolver=server.resolver()
        )
        assert result.result == "pass"
        assert result.sender == "postmaster@fixed.example.test"


async def test_headers() -> None:
    async with serve_zone_text(CONTOSO, HOST) as server:
        result = await check_host(
            "127.66.0.1",
            "fixed.example.test",
            "a@fixed.example.test",
            helo="mta.example.org",
            resolver=server.resolver(),
            receiver="mx1.gateway.test",
        )
    header = received_spf_header(result)
    assert header.startswith(
        "fail (mx1.gateway.test: domain of a@fixed.example.test does not designate 127.66.0.1"
    )
    assert "client-ip=127.66.0.1;" in header
    assert "envelope-from=a@fixed.example.test;" in header
    assert "helo=mta.example.org;" in header
    assert 'mechanism="-all"' in header or "mechanism=-all" in header
    part = auth_results_part(result)
    assert part.startswith("spf=fail ")
    assert part.endswith("smtp.mailfrom=a@fixed.example.test")
    assert auth_results_part(result, identity="helo").endswith("smtp.helo=mta.example.org")


def test_bad_ip_is_permerror_not_a_crash() -> None:
    with pytest.raises(PermError, match="not an IPv4 address"):
        parse_record("v=spf1 ip4:300.1.1.1 -all")
    with pytest.raises(PermError, match="more than once"):
        parse_record("v=spf1 redirect=a.test redirect=b.test")
    record = parse_record("v=spf1 a:%{d}.example.test/24//64 mx ptr exp=x.test -all")
    assert [m.name for m in record.mechanisms] == ["a", "mx", "ptr", "all"]
    assert record.mechanisms[0].ip4_cidr == 24 and record.mechanisms[0].ip6_cidr == 64
