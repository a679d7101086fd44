"""The engine calls a role's Filter at CONNECT, ENVELOPE and DATA and obeys its verdict:
REJECT -> 550 5.7.1, TEMPFAIL -> 451 4.7.1, QUARANTINE -> the QuarantineSink (then 250),
DELIVER/JUNK -> our Authentication-Results and its headers go on top (above our Received
header), then spooled."""

from __future__ import annotations

from pathlib import Path

from mxflow.mail import Action, MessageContext, Phase, Verdict
from mxflow.roles.build import build_node
from mxflow.store.trace import TraceStore
from tests.engine.helpers import (
    RawSmtp,
    maildir_gateway,
    message,
    strip_received,
    stuffed,
    wait_for,
)


class SubjectFilter:
    """A stand-in policy: decides by the Subject, and records what it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[Phase, str]] = []

    async def evaluate(self, ctx: MessageContext, phase: Phase) -> Verdict:
        self.seen.append((phase, ctx.queue_id))
        if phase is Phase.CONNECT and ctx.client_ip.endswith(".66"):
            return Verdict(action=Action.REJECT, reason="listed on a blocklist")
        if phase is not Phase.DATA:
            return Verdict()
        subject = str(ctx.message["Subject"])
        assert ctx.raw.startswith(b"Received: ")
        if subject == "reject":
            return Verdict(action=Action.REJECT, reason="spam (score 15)")
        if subject == "tempfail":
            return Verdict(action=Action.TEMPFAIL, reason="DNS timeout, try later")
        if subject == "quarantine":
            return Verdict(action=Action.QUARANTINE, reason="malware")
        return Verdict(action=Action.JUNK, headers=[("X-Spam-Score", "6.0"), ("X-SCL", "5")])


class Quarantine:
    def __init__(self) -> None:
        self.held: list[bytes] = []

    async def quarantine(self, ctx: MessageContext, verdict: Verdict) -> str:
        self.held.append(ctx.raw)
        return f"Q{len(self.held)}"


async def test_verdicts_are_obeyed(tmp_path: Path) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
    )
    policy, held = SubjectFilter(), Quarantine()
    async with build_node(cfg, filter=policy, quarantine=held) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO c.fabrikam.test")
        replies = {}
        for subject in ("reject", "tempfail", "quarantine", "junk"):
            raw = message(subject)
            replies[subject] = await client.mail(
                "a@fabrikam.test", ["bob@contoso.com"], stuffed(raw)
            )
        await client.close()
        assert replies["reject"] == (550, "5.7.1 spam (score 15)")
        assert replies["tempfail"] == (451, "4.7.1 DNS timeout, try later")
        assert replies["quarantine"] == (250, "2.0.0 Ok: quarantined as Q1")
        assert replies["junk"][0] == 250
        assert len(held.held) == 1 and b"Subject: quarantine" in held.held[0]
        box = cfg.data_dir / "mail" / "bob@contoso.com" / "new"
        await wait_for(lambda: box.exists() and len(list(box.iterdir())) == 1)
        delivered = next(box.iterdir()).read_bytes()
        top = b"Authentication-Results: gateway.lab.test; none\r\nX-Spam-Score: 6.0\r\nX-SCL: 5\r\n"
        assert delivered.startswith(top)
        after = strip_received(delivered[len(top) :], 1)
        assert after.endswith(message("junk")[-40:])
        assert gw.spool.committed == 1
        phases = [p for p, _ in policy.seen]
        assert phases.count(Phase.CONNECT) == 1 and phases.count(Phase.DATA) == 4
        assert phases.count(Phase.ENVELOPE) == 4
        assert all(qid for p, qid in policy.seen if p is Phase.DATA)
        # the trace tells each message's fate, in the reference's vocabulary
        store = TraceStore(cfg.trace_db)
        await wait_for(lambda: any(e.event == "delivered" for e in store.all()))
        rows = {(e.event, e.status) for e in store.all()}
        store.close()
        assert ("rejected", "Failed") in rows  # REJECT
        assert ("rejected", "Pending") in rows  # TEMPFAIL: the client will try again
        assert ("quarantined", "Quarantined") in rows
        assert ("delivered", "FilteredAsSpam") in rows  # JUNK: delivered with spam headers


async def test_connect_reject(tmp_path: Path) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
    )
    async with build_node(cfg, filter=SubjectFilter()) as gw:
        import asyncio

        reader, writer = await asyncio.open_connection(
            gw.address, gw.port, local_addr=("127.0.0.66", 0)
        )
        line = await reader.readline()
        assert line.startswith(b"554 5.7.1 listed on a blocklist")
        writer.close()


async def test_a_configured_filter_table_runs_the_real_pipeline(tmp_path: Path) -> None:
    """`[filter]` in the node's config: the gateway builds mxflow's filter and obeys it."""
    from mxflow.config import parse_config

    base = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
    )
    listener = base.listeners[0]
    cfg = parse_config(
        {
            "node": {"name": "gateway", "hostname": "gateway.lab.test"},
            "listeners": [{"address": listener.address, "port": 0, "tls": "none"}],
            "accepted_domains": [{"domain": "contoso.com", "type": "internal_relay"}],
            "routes": [{"domains": ["contoso.com"], "maildir": "mail"}],
            "filter": {},
        },
        "<gateway>",
        data_dir=tmp_path / "gw",
    )
    async with build_node(cfg) as gw:
        assert gw.filter is not None and gw.quarantine is not None
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO c.fabrikam.test")
        ham = message("lunch")
        code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(ham))
        assert code == 250, text
        gtube = message(
            "spam", body="XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
        )
        code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(gtube))
        assert code == 550 and text.startswith("5.7.1"), text
        await client.close()
        box = cfg.data_dir / "mail" / "bob@contoso.com" / "new"
        await wait_for(lambda: box.exists() and len(list(box.iterdir())) == 1)
        delivered = next(box.iterdir()).read_bytes()
        # our Authentication-Results, the verdict's headers, our Received, the message
        assert delivered.startswith(b"Authentication-Results: gateway.lab.test;")
        received = delivered.index(b"\r\nReceived: ") + 2
        assert b"\r\nX-Spam-Status: " in delivered[:received]
        assert strip_received(delivered[received:], 1) == ham
