"""The SMTP command state machine, apart from socket I/O.

`SmtpProtocol.handle(line)` takes one command line and returns a `Step`: the replies to
send and what the I/O layer must do next (read the message data, start TLS, close). It
never touches a socket and never awaits, so every command can be tested without one
(tests/engine/test_protocol.py), and the connection (connection.py) only moves bytes,
answering a plain command within the callback that read it — the same split as
dnspython's resolution logic shared by its sync and async resolvers.

Everything a client sends is an attack until validated: CR, LF and NUL inside a command
(`MAIL FROM:<a\\rb@x>`) are refused with `501 5.5.2` before anything reads the argument,
so no header or outbound command is ever built from them; addresses are held to RFC 5321
/ 6531 limits (64-octet local part, 255-octet domain) and, under SMTPUTF8, must be valid
UTF-8. What a node accepts at MAIL and RCPT (relay control, connectors, recipient
validation) is the node's policy, asked through the `Screen` interface.

AUTH (RFC 4954) is offered only on a submission listener and only under TLS, so no
password crosses the network in clear: before STARTTLS it is not advertised and answered
`530 5.7.0`. The SASL exchange (sasl.py decodes each response) is a state of its own:
after a `334` challenge the next line is the client's response, not a command
(`Next.SASL`). Whether the credentials are good is the node's to say, through the
`Authenticator` interface; checking a password hash is slow, so the I/O layer awaits it
(`Next.AUTH`) and hands the outcome back with `auth_finished`. On a submission listener
MAIL needs a logged-in session (`530 5.7.0 Authentication required`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mxflow.mail import TlsInfo
from mxflow.smtp.sasl import (
    MAX_PASSWORD,
    MAX_USERNAME,
    MECHANISMS,
    PASSWORD_PROMPT,
    USERNAME_PROMPT,
    AuthOutcome,
    Credentials,
    decode_response,
    decode_text,
    parse_plain,
)

MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
_PATH = re.compile(r"^\s*<([^<>]*)>\s*(.*)$")
_FORBIDDEN = re.compile(r"[\r\n\x00]")


@dataclass
class Session:
    """State of one SMTP connection and its current transaction."""

    peer_ip: str
    peer_port: int
    helo: str = ""
    esmtp: bool = False
    tls: TlsInfo | None = None
    connector: str | None = None  # name of the inbound connector that matched at MAIL
    relay: bool = False  # the matched connector may relay to any domain
    auth_user: str | None = None  # the mailbox this session logged in as (AUTH)
    mail_from: str | None = None
    rcpt_tos: list[str] = field(default_factory=list)
    smtputf8: bool = False
    body_8bit: bool = False
    chunking: bool = False  # BDAT chunks of this transaction have begun (RFC 3030)
    queued: list[str] = field(default_factory=list)
    rejected: int = 0
    errors: int = 0  # 4xx/5xx replies since the last queued message (smtpd_hard_error_limit)

    def reset(self) -> None:
        """End the transaction (RSET, EHLO, after DATA); the connection's state stays."""
        self.mail_from = None
        self.rcpt_tos = []
        self.smtputf8 = False
        self.body_8bit = False
        self.chunking = False


class Screen(Protocol):
    """The node's envelope policy, asked by the protocol at MAIL and RCPT."""

    def mail(self, session: Session, address: str) -> str | None:
        """Match the client to a connector (setting `session.connector` and `.relay`);
        a refusal reply, or None to accept the sender."""
        ...

    def rcpt(self, session: Session, address: str) -> tuple[str | None, str]:
        """A refusal reply (or None) and the recipient as the node will record it."""
        ...


class Authenticator(Protocol):
    """The node's logins, asked by the protocol (`throttled`) and the I/O layer (`verify`)."""

    def throttled(self, session: Session) -> bool:
        """Too many failed logins from this client: answer AUTH at once with 454."""
        ...

    async def verify(self, session: Session, credentials: Credentials) -> tuple[AuthOutcome, str]:
        """Check a login; the outcome and the account name as the node records it."""
        ...


@runtime_checkable
class AuthenticatingScreen(Screen, Protocol):
    """A screen that also carries the node's logins (the host's): a submission listener
    offers AUTH only when its screen is one."""

    authenticator: Authenticator


@dataclass(frozen=True)
class Features:
    """What the listener offers and enforces: the EHLO keywords and the protocol's limits."""

    hostname: str
    max_message_size: int
    max_recipients: int
    max_errors: int
    starttls: bool = False  # offered (a STARTTLS listener with a certificate)
    submission: bool = False  # MAIL only after AUTH (RFC 6409 submission)
    auth: bool = False  # AUTH offered once TLS is active (a submission listener with logins)


