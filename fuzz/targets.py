"""One function per parser that reads bytes from the network: it raises only on a bug.

Each target feeds the input to one parser and catches the errors that parser is meant to
raise for bad input (a permerror is an answer, not a crash). Anything else that escapes,
an exception or a hang, is a finding: fix it, and add the input to
`fuzz/regressions/<target>/` so `tests/test_fuzz_regressions.py` replays it forever.

`smtp_command` drives the SMTP command state machine (smtp/protocol.py, no sockets): the
input is split into command lines and fed to one session, as a client would send them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import dkim.util

from mxflow import mime
from mxflow.auth import dkim as mx_dkim
from mxflow.auth import dmarc, spf
from mxflow.mail import header_section, message_id_of
from mxflow.smtp.protocol import Features, Next, Session, SmtpProtocol


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def mime_walk(data: bytes) -> None:
    """The MIME walk of the content checks: must never raise, on any bytes."""
    view = mime.parse(data)
    assert len(view.attachments) <= mime.MAX_PARTS
    assert sum(len(t) for t, _ in view.texts) <= mime.MAX_TEXT + 100_000


def headers(data: bytes) -> None:
    """Header section, Message-ID, RFC 2047 words and the From: address (DMARC's input)."""
    header_section(data)
    message_id_of(data)
    mime.decode_header_value(_text(data))
    with contextlib.suppress(dmarc.FromError):
        dmarc.from_domain_of(data)


def spf_record(data: bytes) -> None:
    """A TXT record as SPF reads it: a permerror is the only allowed failure."""
    text = _text(data)
    if not spf.is_spf_record(text):
        text = "v=spf1 " + text
    with contextlib.suppress(spf.SpfError):
        spf.parse_record(text)


def dkim_tags(data: bytes) -> None:
    """DKIM-Signature tag lists in a header block, and a key record's tags."""
    mx_dkim.signature_key_names(b"DKIM-Signature: " + data + b"\r\n\r\n")
    with contextlib.suppress(dkim.util.InvalidTagValueList):
        dkim.util.parse_tag_value(data)


def dmarc_record(data: bytes) -> None:
    """A `_dmarc` TXT record: a DmarcRecordError is the only allowed failure."""
    with contextlib.suppress(dmarc.DmarcRecordError):
        dmarc.parse_record(_text(data))


class _TakeAll:
    """A screen that takes every sender and recipient, so the fuzzer reaches DATA."""

    def mail(self, session: Session, address: str) -> str | None:
        return None

    def rcpt(self, session: Session, address: str) -> tuple[str | None, str]:
        return None, address


_FEATURES = Features("mx.fuzz.test", max_message_size=10_000, max_recipients=5, max_errors=1000)


def smtp_command(data: bytes) -> None:
    """Command lines into one session: every reply is one line with a valid code, and
    nothing the client sent (CR, LF, NUL) ever reaches a reply or the envelope."""
    proto = SmtpProtocol(_FEATURES, _TakeAll(), Session("127.0.0.1", 25))
    for line in data.split(b"\n"):
        step = proto.handle(line + b"\n")
        for reply in step.replies:
            assert reply[:3].isdigit() and reply[0] in "2345", reply
            assert not any(c in reply for c in "\r\n\x00"), reply
        envelope = [proto.session.mail_from or "", *proto.session.rcpt_tos, proto.session.helo]
        assert not any(c in part for part in envelope for c in "\r\n\x00"), envelope
        if step.next is Next.CLOSE:
            return
        if step.next in (Next.DATA, Next.CHUNK):
            proto.finish("250 2.0.0 Ok: queued as FUZZ")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "mime_walk": mime_walk,
    "headers": headers,
    "spf_record": spf_record,
    "dkim_tags": dkim_tags,
    "dmarc_record": dmarc_record,
    "smtp_command": smtp_command,
}
