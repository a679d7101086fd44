"""The pipeline: phases, budgets, crashes, allow / block lists."""

from __future__ import annotations

import asyncio

from mxflow.checks.pipeline import FilterPipeline
from mxflow.config.filter import FilterPolicy, parse_filter_section
from mxflow.mail import Action, CheckResult, MessageContext, Phase
from tests.filter.helpers import context, message


class Crashing:
    name = "crashy"
    phase = Phase.DATA

    async def check(self, ctx: MessageContext) -> CheckResult:
        raise RuntimeError("boom")


class Slow:
    name = "slow"
    phase = Phase.DATA

    async def check(self, ctx: MessageContext) -> CheckResult:
        await asyncio.sleep(30)
        return CheckResult()


class Scoring:
    def __init__(self, name: str, phase: Phase, score: float) -> None:
        self.name, self.phase, self.score = name, phase, score
        self.calls = 0

    async def check(self, ctx: MessageContext) -> CheckResult:
        self.calls += 1
        result = CheckResult()
        result.add(self.name.upper(), self.score)
        return result


async def test_a_crashing_or_slow_check_adds_a_symbol_and_loses_nothing() -> None:
    pipeline = FilterPipeline(
        FilterPolicy(check_timeout=0.3), checks=[Crashing(), Slow(), Scoring("ok", Phase.DATA, 1)]
    )
    verdict = await pipeline.evaluate(context(message()), Phase.DATA)
    names = {s.name: s.detail for s in verdict.symbols}
    assert names["CRASHY_ERROR"] == "RuntimeError: boom"
    assert "SLOW_TIMEOUT" in names and "OK" in names
    assert verdict.action is Action.DELIVER


async def test_earlier_phases_count_once_in_the_data_verdict() -> None:
    connect = Scoring("rbl", Phase.CONNECT, 3.0)
    envelope = Scoring("env", Phase.ENVELOPE, 1.0)
    data = Scoring("content", Phase.DATA, 2.0)
    pipeline = FilterPipeline(FilterPolicy(), checks=[connect, envelope, data])
    ctx = context(message())
    assert (await pipeline.evaluate(ctx, Phase.CONNECT)).score == 3.0
    assert (await pipeline.evaluate(ctx, Phase.ENVELOPE)).score == 4.0
    verdict = await pipeline.evaluate(ctx, Phase.DATA)
    assert verdict.score == 6.0 and verdict.scl == 5 and verdict.action is Action.JUNK
    assert (connect.calls, envelope.calls, data.calls) == (1, 1, 1)


async def test_allow_and_block_lists() -> None:
    policy = parse_filter_section(
        {
            "allow_senders": ["@partner.example"],
            "block_senders": ["spammer@bad.example", "evil.example"],
            "block_ips": ["127.66.0.0/24"],
        },
        "t.toml",
    )
    pipeline = FilterPipeline(policy)
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    allowed = await pipeline.evaluate(
        context(message(gtube), mail_from="news@mail.partner.example"), Phase.DATA
    )
    assert (allowed.scl, allowed.action) == (-1, Action.DELIVER)
    blocked_from = await pipeline.evaluate(
        context(message(sender="x@sub.evil.example")), Phase.DATA
    )
    assert blocked_from.action is Action.REJECT
    assert "blocked by policy" in blocked_from.reason
    blocked_env = await pipeline.evaluate(
        MessageContext("192.0.2.1", mail_from="spammer@bad.example"), Phase.ENVELOPE
    )
    assert blocked_env.action is Action.REJECT
    blocked_ip = await pipeline.evaluate(MessageContext("127.66.0.7"), Phase.CONNECT)
    assert blocked_ip.action is Action.REJECT and "127.66.0.7" in blocked_ip.reason


async def test_checks_can_be_switched_off_by_policy() -> None:
    pipeline = FilterPipeline(FilterPolicy(checks=("headers",)))
    assert [c.name for c in pipeline.checks] == ["headers"]
    verdict = await pipeline.evaluate(context(b"Subject: x\r\n\r\nbody\r\n"), Phase.DATA)
    assert {"MISSING_DATE", "MISSING_FROM", "MISSING_MID"} <= {s.name for s in verdict.symbols}


async def test_header_anomalies() -> None:
    raw = message(
        extra={"Reply-To": "x@example.net"},
    ).replace(b"From: Ann Example <ann@example.org>", b'From: "paypal@paypal.com" <ann@evil.test>')
    verdict = await FilterPipeline(FilterPolicy(checks=("headers",))).evaluate(
        context(raw, mail_from="bounce@other.test"), Phase.DATA
    )
    names = {s.name for s in verdict.symbols}
    assert {"FROM_NAME_SPOOF", "FROM_ENVELOPE_MISMATCH"} <= names
    assert "MISSING_DATE" not in names


