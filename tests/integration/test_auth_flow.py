"""Sender authentication in the mail path, end to end over real sockets and the embedded
DNS server: Internet sender -> gateway (filter on, ARC-sealing) -> host (trusts the
gateway's seal) -> mailbox.

contoso.com signs its mail (DKIM, Ed25519) and protects X-Spam-Flag in the signature (it
lists the header, absent when signing, in h=). The gateway checks the message as received
(everything passes), adds its Authentication-Results and spam headers (X-Spam-Flag among
them, which breaks contoso's DKIM) and ARC-seals the result. At the host, SPF fails (the
gateway is not in contoso's SPF) and DKIM fails, so DMARC fails with p=reject; the gateway's
trusted ARC seal turns that into compauth=pass reason=130. Authentication-Results the client
forged in either node's name never reach the mailbox.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mxflow.auth.dkim import dkim_sign
from mxflow.auth.keys import generate_key, load_signing_key
from mxflow.auth.results import header_values
from mxflow.dns.server import EmbeddedDnsServer
from mxflow.roles.build import build_node
from mxflow.store.trace import TraceStore
from tests.auth.zones import serve_txt
from tests.conftest import unique_loopback
from tests.engine.helpers import RawSmtp, maildir_messages, node_config, stuffed, wait_for

GATEWAY_ID = "mx.gateway.example"
HOST_ID = "mx.host.example"


@dataclass
class World:
    dns: EmbeddedDnsServer
    sender_ip: str
    sender_pem: bytes
    arc_key: Path


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    sender_ip = unique_loopback()
    sender_pem, sender_record = generate_key("ed25519", 1024)
    arc_pem, arc_record = generate_key("rsa", 1024)
    arc_key = tmp_path / "arc.pem"
    arc_key.write_bytes(arc_pem)
    records: dict[str, str | None] = {
        "contoso.com": f"v=spf1 ip4:{sender_ip} -all",
        "_dmarc.contoso.com": "v=DMARC1; p=reject",
        "s1._domainkey.contoso.com": sender_record,
        "arc._domainkey.gateway.example": arc_record,
    }
    async with serve_txt(records) as server:
        yield World(server, sender_ip, sender_pem, arc_key)


def _resolver(world: World) -> str:
    return f"{world.dns.host}:{world.dns.port}"


def host_config(tmp_path: Path, world: World, trusted: list[str]) -> Any:
    return node_config(
        "host",
        tmp_path / "host",
        domains=[{"domain": "contoso.com", "type": "authoritative", "recipients": "any"}],
        routes=[{"domains": ["contoso.com"], "maildir": "maildir"}],
        extra={
            "dns": {"resolver": _resolver(world)},
            "filter": {},
            "auth": {"authserv_id": HOST_ID, "trusted_arc_sealers": trusted},
        },
    )


def gateway_config(tmp_path: Path, world: World, host: Any) -> Any:
    return node_config(
        "gateway",
        tmp_path / "gateway",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[
            {"domains": ["contoso.com"], "smart_hosts": [f"{host.address}:{host.port}"]},
        ],
        extra={
            "dns": {"resolver": _resolver(world)},
            "filter": {},
            "auth": {
                "authserv_id": GATEWAY_ID,
                "arc_seal": {
                    "domain": "gateway.example",
                    "selector": "arc",
                    "key_file": str(world.arc_key),
                },
            },
        },
    )


BODY = (
    b"From: Alice <alice@contoso.com>\r\n"
    b"To: Bob <bob@contoso.com>\r\n"
    b"Subject: quarterly figures\r\n"
    b"Date: Fri, 27 Nov 2026 06:00:00 +0000\r\n"
    b"Message-ID: <q3.figures@contoso.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hello Bob, the quarterly figures are in the shared folder as usual.\r\n"
    b"See you at the review on Monday.\r\n"
)
FORGED = (
    f"Authentication-Results: {GATEWAY_ID}; dmarc=pass header.from=forged-gw.example\r\n"
    f"Authentication-Results: {HOST_ID.upper()}; dkim=pass header.d=forged-host.example\r\n"
    "Authentication-Results: elsewhere.example; spf=pass smtp.mailfrom=kept.example\r\n"
).encode()


async def signed(world: World) -> bytes:
    key = load_signing_key(world.sender_pem)
    headers = ("from", "to", "subject", "date", "message-id", "x-spam-flag")
    name, value = await dkim_sign(BODY, "contoso.com", "s1", key, headers=headers)
    return FORGED + f"{name}: {value}\r\n".encode() + BODY


async def send(world: World, gateway: Any, raw: bytes) -> tuple[int, str]:
    client = await RawSmtp.open(gateway.address, gateway.port, source=world.sender_ip)
    await client.cmd("EHLO mail.contoso.com")
    reply = await client.mail("alice@contoso.com", ["bob@contoso.com"], stuffed(raw))
    await client.close()
    return reply


async def through(tmp_path: Path, world: World, trusted: list[str]) -> tuple[Any, bytes]:
    """Send the signed message through gateway -> host; the host config and what it got."""
    host_cfg = host_config(tmp_path, world, trusted)
    async with build_node(host_cfg) as host:
        gw_cfg = gateway_config(tmp_path, world, host)
        async with build_node(gw_cfg) as gateway:
            code, text = await send(world, gateway, await signed(world))
            assert code == 250, text
            await wait_for(lambda: len(maildir_messages(host_cfg, "bob@contoso.com")) == 1)
    return host_cfg, maildir_messages(host_cfg, "bob@contoso.com")[0]


def ours(raw: bytes, authserv: str) -> str:
    values = [v for v in header_values(raw, "Authentication-Results") if v.startswith(authserv)]
    assert len(values) == 1, values
    return values[0]


async def test_trusted_gateway_seal_gives_compauth_130_at_the_host(
    tmp_path: Path, world: World
) -> None:
    host_cfg, got = await through(tmp_path, world, ["gateway.example"])
    gateway_ar = ours(got, GATEWAY_ID)
    assert "dkim=pass" in gateway_ar and "dmarc=pass" in gateway_ar, gateway_ar
    assert "spf=pass" in gateway_ar
    host_ar = ours(got, HOST_ID)
    assert "dmarc=fail" in host_ar and "dkim=fail" in host_ar, host_ar
    assert "arc=pass" in host_ar, host_ar
    assert "compauth=pass reason=130" in host_ar, host_ar
    # forged results in either node's name are gone; a third party's are kept
    assert b"forged-gw.example" not in got and b"forged-host.example" not in got
    assert b"kept.example" in got
    # the gateway's headers, top down: ARC set, Authentication-Results, spam headers,
    # its Received (the host's own come above them)
    names = [line.split(b":", 1)[0] for line in got.split(b"\r\n") if line[:1] not in b" \t"]
    seal = names.index(b"ARC-Seal")
    assert names[seal : seal + 4] == [
        b"ARC-Seal",
        b"ARC-Message-Signature",
        b"ARC-Authentication-Results",
        b"Authentication-Results",
    ]
    gw_received = names.index(b"Received", seal)
    assert b"X-Spam-Flag" in names[seal:gw_received]
    assert b"gateway.lab.test" in got.split(b"\r\nReceived: ")[2][:400]  # 1: host's, 2: ours
    trace = TraceStore(host_cfg.trace_db, node="host")
    try:
        rows = trace.by_message_id("<q3.figures@contoso.com>")
    finally:
        trace.close()
    assert any(r.event == "delivered" for r in rows)


async def test_without_trust_the_host_rejects_the_dmarc_failure(
    tmp_path: Path, world: World
) -> None:
    host_cfg = host_config(tmp_path, world, [])
    async with build_node(host_cfg) as host:
        gw_cfg = gateway_config(tmp_path, world, host)
        async with build_node(gw_cfg) as gateway:
            code, text = await send(world, gateway, await signed(world))
            assert code == 250, text
            trace = TraceStore(gw_cfg.trace_db, node="gateway")
            try:

                def bounced() -> bool:
                    return any(e.event == "bounced" for e in trace.all())

                await wait_for(bounced)
                detail = next(e.detail for e in trace.all() if e.event == "bounced")
            finally:
                trace.close()
    assert "DMARC" in detail, detail
    assert maildir_messages(host_cfg, "bob@contoso.com") == []


async def test_outbound_dkim_signing_only_for_our_own_senders(tmp_path: Path) -> None:
    """`[auth.dkim_sign."contoso.com"]`: mail from a relay connector (our own senders) is
    signed; the same From arriving from the Internet is not (we never sign for a forger)."""
    pem, _record = generate_key("rsa", 1024)
    (tmp_path / "contoso.pem").write_bytes(pem)
    inside, outside = unique_loopback(), unique_loopback()
    cfg = node_config(
        "gateway",
        tmp_path / "gw",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        connectors=[{"name": "host-outbound", "from": [inside], "relay": True}],
        routes=[{"domains": ["*"], "maildir": "maildir"}],
        extra={
            "auth": {
                "authserv_id": GATEWAY_ID,
                "dkim_sign": {
                    "contoso.com": {"selector": "s1", "key_file": str(tmp_path / "contoso.pem")}
                },
            }
        },
    )
    async with build_node(cfg) as gw:
        for source, rcpt in ((inside, "carol@fabrikam.example"), (outside, "bob@contoso.com")):
            client = await RawSmtp.open(gw.address, gw.port, source=source)
            await client.cmd("EHLO mail.contoso.com")
            code, text = await client.mail("alice@contoso.com", [rcpt], stuffed(BODY))
            await client.close()
            assert code == 250, text
        await wait_for(lambda: len(maildir_messages(cfg, "bob@contoso.com")) == 1)
        await wait_for(lambda: len(maildir_messages(cfg, "carol@fabrikam.example")) == 1)
    (outbound,) = maildir_messages(cfg, "carol@fabrikam.example")
    (inbound,) = maildir_messages(cfg, "bob@contoso.com")
    assert outbound.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"), outbound[:200]
    assert b"d=contoso.com" in outbound.split(b"\r\nReceived: ")[0]
    assert b"DKIM-Signature" not in inbound
