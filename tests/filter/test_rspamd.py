"""The optional rspamd check: the real daemon (.ci/services.d/rspamd.sh), and servers that lie."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from mxflow.checks.pipeline import FilterPipeline
from mxflow.checks.rspamd import RspamdCheck, judge, ping, request_headers
from mxflow.checks.scanner import ScannerError, contribution
from mxflow.config.filter import RSPAMD_DEFAULTS, FilterPolicy, ScannerSettings
from mxflow.mail import Action, MessageContext, Phase, Symbol
from tests.conftest import require, unique_loopback
from tests.filter import fakeserver
from tests.filter.helpers import GTUBE, RSPAMD, context, ham_today, message


def settings(url: str, **kw: object) -> ScannerSettings:
    return dataclasses.replace(RSPAMD_DEFAULTS, address=url, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def rspamd() -> str:
    require(await ping(RSPAMD), f"rspamd at {RSPAMD} (.ci/services.d/rspamd.sh starts it)")
    return RSPAMD


def envelope(raw: bytes, ip: str = "127.0.0.1") -> MessageContext:
    return context(
        raw,
        ip,
        helo="mail.example.org",
        client_hostname="mail.example.org",
        mail_from="ann@example.org",
        rcpt_tos=["bob@contoso.com"],
        queue_id="Q1RSPAMD",
    )


async def only(check: RspamdCheck, ctx: MessageContext) -> Symbol:
    result = await check.check(ctx)
    assert len(result.symbols) == 1, result.symbols
    assert result.action is None
    return result.symbols[0]


async def test_gtube_is_spam_and_rejected(rspamd: str) -> None:
    policy = FilterPolicy(checks=("rspamd",), rspamd=settings(rspamd))
    symbol = await only(RspamdCheck(policy, settings(rspamd)), envelope(message(GTUBE)))
    assert symbol.name == "RSPAMD_SPAM"
    assert symbol.score == policy.reject_score  # rspamd's "reject", at its required_score
    assert symbol.detail.startswith("reject") and "Gtube" in symbol.detail
    verdict = await FilterPipeline(policy).evaluate(envelope(message(GTUBE)), Phase.DATA)
    assert verdict.action is Action.REJECT and verdict.scl == 9


async def test_plain_ham_is_not_spam(rspamd: str) -> None:
    policy = FilterPolicy(checks=("rspamd", "headers"), rspamd=settings(rspamd))
    symbol = await only(RspamdCheck(policy, settings(rspamd)), envelope(ham_today()))
    assert symbol.name == "RSPAMD_HAM"
    assert symbol.score < policy.junk_score
    assert symbol.detail.startswith("no action")
    verdict = await FilterPipeline(policy).evaluate(envelope(ham_today()), Phase.DATA)
    assert verdict.action is Action.DELIVER
    assert "RSPAMD_HAM" in {s.name for s in verdict.symbols}


async def test_the_envelope_reaches_rspamd(rspamd: str) -> None:
    """From a client without reverse DNS at a public address, rspamd's hostname rules fire
    (it skips them for a local address): the IP and Hostname headers arrived."""
    check = RspamdCheck(FilterPolicy(), settings(rspamd))
    ctx = envelope(ham_today(), ip="192.0.2.10")
    ctx.client_hostname = None
    assert "HFILTER_HOSTNAME_UNKNOWN" in (await only(check, ctx)).detail
    assert "HFILTER" not in (await only(check, envelope(ham_today()))).detail


async def test_weight_scales_the_score(rspamd: str) -> None:
    half = RspamdCheck(FilterPolicy(), settings(rspamd, weight=0.5))
    assert (await only(half, envelope(message(GTUBE)))).score == 7.5
    none = RspamdCheck(FilterPolicy(), settings(rspamd, weight=0.0))
    assert (await only(none, envelope(message(GTUBE)))).score == 0.0


async def test_a_daemon_that_is_down_fails_open_and_the_message_passes() -> None:
    down = settings(f"http://{unique_loopback()}:9")
    policy = FilterPolicy(checks=("rspamd", "headers"), rspamd=down)
    symbol = await only(RspamdCheck(policy, down), envelope(ham_today()))
    assert symbol.name == "RSPAMD_FAIL" and symbol.score == 0.0
    assert "cannot connect" in symbol.detail
    verdict = await FilterPipeline(policy).evaluate(envelope(ham_today()), Phase.DATA)
    assert verdict.action is Action.DELIVER
    assert "RSPAMD_FAIL" in {s.name for s in verdict.symbols}


async def test_on_failure_tempfail_holds_the_message_when_configured() -> None:
    down = settings(f"http://{unique_loopback()}:9", on_failure="tempfail")
    policy = FilterPolicy(checks=("rspamd",), rspamd=down)
    verdict = await FilterPipeline(policy).evaluate(envelope(ham_today()), Phase.DATA)
    assert verdict.action is Action.TEMPFAIL
    assert "rspamd unavailable" in verdict.reason


async def test_a_message_above_max_size_is_not_sent() -> None:
    check = RspamdCheck(FilterPolicy(), settings(f"http://{unique_loopback()}:9", max_size=100))
    symbol = await only(check, envelope(ham_today()))
    assert symbol.name == "RSPAMD_SKIPPED" and symbol.score == 0.0


async def test_the_request_carries_the_envelope_and_the_message() -> None:
    requests: list[tuple[str, bytes]] = []
    answer = json.dumps({"score": 7.5, "required_score": 15, "action": "add header"}).encode()
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
    ctx = envelope(ham_today(), ip="192.0.2.10")
    ctx.rcpt_tos.append("jürgen@contoso.com")  # SMTPUTF8: sent as UTF-8
    ctx.mail_from = ""
    async with fakeserver.serve(fakeserver.answering(reply, requests)) as where:
        symbol = await only(RspamdCheck(FilterPolicy(), settings(f"http://{where}")), ctx)
    assert symbol == Symbol("RSPAMD_SPAM", 7.5, "add header, 7.5/15")
    head, body = requests[0]
    assert head.startswith("POST /checkv2 HTTP/1.1\r\n")
    for line in ("IP: 192.0.2.10", "Helo: mail.example.org", "Hostname: mail.example.org",
                 "From: <>", "Rcpt: bob@contoso.com", "Rcpt: jürgen@contoso.com",
                 "Queue-Id: Q1RSPAMD"):  # fmt: skip
        assert f"\r\n{line}\r\n" in head
    assert body == ctx.raw


def test_request_headers_drop_empty_values_and_control_characters() -> None:
    ctx = MessageContext(client_ip="192.0.2.1", helo=" evil\r\nX-Injected: 1\t", rcpt_tos=["a@b"])
    headers = dict(request_headers(ctx))
    assert headers["Helo"] == "evilX-Injected: 1"  # and no blank at either end (h11 refuses)
    assert "Hostname" not in headers and "User" not in headers and headers["From"] == "<>"


@pytest.mark.parametrize(
    ("answer", "name", "score"),
    [
        ({"score": 3.2, "required_score": 15, "action": "greylist"}, "RSPAMD_HAM", 3.2),
        ({"score": 1e300, "required_score": 15, "action": "reject"}, "RSPAMD_SPAM", 15.0),
        ({"score": -1e9, "required_score": 15, "action": "no action"}, "RSPAMD_HAM", -5.0),
        ({"score": 0, "required_score": 15, "action": "reject"}, "RSPAMD_SPAM", 15.0),
        ({"score": 9, "action": "rewrite subject", "symbols": "x"}, "RSPAMD_SPAM", 9.0),
    ],
)
def test_answers_map_to_bounded_symbols(answer: dict[str, object], name: str, score: float) -> None:
    judged = judge(200, json.dumps(answer).encode())
    assert ("RSPAMD_SPAM" if judged.spam else "RSPAMD_HAM") == name
    assert contribution(judged.score, 1.0, FilterPolicy()) == score


def test_the_detail_names_the_weightiest_symbols_only_if_well_formed() -> None:
    symbols = {f"S{i}": {"score": float(i)} for i in range(8)}
    symbols["bad name\r\nX"] = {"score": 50.0}
    symbols["NOT_A_SCORE"] = {"score": "high"}
    answer = {"score": 28, "required_score": 15, "action": "reject", "symbols": symbols}
    detail = judge(200, json.dumps(answer).encode()).detail
    assert detail == "reject, 28/15: S7 7, S6 6, S5 5, S4 4, S3 3"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b"[1, 2]",
        b'{"score": NaN, "action": "reject"}',
        b'{"score": "high", "action": "reject"}',
        b'{"score": 3}',
        b"[" * 100_000,
    ],
)
def test_answers_that_are_not_scan_results_are_errors(body: bytes) -> None:
    with pytest.raises(ScannerError):
        judge(200, body)


def http(status: str, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)


OK = b"HTTP/1.1 200 OK\r\n"
LIARS = {  # name: (server, what the symbol's detail says)
    "garbage": (fakeserver.answering(b"\x00\xff SPAMD/1.1 0 EX_OK\r\n\r\n" * 100), "not HTTP"),
    "error status": (fakeserver.answering(http("500 Oops", b'{"error": "no worker"}')), "500"),
    "closes at once": (fakeserver.answering(b""), "closed the connection"),
    "truncated": (fakeserver.answering(OK + b"Content-Length: 100\r\n\r\n{"), "not HTTP"),
    "huge body": (fakeserver.flooding(OK + b"Content-Length: 9000000000\r\n\r\n"), "larger"),
    "endless chunks": (
        fakeserver.flooding(
            OK + b"Transfer-Encoding: chunked\r\n\r\n", b"10000\r\n" + b"A" * 65536 + b"\r\n"
        ),
        "larger",
    ),
    "endless header": (fakeserver.flooding(OK + b"X-Filler: "), "not HTTP"),
    "slow drip": (fakeserver.dripping(OK + b"Content-Length: 50\r\n\r\n{"), "no answer within"),
    "silent": (fakeserver.silent, "no answer within"),
}


@pytest.mark.parametrize("liar", list(LIARS))
async def test_a_lying_server_is_bounded_in_time_and_size(liar: str) -> None:
    server, said = LIARS[liar]
    async with fakeserver.serve(server) as where:
        check = RspamdCheck(FilterPolicy(), settings(f"http://{where}", timeout=0.5))
        started = time.monotonic()
        symbol = await only(check, envelope(ham_today()))
        elapsed = time.monotonic() - started
    assert symbol.name == "RSPAMD_FAIL" and symbol.score == 0.0, symbol
    assert said in symbol.detail
    assert elapsed < 3.0  # the 0.5 s deadline, with room for a loaded machine
    assert len(symbol.detail) <= 300
