"""A safe preview of a stored message: headers and plain text, never HTML.

An HTML-only message is reduced to its text (tags dropped, scripts and styles skipped) and
shown, like everything else, escaped inside <pre>. Attachments are listed by name, type and
size, never opened.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser

MAX_TEXT = 64 * 1024


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li", "h1", "h2", "h3"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return "\n".join(line for line in lines if line)


@dataclass
class Preview:
    headers: list[tuple[str, str]]
    text: str
    text_from_html: bool = False
    attachments: list[tuple[str, str, int]] = field(default_factory=list)


def _content(part: EmailMessage) -> str:
    try:
        value = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        value = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return value if isinstance(value, str) else ""


def preview(raw: bytes) -> Preview:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    headers = [(str(k), str(v)[:2000]) for k, v in msg.items()][:200]
    plain = html = None
    attachments = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        name = part.get_filename()
        if name or part.get_content_disposition() == "attachment":
            size = len(part.get_payload(decode=True) or b"")
            attachments.append((str(name or "(unnamed)"), kind, size))
        elif kind == "text/plain" and plain is None:
            plain = _content(part)
        elif kind == "text/html" and html is None:
            html = _content(part)
    if plain is not None:
        return Preview(headers, plain[:MAX_TEXT], False, attachments)
    if html is not None:
        return Preview(headers, html_to_text(html)[:MAX_TEXT], True, attachments)
    return Preview(headers, "", False, attachments)
