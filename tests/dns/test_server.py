"""The embedded DNS server over real UDP and TCP sockets on loopback."""

from __future__ import annotations

import asyncio
import socket

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from mxflow.dns.server import EmbeddedDnsServer
from mxflow.dns.zone import parse_zone
from mxflow.errors import MxflowError
from tests.conftest import unique_loopback
from tests.dnsserver import serve_zone_text

CONTOSO = """\
$ORIGIN contoso.test.
$TTL 300
@       IN MX   10 mx1.gateway.test.
@       IN TXT  "v=spf1 " "include:spf.host.test -all"
@       IN TXT  "MS=ms12345678"
mail    IN A    127.10.10.1
mail    IN AAAA ::1
alias   IN CNAME mail
loop    IN CNAME loop
a.b.c   IN A    127.0.0.2
*.wild  IN TXT  "wildcard"
big     IN TXT  "{a}" "{b}"
big     IN TXT  "{c}" "{d}"
""".format(a="a" * 250, b="b" * 250, c="c" * 250, d="d" * 250)

GATEWAY = """\
$ORIGIN gateway.test.
mx1 IN A 127.10.10.1
"""


async def ask(server: EmbeddedDnsServer, qname: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(qname, rdtype)
    return await dns.asyncquery.udp(query, server.host, port=server.port, timeout=2)


async def test_answers_records_with_multiple_txt_strings() -> None:
    async with serve_zone_text(CONTOSO, GATEWAY) as server:
        resolver = server.resolver()
        mx = await resolver.resolve("contoso.test", "MX")
        assert [r.exchange.to_text() for r in mx] == ["mx1.gateway.test."]
        txt = await resolver.resolve("contoso.test", "TXT")
        strings = sorted(r.strings for r in txt)
        assert strings == [(b"MS=ms12345678",), (b"v=spf1 ", b"include:spf.host.test -all")]
        gateway = await resolver.resolve("mx1.gateway.test", "A")
        assert gateway[0].address == "127.10.10.1"
        response = await ask(server, "mail.contoso.test", "A")
        assert response.flags & dns.flags.AA
        assert not response.flags & dns.flags.RA


async def test_nxdomain_versus_nodata() -> None:
    async with serve_zone_text(CONTOSO) as server:
        missing = await ask(server, "nothere.contoso.test", "A")
        assert missing.rcode() == dns.rcode.NXDOMAIN
        assert missing.authority and missing.authority[0].rdtype == 6  # SOA
        nodata = await ask(server, "mail.contoso.test", "MX")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
        assert nodata.authority
        # an empty non-terminal exists: NODATA, not NXDOMAIN
        between = await ask(server, "b.c.contoso.test", "A")
        assert between.rcode() == dns.rcode.NOERROR and not between.answer


async def test_cname_chain_followed_and_loop_stops() -> None:
    async with serve_zone_text(CONTOSO) as server:
        answer = await server.resolver().resolve("alias.contoso.test", "A")
        assert answer[0].address == "127.10.10.1"
        response = await ask(server, "loop.contoso.test", "A")
        assert len(response.answer) == 1 and response.answer[0].rdtype == 5  # CNAME


async def test_wildcard() -> None:
    async with serve_zone_text(CONTOSO) as server:
        answer = await server.resolver().resolve("x.wild.contoso.test", "TXT")
        assert answer[0].strings == (b"wildcard",)


async def test_refuses_names_outside_its_zones() -> None:
    async with serve_zone_text(CONTOSO) as server:
        response = await ask(server, "example.org", "A")
        assert response.rcode() == dns.rcode.REFUSED
        with pytest.raises(dns.resolver.NoNameservers):
            await server.resolver().resolve("example.org", "A")


async def test_large_answer_truncated_over_udp_and_complete_over_tcp() -> None:
    async with serve_zone_text(CONTOSO) as server:
        udp = await ask(server, "big.contoso.test", "TXT")
        assert udp.flags & dns.flags.TC and not udp.answer
        query = dns.message.make_query("big.contoso.test", "TXT")
        tcp = await dns.asyncquery.tcp(query, server.host, port=server.port, timeout=2)
        assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 2
        # EDNS with a larger payload fits over UDP
        edns = dns.message.make_query("big.contoso.test", "TXT", use_edns=0, payload=1232)
        bigger = await dns.asyncquery.udp(edns, server.host, port=server.port, timeout=2)
        assert not bigger.flags & dns.flags.TC and len(bigger.answer[0]) == 2
        # the resolver retries over TCP by itself
        answer = await server.resolver().resolve("big.contoso.test", "TXT")
        assert len(answer) == 2


async def test_timeout_names_are_never_answered() -> None:
    zone = parse_zone(CONTOSO)
    zone.add("slow", "TIMEOUT", "")
    zone.add("mail", "TIMEOUT", "")
    async with EmbeddedDnsServer([zone], host=unique_loopback()) as server:
        resolver = server.resolver(timeout=0.2, lifetime=0.4)
        with pytest.raises(dns.resolver.LifetimeTimeout):
            await resolver.resolve("slow.contoso.test", "A")
        # a TIMEOUT name still answers the types it has
        assert (await resolver.resolve("mail.contoso.test", "A"))[0].address == "127.10.10.1"
        with pytest.raises(dns.resolver.LifetimeTimeout):
            await resolver.resolve("mail.contoso.test", "TXT")
        server.silence("contoso.test")
        with pytest.raises(dns.resolver.LifetimeTimeout):
            await resolver.resolve("contoso.test", "MX")


async def test_garbage_datagram_gets_formerr_and_server_keeps_serving() -> None:
    async with serve_zone_text(CONTOSO) as server:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (server.host, server.port))
            await loop.sock_sendall(sock, b"\x12\x34" + b"\xff" * 14)
            reply = await asyncio.wait_for(loop.sock_recv(sock, 512), 2)
        assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
        assert (await server.resolver().resolve("mail.contoso.test", "A"))[0].address


