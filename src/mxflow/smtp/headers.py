"""Small, fast looks at a raw message's header section (no full MIME parse on the hot path)."""

from __future__ import annotations

import re

_MESSAGE_ID = re.compile(
    rb"^Message-ID:[ \t]*(.*?)\r\n(?![ \t])", re.IGNORECASE | re.MULTILINE | re.DOTALL
)


def header_section(raw: bytes) -> bytes:
    """The header lines of `raw`, each ending in CRLF, without the blank line."""
    end = raw.find(b"\r\n\r\n")
    return raw[: end + 2] if end >= 0 else raw


def message_id_of(raw: bytes) -> str:
    """The Message-ID header of a raw message, or "" when it has none."""
    m = _MESSAGE_ID.search(header_section(raw))
    return m.group(1).decode("utf-8", "replace").strip() if m else ""
