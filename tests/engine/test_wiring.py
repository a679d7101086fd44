"""How the engine wires the filter and its quarantine: the session's context reaches
`connection_closed`, the node expires its quarantine at start, and RFC 5321's postmaster
is always accepted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mxflow.mail import MessageContext, Phase, Verdict
from mxflow.roles.build import build_node
from tests.engine.helpers import RawSmtp, maildir_gateway, message, node_config, stuffed, wait_for


class RecordingFilter:
    def __init__(self) -> None:
        self.contexts: list[tuple[Phase, int]] = []
        self.closed: list[object] = []

    async def evaluate(self, ctx: MessageContext, phase: Phase) -> Verdict:
        self.contexts.append((phase, id(ctx)))
        return Verdict()

    def connection_closed(self, session: MessageContext | str) -> None:
        self.closed.append(session)


async def test_connection_closed_gets_the_context_seen_at_connect(tmp_path: Path) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
        limits={"max_connections_per_ip": 1},
    )
    policy = RecordingFilter()
    async with build_node(cfg, filter=policy) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        # a second connection from the same IP is refused before the filter sees it
        reader, writer = await asyncio.open_connection(gw.address, gw.port)
        assert (await reader.readline()).startswith(b"421 4.7.0")
        writer.close()
        await client.cmd("EHLO c.fabrikam.test")
        code, _ = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(message()))
        assert code == 250
        await client.close()
        await wait_for(lambda: len(policy.closed) == 1)
    ctx = policy.closed[0]
    assert isinstance(ctx, MessageContext)
    # one context for the whole session: CONNECT, ENVELOPE and DATA, then closed
    assert {i for _, i in policy.contexts} == {id(ctx)}
    assert [p for p, _ in policy.contexts] == [Phase.CONNECT, Phase.ENVELOPE, Phase.DATA]


async def test_postmaster_is_always_accepted(tmp_path: Path) -> None:
    cfg = node_config(
        "host",
        tmp_path / "host",
        domains=[
            {"domain": "contoso.com", "type": "authoritative", "recipients": ["bob@contoso.com"]}
        ],
        routes=[{"domains": ["contoso.com"], "maildir": "mail"}],
    )
    async with build_node(cfg) as node:
        client = await RawSmtp.open(node.address, node.port)
        await client.cmd("EHLO c.fabrikam.test")
        assert (await client.cmd("MAIL FROM:<a@fabrikam.test>"))[0] == 250
        assert (await client.cmd("RCPT TO:<nobody@contoso.com>"))[0] == 550
        assert (await client.cmd("RCPT TO:<Postmaster>")) == (250, "2.1.5 Ok")
        assert (await client.cmd("RCPT TO:<postmaster@contoso.com>")) == (250, "2.1.5 Ok")
        assert (await client.cmd("RCPT TO:<postmaster@fabrikam.test>"))[0] == 550  # no relay
        await client.cmd("RSET")
        code, _ = await client.mail("a@fabrikam.test", ["postmaster"], stuffed(message()))
        assert code == 250
        await client.close()
        box = cfg.data_dir / "mail" / "postmaster@contoso.com" / "new"
        await wait_for(lambda: box.exists() and len(list(box.iterdir())) == 1)


async def test_the_node_expires_its_quarantine_at_start(tmp_path: Path) -> None:
    from mxflow.checks.node import node_quarantine
    from mxflow.mail import Action
    from mxflow.store.trace import TraceStore

    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
        extra={"filter": {}},
    )
    store = node_quarantine(cfg)
    ctx = MessageContext(client_ip="127.0.0.9", rcpt_tos=["bob@contoso.com"], raw=message())
    old = store.store(ctx, Verdict(action=Action.QUARANTINE), now=1_000_000.0)
    fresh = store.store(ctx, Verdict(action=Action.QUARANTINE))
    async with build_node(cfg) as gw:
        assert gw.quarantine is not None
        await wait_for(lambda: [e.id for e in store.list()] == [fresh])
    trace = TraceStore(cfg.trace_db)
    try:
        assert [e.event for e in trace.by_queue_id(old)] == ["quarantine-expired"]
    finally:
        trace.close()


async def test_sender_routed_local_parts_are_not_relayed(tmp_path: Path) -> None:
    """`user%other.example@contoso.com` and `other!user@contoso.com` from an untrusted
    client: a downstream honouring the percent hack would make us a relay."""
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
    )
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO c.fabrikam.test")
        assert (await client.cmd("MAIL FROM:<a@fabrikam.test>"))[0] == 250
        for rcpt in ("victim%fabrikam.test@contoso.com", "fabrikam.test!victim@contoso.com"):
            code, text = await client.cmd(f"RCPT TO:<{rcpt}>")
            assert (code, text.split()[0]) == (550, "5.7.1"), text
        assert (await client.cmd("RCPT TO:<bob@contoso.com>"))[0] == 250
        await client.close()


async def test_a_harvesting_client_is_dropped_after_max_errors(tmp_path: Path) -> None:
    """Unknown recipients one after another (a directory harvest): after `max_errors`
    4xx/5xx replies the session ends with 421, as Postfix's smtpd_hard_error_limit."""
    cfg = node_config(
        "host",
        tmp_path / "host",
        domains=[
            {"domain": "contoso.com", "type": "authoritative", "recipients": ["bob@contoso.com"]}
        ],
        routes=[{"domains": ["contoso.com"], "maildir": "mail"}],
        limits={"max_errors": 3},
    )
    async with build_node(cfg) as node:
        client = await RawSmtp.open(node.address, node.port)
        await client.cmd("EHLO c.fabrikam.test")
        await client.cmd("MAIL FROM:<a@fabrikam.test>")
        assert (await client.cmd("RCPT TO:<bob@contoso.com> NOTIFY=NEVER")) == (
            555,
            "5.5.4 Unsupported RCPT parameter NOTIFY",
        )
        assert (await client.cmd("RCPT TO:<guess1@contoso.com>"))[0] == 550
        code, text = await client.cmd("RCPT TO:<guess2@contoso.com>")
        assert code == 550 and "421 4.7.0 Too many errors" not in text
        assert await client.read_reply() == (421, "4.7.0 Too many errors, closing connection")
        assert await client.read_reply() == (0, "connection closed")
