"""SpamAssassin through spamd, with the SPAMC/SPAMD protocol's REPORT command.

The request is `REPORT SPAMC/1.5`, a `Content-length` and the message; the answer is
`SPAMD/1.1 0 EX_OK`, a `Spam: True ; 7.3 / 5.0` header (verdict, score, threshold) and the
report, whose table (`pts rule name description`, after a `---- ----` line) gives each
rule's points. REPORT rather than SYMBOLS, which names the rules without their points, so
the detail can show the rules that weighed most. mxflow maps it (checks/scanner.py):
`SPAMD_SPAM` when SpamAssassin says spam, `SPAMD_HAM` otherwise, scored weight x its score.

spamd has no envelope fields, and SpamAssassin reads the client, HELO and reverse DNS
from the Received header the receiving MTA writes — which mxflow adds only after the
filter. So the message goes with that header prepended, as spamass-milter does; without
it SpamAssassin's relay rules (RBLs on the client address, RDNS_NONE, HELO checks) would
see no relay at all.

The client is a few lines over asyncio streams, not aiospamc (1.2.0): that library reads
the whole answer with an unbounded `read()`, so a lying server could fill the memory until
the timeout, and it brings loguru and an old typer pin into a mail server's dependencies.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import re

from mxflow.checks.scanner import (
    REPLY_LIMIT,
    Judgement,
    ScannerCheck,
    ScannerError,
    clean,
    close,
    connect,
    finite,
    top_symbols,
)
from mxflow.config.filter import ClamdAddress
from mxflow.mail import MessageContext

_SPAM = re.compile(
    r"Spam:\s*(True|False|Yes|No)\s*;\s*(-?[0-9]+(?:\.[0-9]+)?)\s*/\s*(-?[0-9]+(?:\.[0-9]+)?)",
    re.IGNORECASE,
)
# a row of the report's table: the points in a 4-wide column, then the rule's name
_ROW = re.compile(r" {0,3}(-?[0-9]+(?:\.[0-9]+)?) ([A-Z0-9_]{1,64})(?: |$)")
_LENGTH = re.compile(rb"\r\nContent-length:\s*([0-9]{1,9})\r\n", re.IGNORECASE)


def received_header(ctx: MessageContext) -> bytes:
    """The Received header the receiving MTA would write, in Postfix's layout (which
    SpamAssassin parses): `from HELO (RDNS [IP]) by HOST with ESMTP[S][A] id QUEUE-ID`."""
    host = _word(ctx.helo) or "unknown"
    try:
        source = f"from {host} ({_word(ctx.client_hostname or '') or 'unknown'}"
        source += f" [{ipaddress.ip_address(ctx.client_ip)}])"
    except ValueError:
        source = f"from {host}"
    protocol = "ESMTP" + ("S" if ctx.tls else "") + ("A" if ctx.authenticated_user else "")
    queue_id = f" id {_word(ctx.queue_id)}" if _word(ctx.queue_id) else ""
    by = _word(ctx.local_hostname) or "localhost"
    date = email.utils.format_datetime(email.utils.localtime())
    trace = f"Received: {source}\r\n\tby {by} (mxflow) with {protocol}{queue_id};\r\n\t{date}\r\n"
    return trace.encode()


def _word(text: str) -> str:
    """One token of a Received header (no spaces, brackets or parentheses)."""
    return "".join(c for c in clean(text) if c.isascii() and c not in " ()[];")


async def exchange(address: ClamdAddress, command: bytes, message: bytes) -> bytes:
    """One spamd request and its whole answer (at most REPLY_LIMIT bytes); the caller
    bounds the time."""
    reader, writer = await connect(address)
    try:
        writer.write(b"%s SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % (command, len(message)))
        writer.write(message)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # older spamd read the message until EOF
        answer = bytearray()
        while not _complete(answer):
            chunk = await reader.read(65536)
            if not chunk:
                break
            answer += chunk
            if len(answer) > REPLY_LIMIT:
                raise ScannerError(f"answer larger than {REPLY_LIMIT} bytes")
        return bytes(answer)
    finally:
        await close(writer)


def _complete(answer: bytearray) -> bool:
    """Whether the answer holds its whole body by its Content-length (spamd closes the
    connection after it; a server that does not is not waited for)."""
    end = answer.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = _LENGTH.search(answer, 0, end + 2)
    return length is not None and len(answer) - end - 4 >= int(length.group(1))


def judge(answer: bytes) -> Judgement:
    """spamd's REPORT answer as a Judgement; ScannerError when it is not one."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith("SPAMD/"):
        raise ScannerError(f"not a spamd answer: {clean(lines[0], 80)!r}")
    if status[1] != "0":
        raise ScannerError(f"spamd answered {clean(lines[0], 120)!r}")
    found = next((m for m in map(_SPAM.fullmatch, lines[1:]) if m), None)
    if found is None:
        raise ScannerError(f"no Spam header in the answer: {clean(head.decode('latin-1'), 80)!r}")
    score = finite(float(found.group(2)), "score")
    required = finite(float(found.group(3)), "threshold")
    spam = found.group(1).lower() in ("true", "yes")
    rows: list[tuple[str, float]] = []
    table = body.decode("utf-8", "replace").split("\n")
    start = next((i for i, line in enumerate(table) if line.startswith("---- ")), len(table))
    for line in table[start + 1 :]:
        if row := _ROW.match(line):
            rows.append((row.group(2), float(row.group(1))))
    detail = f"{'spam' if spam else 'ham'}, {score:g}/{required:g}"
    top = top_symbols(rows)
    return Judgement(spam, score, f"{detail}: {top}" if top else detail)


class SpamdCheck(ScannerCheck):
    """`[filter.spamd]`: the verdict of the site's SpamAssassin, as `SPAMD_*` symbols."""

    name = "spamd"
    prefix = "SPAMD"

    async def scan(self, ctx: MessageContext) -> Judgement:
        message = received_header(ctx) + ctx.raw
        answer = await exchange(ClamdAddress(self.settings.address), b"REPORT", message)
        return judge(answer)


async def ping(address: ClamdAddress, wait: float = 2.0) -> bool:
    """True when spamd answers PING with PONG."""
    try:
        async with asyncio.timeout(wait):
            reader, writer = await connect(address)
            try:
                writer.write(b"PING SPAMC/1.5\r\n\r\n")
                await writer.drain()
                return b"PONG" in await reader.read(64)
            finally:
                await close(writer)
    except (ScannerError, OSError, TimeoutError):
        return False
