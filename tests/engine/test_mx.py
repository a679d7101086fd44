"""MX delivery (RFC 5321 §5, RFC 7505) against the embedded DNS server on loopback."""

from __future__ import annotations

from pathlib import Path

from mxflow.config import NodeConfig
from mxflow.roles.build import build_node
from mxflow.store.trace import TraceStore
from tests.conftest import free_port, unique_loopback
from tests.dnsserver import serve_zone_text
from tests.engine.helpers import (
    RawSmtp,
    maildir_messages,
    message,
    node_config,
    sink_config,
    stuffed,
    wait_for,
)


def mx_gateway(tmp_path: Path, dns: str, port: int, dsn_sink: str | None = None) -> NodeConfig:
    routes = []
    if dsn_sink:
        routes.append({"domains": ["fabrikam.test"], "smart_hosts": [dsn_sink], "tls": "none"})
    routes.append({"name": "internet", "domains": ["*"], "mx": True, "port": port})
    return node_config(
        "gateway",
        tmp_path / "gw",
        connectors=[{"name": "inside", "from": ["127.0.0.0/8"], "relay": True}],
        routes=routes,
        extra={"dns": {"resolver": dns}},
    )


async def send(address: str, port: int, rcpt: str, subject: str) -> str:
    client = await RawSmtp.open(address, port)
    await client.cmd("EHLO c.fabrikam.test")
    code, text = await client.mail("alice@fabrikam.test", [rcpt], stuffed(message(subject)))
    await client.close()
    assert code == 250, text
    return text.rsplit(" ", 1)[1]


def trace_events(cfg: NodeConfig, queue_id: str) -> list[tuple[str, str]]:
    store = TraceStore(cfg.trace_db)
    try:
        return [(e.event, e.detail) for e in store.by_queue_id(queue_id)]
    finally:
        store.close()


async def test_preference_order_and_fallback_across_hosts_and_addresses(tmp_path: Path) -> None:
    a, b, dead1, dead2 = (unique_loopback() for _ in range(4))
    port = free_port(a)
    sink_a = sink_config(
        tmp_path / "a", domains=("contoso.test", "backup.contoso.test"), address=a, port=port
    )
    sink_b = sink_config(
        tmp_path / "b", domains=("contoso.test", "backup.contoso.test"), address=b, port=port
    )
    zone = f"""$ORIGIN contoso.test.
$TTL 300
@ IN SOA ns.contoso.test. admin.contoso.test. 1 3600 600 86400 300
@ IN MX 20 mx-b
@ IN MX 10 mx-a
mx-a IN A {a}
mx-b IN A {b}
backup IN MX 10 dead
backup IN MX 20 half
dead IN A {dead1}
half IN A {dead2}
half IN A {b}
"""
    async with serve_zone_text(zone) as dns_server, build_node(sink_a), build_node(sink_b):
        cfg = mx_gateway(tmp_path, f"{dns_server.host}:{dns_server.port}", port)
        async with build_node(cfg, resolver=dns_server.resolver()) as gw:
            await send(gw.address, gw.port, "bob@contoso.test", "preferred")
            await wait_for(lambda: len(maildir_messages(sink_a, "bob@contoso.test")) == 1)
            assert maildir_messages(sink_b, "bob@contoso.test") == []
            # backup.contoso.test: the preferred host is down, the next one has a dead
            # address and a live one: the message reaches the live one.
            qid = await send(gw.address, gw.port, "carol@backup.contoso.test", "fallback")
            await wait_for(lambda: len(maildir_messages(sink_b, "carol@backup.contoso.test")) == 1)
            assert not any(e == "deferred" for e, _ in trace_events(cfg, qid))


async def test_implicit_mx_uses_the_domain_address(tmp_path: Path) -> None:
    a = unique_loopback()
    port = free_port(a)
    sink = sink_config(tmp_path / "a", domains=("implicit.test",), address=a, port=port)
    zone = f"""$ORIGIN implicit.test.
@ IN SOA ns.implicit.test. admin.implicit.test. 1 3600 600 86400 300
@ IN A {a}
"""
    async with serve_zone_text(zone) as dns_server, build_node(sink):
        cfg = mx_gateway(tmp_path, f"{dns_server.host}:{dns_server.port}", port)
        async with build_node(cfg, resolver=dns_server.resolver()) as gw:
            await send(gw.address, gw.port, "dave@implicit.test", "implicit")
            await wait_for(lambda: len(maildir_messages(sink, "dave@implicit.test")) == 1)


async def test_null_mx_bounces_at_once_with_a_dsn(tmp_path: Path) -> None:
    dsn_sink = sink_config(tmp_path / "dsn", domains=("fabrikam.test",))
    zone = """$ORIGIN nomail.test.
@ IN SOA ns.nomail.test. admin.nomail.test. 1 3600 600 86400 300
@ IN MX 0 .
@ IN A 127.0.0.1
"""
    async with serve_zone_text(zone) as dns_server, build_node(dsn_sink) as ds:
        cfg = mx_gateway(
            tmp_path, f"{dns_server.host}:{dns_server.port}", 25, f"{ds.address}:{ds.port}"
        )
        async with build_node(cfg, resolver=dns_server.resolver()) as gw:
            qid = await send(gw.address, gw.port, "erin@nomail.test", "null-mx")
            await wait_for(lambda: len(maildir_messages(dsn_sink, "alice@fabrikam.test")) == 1)
            dsn = maildir_messages(dsn_sink, "alice@fabrikam.test")[0]
            assert b"Status: 5.1.10" in dsn
            assert b"null MX" in dsn
            await wait_for(lambda: any(e == "bounced" for e, _ in trace_events(cfg, qid)))
            events = trace_events(cfg, qid)
            assert [e for e, _ in events if e in ("deferred", "bounced")] == ["bounced"]


async def test_nonexistent_domain_bounces_and_dns_failure_defers(tmp_path: Path) -> None:
    zone = """$ORIGIN exists.test.
@ IN SOA ns.exists.test. admin.exists.test. 1 3600 600 86400 300
@ IN A 127.0.0.1
"""
    async with serve_zone_text(zone) as dns_server:
        cfg = mx_gateway(tmp_path, f"{dns_server.host}:{dns_server.port}", 25)
        async with build_node(cfg, resolver=dns_server.resolver()) as gw:
            qid = await send(gw.address, gw.port, "x@nothere.exists.test", "nxdomain")
            await wait_for(lambda: any(e == "bounced" for e, _ in trace_events(cfg, qid)))
            assert "5.1.2" in next(d for e, d in trace_events(cfg, qid) if e == "bounced")
