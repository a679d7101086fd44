"""Header anomalies: missing or malformed Date / Message-ID / From, disguised senders, odd
Received chains and MIME damage.

Each finding is small on its own (legitimate software gets headers wrong too); together
they tip a borderline message, and the symbol names tell an administrator what was odd.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import getaddresses, mktime_tz, parsedate_tz

from mxflow import mime
from mxflow.auth.dmarc import default_psl, organizational_domain
from mxflow.checks import textscan
from mxflow.config.filter import FilterPolicy
from mxflow.mail import CheckResult, MessageContext, Phase

_EMAIL_IN_NAME = textscan.EMAIL  # linear: starts only at the beginning of a run
_MSGID = re.compile(r"^\s*<[^<>@\s]+@[^<>@\s]+>\s*$")
MAX_HOPS = 25
DAY = 86_400.0
SKEW = 16 * 3600.0  # between hops: a wrong time zone alone is up to 14 h, plus clock skew

DEFAULT_SCORES = {
    "MISSING_DATE": 1.0,
    "INVALID_DATE": 1.0,
    "DATE_IN_FUTURE": 1.5,
    "DATE_IN_PAST": 0.5,
    "MISSING_MID": 1.0,
    "INVALID_MID": 0.8,
    "MISSING_FROM": 2.5,
    "MULTIPLE_FROM": 2.0,
    "INVALID_FROM": 1.5,
    "FROM_NAME_SPOOF": 2.5,
    "FROM_ENVELOPE_MISMATCH": 0.3,
    "MISSING_SUBJECT": 0.0,
    "MISSING_TO": 0.0,
    "RCVD_TOO_MANY": 1.5,
    "RCVD_MALFORMED": 0.5,
    "RCVD_DATE_BACKWARDS": 1.0,
    "MIME_DEFECTS": 0.5,
    "MIME_LIMITS": 1.5,
}


@dataclass
class HeaderCheck:
    """The header anomalies of a message, one symbol per kind."""

    policy: FilterPolicy
    name: str = "headers"
    phase: Phase = Phase.DATA

    def __post_init__(self) -> None:
        default_psl()  # parse the Public Suffix List now, not on the first message's loop turn

    def _add(self, result: CheckResult, symbol: str, detail: str = "") -> None:
        result.add(symbol, self.policy.score(symbol, DEFAULT_SCORES[symbol]), detail)

    async def check(self, ctx: MessageContext) -> CheckResult:
        return self.inspect(mime.view(ctx), ctx.mail_from)

    def inspect(self, view: mime.MimeView, mail_from: str) -> CheckResult:
        result = CheckResult()
        self._date(result, view.header_all("date"))
        message_ids = view.header_all("message-id")
        if not message_ids:
            self._add(result, "MISSING_MID")
        elif not _MSGID.match(message_ids[0]):
            self._add(result, "INVALID_MID", message_ids[0][:80])
        self._from(result, view.header_all("from"), mail_from)
        if view.header("subject") is None:
            self._add(result, "MISSING_SUBJECT")
        if view.header("to") is None and view.header("cc") is None:
            self._add(result, "MISSING_TO")
        received = view.header_all("received")
        if len(received) > MAX_HOPS:
            self._add(result, "RCVD_TOO_MANY", f"{len(received)} Received headers")
        malformed = [r for r in received if ";" not in r]  # every hop stamps "; date"
        if malformed:
            self._add(result, "RCVD_MALFORMED", malformed[0][:80])
        backwards = _backwards_hop(received[:MAX_HOPS])
        if backwards:
            self._add(result, "RCVD_DATE_BACKWARDS", backwards)
        if view.defects:
            self._add(result, "MIME_DEFECTS", ", ".join(sorted(set(view.defects))[:5]))
        if view.limits:
            self._add(result, "MIME_LIMITS", "limit reached: " + ", ".join(view.limits))
        return result

    def _date(self, result: CheckResult, dates: list[str]) -> None:
        if not dates:
            self._add(result, "MISSING_DATE")
            return
        parsed = parsedate_tz(dates[0])
        if parsed is None:
            self._add(result, "INVALID_DATE", dates[0][:60])
            return
        try:
            when = float(mktime_tz(parsed))
        except (OverflowError, ValueError):
            self._add(result, "INVALID_DATE", dates[0][:60])
            return
        now = time.time()
        if when > now + DAY:
            self._add(result, "DATE_IN_FUTURE", dates[0][:60])
        elif when < now - 365 * 30 * DAY:
            self._add(result, "DATE_IN_PAST", dates[0][:60])

    def _from(self, result: CheckResult, values: list[str], mail_from: str) -> None:
        if not values:
            self._add(result, "MISSING_FROM")
            return
        if len(values) > 1:
            self._add(result, "MULTIPLE_FROM", f"{len(values)} From headers")
        pairs = getaddresses(values[:1])
        if not pairs or "@" not in pairs[0][1]:
            self._add(result, "INVALID_FROM", values[0][:80])
            return
        display, address = pairs[0]
        domain = address.rsplit("@", 1)[1].lower().rstrip(">")
        shown = _EMAIL_IN_NAME.search(display)
        if shown and _org(shown.group(1).lower()) != _org(domain):
            self._add(result, "FROM_NAME_SPOOF", f"name shows {shown.group(0)}, address {address}")
        if mail_from and "@" in mail_from:
            envelope = mail_from.rsplit("@", 1)[1].lower().strip("<>")
            if _org(envelope) != _org(domain):
                self._add(result, "FROM_ENVELOPE_MISMATCH", f"{mail_from} / {address}")


def _stamp(received: str) -> float | None:
    """The time a hop stamped after the last `;` of its Received header, if it parses."""
    parsed = parsedate_tz(received.rpartition(";")[2].strip()) if ";" in received else None
    if parsed is None:
        return None
    try:
        return float(mktime_tz(parsed))
    except (OverflowError, ValueError):
        return None


def _backwards_hop(received: list[str]) -> str:
    """Received headers are newest first, so each hop's time is at most the one above it
    (plus clock skew); a hop from the future below ours is usually a forged one."""
    newer: float | None = None
    for hop, header in enumerate(received):
        when = _stamp(header)
        if when is None:
            continue
        if newer is not None and when > newer + SKEW:
            return f"hop {hop + 1} is {(when - newer) / 3600:.1f} h later than the hop above it"
        newer = when
    return ""


def _org(domain: str) -> str:
    """The organisational domain (Public Suffix List), so `a.example.co.uk` and
    `b.example.co.uk` align while `example.co.uk` and `other.co.uk` do not."""
    return organizational_domain(domain) or domain