async def test_port_in_use_is_a_clear_error() -> None:
    async with serve_zone_text(CONTOSO) as first:
        second = EmbeddedDnsServer([parse_zone(CONTOSO)], host=first.host, port=first.port)
        with pytest.raises(MxflowError, match="cannot listen on"):
            await second.start()


async def test_servfail_names_and_empty_apex() -> None:
    zone = parse_zone("$ORIGIN broken.test.\nhost IN A 127.0.0.3\n")
    zone.add("bad", "SERVFAIL", "")
    async with EmbeddedDnsServer([zone], host=unique_loopback()) as server:
        failed = await ask(server, "bad.broken.test", "A")
        assert failed.rcode() == dns.rcode.SERVFAIL
        apex = await ask(server, "broken.test", "MX")
        assert apex.rcode() == dns.rcode.NOERROR and not apex.answer


async def test_zone_transfers_are_refused() -> None:
    async with serve_zone_text(CONTOSO) as server:
        response = await ask(server, "contoso.test", "AXFR")
    assert response.rcode() == dns.rcode.REFUSED and not response.answer


async def test_idle_tcp_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mxflow.dns.server.TCP_IDLE_TIMEOUT", 0.2)
    async with serve_zone_text(CONTOSO) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server
        writer.close()


async def test_stop_with_an_open_tcp_connection_reports_no_error() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with serve_zone_text(CONTOSO) as server:
            _reader, writer = await asyncio.open_connection(server.host, server.port)
            await asyncio.sleep(0.05)  # the server has accepted it
        await asyncio.sleep(0.05)  # done callbacks of the closed connection have run
        writer.close()
    finally:
        loop.set_exception_handler(None)
    assert errors == []


async def test_negative_answers_carry_the_soa_with_its_minimum_ttl() -> None:
    zone = (
        "$ORIGIN neg.test.\n@ 3600 IN SOA ns1 hostmaster 1 3600 600 86400 60\nhost IN A 127.0.0.3\n"
    )
    async with serve_zone_text(zone) as server:
        nxdomain = await ask(server, "nothere.neg.test", "A")
        nodata = await ask(server, "host.neg.test", "MX")
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN and nodata.rcode() == dns.rcode.NOERROR
    for response in (nxdomain, nodata):
        assert not response.answer and response.flags & dns.flags.AA
        (soa,) = response.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 60  # RFC 2308 §3
