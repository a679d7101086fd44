"""rspamd through its HTTP protocol: the message POSTed to the scanner's `/checkv2`.

The envelope goes in rspamd's request headers (`IP`, `Helo`, `Hostname`, `From`, one
`Rcpt` per recipient, `Queue-Id`, `User`), so its SPF, HELO and recipient rules see what
the MTA saw; the answer is JSON with `score`, `required_score` (its reject threshold),
`action` and `symbols`. mxflow maps it (checks/scanner.py has the arithmetic):

* `RSPAMD_SPAM` when rspamd's action is "add header", "rewrite subject" or "reject",
  `RSPAMD_HAM` for "no action", "greylist" and "soft reject" (mxflow neither greylists
  nor tempfails on rspamd's say); the score is weight x rspamd's score, and for "reject"
  at least weight x `required_score`: a pre-result such as GTUBE rejects whatever the sum;
* the detail names the action, the score and rspamd's weightiest symbols.

The HTTP client is h11 (HTTP/1.1 framing, header-size limit: a pure-Python library that is
already installed for uvicorn) over asyncio streams, one connection a message. Not httpx,
the client a reader would expect: its last release is from 2024 (starlette now warns
against it), it is a dev dependency here, and it builds an SSL context for every client
(milliseconds a message, or one client shared across event loops and reloads). Here the
whole exchange runs under one deadline, TCP_NODELAY is set, and the body read stops at
REPLY_LIMIT bytes, whatever the server sends.
"""

from __future__ import annotations

import asyncio
import json
import re

import h11

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
from mxflow.config.filter import ClamdAddress, rspamd_endpoint
from mxflow.mail import MessageContext

SPAM_ACTIONS = frozenset({"add header", "rewrite subject", "reject"})
_SYMBOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def request_headers(ctx: MessageContext) -> list[tuple[str, str]]:
    """rspamd's envelope headers for `ctx` (empty values left out, the null sender `<>`)."""
    headers = [
        ("IP", ctx.client_ip),
        ("Helo", ctx.helo),
        ("Hostname", ctx.client_hostname or ""),
        ("From", ctx.mail_from or "<>"),
        ("Queue-Id", ctx.queue_id),
        ("User", ctx.authenticated_user or ""),
        *(("Rcpt", rcpt) for rcpt in ctx.rcpt_tos),
    ]
    cleaned = [(name, clean(value, 998).strip()) for name, value in headers]
    return [(name, value) for name, value in cleaned if value]


async def ping(url: str, wait: float = 2.0) -> bool:
    """True when the rspamd scanner at `url` answers `GET /ping` with `pong`."""
    try:
        address, host, prefix = rspamd_endpoint(url)
        async with asyncio.timeout(wait):
            reader, writer = await connect(address)
            try:
                conn = h11.Connection(h11.CLIENT)
                get = h11.Request(method="GET", target=f"{prefix}/ping", headers=[("Host", host)])
                writer.write((conn.send(get) or b"") + (conn.send(h11.EndOfMessage()) or b""))
                await writer.drain()
                status, body = await _response(conn, reader)
            finally:
                await close(writer)
    except (ScannerError, OSError, TimeoutError, ValueError, h11.ProtocolError):
        return False
    return status == 200 and body.strip() == b"pong"


async def post(
    address: ClamdAddress,
    host: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 POST; ScannerError when the answer is not HTTP or
    its body exceeds REPLY_LIMIT. The caller bounds the time."""
    reader, writer = await connect(address)
    try:
        conn = h11.Connection(h11.CLIENT)
        head = h11.Request(
            method="POST",
            target=target,
            headers=[
                (b"Host", host.encode()),
                (b"Content-Length", str(len(body)).encode()),
                (b"Connection", b"close"),
                *((name.encode(), value.encode()) for name, value in headers),
            ],
        )
        writer.write(conn.send(head) or b"")
        for piece in conn.send_with_data_passthrough(h11.Data(data=body)) or []:
            writer.write(piece)
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return await _response(conn, reader)
    except h11.ProtocolError as exc:
        raise ScannerError(f"not HTTP: {exc}") from exc
    finally:
        await close(writer)


async def _response(conn: h11.Connection, reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one response through h11, stopping at REPLY_LIMIT bytes of body."""
    status = 0
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data and not status:
                raise ScannerError("closed the connection without an answer")
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > REPLY_LIMIT:
                raise ScannerError(f"answer larger than {REPLY_LIMIT} bytes")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if not status:
                raise ScannerError("connection closed before an HTTP answer")
            return status, bytes(body)


def judge(status: int, body: bytes) -> Judgement:
    """rspamd's answer as a Judgement; ScannerError when it is not a scan result."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ScannerError(f"HTTP {status}, not JSON: {body[:80]!r}") from exc
    if not isinstance(answer, dict):
        raise ScannerError(f"HTTP {status}, not a JSON object: {body[:80]!r}")
    if status != 200 or "error" in answer:
        raise ScannerError(f"HTTP {status}: {clean(str(answer.get('error', '')), 120)}")
    action = answer.get("action")
    if not isinstance(action, str):
        raise ScannerError(f"no action in the answer: {body[:80]!r}")
    score = finite(answer.get("score"), "score")
    required = finite(answer.get("required_score", 0.0), "required_score")
    if action == "reject":
        score = max(score, required)
    symbols = answer.get("symbols")
    scored: list[tuple[str, float]] = []
    for name, symbol in symbols.items() if isinstance(symbols, dict) else []:
        value = symbol.get("score") if isinstance(symbol, dict) else None
        if _SYMBOL_NAME.fullmatch(name) and isinstance(value, int | float) and abs(value) < 1e6:
            scored.append((name, float(value)))
    detail = f"{clean(action, 40)}, {score:g}/{required:g}"
    messages = answer.get("messages")
    said = messages.get("smtp_message") if isinstance(messages, dict) else None
    if isinstance(said, str) and said:  # rspamd's own reason, e.g. "Gtube pattern"
        detail += f" ({clean(said, 80)})"
    top = top_symbols(scored)
    return Judgement(action in SPAM_ACTIONS, score, f"{detail}: {top}" if top else detail)


class RspamdCheck(ScannerCheck):
    """`[filter.rspamd]`: the verdict of the site's rspamd, as `RSPAMD_*` symbols."""

    name = "rspamd"
    prefix = "RSPAMD"

    async def scan(self, ctx: MessageContext) -> Judgement:
        address, host, prefix = rspamd_endpoint(self.settings.address)
        status, body = await post(address, host, f"{prefix}/checkv2", request_headers(ctx), ctx.raw)
        return judge(status, body)
