"""The shared mail types every layer speaks: message context, phase, symbol, verdict, action.

This is the lowest module of mxflow (it imports nothing of mxflow), so the wire, the
checks, the intake stages, the stores and the roles all use one vocabulary without
importing each other. A check contributes named symbols with scores, as rspamd does, so
an administrator can read why a message scored what it did; it may also ask for an action
outright (reject, quarantine, tempfail), contribute an `Authentication-Results` part and
ask for headers to be added. The verdict (checks/verdict.py) sums the scores, maps them to
the SCL scale and picks the action.
"""

from __future__ import annotations

import email.message
import email.policy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from enum import StrEnum
from typing import TypeVar

_MESSAGE_ID = re.compile(
    rb"^Message-ID:[ \t]*(.*?)\r\n(?![ \t])", re.IGNORECASE | re.MULTILINE | re.DOTALL
)


_SUBJECT = re.compile(
    rb"^Subject:[ \t]*(.*?)\r\n(?![ \t])", re.IGNORECASE | re.MULTILINE | re.DOTALL
)


def subject_of(raw: bytes) -> str:
    """The Subject header of a raw message as it stands (still MIME-encoded), or ""."""
    m = _SUBJECT.search(header_section(raw))
    if not m:
        return ""
    return " ".join(m.group(1).decode("utf-8", "replace").split())[:998]


def header_section(raw: bytes) -> bytes:
    """The header lines of `raw`, each ending in CRLF, without the blank line."""
    end = raw.find(b"\r\n\r\n")
    return raw[: end + 2] if end >= 0 else raw


def message_id_of(raw: bytes) -> str:
    """The Message-ID header of a raw message, or "" when it has none."""
    m = _MESSAGE_ID.search(header_section(raw))
    return m.group(1).decode("utf-8", "replace").strip() if m else ""


_S = TypeVar("_S")


class Phase(StrEnum):
    """When a check runs: at connect, after RCPT (envelope known), or after DATA."""

    CONNECT = "connect"
    ENVELOPE = "envelope"
    DATA = "data"


class Action(StrEnum):
    """What should happen to the message; ordered from mildest to strongest."""

    DELIVER = "deliver"
    JUNK = "junk"  # deliver with spam headers, so the host files it in Junk
    QUARANTINE = "quarantine"
    REJECT = "reject"  # 5xx at SMTP, never a bounce
    TEMPFAIL = "tempfail"  # 4xx at SMTP: try again later


ACTION_STRENGTH = {
    Action.DELIVER: 0,
    Action.JUNK: 1,
    Action.QUARANTINE: 2,
    Action.TEMPFAIL: 3,
    Action.REJECT: 4,
}


@dataclass(frozen=True)
class Symbol:
    """One named finding with its score, e.g. `SPF_FAIL 3.0 (ip 127.66.0.9 not permitted)`."""

    name: str
    score: float
    detail: str = ""


@dataclass
class CheckResult:
    """What one check contributes to the verdict."""

    symbols: list[Symbol] = field(default_factory=list)
    action: Action | None = None
    reason: str = ""  # shown to the SMTP client on reject/tempfail, and in the trace
    auth_results: list[str] = field(default_factory=list)  # e.g. "spf=pass smtp.mailfrom=a.b"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, score: float, detail: str = "") -> None:
        self.symbols.append(Symbol(name, score, detail))


@dataclass(frozen=True)
class TlsInfo:
    """TLS state of the inbound session, for Received headers and connector matching."""

    version: str
    cipher: str
    bits: int = 0
    peer_cert_names: tuple[str, ...] = ()


@dataclass
class MessageContext:
    """Everything a check may look at. `raw` is the message as received (CRLF line ends)."""

    client_ip: str
    helo: str = ""
    client_hostname: str | None = None  # verified reverse DNS name, if known
    mail_from: str = ""  # "" is the null sender
    rcpt_tos: list[str] = field(default_factory=list)
    raw: bytes = b""
    queue_id: str = ""
    tls: TlsInfo | None = None
    authenticated_user: str | None = None
    connector: str | None = None  # name of the inbound connector that matched, if any
    local_hostname: str = ""
    _parsed: email.message.EmailMessage | None = field(default=None, repr=False)
    _state: dict[type, object] = field(default_factory=dict, repr=False)

    def state(self, kind: type[_S]) -> _S:
        """Per-message state owned by the module that defines `kind` (created on first use).

        A stage or check keeps what it learns about this message in an object of its own
        class (the MIME view, the phase results, the rate limiter's accounting), so nobody
        sets ad-hoc attributes on the context and each piece of state has one owner.
        """
        found = self._state.get(kind)
        if found is None:
            found = self._state[kind] = kind()
        assert isinstance(found, kind)
        return found

    def start_message(self) -> None:
        """Forget the previous message of the session (its bytes and parse), keep the rest."""
        self.raw = b""
        self.queue_id = ""
        self._parsed = None

    @property
    def message(self) -> email.message.EmailMessage:
        """The parsed message, parsed once on first use."""
        if self._parsed is None:
            parsed = BytesParser(policy=email.policy.default).parsebytes(self.raw)
            assert isinstance(parsed, email.message.EmailMessage)
            self._parsed = parsed
        return self._parsed


def strongest(actions: Sequence[Action | None]) -> Action | None:
    """The strongest action asked for, or None when no check asked for one."""
    present = [a for a in actions if a is not None]
    return max(present, key=ACTION_STRENGTH.__getitem__) if present else None


@dataclass
class Verdict:
    """The outcome of all checks for one message (or one connection, at CONNECT).

    `scl` is the reference host's Spam Confidence Level: -1 bypass, 0-1 clean, 5-6 spam,
    7-9 high-confidence spam; never 2-4. `headers` are added to the message before it is
    spooled (spam headers, Authentication-Results, ARC set), in the order given.
    """

    action: Action = Action.DELIVER
    score: float = 0.0
    scl: int = 0
    reason: str = ""
    symbols: list[Symbol] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    auth_results: list[str] = field(default_factory=list)


MALWARE_SYMBOL_PREFIXES = ("CLAM_VIRUS", "MALWARE_")


UNSCANNABLE = "UNSCANNABLE"  # the symbol of content the node could not scan


def is_malware(symbol: Symbol) -> bool:
    """Whether a symbol names malware (it decides the quarantine class and retention)."""
    return symbol.name.startswith(MALWARE_SYMBOL_PREFIXES)


def needs_admin_release(symbol: Symbol) -> bool:
    """Malware, or what could not be scanned and so may be malware: the quarantine keeps
    it in the malware class (an administrator releases it, not the recipient)."""
    return is_malware(symbol) or symbol.name == UNSCANNABLE
