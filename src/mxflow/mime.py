"""One bounded, crash-proof walk of a message's MIME tree, shared by the content checks.

The checks need decoded headers, decoded text (every charset, HTML kept apart so it can be
stripped) and the attachments' bytes. Hostile input must not hurt: the raw message is
parsed with the fast `compat32` policy, nesting deeper than `MAX_DEPTH`, more than
`MAX_PARTS` parts or more than `MAX_TEXT` characters of text are cut off and recorded as
`limits`, and a parser failure leaves an empty view with the failure in `defects` instead
of an exception. The view is cached on the `MessageContext`, so the message is parsed once
however many checks look at it.
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import email.utils
from dataclasses import dataclass, field

from mxflow.mail import MessageContext

MAX_DEPTH = 20
MAX_PARTS = 500
MAX_TEXT = 400_000  # characters of decoded text kept for the classifier
MAX_HEADER_VALUE = 4_000  # characters of one header value kept


@dataclass(frozen=True)
class Attachment:
    """A non-text leaf part: declared type and name, and its decoded bytes."""

    content_type: str
    filename: str
    data: bytes


@dataclass
class MimeView:
    """What the content checks read: headers, text parts, attachments and defects."""

    headers: list[tuple[str, str]] = field(default_factory=list)  # (lower-case name, value)
    texts: list[tuple[str, bool]] = field(default_factory=list)  # (decoded text, is_html)
    attachments: list[Attachment] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)  # every part's type, in order
    charsets: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)  # which bound was hit, if any

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


def decode_header_value(value: object) -> str:
    """A header value with RFC 2047 encoded words decoded; never raises."""
    if isinstance(value, email.header.Header):
        value = str(value)
    text = str(value)[:MAX_HEADER_VALUE]
    if "=?" not in text:
        return text
    try:
        pieces = email.header.decode_header(text)
    except Exception:
        return text
    out: list[str] = []
    for chunk, charset in pieces:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out.append(decode_bytes(chunk, charset))
    return "".join(out)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text in the declared charset, falling back to Latin-1; never raises."""
    name = (charset or "").strip().strip('"').lower() or "us-ascii"
    try:
        return data.decode(name, errors="replace")
    except (LookupError, ValueError):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")


@dataclass
class _ViewCache:
    """The last view built for a context, with the bytes it was built from."""

    raw: bytes | None = None
    view: MimeView | None = None


def view(ctx: MessageContext) -> MimeView:
    """The message's `MimeView`, built once per message of a context."""
    cache = ctx.state(_ViewCache)
    if cache.view is None or cache.raw is not ctx.raw:  # a later message of the session
        cache.raw, cache.view = ctx.raw, parse(ctx.raw)
    return cache.view


def parse(raw: bytes) -> MimeView:
    """Build the view of `raw`; a message the parser cannot read gives a view with a defect."""
    result = MimeView()
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception as exc:  # the parser is meant not to raise; bad input must not hurt
        result.defects.append(f"unparseable: {type(exc).__name__}")
        return result
    for name, value in message.items():
        result.headers.append((name.lower(), decode_header_value(value)))
    result.defects.extend(type(d).__name__ for d in message.defects)
    state = _Walk(result)
    try:
        state.walk(message, 0)
    except RecursionError:
        result.limits.append("depth")
    except Exception as exc:
        result.defects.append(f"walk failed: {type(exc).__name__}")
    return result


class _Walk:
    def __init__(self, result: MimeView) -> None:
        self.result = result
        self.parts = 0
        self.text_chars = 0

    def walk(self, part: email.message.Message, depth: int) -> None:
        result = self.result
        self.parts += 1
        if self.parts > MAX_PARTS:
            if "parts" not in result.limits:
                result.limits.append("parts")
            return
        if depth > MAX_DEPTH:
            if "depth" not in result.limits:
                result.limits.append("depth")
            return
        ctype = part.get_content_type()
        result.content_types.append(ctype)
        if depth:
            result.defects.extend(type(d).__name__ for d in part.defects)
        if part.is_multipart() or ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list):
                for child in payload:
                    if isinstance(child, email.message.Message):
                        self.walk(child, depth + 1)
            return
        try:
            data = part.get_payload(decode=True)
        except Exception:
            data = None
        if not isinstance(data, bytes):
            raw_payload = part.get_payload()
            data = raw_payload.encode("latin-1", "replace") if isinstance(raw_payload, str) else b""
        filename = _filename(part)
        charset = part.get_content_charset()
        if charset:
            result.charsets.append(charset.lower())
        disposition = (part.get("Content-Disposition") or "").lower()
        is_text = ctype.startswith("text/") and not disposition.startswith("attachment")
        if is_text and ctype in ("text/plain", "text/html", "text/enriched", "text/richtext"):
            if self.text_chars < MAX_TEXT:
                text = decode_bytes(data[: MAX_TEXT * 2], charset)[: MAX_TEXT - self.text_chars]
                self.text_chars += len(text)
                result.texts.append((text, ctype == "text/html"))
            elif "text" not in result.limits:
                result.limits.append("text")
            return
        result.attachments.append(Attachment(ctype, filename, data))


def _filename(part: email.message.Message) -> str:
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:
        return ""
    if isinstance(name, tuple):  # RFC 2231 triple
        name = email.utils.collapse_rfc2231_value(name)
    return decode_header_value(name).strip()
