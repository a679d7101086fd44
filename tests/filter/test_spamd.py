"""The optional SpamAssassin check: the real spamd (.ci/services.d/spamd.sh), and liars."""

from __future__ import annotations

import dataclasses
import time

import pytest

from mxflow.checks.pipeline import FilterPipeline
from mxflow.checks.scanner import ScannerError
from mxflow.checks.spamd import SpamdCheck, judge, ping, received_header
from mxflow.config.filter import SPAMD_DEFAULTS, ClamdAddress, FilterPolicy, ScannerSettings
from mxflow.mail import Action, MessageContext, Phase, Symbol, TlsInfo
from tests.conftest import require, unique_loopback
from tests.filter import fakeserver
from tests.filter.helpers import GTUBE, SPAMD, context, ham_today, message


def settings(address: str, **kw: object) -> ScannerSettings:
    return dataclasses.replace(SPAMD_DEFAULTS, address=address, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def spamd() -> str:
    require(await ping(ClamdAddress(SPAMD)), f"spamd at {SPAMD} (.ci/services.d/spamd.sh)")
    return SPAMD


def envelope(raw: bytes, ip: str = "127.0.0.1") -> MessageContext:
    return context(
        raw,
        ip,
        helo="mail.example.org",
        client_hostname="mail.example.org",
        mail_from="ann@example.org",
        rcpt_tos=["bob@contoso.com"],
        queue_id="Q1SPAMD",
        local_hostname="mx.contoso.com",
    )


async def only(check: SpamdCheck, ctx: MessageContext) -> Symbol:
    result = await check.check(ctx)
    assert len(result.symbols) == 1, result.symbols
    assert result.action is None
    return result.symbols[0]


async def test_gtube_is_spam_and_rejected(spamd: str) -> None:
    policy = FilterPolicy(checks=("spamd",), spamd=settings(spamd))
    symbol = await only(SpamdCheck(policy, settings(spamd)), envelope(message(GTUBE)))
    assert symbol.name == "SPAMD_SPAM"
    assert symbol.score == policy.reject_score  # SpamAssassin's 1000 points, bounded
    assert symbol.detail.startswith("spam, 10") and ": GTUBE 1000" in symbol.detail
    verdict = await FilterPipeline(policy).evaluate(envelope(message(GTUBE)), Phase.DATA)
    assert verdict.action is Action.REJECT and verdict.scl == 9


async def test_plain_ham_is_not_spam(spamd: str) -> None:
    policy = FilterPolicy(checks=("spamd", "headers"), spamd=settings(spamd))
    symbol = await only(SpamdCheck(policy, settings(spamd)), envelope(ham_today()))
    assert symbol.name == "SPAMD_HAM"
    assert symbol.score < policy.junk_score
    verdict = await FilterPipeline(policy).evaluate(envelope(ham_today()), Phase.DATA)
    assert verdict.action is Action.DELIVER
    assert "SPAMD_HAM" in {s.name for s in verdict.symbols}


async def test_the_envelope_reaches_spamassassin_in_a_received_header(spamd: str) -> None:
    """SpamAssassin finds the client's address only in the Received header mxflow puts in
    front: a TEST-NET address there fires its RCVD_ILLEGAL_IP rule."""
    check = SpamdCheck(FilterPolicy(), settings(spamd))
    assert "RCVD_ILLEGAL_IP" in (await only(check, envelope(ham_today(), "192.0.2.10"))).detail
    assert "RCVD_ILLEGAL_IP" not in (await only(check, envelope(ham_today()))).detail


def test_the_received_header_is_postfix_shaped_and_safe() -> None:
    ctx = envelope(b"", ip="192.0.2.10")
    ctx.tls = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    ctx.helo = "evil (forged [10.0.0.1])\r\nX-Injected: 1"
    header = received_header(ctx).decode()
    assert header.startswith(
        "Received: from evilforged10.0.0.1X-Injected:1 (mail.example.org [192.0.2.10])\r\n"
        "\tby mx.contoso.com (mxflow) with ESMTPS id Q1SPAMD;\r\n\t"
    )
    assert header.endswith("\r\n") and header.count("\r\n") == 3
    ctx.client_ip, ctx.client_hostname, ctx.helo = "not an ip", None, ""
    assert received_header(ctx).startswith(b"Received: from unknown\r\n")


async def test_weight_scales_the_score(spamd: str) -> None:
    half = SpamdCheck(FilterPolicy(), settings(spamd, weight=0.5))
    assert (await only(half, envelope(message(GTUBE)))).score == 15.0  # 500, still bounded
    tenth = SpamdCheck(FilterPolicy(), settings(spamd, weight=0.001))
    assert 1.0 <= (await only(tenth, envelope(message(GTUBE)))).score <= 1.1


async def test_a_daemon_that_is_down_fails_open_and_the_message_passes() -> None:
    down = settings(f"{unique_loopback()}:9")
    policy = FilterPolicy(checks=("spamd", "headers"), spamd=down)
    symbol = await only(SpamdCheck(policy, down), envelope(ham_today()))
    assert symbol.name == "SPAMD_FAIL" and symbol.score == 0.0
    verdict = await FilterPipeline(policy).evaluate(envelope(ham_today()), Phase.DATA)
    assert verdict.action is Action.DELIVER
    missing = SpamdCheck(policy, settings("unix:/nonexistent/spamd.sock"))
    assert (await only(missing, envelope(ham_today()))).name == "SPAMD_FAIL"


async def test_on_failure_tempfail_holds_the_message_when_configured() -> None:
    down = settings(f"{unique_loopback()}:9", on_failure="tempfail")
    verdict = await FilterPipeline(FilterPolicy(checks=("spamd",), spamd=down)).evaluate(
        envelope(ham_today()), Phase.DATA
    )
    assert verdict.action is Action.TEMPFAIL and "spamd unavailable" in verdict.reason


async def test_a_message_above_max_size_is_not_sent() -> None:
    check = SpamdCheck(FilterPolicy(), settings(f"{unique_loopback()}:9", max_size=100))
    assert (await only(check, envelope(ham_today()))).name == "SPAMD_SKIPPED"


REPORT = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; 7.4 / 5.0\r\n\r\n%s",
    b"Content preview:  1000 FAKE_RULE planted by the sender\n\n"
    b" pts rule name              description\n"
    b"---- ---------------------- --------------------------------------------------\n"
    b" 3.5 BAYES_99               BODY: Bayes spam probability is 99 to 100%\n"
    b"                            [score: 1.0000]\n"
    b"-0.1 DKIM_VALID             Message has at least one valid DKIM signature\n"
    b" 4.0 URIBL_BLACK            Contains an URL listed in the URIBL blacklist\n"
    b"                             4000 WRAPPED description line\n",
)


