"""Authentication-Results (RFC 8601): write ours, read others', drop forged ones.

A receiving node must remove any incoming Authentication-Results that claims its own
authserv-id (RFC 8601 §5): otherwise a sender could forge "dkim=pass" in our name. The
parser here is deliberately small: it splits a header value into its results at
semicolons outside comments and quoted strings, which is all that stripping, ARC's AAR
and the trusted-sealer check need.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FOLD = "\r\n\t"


def _strip_comments(text: str) -> str:
    """Remove RFC 5322 comments (nested, with quoted-pairs), keeping quoted strings."""
    out: list[str] = []
    depth = 0
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and (depth or quoted) and i + 1 < len(text):
            if not depth:
                out.append(text[i : i + 2])
            i += 2
            continue
        if quoted:
            out.append(ch)
            quoted = ch != '"'
        elif ch == '"' and not depth:
            quoted = True
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if not depth:
                out.append(" ")
        elif not depth:
            out.append(ch)
        i += 1
    return "".join(out)


def comment(text: str) -> str:
    """`text` safe inside an RFC 5322 comment in our headers: one line, no parentheses
    or backslashes (an unbalanced one would end the comment early), at most 120 chars."""
    return re.sub(r"\s*[()\\\r\n]+\s*", " ", text).strip()[:120]


def split_results(value: str) -> list[str]:
    """The parts of a header value split at top-level semicolons, comments kept, trimmed."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and (depth or quoted):
            i += 2
            continue
        if quoted:
            quoted = ch != '"'
        elif ch == '"' and not depth:
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif ch == ";" and not depth:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return [re.sub(r"\s+", " ", p).strip() for p in parts if p.strip()]


def authserv_id(value: str) -> str:
    """The authserv-id an Authentication-Results value starts with (lower-case)."""
    head = _strip_comments(value).split(";", 1)[0].strip()
    return head.split()[0].lower() if head.split() else ""


def method_result(value: str, method: str) -> str | None:
    """The result of the first `method=` result in a header value (AR or AAR)."""
    for part in split_results(value):
        bare = _strip_comments(part).strip()
        match = re.match(r"([A-Za-z0-9_.-]+)\s*(?:/\s*\d+\s*)?=\s*([A-Za-z0-9_-]+)", bare)
        if match and match.group(1).lower() == method.lower():
            return match.group(2).lower()
    return None


def results_of(value: str) -> list[str]:
    """The method results of an AR value, without the authserv-id part."""
    parts = split_results(value)
    return parts[1:] if parts else []


def format_authentication_results(authserv: str, parts: Iterable[str]) -> str:
    """`authserv-id; part; part` folded one result per line, or `authserv-id; none`."""
    items = [p.strip() for p in parts if p.strip()]
    if not items:
        return f"{authserv}; none"
    return f"{authserv};" + ";".join(FOLD + p for p in items)


_HEADER_END = re.compile(rb"\r?\n(?=\r?\n)")


def split_message(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded continuation lines) and the rest of the message."""
    match = _HEADER_END.search(raw)
    if match is None:
        head, rest = raw, b""
    else:
        head, rest = raw[: match.end()], raw[match.end() :]
    fields: list[bytes] = []
    for line in re.split(rb"(?<=\n)", head):
        if not line:
            continue
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields, rest


def strip_our_results(raw: bytes, authserv: str) -> bytes:
    """`raw` without the Authentication-Results fields that claim `authserv` (RFC 8601 §5)."""
    ours = authserv.lower()
    fields, rest = split_message(raw)
    kept = []
    for field in fields:
        name, sep, value = field.partition(b":")
        if sep and name.strip().lower() == b"authentication-results":
            text = value.decode("utf-8", "replace")
            if authserv_id(text) == ours:
                continue
        kept.append(field)
    return b"".join(kept) + rest


def header_values(raw: bytes, name: str) -> list[str]:
    """Unfolded values of every header field called `name`, top to bottom."""
    wanted = name.lower().encode()
    values = []
    for field in split_message(raw)[0]:
        fname, sep, value = field.partition(b":")
        if sep and fname.strip().lower() == wanted:
            text = value.decode("utf-8", "replace")
            values.append(re.sub(r"\r?\n[ \t]", " ", text).strip())
    return values
