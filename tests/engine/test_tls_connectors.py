"""TLS: implicit-TLS listeners, and inbound connectors matched by client certificate name
(the reference's lock-down: the host takes relay mail only from the gateway's certificate)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from mxflow.roles.build import build_node
from mxflow.smtp.tls import generate_self_signed
from tests.conftest import unique_loopback
from tests.engine.helpers import (
    RawSmtp,
    maildir_messages,
    message,
    node_config,
    strip_received,
    stuffed,
    wait_for,
)


async def test_implicit_tls_listener(tmp_path: Path) -> None:
    cfg = node_config(
        "gateway",
        tmp_path / "gw",
        tls="implicit",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[{"domains": ["contoso.com"], "maildir": "mail"}],
    )
    async with build_node(cfg) as gw:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(gw.address, gw.port, ssl=ctx)
        client = RawSmtp(reader, writer)
        assert (await client.read_reply())[0] == 220
        code, text = await client.cmd("EHLO c.fabrikam.test")
        assert "STARTTLS" not in text
        raw = message("implicit")
        code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
        assert code == 250, text
        await client.close()
    got = (cfg.data_dir / "mail" / "bob@contoso.com" / "new").iterdir()
    data = next(got).read_bytes()
    assert b"with ESMTPS" in data and strip_received(data, 1) == raw


async def test_connector_by_client_certificate_name(tmp_path: Path) -> None:
    # The gateway's client certificate (self-signed: the downstream trusts it as its CA).
    cert, key = tmp_path / "gw-client.crt", tmp_path / "gw-client.key"
    generate_self_signed(cert, key, "gateway.thirdparty.test")
    host_addr = unique_loopback()
    host_cfg = node_config(
        "host",
        tmp_path / "host",
        address=host_addr,
        tls="starttls",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        connectors=[
            {
                "name": "from-gateway",
                "tls_cert_names": ["gateway.thirdparty.test"],
                "relay": True,
                "require_tls": True,
            }
        ],
        routes=[{"domains": ["*"], "maildir": "maildir"}],
    )
    # ask clients for a certificate signed by the gateway's (self-signed) cert
    listener = host_cfg.listeners[0]
    host_cfg.listeners[0] = type(listener)(
        listener.address, listener.port, listener.tls, listener.cert, listener.key, cert, True
    )
    async with build_node(host_cfg) as host:
        gw_cfg = node_config(
            "gateway",
            tmp_path / "gw",
            connectors=[{"name": "inside", "from": ["127.0.0.0/8"], "relay": True}],
            routes=[
                {
                    "domains": ["*"],
                    "smart_hosts": [f"{host.address}:{host.port}"],
                    "tls": "required",
                    "client_cert": str(cert),
                    "client_key": str(key),
                }
            ],
        )
        async with build_node(gw_cfg) as gw:
            client = await RawSmtp.open(gw.address, gw.port)
            await client.cmd("EHLO c.fabrikam.test")
            raw = message("via-cert", to="dave@elsewhere.example")
            code, text = await client.mail(
                "a@fabrikam.test", ["dave@elsewhere.example"], stuffed(raw)
            )
            assert code == 250, text
            await client.close()
            # relayed by the host only because the gateway's certificate matched
            await wait_for(lambda: len(maildir_messages(host_cfg, "dave@elsewhere.example")) == 1)
            got = maildir_messages(host_cfg, "dave@elsewhere.example")[0]
            assert strip_received(got, 2) == raw

        # Without the certificate, the same client is not matched: no relay.
        other = await RawSmtp.open(host.address, host.port, source=unique_loopback())
        await other.cmd("EHLO spoofer.example")
        assert (await other.cmd("MAIL FROM:<a@fabrikam.test>"))[0] == 250
        code, text = await other.cmd("RCPT TO:<dave@elsewhere.example>")
        assert (code, text[:5]) == (550, "5.7.1")
        await other.close()


async def test_commands_pipelined_behind_starttls_are_discarded(tmp_path: Path) -> None:
    """CVE-2011-0411: plaintext sent with STARTTLS must not be obeyed after the handshake."""
    cfg = node_config(
        "gateway",
        tmp_path / "gw",
        tls="starttls",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[{"domains": ["contoso.com"], "maildir": "mail"}],
    )
    async with build_node(cfg) as gw:
        reader, writer = await asyncio.open_connection(gw.address, gw.port)
        client = RawSmtp(reader, writer)
        await client.read_reply()
        await client.cmd("EHLO c.fabrikam.test")
        await client.send_raw(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        assert (await client.read_reply())[0] == 220
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        await writer.start_tls(ctx)
        # had the injected MAIL been obeyed, its reply (503: no EHLO since TLS) would come
        # first; the first reply must be the one to our NOOP
        assert await client.cmd("NOOP") == (250, "2.0.0 Ok")
        await client.close()
