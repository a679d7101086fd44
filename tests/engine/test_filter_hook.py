"""The engine calls a role's Filter at CONNECT, ENVELOPE and DATA and obeys its verdict:
REJECT -> 550 5.7.1, TEMPFAIL -> 451 4.7.1, QUARANTINE -> the QuarantineSink (then 250),
DELIVER/JUNK -> its headers go right after our Received header, then spooled."""

from __future__ import annotations

from pathlib import Path

from mxflow.checks.base import Action, MessageContext, Phase, Verdict
from mxflow.roles.gateway import build_node
from tests.engine.helpers import RawSmtp, message, node_config, strip_received, stuffed, wait_for


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
    cfg = node_config(
        "gateway",
        tmp_path / "gw",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[{"domains": ["contoso.com"], "maildir": "mail"}],
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
        after = strip_received(delivered, 1)
        assert after.startswith(b"X-Spam-Score: 6.0\r\nX-SCL: 5\r\n")
        assert after.endswith(message("junk")[-40:])
        assert gw.spool.committed == 1
        phases = [p for p, _ in policy.seen]
        assert phases.count(Phase.CONNECT) == 1 and phases.count(Phase.DATA) == 4
        assert phases.count(Phase.ENVELOPE) == 4
        assert all(qid for p, qid in policy.seen if p is Phase.DATA)


async def test_connect_reject(tmp_path: Path) -> None:
    cfg = node_config(
        "gateway",
        tmp_path / "gw",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[{"domains": ["contoso.com"], "maildir": "mail"}],
    )
    async with build_node(cfg, filter=SubjectFilter()) as gw:
        import asyncio

        reader, writer = await asyncio.open_connection(
            gw.address, gw.port, local_addr=("127.0.0.66", 0)
        )
        line = await reader.readline()
        assert line.startswith(b"554 5.7.1 listed on a blocklist")
        writer.close()
