"""What the optional external scanners share: rspamd (checks/rspamd.py) and SpamAssassin's
spamd (checks/spamd.py), for sites that already run one and want its say in the verdict.

A scanner's verdict becomes one symbol, `<P>_SPAM` when the scanner itself calls the
message spam and `<P>_HAM` otherwise, whose score is

    weight x the scanner's score, bounded to [-junk_score, reject_score]

The scales are comparable (rspamd adds a header at 6 and rejects at 15, SpamAssassin calls
5 spam; mxflow junks at 5 and rejects at 15), so `weight` 1.0 counts the scanner in full;
lower it when mxflow's own checks already see what the scanner sees. The upper bound is the
most one symbol needs (enough to reject alone: SpamAssassin gives GTUBE 1000), the lower
bound keeps a scanner's ham opinion from cancelling more than the junk line, so mxflow's
own findings still count: allow-listing belongs to mxflow's lists, not to an add-on.

A scanner is optional: when it is down, too slow, or answers something that is not its
protocol, the message gets `<P>_FAIL` (score 0), the failure is logged (the 1st, 2nd, 4th
... in a row, not once a message) and the rest of the filter decides, unless the site set
`on_failure = "tempfail"`. Every exchange is bounded: `timeout` for the whole of it
(connect, send, the last byte of the answer), and REPLY_LIMIT bytes of answer; a message
larger than `max_size` is not sent at all (`<P>_SKIPPED`, score 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from dataclasses import dataclass

from mxflow.config.filter import ClamdAddress, FilterPolicy, ScannerSettings
from mxflow.errors import MxflowError
from mxflow.mail import Action, CheckResult, MessageContext, Phase

log = logging.getLogger("mxflow.checks.scanner")

REPLY_LIMIT = 1024 * 1024  # far above a real answer (rspamd's JSON is a few KB)
GRACE = 1.0  # the pipeline's own budget for the check, past the scanner's timeout
TOP = 5  # the scanner's symbols named in the detail


class ScannerError(MxflowError):
    """The scanner could not be reached, or its answer was not its protocol."""


@dataclass(frozen=True)
class Judgement:
    """What a scanner said: spam or not by its own threshold, its score, and a detail
    naming its action and top symbols, for the administrator reading the verdict."""

    spam: bool
    score: float
    detail: str


def contribution(score: float, weight: float, policy: FilterPolicy) -> float:
    """The scanner's score as mxflow counts it (the module docstring says why so)."""
    return round(min(max(weight * score, -policy.junk_score), policy.reject_score), 3)


def finite(value: object, what: str) -> float:
    """A finite number from a scanner's answer, or ScannerError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScannerError(f"{what} is not a number: {str(value)[:40]!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ScannerError(f"{what} is not finite: {value!r}")
    return number


def top_symbols(scored: list[tuple[str, float]]) -> str:
    """`NAME score, ...` for the TOP symbols that weigh most (zero scores left out)."""
    weighty = sorted((s for s in scored if s[1] != 0), key=lambda s: (-abs(s[1]), s[0]))
    return ", ".join(f"{name} {score:g}" for name, score in weighty[:TOP])


async def connect(address: ClamdAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to `unix:/path` or `HOST:PORT`; TCP_NODELAY, since a request is written in
    pieces and a delayed ACK would add ~40 ms to each (PEERS.md, rspamd issue #1790)."""
    path = address.unix_path
    try:
        if path is not None:
            return await asyncio.open_unix_connection(path)
        host, port = address.host_port()
        reader, writer = await asyncio.open_connection(host, port)
    except (OSError, ValueError) as exc:
        raise ScannerError(f"cannot connect: {exc}") from exc
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    """Close without waiting long for a peer that does not close its side."""
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


def clean(text: str, limit: int = 255) -> str:
    """A value from the envelope or the session, safe inside one protocol header line."""
    return "".join(c for c in text if c.isprintable())[:limit]


class ScannerCheck:
    """An external scanner as a check; subclasses implement `scan` (the protocol)."""

    name = "scanner"
    prefix = "SCANNER"
    phase = Phase.DATA

    def __init__(self, policy: FilterPolicy, settings: ScannerSettings) -> None:
        self.policy = policy
        self.settings = settings
        self.failures = 0  # in a row
        # read by the pipeline: its budget ends after ours, so our own timeout is the one
        # that fires (and gives <P>_FAIL); fail_closed makes even its timeout a tempfail
        self.timeout = settings.timeout + GRACE
        self.fail_closed = settings.on_failure == "tempfail"

    async def scan(self, ctx: MessageContext) -> Judgement:
        raise NotImplementedError

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        if len(ctx.raw) > self.settings.max_size:
            size = f"{len(ctx.raw)} bytes > max_size {self.settings.max_size}"
            result.add(f"{self.prefix}_SKIPPED", 0.0, size)
            return result
        try:
            async with asyncio.timeout(self.settings.timeout):
                judged = await self.scan(ctx)
        except TimeoutError:
            return self._failed(f"no answer within {self.settings.timeout:g}s")
        except (ScannerError, OSError) as exc:
            return self._failed(str(exc) or type(exc).__name__)
        self.failures = 0
        score = contribution(judged.score, self.settings.weight, self.policy)
        result.add(f"{self.prefix}_{'SPAM' if judged.spam else 'HAM'}", score, judged.detail)
        return result

    def _failed(self, why: str) -> CheckResult:
        """`<P>_FAIL`, logged at the 1st, 2nd, 4th, 8th ... failure in a row; a tempfail
        only when the site asked for one (`on_failure = "tempfail"`)."""
        self.failures += 1
        tempfail = self.settings.on_failure == "tempfail"
        if self.failures & (self.failures - 1) == 0:
            log.warning(
                "%s at %s failed (%d in a row): %s; %s",
                self.name,
                self.settings.address,
                self.failures,
                why,
                "mail is tempfailed" if tempfail else "mail goes on without its verdict",
            )
        result = CheckResult()
        result.add(f"{self.prefix}_FAIL", 0.0, f"{self.settings.address}: {why}"[:300])
        if tempfail:
            result.action = Action.TEMPFAIL
            result.reason = f"{self.name} unavailable, try again later"
        return result
