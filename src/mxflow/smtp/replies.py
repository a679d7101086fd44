"""SMTP reply lines with exactly one enhanced status code (RFC 2034 / RFC 3463).

A reason handed up by a check may already start with its own enhanced status code (DMARC
says "5.7.1 DMARC policy ..."); that code is more precise than the caller's default and
is used instead of it, once — never `550 5.7.1 5.7.1 ...`. A code whose class does not
match the reply's (a "4.x.x" reason in a 5xx reply) is dropped for the default.
"""

from __future__ import annotations

import re

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\s+")


def reply_line(code: int, status: str, text: str) -> str:
    """`CODE STATUS TEXT`, taking the status from the front of `text` when it has one."""
    m = _STATUS.match(text)
    if m is not None:
        text = text[m.end() :]
        if m.group(1) == str(code)[0]:
            status = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    return f"{code} {status} {text}".rstrip()
