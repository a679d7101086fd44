"""Submission on the host over real sockets: AUTH after STARTTLS, throttling, sender
ownership, and submitted mail leaving by MX (scenario 1) or an outbound connector's
smart host (scenario 2) with SPF, DKIM and DMARC passing where it is received; a bounce
comes back to the sender's Inbox as a DSN."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from mxflow.auth.authenticate import authenticate
from mxflow.config import NodeConfig, load_config, parse_config
from mxflow.delivery.mailbox import read_maildir
from mxflow.errors import ConfigError
from mxflow.roles.build import build_node
from tests.clirun import ROOT
from tests.conftest import free_port, unique_loopback
from tests.dnsserver import EmbeddedDnsServer, serve_zone_text
from tests.engine.helpers import RawSmtp, maildir_messages, sink_config, stuffed, wait_for
from tests.host.submit import (
    PASSWORD,
    contoso_zone,
    dkim_key,
    letter,
    login,
    plain,
    starttls,
    submission_host,
)

BOB = "bob@contoso.com"


def fabrikam_zone(mx_ip: str) -> str:
    return (
        "$ORIGIN fabrikam.test.\n$TTL 300\n"
        "@ IN SOA ns.fabrikam.test. admin.fabrikam.test. 1 3600 600 86400 300\n"
        f"@ IN MX 10 mx\nmx IN A {mx_ip}\n"
    )


async def submit(host_addr: str, port: int, sender: str, rcpts: list[str], raw: bytes) -> str:
    client, code, text = await login(host_addr, port, BOB, PASSWORD)
    assert code == 235, text
    code, text = await client.mail(sender, rcpts, stuffed(raw))
    await client.close()
    assert code == 250, text
    return text


async def assert_authenticated(
    raw: bytes, host_ip: str, dns: EmbeddedDnsServer, sender: str = BOB
) -> None:
    """SPF, DKIM and DMARC as the receiving side judges the copy it stored."""
    outcome = await authenticate(
        raw, ip=host_ip, helo="mailbox.contoso.test", mail_from=sender, resolver=dns.resolver()
    )
    assert outcome.spf.result == "pass", outcome.ar_parts()
    assert any(d.result == "pass" and d.domain == "contoso.com" for d in outcome.dkim)
    assert outcome.dmarc.result == "pass", outcome.ar_parts()


async def test_scenario_1_submitted_mail_reaches_the_recipients_mx_signed(tmp_path: Path) -> None:
    host_ip, mx_ip = unique_loopback(), unique_loopback()
    mx_port = free_port(mx_ip)
    sink = sink_config(tmp_path / "mx", domains=("fabrikam.test",), address=mx_ip, port=mx_port)
    internet = {"name": "internet", "domains": ["*"], "mx": True, "port": mx_port}
    zones = (contoso_zone(host_ip, dkim_key(tmp_path / "host")), fabrikam_zone(mx_ip))
    async with serve_zone_text(*zones) as dns, build_node(sink):
        resolver = {"resolver": f"{dns.host}:{dns.port}"}
        cfg = submission_host(tmp_path / "host", host_ip, routes=[internet], dns=resolver)
        async with build_node(cfg) as host:
            raw = letter(BOB, "carol@fabrikam.test", "scenario one")
            await submit(host.address, host.port, BOB, ["carol@fabrikam.test"], raw)
            await wait_for(lambda: len(maildir_messages(sink, "carol@fabrikam.test")) == 1)
        (stored,) = maildir_messages(sink, "carol@fabrikam.test")
        await assert_authenticated(stored, host_ip, dns)
    assert b"with ESMTPSA" in stored  # the host's Received: a logged-in TLS session
    assert b"DKIM-Signature: " in stored and b"d=contoso.com" in stored


async def test_scenario_2_through_an_outbound_connector_to_a_smart_host(tmp_path: Path) -> None:
    """No MX lookup (the host has no resolver at all), TLS required, `*.domain` scoping."""
    host_ip, relay_ip = unique_loopback(), unique_loopback()
    relay = sink_config(
        tmp_path / "relay",
        domains=("fabrikam.test", "eu.fabrikam.test"),
        address=relay_ip,
        tls="starttls",
    )
    connector = {
        "name": "outbound-to-third-party",
        "domains": ["fabrikam.test", "*.fabrikam.test"],
        "smart_hosts": [f"{relay_ip}:{relay.listeners[0].port}"],
        "tls": "required",
    }
    cfg = submission_host(tmp_path / "host", host_ip, routes=[connector])
    async with serve_zone_text(contoso_zone(host_ip, dkim_key(tmp_path / "host"))) as dns:
        async with build_node(relay), build_node(cfg) as host:
            rcpts = ["carol@fabrikam.test", "dave@eu.fabrikam.test"]
            await submit(host.address, host.port, BOB, rcpts, letter(BOB, rcpts[0], "two"))
            await wait_for(lambda: len(maildir_messages(relay, "dave@eu.fabrikam.test")) == 1)
            await wait_for(lambda: len(maildir_messages(relay, "carol@fabrikam.test")) == 1)
        (stored,) = maildir_messages(relay, "carol@fabrikam.test")
        await assert_authenticated(stored, host_ip, dns)
    received = stored.split(b"\r\nReceived: ")[0]  # the relay's own line: how the host came
    assert b"with ESMTPS\r\n" in received and b"version=TLS" in received


async def test_a_bounce_comes_back_as_a_dsn_in_the_senders_inbox(tmp_path: Path) -> None:
    host_ip, mx_ip = unique_loopback(), unique_loopback()
    mx_port = free_port(mx_ip)
    sink = sink_config(
        tmp_path / "mx",
        domains=("fabrikam.test",),
        recipients=["carol@fabrikam.test"],
        address=mx_ip,
        port=mx_port,
    )
    internet = {"name": "internet", "domains": ["*"], "mx": True, "port": mx_port}
    zones = (contoso_zone(host_ip, dkim_key(tmp_path / "host")), fabrikam_zone(mx_ip))
    async with serve_zone_text(*zones) as dns, build_node(sink):
        resolver = {"resolver": f"{dns.host}:{dns.port}"}
        cfg = submission_host(tmp_path / "host", host_ip, routes=[internet], dns=resolver)
        async with build_node(cfg) as host:
            raw = letter(BOB, "nobody@fabrikam.test", "to nobody")
            await submit(host.address, host.port, BOB, ["nobody@fabrikam.test"], raw)
            await wait_for(lambda: len(inbox(cfg, BOB)) == 1)
    (dsn,) = inbox(cfg, BOB)
    assert dsn.startswith(b"Return-Path: <>\r\nDelivered-To: bob@contoso.com\r\n")
    assert b"multipart/report" in dsn and b"report-type=delivery-status" in dsn
    assert b"nobody@fabrikam.test" in dsn and b"Action: failed" in dsn


def inbox(cfg: NodeConfig, rcpt: str) -> list[bytes]:
    return read_maildir(cfg.data_dir / "maildir", rcpt)


async def test_auth_before_starttls_is_refused(tmp_path: Path) -> None:
    cfg = submission_host(tmp_path / "host", unique_loopback(), routes=[])
    async with build_node(cfg) as host:
        client = await RawSmtp.open(host.address, host.port)
        code, text = await client.cmd("EHLO laptop.contoso.com")
        assert code == 250 and "STARTTLS" in text and "AUTH" not in text
        assert (await client.cmd(f"AUTH PLAIN {plain(BOB, PASSWORD)}"))[1][:5] == "5.7.0"
        code, text = await client.cmd(f"MAIL FROM:<{BOB}>")
        assert (code, text) == (530, "5.7.0 Authentication required")
        await starttls(client)
        await client.cmd("EHLO laptop.contoso.com")
        code, text = await client.cmd(f"MAIL FROM:<{BOB}>")  # TLS alone is not a login
        assert (code, text[:5]) == (530, "5.7.0")
        await client.close()


async def test_a_wrong_password_is_refused_then_throttled(tmp_path: Path) -> None:
    attacker, elsewhere = unique_loopback(), unique_loopback()
    cfg = submission_host(tmp_path / "host", unique_loopback(), routes=[])
    async with build_node(cfg) as host:
        for _ in range(2):  # ten failures over two connections
            client, code, text = await login(host.address, host.port, BOB, "x", source=attacker)
            assert (code, text[:5]) == (535, "5.7.8"), text
            for _ in range(4):
                code, text = await client.cmd(f"AUTH PLAIN {plain(BOB, 'guess')}")
                assert code == 535, text
            await client.close()
        # the 11th, even with the right password: answered at once, no hash computed
        client, _, _ = await login(
            host.address, host.port, "alice@contoso.com", "y", source=attacker
        )
        started = time.monotonic()
        code, text = await client.cmd(f"AUTH PLAIN {plain(BOB, PASSWORD)}")
        assert time.monotonic() - started < 0.5
        assert (code, text[:5]) == (454, "4.7.0"), text
        await client.close()
        # the account is throttled from any address; another account from elsewhere is not
        _, code, text = await login(host.address, host.port, BOB, PASSWORD, source=elsewhere)
        assert code == 454, text
        alice = await login(host.address, host.port, "alice@contoso.com", "alice's own",
                            source=elsewhere)  # fmt: skip
        assert alice[1] == 235, alice[2]


async def test_a_user_cannot_send_as_someone_else(tmp_path: Path) -> None:
    cfg = submission_host(tmp_path / "host", unique_loopback(), routes=[])
    async with build_node(cfg) as host:
        client, code, _ = await login(host.address, host.port, BOB, PASSWORD)
        assert code == 235
        # the envelope: alice's address is not bob's
        code, text = await client.cmd("MAIL FROM:<alice@contoso.com>")
        assert (code, text[:5]) == (553, "5.7.1"), text
        # From: alice in a message whose envelope is bob's own alias
        forged = letter("Alice <alice@contoso.com>", "alice@contoso.com", "forged")
        code, text = await client.mail("robert@contoso.com", ["alice@contoso.com"], stuffed(forged))
        assert (code, text[:5]) == (550, "5.7.1"), text
        assert "may not send as alice@contoso.com" in text
        # as himself, through his alias: taken, delivered, signed (lock-down does not apply)
        own = letter("Robert <robert@contoso.com>", "alice@contoso.com", "own")
        code, text = await client.mail("robert@contoso.com", ["alice@contoso.com"], stuffed(own))
        assert code == 250, text
        await client.close()
        await wait_for(lambda: len(inbox(cfg, "alice@contoso.com")) == 1)
    (stored,) = inbox(cfg, "alice@contoso.com")
    assert b"Subject: own" in stored and b"d=contoso.com" in stored


def test_the_example_has_a_submission_port_and_an_outbound_connector(tmp_path: Path) -> None:
    config = load_config(ROOT / "examples" / "host.toml", data_dir=tmp_path)
    (submission,) = [x for x in config.listeners if x.submission]
    assert (submission.address, submission.port, submission.tls) == ("127.40.0.1", 5587, "starttls")
    outbound = config.route_for("fabrikam.com")
    assert outbound is not None and outbound.smart_hosts and outbound.tls == "required"
    assert config.route_for("contoso.com") is not None
    assert config.route_for("contoso.com").maildir is not None  # type: ignore[union-attr]


def test_a_submission_listener_needs_tls(tmp_path: Path) -> None:
    data = {
        "node": {"name": "h", "hostname": "h.test", "role": "host"},
        "listeners": [{"address": "127.0.0.1", "port": 0, "tls": "none", "submission": True}],
    }
    with pytest.raises(ConfigError, match="no AUTH in clear"):
        parse_config(data, "<h>", data_dir=tmp_path)


def test_only_a_host_has_a_submission_listener(tmp_path: Path) -> None:
    listener = {"address": "127.0.0.1", "port": 0, "tls": "starttls", "submission": True}
    listener |= {"cert": "c.pem", "key": "k.pem", "generate_cert": True}
    data = {"node": {"name": "g", "hostname": "g.test", "role": "gateway"}, "listeners": [listener]}
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.submission"):
        parse_config(data, "<g>", data_dir=tmp_path)


async def test_auth_login_and_hostile_responses_over_the_wire(tmp_path: Path) -> None:
    cfg = submission_host(tmp_path / "host", unique_loopback(), routes=[])
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    async with build_node(cfg) as host:
        client = await RawSmtp.open(host.address, host.port)
        await client.cmd("EHLO laptop.contoso.com")
        await starttls(client)
        await client.cmd("EHLO laptop.contoso.com")
        assert await client.cmd("AUTH LOGIN") == (334, "VXNlcm5hbWU6")
        assert (await client.cmd("%%% not base64 %%%"))[0] == 501
        assert await client.cmd("AUTH PLAIN") == (334, "")
        assert (await client.cmd("A" * 3000))[1][:5] == "5.5.2"  # over the bound: not decoded
        assert await client.cmd("NOOP") == (250, "2.0.0 Ok")  # still in step
        assert await client.cmd("AUTH LOGIN") == (334, "VXNlcm5hbWU6")
        assert await client.cmd(b64(BOB)) == (334, "UGFzc3dvcmQ6")
        code, text = await client.cmd(b64(PASSWORD))
        assert (code, text[:5]) == (235, "2.7.0"), text
        code, text = await client.mail(BOB, ["alice@contoso.com"], stuffed(letter(BOB, "a", "x")))
        assert code == 250, text
        await client.close()
        # a response longer than any command line ends the connection
        client = await RawSmtp.open(host.address, host.port)
        await client.cmd("EHLO laptop.contoso.com")
        await starttls(client)
        await client.cmd("EHLO laptop.contoso.com")
        await client.cmd("AUTH PLAIN")
        code, text = await client.cmd("A" * 100_000)
        assert code in (500, 0), text
        assert (await client.read_reply())[0] == 0  # closed
