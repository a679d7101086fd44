"""One function per parser that reads bytes from the network: it raises only on a bug.

Each target feeds the input to one parser and catches the errors that parser is meant to
raise for bad input (a permerror is an answer, not a crash). Anything else that escapes,
an exception or a hang, is a finding: fix it, and add the input to
`fuzz/regressions/<target>/` so `tests/test_fuzz_regressions.py` replays it forever.

The SMTP command parser's target belongs here too, as `smtp_command`; it is added with
the reshaped SMTP server (smtp/server.py), by whoever owns that reshape: write
`def smtp_command(data: bytes) -> None`, register it in TARGETS, and add seeds under
`fuzz/seeds/smtp_command/`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import dkim.util

from mxflow import mime
from mxflow.auth import dkim as mx_dkim
from mxflow.auth import dmarc, spf
from mxflow.mail import header_section, message_id_of


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


TARGETS: dict[str, Callable[[bytes], None]] = {
    "mime_walk": mime_walk,
    "headers": headers,
    "spf_record": spf_record,
    "dkim_tags": dkim_tags,
    "dmarc_record": dmarc_record,
}
