"""Attacks on the SMTP wire, replayed over a real socket against a gateway (issue 10).

Each test names the attack it pins: CR/LF/NUL inside command arguments (header and
command injection), NUL inside DATA, over-long command lines, and addresses that break
RFC 5321/6531 limits or are not UTF-8 (poison messages that were once retried forever).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mxflow.config import NodeConfig
from mxflow.mail import Action, MessageContext, Phase, Verdict
from mxflow.roles.build import build_node
from tests.dnsserver import serve_zone_text
from tests.engine.helpers import (
    RawSmtp,
    maildir_gateway,
    maildir_messages,
    message,
    stuffed,
    wait_for,
)


@pytest.fixture
def gateway_cfg(tmp_path: Path) -> NodeConfig:
    return maildir_gateway("gateway", tmp_path / "gw")


async def _raw_cmd(client: RawSmtp, line: bytes) -> tuple[int, str]:
    await client.send_raw(line)
    return await client.read_reply()


async def test_bare_cr_in_rcpt_cannot_forge_header_lines(gateway_cfg: NodeConfig) -> None:
    """Attack 2: `RCPT TO:<x\\rAuthentication-Results: ... dmarc=pass>` once reached the
    Received line, where a downstream MTA read the rest as new header fields."""
    async with build_node(gateway_cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO attacker.example")
        assert (await client.cmd("MAIL FROM:<eve@fabrikam.test>"))[0] == 250
        forged = b"RCPT TO:<bob\rAuthentication-Results: gw; dmarc=pass@contoso.com>\r\n"
        code, text = await _raw_cmd(client, forged)
        assert (code, text[:5]) == (501, "5.5.2")
        assert (await client.cmd("RCPT TO:<bob@contoso.com>"))[0] == 250
        assert (await client.cmd("DATA"))[0] == 354
        await client.send_raw(stuffed(message("after the attempt")))
        assert (await client.read_reply())[0] == 250
        await client.close()
        for _ in range(100):
            if maildir_messages(gateway_cfg, "bob@contoso.com"):
                break
            await asyncio.sleep(0.05)
    (delivered,) = maildir_messages(gateway_cfg, "bob@contoso.com")
    assert b"dmarc=pass" not in delivered and b"\r" not in delivered.replace(b"\r\n", b"")


async def test_bare_cr_in_mail_from_is_refused(gateway_cfg: NodeConfig) -> None:
    """Attack 2: `MAIL FROM:<a\\rb@example.org>` injected commands into the outbound session."""
    async with build_node(gateway_cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO attacker.example")
        for line in (b"MAIL FROM:<a\rRSET@example.org>\r\n", b"MAIL FROM:<a\x00b@example.org>\r\n"):
            code, text = await _raw_cmd(client, line)
            assert (code, text[:5]) == (501, "5.5.2")
        assert (await client.cmd("MAIL FROM:<a@example.org>"))[0] == 250
        await client.close()


async def test_nul_in_data_is_refused_and_nothing_queued(gateway_cfg: NodeConfig) -> None:
    """Attack 3: NUL bytes relayed, which software that strips NUL turns into a second message."""
    async with build_node(gateway_cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO attacker.example")
        body = message("nul").replace(b"\r\n\r\n", b"\r\n\r\nline\x00.\x00joined\r\n", 1)
        code, text = await client.mail("eve@fabrikam.test", ["bob@contoso.com"], stuffed(body))
        assert (code, text[:5]) == (550, "5.6.0")
        assert (await client.cmd("NOOP"))[0] == 250  # one reply: the session is in sync
        await client.close()
        assert gw.spool.ids() == []


async def test_a_65_kb_command_line_is_refused(gateway_cfg: NodeConfig) -> None:
    """Attack 7: command lines of about 65 KB were accepted; past 4096 octets: 500 5.5.2."""
    async with build_node(gateway_cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO attacker.example")
        code, text = await _raw_cmd(client, b"NOOP " + b"A" * 65_000 + b"\r\n")
        assert (code, text[:5]) == (500, "5.5.2")
        assert (await client.read_reply())[0] == 0  # and the connection is closed


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"MAIL FROM:<" + b"a" * 300 + b"@fabrikam.test>\r\n", (553, "5.1.7")),
        (b"MAIL FROM:<\xff\xfe@fabrikam.test> SMTPUTF8\r\n", (553, "5.1.7")),
    ],
)
async def test_poison_senders_are_refused_at_mail(
    gateway_cfg: NodeConfig, line: bytes, expected: tuple[int, str]
) -> None:
    """Attack 6: a 300-character local part, or invalid UTF-8 under SMTPUTF8, was taken
    with 250 and then retried for days; now refused at MAIL, before anything is queued."""
    async with build_node(gateway_cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO attacker.example")
        code, text = await _raw_cmd(client, line)
        assert (code, text[:5]) == expected
        await client.close()


@pytest.mark.parametrize(
    "rcpt",
    [b"r" * 300 + b"@contoso.com", b"\xff\xfe@contoso.com", b"bob@" + b"d" * 300 + b".com"],
)
async def test_poison_recipients_are_refused_at_rcpt(gateway_cfg: NodeConfig, rcpt: bytes) -> None:
    async with build_node(gateway_cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO attacker.example")
        assert (await client.cmd("MAIL FROM:<a@fabrikam.test> SMTPUTF8"))[0] == 250
        code, text = await _raw_cmd(client, b"RCPT TO:<" + rcpt + b">\r\n")
        assert (code, text[:5]) == (553, "5.1.3")
        await client.close()


class _DmarcRejects:
    """A filter that rejects as the DMARC check does: its reason starts with a status code."""

    async def evaluate(self, ctx: MessageContext, phase: Phase) -> Verdict:
        if phase is Phase.DATA:
            reason = "5.7.1 DMARC policy of contoso.com (reject): failed authentication"
            return Verdict(action=Action.REJECT, reason=reason)
        return Verdict()


async def test_a_reply_carries_one_enhanced_status_code(gateway_cfg: NodeConfig) -> None:
    """Replies once read `550 5.7.1 5.7.1 DMARC policy ...`."""
    async with build_node(gateway_cfg, filter=_DmarcRejects()) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO c.fabrikam.test")
        code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(message()))
        assert code == 550 and text.startswith("5.7.1 DMARC policy of contoso.com"), text
        await client.close()


async def test_received_names_the_verified_reverse_name_and_nothing_unchecked(
    tmp_path: Path,
) -> None:
    """The client's forward-confirmed reverse name goes into our Received line; a PTR
    answer that is not a plain host name (here one with parentheses and spaces, which
    dnspython hands over as text) never does."""
    reverse = (
        "$ORIGIN 77.127.in-addr.arpa.\n"
        "10.0 IN PTR good.sender.test.\n"
        "11.0 IN PTR bad\\(name\\)\\032X-Injected:\\0321.sender.test.\n"
    )
    forward = (
        "$ORIGIN sender.test.\ngood IN A 127.77.0.10\n"
        "bad\\(name\\)\\032X-Injected:\\0321 IN A 127.77.0.11\n"
    )
    async with serve_zone_text(reverse, forward) as dns_server:
        cfg = maildir_gateway(
            "gateway",
            tmp_path / "gw",
            extra={
                "dns": {"resolver": f"{dns_server.host}:{dns_server.port}"},
                "filter": {"checks": ["fcrdns"]},
            },
        )
        async with build_node(cfg) as gw:
            for source in ("127.77.0.10", "127.77.0.11"):
                client = await RawSmtp.open(gw.address, gw.port, source=source)
                await client.cmd("EHLO c.sender.test")
                code, _ = await client.mail(
                    "a@sender.test", ["bob@contoso.com"], stuffed(message())
                )
                assert code == 250
                await client.close()
            await wait_for(lambda: len(maildir_messages(cfg, "bob@contoso.com")) == 2)
    messages = maildir_messages(cfg, "bob@contoso.com")
    received = sorted(m[m.index(b"Received: ") :].split(b"\r\n\tby", 1)[0] for m in messages)
    assert received == [
        b"Received: from c.sender.test ([127.77.0.11])",
        b"Received: from c.sender.test (good.sender.test [127.77.0.10])",
    ]