async def test_a_second_message_in_the_same_session_is_judged_on_its_own() -> None:
    policy = parse_filter_section({"block_senders": ["spammer@bad.example"]}, "t.toml")
    pipeline = FilterPipeline(policy)
    session = MessageContext("192.0.2.1", helo="mail.example.org")
    await pipeline.evaluate(session, Phase.CONNECT)
    session.mail_from, session.raw = "spammer@bad.example", message("first")
    first = await pipeline.evaluate(session, Phase.DATA)
    session.mail_from, session.raw = "ann@example.org", message("second, a different body")
    second = await pipeline.evaluate(session, Phase.DATA)  # no ENVELOPE call in between
    assert first.action is Action.REJECT
    assert second.action is Action.DELIVER
    assert "BLOCKLISTED" not in {s.name for s in second.symbols}


async def test_a_forged_from_header_does_not_get_the_allow_list() -> None:
    policy = parse_filter_section({"allow_senders": ["boss@contoso.com"]}, "t.toml")
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    raw = message(gtube, sender="boss@contoso.com")
    verdict = await FilterPipeline(policy).evaluate(
        context(raw, mail_from="x@spammer.example"), Phase.DATA
    )
    assert verdict.action is Action.REJECT and verdict.scl == 9


async def test_a_blocked_sender_is_one_symbol_and_the_from_header_is_judged_at_data() -> None:
    policy = parse_filter_section(
        {"block_senders": ["spammer.example"], "allow_senders": ["partner.example"]}, "t.toml"
    )
    pipeline = FilterPipeline(policy)
    envelope = await pipeline.evaluate(
        context(message(), mail_from="x@spammer.example"), Phase.DATA
    )
    assert [s.name for s in envelope.symbols].count("BLOCKLISTED") == 1
    header = await pipeline.evaluate(
        context(message(sender="x@spammer.example"), mail_from="ann@example.org"), Phase.DATA
    )
    assert [s.name for s in header.symbols].count("BLOCKLISTED") == 1
    allowed = await pipeline.evaluate(
        context(message(), mail_from="news@partner.example"), Phase.DATA
    )
    assert [s.name for s in allowed.symbols].count("ALLOWLISTED") == 1


async def test_from_envelope_alignment_uses_the_public_suffix_list() -> None:
    pipeline = FilterPipeline(FilterPolicy(checks=("headers",)))

    async def mismatch(sender: str, mail_from: str) -> bool:
        verdict = await pipeline.evaluate(
            context(message(sender=sender), mail_from=mail_from), Phase.DATA
        )
        return "FROM_ENVELOPE_MISMATCH" in {s.name for s in verdict.symbols}

    assert not await mismatch("ann@news.example.co.uk", "bounce@mail.example.co.uk")
    assert await mismatch("ann@example.co.uk", "bounce@other.co.uk")  # not one organisation


async def test_a_received_hop_later_than_the_hop_above_it_is_odd() -> None:
    top = "from relay.example.net by mx.contoso.test; Tue, 24 Nov 2026 10:00:00 +0000"
    forged = "from pc by relay.example.net; Wed, 25 Nov 2026 10:00:00 +0000"
    skewed = "from pc by relay.example.net; Tue, 24 Nov 2026 23:30:00 +0100"  # wrong zone
    pipeline = FilterPipeline(FilterPolicy(checks=("headers",)))

    async def names(*hops: str) -> set[str]:
        raw = b"".join(f"Received: {h}\r\n".encode() for h in hops) + message()
        return {s.name for s in (await pipeline.evaluate(context(raw), Phase.DATA)).symbols}

    assert "RCVD_DATE_BACKWARDS" in await names(top, forged)
    assert "RCVD_DATE_BACKWARDS" not in await names(top, skewed)  # a wrong time zone
    assert "RCVD_DATE_BACKWARDS" not in await names(forged, top)  # newest first: in order
    assert "RCVD_DATE_BACKWARDS" not in await names(top, "from x by y; not a date")


async def test_a_display_name_showing_the_same_organisation_is_no_spoof() -> None:
    pipeline = FilterPipeline(FilterPolicy(checks=("headers",)))

    async def spoof(from_header: str) -> bool:
        raw = message().replace(b"From: Ann Example <ann@example.org>", from_header.encode())
        verdict = await pipeline.evaluate(context(raw), Phase.DATA)
        return "FROM_NAME_SPOOF" in {s.name for s in verdict.symbols}

    assert not await spoof('From: "news@shop.example.co.uk" <bounce@mail.example.co.uk>')
    assert await spoof('From: "service@paypal.com" <ann@evil.test>')
    assert await spoof('From: "service@paypal.co.uk" <ann@other.co.uk>')
