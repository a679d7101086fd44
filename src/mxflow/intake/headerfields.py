"""Split a raw header section into (name, value) fields in one linear pass.

Enhanced filtering and mail flow rules read headers an attacker wrote, so this parser
never backtracks, never raises on bad bytes (invalid UTF-8 is decoded with replacement,
bare LF ends a line like CRLF) and can stop early: `iter_fields` is a generator, so a
caller that needs the first few Received lines of a 10,000-line header reads only those.
A line that is neither a field nor a continuation is yielded with the name "" so callers
can treat it as malformed rather than silently merge it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

MAX_FIELD = 64 * 1024  # a longer (unfolded) field is cut here; its tail is never scanned


def _lines(section: bytes) -> Iterator[bytes]:
    start = 0
    end = len(section)
    while start < end:
        nl = section.find(b"\n", start)
        if nl < 0:
            nl = end
        line = section[start:nl]
        start = nl + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return  # the blank line: end of the header section
        yield line


def iter_fields(section: bytes) -> Iterator[tuple[str, str]]:
    """Yield (name, value) per header field, top first; continuation lines are unfolded."""
    name: str | None = None
    parts: list[bytes] = []
    size = 0
    for line in _lines(section):
        if line[:1] in (b" ", b"\t") and name is not None:
            if size < MAX_FIELD:
                parts.append(line)
                size += len(line)
            continue
        if name is not None:
            yield name, _value(parts)
        colon = line.find(b":")
        raw_name = line[:colon].rstrip(b" \t") if colon > 0 else b""  # obs-field "Name :"
        if not raw_name or not all(33 <= c <= 126 for c in raw_name):
            name, parts, size = "", [line[:MAX_FIELD]], len(line)
        else:
            name = raw_name.decode("ascii")
            parts, size = [line[colon + 1 : colon + 1 + MAX_FIELD]], len(line)
    if name is not None:
        yield name, _value(parts)


def _value(parts: list[bytes]) -> str:
    joined = b" ".join(p.strip(b" \t") for p in parts)
    return joined.decode("utf-8", "replace").replace("\0", "\ufffd")


def rewrite_headers(
    raw: bytes,
    *,
    remove: Iterable[str] = (),
    prepend: Iterable[tuple[str, str]] = (),
    remove_prefixes: Iterable[str] = (),
) -> bytes:
    """`raw` without every field named in `remove` or starting with one of
    `remove_prefixes` (case-insensitive, folded lines too), with `prepend` added on top.
    One pass over the header section; the body is untouched, and when nothing is removed
    or added `raw` itself is returned (no copy of the message on the hot path)."""
    end = raw.find(b"\r\n\r\n")
    head, body = (raw[: end + 2], raw[end + 2 :]) if end >= 0 else (raw, b"")
    drop = {n.strip().lower().encode() for n in remove}
    prefixes = tuple(p.strip().lower().encode() for p in remove_prefixes)
    kept: list[bytes] = []
    skipping = dropped = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        skipping = name in drop or (bool(prefixes) and name.startswith(prefixes))
        dropped |= skipping
        if not skipping:
            kept.append(line)
    added = b"".join(f"{n}: {_one_line(v)}\r\n".encode("utf-8", "replace") for n, v in prepend)
    if not dropped and not added:
        return raw
    return added + b"".join(kept) + body


def _one_line(value: str) -> str:
    return "".join(" " if c in "\r\n\0" else c for c in value)