async def test_the_request_and_a_report_with_its_rules() -> None:
    requests: list[tuple[str, bytes]] = []
    fmt, body = REPORT
    async with fakeserver.serve(fakeserver.answering(fmt % (len(body), body), requests)) as at:
        symbol = await only(SpamdCheck(FilterPolicy(), settings(at)), envelope(ham_today()))
    assert symbol == Symbol(
        "SPAMD_SPAM", 7.4, "spam, 7.4/5: URIBL_BLACK 4, BAYES_99 3.5, DKIM_VALID -0.1"
    )
    head, sent = requests[0]
    assert head.startswith("REPORT SPAMC/1.5\r\nContent-length: ")
    assert sent.startswith(b"Received: from mail.example.org (mail.example.org [127.0.0.1])")
    assert sent.endswith(ham_today()[-200:])


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"SPAMD/1.0 76 Bad header line: (Content-Length contains non-numeric bytes)\r\n\r\n",
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n",
        b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1e999 / 5.0\r\n\r\n",
        b"",
    ],
)
def test_answers_that_are_not_reports_are_errors(answer: bytes) -> None:
    with pytest.raises(ScannerError):
        judge(answer)


OK = b"SPAMD/1.1 0 EX_OK\r\n"
LIARS = {  # name: (server, what the symbol's detail says)
    "garbage": (fakeserver.answering(b"\x00\xff<html>\r\n\r\n" * 50), "not a spamd answer"),
    "error": (fakeserver.answering(b"SPAMD/1.0 74 EX_TEMPFAIL\r\n\r\n"), "EX_TEMPFAIL"),
    "closes at once": (fakeserver.answering(b""), "not a spamd answer"),
    "huge body": (fakeserver.flooding(OK + b"Content-length: 900000000\r\n\r\n"), "larger"),
    "endless header": (fakeserver.flooding(OK + b"Spam: "), "larger"),
    "slow drip": (fakeserver.dripping(OK + b"Content-length: 50\r\n\r\n"), "no answer within"),
    "silent": (fakeserver.silent, "no answer within"),
}


@pytest.mark.parametrize("liar", list(LIARS))
async def test_a_lying_server_is_bounded_in_time_and_size(liar: str) -> None:
    server, said = LIARS[liar]
    async with fakeserver.serve(server) as where:
        check = SpamdCheck(FilterPolicy(), settings(where, timeout=0.5))
        started = time.monotonic()
        symbol = await only(check, envelope(ham_today()))
        elapsed = time.monotonic() - started
    assert symbol.name == "SPAMD_FAIL" and symbol.score == 0.0, symbol
    assert said in symbol.detail
    assert elapsed < 3.0  # the 0.5 s deadline, with room for a loaded machine
    assert len(symbol.detail) <= 300