class Next(enum.Enum):
    """What the I/O layer does after sending a step's replies."""

    READ = "read"  # the next command
    DATA = "data"  # run the envelope checks, then 354 and read the message
    CHUNK = "chunk"  # read `Step.chunk_size` octets of BDAT data (always, even if refused)
    STARTTLS = "starttls"  # the handshake, then `tls_started`
    CLOSE = "close"
    SASL = "sasl"  # send the 334 challenge now, then the next line is a SASL response
    AUTH = "auth"  # verify `Step.credentials`, then `auth_finished`


@dataclass
class Step:
    replies: list[str] = field(default_factory=list)
    next: Next = Next.READ
    chunk_size: int = 0  # with Next.CHUNK: the octets that follow the BDAT command
    last: bool = False  # with Next.CHUNK: BDAT ... LAST
    refusal: str | None = None  # with Next.CHUNK: read the octets, then answer this
    credentials: Credentials | None = None  # with Next.AUTH


def _check_address(address: str, smtputf8: bool) -> str | None:
    """Why `address` breaks RFC 5321/6531 limits, or None."""
    local, _, domain = address.rpartition("@")
    try:
        local_octets = len(local.encode("utf-8"))
        domain_octets = len(domain.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if not address.isascii() and not smtputf8:
        return "non-ASCII needs SMTPUTF8"
    if local_octets > MAX_LOCAL_PART:
        return f"local part longer than {MAX_LOCAL_PART} octets"
    if domain_octets > MAX_DOMAIN:
        return f"domain longer than {MAX_DOMAIN} octets"
    return None


class SmtpProtocol:
    """One connection's command state machine (RFC 5321, with ESMTP extensions)."""

    def __init__(
        self,
        features: Features,
        screen: Screen,
        session: Session,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.features = features
        self.screen = screen
        self.session = session
        self.authenticator = authenticator if features.auth else None
        self.accepting = True  # False while the node shuts down
        self._sasl: _SaslExchange | None = None  # an AUTH exchange waiting for a response

    def greeting(self) -> str:
        return f"220 {self.features.hostname} ESMTP mxflow"

    def note(self, reply: str) -> str:
        """Count an error reply (also those the I/O layer sends after DATA)."""
        if reply[:1] in ("4", "5"):
            self.session.errors += 1
        return reply

    def finish(self, reply: str) -> Step:
        """The step after the message data: `reply` (counted), then the limits."""
        return self._after(Step([self.note(reply)]))

    def handle(self, line: bytes) -> Step:
        """The replies to one command line (with its line end) and what to do next."""
        text = line.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", "surrogateescape")
        if self._sasl is not None:
            step = self._sasl_response(self._sasl, text)
        elif _FORBIDDEN.search(text):
            step = Step([self.note("501 5.5.2 Syntax error: CR, LF or NUL inside a command")])
        else:
            verb, _, arg = text.partition(" ")
            step = self._dispatch(verb.upper(), arg)
        return self._after(step)

    def _after(self, step: Step) -> Step:
        if step.next is Next.CLOSE:
            return step
        if not self.accepting and self.session.mail_from is None:
            step.replies.append("421 4.3.2 Service shutting down")
            step.next = Next.CLOSE
        elif self.session.errors >= self.features.max_errors:
            # address harvesting and broken clients: drop them as Postfix does
            step.replies.append("421 4.7.0 Too many errors, closing connection")
            step.next = Next.CLOSE
        return step

    def _dispatch(self, verb: str, arg: str) -> Step:
        s = self.session
        if verb in ("EHLO", "HELO"):
            return Step(self._hello(verb, arg))
        if verb == "STARTTLS":
            return self._starttls()
        if verb == "MAIL":
            return Step([self.note(self._mail(arg))])
        if verb == "RCPT":
            return Step([self.note(self._rcpt(arg))])
        if verb == "DATA":
            return self._data()
        if verb == "RSET":
            s.reset()
            return Step(["250 2.0.0 Ok"])
        if verb == "NOOP":
            return Step(["250 2.0.0 Ok"])
        if verb == "QUIT":
            return Step([f"221 2.0.0 {self.features.hostname} closing connection"], Next.CLOSE)
        if verb == "VRFY":
            return Step(
                ["252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery"]
            )
        if verb == "BDAT":
            return self._bdat(arg)
        if verb == "AUTH":
            return self._auth(arg)
        if verb in ("ETRN", "EXPN", "TURN"):
            return Step([self.note(f"502 5.5.1 {verb} not implemented")])
        return Step([self.note("500 5.5.2 Command not recognized")])

    def _hello(self, verb: str, arg: str) -> list[str]:
        s = self.session
        if not arg.strip():
            return [self.note(f"501 5.5.4 Syntax: {verb} hostname")]
        s.helo = arg.strip()
        s.esmtp = verb == "EHLO"
        s.reset()
        hello = f"{self.features.hostname} Hello {s.helo} [{s.peer_ip}]"
        if not s.esmtp:
            return [f"250 {hello}"]
        ext = [
            hello,
            f"SIZE {self.features.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ]
        if self.features.starttls and s.tls is None:
            ext.append("STARTTLS")
        if self.authenticator is not None and s.tls is not None:
            ext.append("AUTH " + " ".join(MECHANISMS))
        return [("250 " if i == len(ext) - 1 else "250-") + e for i, e in enumerate(ext)]

    def _starttls(self) -> Step:
        if not self.features.starttls:
            return Step([self.note("502 5.5.1 STARTTLS not available")])
        if self.session.tls is not None:
            return Step([self.note("503 5.5.1 TLS already active")])
        return Step(["220 2.0.0 Ready to start TLS"], Next.STARTTLS)

    def tls_started(self, tls: TlsInfo) -> None:
        """After the handshake: RFC 3207 4.2, the client starts over with EHLO."""
        s = self.session
        s.tls = tls
        s.helo, s.esmtp = "", False
        s.reset()

    def _mail(self, arg: str) -> str:
        s = self.session
        if not s.helo:
            return "503 5.5.1 Send EHLO/HELO first"
        if s.mail_from is not None:
            return "503 5.5.1 Nested MAIL command"
        if self.features.submission and s.auth_user is None:
            return "530 5.7.0 Authentication required"
        if arg[:5].upper() != "FROM:":
            return "501 5.5.4 Syntax: MAIL FROM:<address>"
        m = _PATH.match(arg[5:])
        if not m:
            return "501 5.1.7 Bad sender address syntax"
        address, params = m.group(1).strip(), m.group(2).split()
        smtputf8 = body_8bit = False
        for p in params:
            key, _, value = p.partition("=")
            key = key.upper()
            if key == "SIZE":
                if not (value.isascii() and value.isdigit()) or len(value) > 20:
                    return "501 5.5.4 Bad SIZE parameter"
                if int(value) > self.features.max_message_size:
                    s.rejected += 1
                    return "552 5.3.4 Message size exceeds fixed maximum message size"
            elif key == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    return "501 5.5.4 Bad BODY parameter"
                body_8bit = value.upper() == "8BITMIME"
            elif key == "SMTPUTF8":
                smtputf8 = True
            else:
                return f"555 5.5.4 Unsupported MAIL parameter {key}"
        if not address.isascii() and not smtputf8:
            return "553 5.6.7 Non-ASCII address needs SMTPUTF8"
        if address and ("@" not in address or address.startswith("@")):
            return "501 5.1.7 Bad sender address syntax"
        problem = _check_address(address, smtputf8) if address else None
        if problem is not None:
            return f"553 5.1.7 Bad sender address: {problem}"
        refusal = self.screen.mail(s, address)
        if refusal is not None:
            return refusal
        s.mail_from = address
        s.smtputf8, s.body_8bit = smtputf8, body_8bit
        return "250 2.1.0 Ok"

    def _rcpt(self, arg: str) -> str:
        s = self.session
        if s.mail_from is None:
            return "503 5.5.1 Need MAIL before RCPT"
        if arg[:3].upper() != "TO:":
            return "501 5.5.4 Syntax: RCPT TO:<address>"
        m = _PATH.match(arg[3:])
        if not m:
            return "501 5.1.3 Bad recipient address syntax"
        if m.group(2).strip():  # e.g. NOTIFY= / ORCPT=: DSN is not advertised
            key = m.group(2).split()[0].partition("=")[0].upper()
            return f"555 5.5.4 Unsupported RCPT parameter {key}"
        address = m.group(1).strip()
        if address.startswith("@"):  # obsolete source route: keep only the mailbox
            address = address.partition(":")[2]
        if address.lower() != "postmaster":
            local, at, domain = address.rpartition("@")
            if not at or not local or not domain or (not address.isascii() and not s.smtputf8):
                return "501 5.1.3 Bad recipient address syntax"
            problem = _check_address(address, s.smtputf8)
            if problem is not None:
                return f"553 5.1.3 Bad recipient address: {problem}"
        if len(s.rcpt_tos) >= self.features.max_recipients:
            return "452 4.5.3 Too many recipients"
        refusal, address = self.screen.rcpt(s, address)
        if refusal is not None:
            s.rejected += 1
            return refusal
        s.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    def _bdat(self, arg: str) -> Step:
        """RFC 3030: the chunk's octets follow the command and are read in every case, so
        the session stays in step with the client even when the chunk is refused."""
        parts = arg.split()
        size = parts[0] if parts else ""
        if not 1 <= len(parts) <= 2 or not (size.isascii() and size.isdigit()) or len(size) > 12:
            # without a size the octets that follow cannot be skipped: out of step, close
            return Step([self.note("501 5.5.4 Syntax: BDAT size [LAST]")], Next.CLOSE)
        if len(parts) == 2 and parts[1].upper() != "LAST":
            return Step([self.note("501 5.5.4 Syntax: BDAT size [LAST]")], Next.CLOSE)
        step = Step([], Next.CHUNK, chunk_size=int(parts[0]), last=len(parts) == 2)
        s = self.session
        if s.mail_from is None:
            step.refusal = "503 5.5.1 Need MAIL command"
        elif not s.rcpt_tos:
            step.refusal = "554 5.5.1 No valid recipients"
        return step

    def _data(self) -> Step:
        s = self.session
        if s.chunking:
            return Step([self.note("503 5.5.1 DATA after BDAT in one transaction")])
        if s.mail_from is None:
            return Step([self.note("503 5.5.1 Need MAIL command")])
        if not s.rcpt_tos:
            return Step([self.note("554 5.5.1 No valid recipients")])
        return Step([], Next.DATA)

    # ------------------------------------------------------------------ AUTH

    def _auth(self, arg: str) -> Step:
        """AUTH mechanism [initial-response] (RFC 4954 4)."""
        s = self.session
        if self.authenticator is None:
            return Step([self.note("502 5.5.1 AUTH not available on this port")])
        if s.tls is None:
            return Step([self.note("530 5.7.0 Must issue a STARTTLS command first")])
        if not s.esmtp:
            return Step([self.note("503 5.5.1 Send EHLO first")])
        if s.auth_user is not None:
            return Step([self.note("503 5.5.1 Already authenticated")])
        if s.mail_from is not None:
            return Step([self.note("503 5.5.1 AUTH not permitted during a mail transaction")])
        parts = arg.split()
        if not 1 <= len(parts) <= 2:
            return Step([self.note("501 5.5.4 Syntax: AUTH mechanism [initial-response]")])
        mechanism = parts[0].upper()
        if mechanism not in MECHANISMS:
            return Step([self.note("504 5.5.4 Unrecognized authentication type")])
        if self.authenticator.throttled(s):
            return Step([self.note(THROTTLED_REPLY)])
        exchange = _SaslExchange(mechanism)
        if len(parts) == 2:
            return self._sasl_response(exchange, parts[1])
        self._sasl = exchange
        return Step([USERNAME_PROMPT if mechanism == "LOGIN" else "334 "], Next.SASL)

    def _sasl_response(self, exchange: _SaslExchange, text: str) -> Step:
        """One client response of the exchange: the next challenge, or the credentials."""
        self._sasl = None
        if text.strip() == "*":
            return Step([self.note("501 5.0.0 Authentication cancelled")])
        data = decode_response(text)
        if data is None:
            return Step([self.note("501 5.5.2 Cannot decode the response (base64)")])
        if exchange.mechanism == "PLAIN":
            credentials = parse_plain(data)
        elif exchange.username is None:
            exchange.username = decode_text(data, MAX_USERNAME)
            if exchange.username is None:
                return Step([self.note("501 5.5.2 Malformed user name")])
            self._sasl = exchange
            return Step([PASSWORD_PROMPT], Next.SASL)
        else:
            password = decode_text(data, MAX_PASSWORD)
            credentials = None if password is None else Credentials(exchange.username, password)
        if credentials is None:
            return Step([self.note("501 5.5.2 Malformed authentication response")])
        return Step([], Next.AUTH, credentials=credentials)

    def auth_finished(self, outcome: AuthOutcome, account: str) -> Step:
        """After `Authenticator.verify`: the reply, and the session logged in on success."""
        if outcome is AuthOutcome.OK:
            self.session.auth_user = account
            return self._after(Step(["235 2.7.0 Authentication successful"]))
        if outcome is AuthOutcome.THROTTLED:
            return self.finish(THROTTLED_REPLY)
        return self.finish("535 5.7.8 Authentication credentials invalid")


THROTTLED_REPLY = "454 4.7.0 Too many failed authentications, try again later"


@dataclass
class _SaslExchange:
    """An AUTH exchange in progress: its mechanism and, for LOGIN, the user name so far."""

    mechanism: str
    username: str | None = None
