"""Shared material for the filter tests: vendored data, message builders, an SMTP sink."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import os
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope, Session

from mxflow.mail import MessageContext
from tests.conftest import unique_loopback

DATA = Path(__file__).resolve().parents[1] / "data" / "filter"
SA_NICE = DATA / "spamassassin" / "nice"
SA_SPAM = DATA / "spamassassin" / "spam"
CLAMD = os.environ.get("MXFLOW_CLAMD", "unix:/run/mxflow-ci/clamd/clamd.sock")
TEST_SIGNATURE_MARKER = b"MXFLOW-CLAMAV-TEST-SIGNATURE-1c5e9a"
# the optional scanners .ci/services.d/rspamd.sh and spamd.sh start
RSPAMD = os.environ.get("MXFLOW_RSPAMD", "http://127.0.97.1:11333")
SPAMD = os.environ.get("MXFLOW_SPAMD", "127.0.97.2:783")
# the Generic Test for Unsolicited Bulk Email, which rspamd and SpamAssassin call spam
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def eicar() -> bytes:
    """The 68-byte EICAR test file, materialised from its base64 form."""
    data = base64.b64decode((DATA / "eicar" / "eicar.com.b64").read_text())
    assert len(data) == 68
    return data


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def read(path: Path) -> bytes:
    return crlf(path.read_bytes())


def message(
    body: str = "Hello, the minutes of Tuesday's meeting are attached.\n",
    *,
    subject: str = "Meeting minutes",
    sender: str = "ann@example.org",
    attachments: list[tuple[str, str, bytes]] | None = None,
    html: str | None = None,
    extra: dict[str, str] | None = None,
) -> bytes:
    """A well-formed message; attachments are (filename, content type, bytes)."""
    msg = EmailMessage()
    msg["From"] = f"Ann Example <{sender}>"
    msg["To"] = "bob@contoso.com"
    msg["Subject"] = subject
    msg["Date"] = "Tue, 24 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<m1.test@example.org>"
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, ctype, data in attachments or []:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


def ham_today() -> bytes:
    """A plain, well-formed ham dated now (an old Date is a spam sign to rspamd and SA)."""
    raw = message("Hello Bob,\n\nthe minutes of Tuesday's meeting are attached.\n\nAnn\n")
    date = email.utils.formatdate(localtime=True).encode()
    return re.sub(rb"(?m)^Date: [^\r]*", b"Date: " + date, raw, count=1)


def context(raw: bytes, ip: str = "192.0.2.10", **kw: object) -> MessageContext:
    return MessageContext(client_ip=ip, raw=raw, **kw)  # type: ignore[arg-type]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SinkHandler:
    messages: list[Received] = field(default_factory=list)
    counter: int = 0

    async def handle_DATA(self, server: SMTPProtocol, session: Session, envelope: Envelope) -> str:
        self.counter += 1
        content = envelope.original_content or b""
        self.messages.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), bytes(content))
        )
        return f"250 2.0.0 Ok: queued as SINK{self.counter:04d}"


class SmtpSink:
    """A real SMTP listener on a fresh loopback address that keeps what it receives."""

    def __init__(self) -> None:
        self.host = unique_loopback()
        self.port = 0
        self.handler = SinkHandler()
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> SmtpSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTPProtocol(self.handler, hostname="sink.test"), self.host, 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
