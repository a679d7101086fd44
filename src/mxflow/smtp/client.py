"""Outbound SMTP: a small pipelining client on asyncio streams, pooled per next hop.

Why not aiosmtplib (the first version used it): it waits for a reply to every command, so
one message costs four round trips and four socket writes (MAIL, RCPT, DATA, data), and it
runs two regular-expression passes over the whole message (line-end normalisation and dot
quoting). Socket writes are the dearest thing on this machine's loopback (a quarter of
the relay's CPU in the bench profile). This client sends MAIL, every RCPT and DATA in one
write when the server offers PIPELINING (RFC 2920), then the message in one write, and
dot-stuffs with one `bytes.replace` only when a line starts with a dot. Spooled messages
have CRLF line ends already (the server refuses bare CR/LF); anything else is normalised.

A session is reused for the next message to the same address, dropped after
`IDLE_SECONDS` idle. Every connection binds the node's configured source address, so the
next hop (and the lab's SPF and blocklists) see the node's own IP.

TLS policy: `none` never starts TLS; `opportunistic` uses STARTTLS when offered, without
checking the certificate, and falls back to plaintext if the handshake fails; `required`
insists on TLS (any certificate); `verify` insists on TLS with a certificate valid for
the route's `tls_name` (or the MX host name) against `ca_file` (or the system CAs).

The next hop is not trusted to follow the protocol (a hostile or broken server must not
make us lose mail or hang). Every reply code is checked against the command it answers
(`EXPECTED`): a code that is neither the expected one nor a 4xx/5xx refusal (say a 250 to
DATA instead of 354) is a `ProtocolViolation`, a temporary failure that keeps the message
queued, never a delivery. Bytes that arrive when no reply is due (a server running ahead
of our commands to desynchronise them) end the session before the next command. Every
reply, multi-line ones included, is bounded in size (`MAX_REPLY_LINE`, `MAX_REPLY_BYTES`)
and in time (the whole reply, not each line). At the STARTTLS switch, plaintext the server
sent after its 220 and before the handshake is discarded, so a man in the middle cannot
inject replies that we would read as if they came inside TLS (the client side of
CVE-2011-0411).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from mxflow.config import TlsPolicy
from mxflow.errors import MxflowError

log = logging.getLogger("mxflow.delivery")

IDLE_SECONDS = 30.0
MAX_REPLY_LINE = 2048  # RFC 5321 §4.5.3.1.5 allows 512 octets; four times that, no more
MAX_REPLY_BYTES = 32 * 1024  # a whole multi-line reply (an EHLO reply is well under 1 KB)
STREAM_LIMIT = 64 * 1024  # the reader's buffer: replies are small, never buffer megabytes

# The reply code that means "go on" for each command; 4xx and 5xx are refusals the caller
# handles; any other code is a protocol violation (a temporary failure, never a success).
EXPECTED: dict[str, frozenset[int]] = {
    "greeting": frozenset({220}),
    "EHLO": frozenset({250}),
    "HELO": frozenset({250}),
    "STARTTLS": frozenset({220}),
    "MAIL": frozenset({250}),
    "RCPT": frozenset({250, 251}),
    "DATA": frozenset({354}),
    "end of data": frozenset({250}),
    "RSET": frozenset({250}),
}
_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_REPLY_CODE = re.compile(r"[2-5][0-9][0-9]")


@dataclass(frozen=True)
class Endpoint:
    """One address to deliver to, with the TLS policy and the name TLS must verify."""

    address: str
    port: int
    tls: TlsPolicy = "opportunistic"
    tls_name: str | None = None
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass
class Reply:
    """The outcome for one recipient of one attempt."""

    code: int  # SMTP code; 0 when no session could be had (connection failed, timeout)
    text: str
    remote: str = ""  # "host:port" that answered

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def status(self) -> str:
        """The enhanced status code (from the text, or derived from the code)."""
        first = self.text.split(" ", 1)[0]
        if first[:2] in ("2.", "4.", "5.") and first.count(".") == 2:
            return first
        if self.ok:
            return "2.0.0"
        return "5.0.0" if self.permanent else "4.4.1"

    def __str__(self) -> str:
        where = f" ({self.remote})" if self.remote else ""
        return f"{self.code or 'no-session'} {self.text}{where}"


class SessionError(MxflowError):
    """The session broke (connection lost, timeout, garbage): try again, maybe elsewhere."""


class ProtocolViolation(SessionError):
    """The server answered with a code its command cannot have (say 250 to DATA).

    A temporary failure: the message stays queued. The session is not reused, and a send
    on a reused session is not retried on a fresh one (the server is lying, not idle).
    """


class TlsUnavailable(SessionError):
    """TLS was required but the peer did not offer it or the handshake failed."""


class RefusedGreeting(SessionError):
    """The server refused us at connect or EHLO (its reply says why)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


def prepare_data(raw: bytes) -> bytes:
    """`raw` as it goes after DATA: CRLF line ends, dot-stuffed, ending in CRLF (no dot)."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        raw = _BARE_EOL.sub(b"\r\n", raw)
    if raw.startswith(b".") or b"\r\n." in raw:
        raw = (b"\r\n" + raw).replace(b"\r\n.", b"\r\n..")[2:]
    if raw and not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw


class Session:
    """One outbound SMTP connection, after the greeting and EHLO (and STARTTLS)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        endpoint: Endpoint,
        timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.endpoint = endpoint
        self.timeout = timeout
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.broken = False
        self.idle_since = time.monotonic()

    async def reply(self) -> tuple[int, str]:
        """One reply; multi-line texts are joined with a space."""
        code, lines = await self.reply_lines()
        return code, " ".join(lines).strip()

    async def reply_lines(self) -> tuple[int, list[str]]:
        """One reply as its code and the text of each line, within the size and time limits.

        The timeout covers the whole reply: a server that trickles an endless multi-line
        reply one line at a time cannot hold the session past it.
        """
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read_reply()
        except TimeoutError:
            self.broken = True
            raise SessionError(f"{self.endpoint} did not reply in {self.timeout:.0f}s") from None
        except SessionError:
            self.broken = True
            raise
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            self.broken = True
            raise SessionError(f"connection to {self.endpoint} lost: {exc}") from None

    async def _read_reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        total = 0
        code = ""
        while True:
            try:
                raw = await self.reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                raise SessionError(f"{self.endpoint} closed the connection") from None
            except asyncio.LimitOverrunError:
                raise SessionError(f"{self.endpoint} sent a reply line without end") from None
            total += len(raw)
            if len(raw) > MAX_REPLY_LINE or total > MAX_REPLY_BYTES:
                raise SessionError(
                    f"{self.endpoint} sent an oversized reply ({total} bytes so far; limits"
                    f" {MAX_REPLY_LINE} a line, {MAX_REPLY_BYTES} a reply)"
                )
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if (
                not _REPLY_CODE.match(text)  # ASCII digits: "2²0" passes str.isdigit()
                or text[3:4] not in ("", " ", "-")
                or (code and text[:3] != code)
            ):
                raise ProtocolViolation(f"{self.endpoint} sent a malformed reply {text[:80]!r}")
            code = text[:3]
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(code), lines

    def check(self, command: str, code: int, text: str) -> None:
        """Raise ProtocolViolation when `code` cannot answer `command` (see EXPECTED)."""
        if code in EXPECTED[command] or 400 <= code < 600:
            return
        self.broken = True
        wanted = "/".join(str(c) for c in sorted(EXPECTED[command]))
        raise ProtocolViolation(
            f"{self.endpoint} answered {command} with {code} {text[:120]!r}"
            f" (expected {wanted}, 4xx or 5xx)"
        )

    def send(self, *chunks: bytes) -> None:
        """Write commands or data. We write only when every reply we asked for has been
        read, so bytes already waiting mean the server is out of step with us (it sent
        replies nobody asked for, or it said 421 and hung up while the session was idle):
        the session is not used further."""
        waiting = buffered(self.reader)
        if waiting:
            self.broken = True
            raise SessionError(f"{self.endpoint} sent {waiting} bytes we did not ask for")
        try:
            self.writer.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        except (ConnectionError, OSError) as exc:
            self.broken = True
            raise SessionError(f"connection to {self.endpoint} lost: {exc}") from None

    async def command(self, line: str) -> tuple[int, str]:
        self.send(line.encode("utf-8") + b"\r\n")
        return await self.reply()

    async def transaction(
        self,
        mail_from: str,
        rcpts: list[str],
        data: bytes,
        *,
        body_8bit: bool = False,
        smtputf8: bool = False,
    ) -> dict[str, Reply]:
        """MAIL, RCPT..., DATA (pipelined when offered) and the message; a Reply per rcpt."""
        remote = str(self.endpoint)
        params = ""
        if "SIZE" in self.extensions:
            params += f" SIZE={len(data) + 3}"
        if body_8bit and "8BITMIME" in self.extensions:
            params += " BODY=8BITMIME"
        if smtputf8:
            if "SMTPUTF8" not in self.extensions:
                return {
                    r: Reply(550, "5.6.7 next hop does not support SMTPUTF8", remote) for r in rcpts
                }
            params += " SMTPUTF8"
        commands = [f"MAIL FROM:<{mail_from}>{params}", *(f"RCPT TO:<{r}>" for r in rcpts), "DATA"]
        encoded = [c.encode("utf-8") + b"\r\n" for c in commands]
        replies = await self._envelope(encoded)
        self._check_replies(replies, len(rcpts))
        mail = replies[0]
        if mail[0] != 250:
            if len(replies) == len(encoded) and replies[-1][0] == 354:
                await self._abort_data()
            return {r: Reply(mail[0], mail[1], remote) for r in rcpts}
        result: dict[str, Reply] = {}
        accepted: list[str] = []
        for rcpt, (code, text) in zip(rcpts, replies[1 : 1 + len(rcpts)], strict=True):
            if code in (250, 251):
                accepted.append(rcpt)
            else:
                result[rcpt] = Reply(code, text, remote)
        if len(replies) < len(encoded):  # no recipient accepted, DATA never sent
            await self._rset()
            return result
        data_reply = replies[-1]
        if data_reply[0] != 354:
            for rcpt in accepted:
                result[rcpt] = Reply(data_reply[0], data_reply[1], remote)
            await self._rset()
            return result
        if not accepted:  # a server that says 354 with no recipient: end it empty
            await self._abort_data()
            return result
        self.send(data, b".\r\n")
        code, text = await self.reply()
        self.check("end of data", code, text)
        for rcpt in accepted:
            result[rcpt] = Reply(code, text, remote)
        if code == 421:
            self.broken = True
        return result

    async def _envelope(self, encoded: list[bytes]) -> list[tuple[int, str]]:
        """MAIL, RCPT... and DATA: in one write with PIPELINING, else one at a time (and
        DATA only when a recipient was accepted). The replies, in order."""
        replies: list[tuple[int, str]] = []
        if "PIPELINING" in self.extensions:
            self.send(*encoded)
            for _ in encoded:
                replies.append(await self.reply())
            return replies
        self.send(encoded[0])
        replies.append(await self.reply())
        if replies[0][0] == 250:
            for line in encoded[1:-1]:
                self.send(line)
                replies.append(await self.reply())
            if any(code in (250, 251) for code, _ in replies[1:]):
                self.send(encoded[-1])
                replies.append(await self.reply())
        return replies

    def _check_replies(self, replies: list[tuple[int, str]], rcpts: int) -> None:
        """Each reply of MAIL, RCPT... and DATA against its command (ProtocolViolation)."""
        for i, (code, text) in enumerate(replies):
            command = "MAIL" if i == 0 else "RCPT" if i <= rcpts else "DATA"
            self.check(command, code, text)

    async def _abort_data(self) -> None:
        self.send(b".\r\n")
        await self.reply()

    async def _rset(self) -> None:
        code, text = await self.command("RSET")
        self.check("RSET", code, text)
        if code != 250:
            self.broken = True

    def close(self, *, polite: bool = True) -> None:
        self.broken = True
        if polite:
            with contextlib.suppress(Exception):
                self.writer.write(b"QUIT\r\n")
        with contextlib.suppress(Exception):
            self.writer.close()


def buffered(reader: asyncio.StreamReader) -> int:
    """How many bytes `reader` holds unread (see `discard_buffered` on the attribute)."""
    buffer = getattr(reader, "_buffer", None)
    return len(buffer) if isinstance(buffer, bytearray) else 0


def discard_buffered(reader: asyncio.StreamReader) -> int:
    """Drop whatever `reader` holds unread; returns how many bytes that was.

    asyncio keeps bytes that arrived before `start_tls` in the reader's buffer and hands
    them out as if they had come through TLS. StreamReader has no public way to drop them,
    so this reaches for its buffer (a bytearray in every CPython since 3.4); if that ever
    changes, it refuses to go on rather than silently keep the plaintext.
    """
    buffer = getattr(reader, "_buffer", None)
    if not isinstance(buffer, bytearray):
        raise TlsUnavailable("cannot discard plaintext before TLS on this Python")
    size = len(buffer)
    buffer.clear()
    return size


def _parse_ehlo(text_lines: list[str]) -> dict[str, str]:
    ext: dict[str, str] = {}
    for line in text_lines[1:]:
        key, _, value = line.partition(" ")
        ext[key.upper()] = value
    return ext


class ConnectionPool:
    """Idle outbound sessions per endpoint, and a cap on concurrent ones per endpoint."""

    def __init__(
        self,
        *,
        local_hostname: str,
        source_address: str | None,
        connect_timeout: float = 30.0,
        command_timeout: float = 120.0,
        per_endpoint: int = 20,
    ) -> None:
        self.local_hostname = local_hostname
        self.source_address = source_address
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.per_endpoint = per_endpoint
        self._idle: dict[Endpoint, list[Session]] = {}
        self._limits: dict[Endpoint, asyncio.Semaphore] = {}
        self._contexts: dict[Endpoint, ssl.SSLContext] = {}
        self.connects = 0

    def limit(self, ep: Endpoint) -> asyncio.Semaphore:
        sem = self._limits.get(ep)
        if sem is None:
            sem = self._limits[ep] = asyncio.Semaphore(self.per_endpoint)
        return sem

    def take_idle(self, ep: Endpoint) -> Session | None:
        idle = self._idle.get(ep)
        now = time.monotonic()
        while idle:
            session = idle.pop()
            if (
                not session.broken
                and now - session.idle_since < IDLE_SECONDS
                and not session.reader.at_eof()
            ):
                return session
            session.close()
        return None

    def put_idle(self, session: Session) -> None:
        if session.broken:
            session.close(polite=False)
            return
        session.idle_since = time.monotonic()
        self._idle.setdefault(session.endpoint, []).append(session)

    def _tls_context(self, ep: Endpoint) -> ssl.SSLContext:
        """One context per endpoint (building one loads the CA store: ~40 ms)."""
        ctx = self._contexts.get(ep)
        if ctx is None:
            ctx = self._contexts[ep] = self._new_tls_context(ep)
        return ctx

    @staticmethod
    def _new_tls_context(ep: Endpoint) -> ssl.SSLContext:
        if ep.tls == "verify":
            ctx = ssl.create_default_context(cafile=str(ep.ca_file) if ep.ca_file else None)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if ep.client_cert and ep.client_key:
            ctx.load_cert_chain(str(ep.client_cert), str(ep.client_key))
        return ctx

    async def _socket(self, ep: Endpoint) -> socket.socket:
        """A connected socket bound to the source address."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in ep.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            if self.source_address:
                sock.bind((self.source_address, 0))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with asyncio.timeout(self.connect_timeout):
                await loop.sock_connect(sock, (ep.address, ep.port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def connect(self, ep: Endpoint, *, plaintext: bool = False) -> Session:
        """A new session: greeting, EHLO, and TLS as the policy asks (unless `plaintext`)."""
        try:
            sock = await self._socket(ep)
            reader, writer = await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT)
        except (OSError, TimeoutError) as exc:
            raise SessionError(f"connection to {ep} failed: {exc}") from None
        self.connects += 1
        session = Session(reader, writer, ep, self.connect_timeout)
        try:
            code, text = await session.reply()
            session.check("greeting", code, text)
            if code != 220:
                raise RefusedGreeting(code, text)
            await self._ehlo(session)
            if ep.tls != "none" and not plaintext:
                if "STARTTLS" in session.extensions:
                    await self._starttls(session)
                    await self._ehlo(session)
                elif ep.tls in ("required", "verify"):
                    raise TlsUnavailable(f"{ep} does not offer STARTTLS (TLS policy {ep.tls})")
        except BaseException:
            session.close(polite=False)
            raise
        session.timeout = self.command_timeout
        return session

    async def _starttls(self, session: Session) -> None:
        """STARTTLS and the handshake; plaintext buffered after the 220 is thrown away."""
        ep = session.endpoint
        code, text = await session.command("STARTTLS")
        if code != 220:
            raise TlsUnavailable(f"{ep} refused STARTTLS: {code} {text}")
        injected = discard_buffered(session.reader)
        if injected:
            log.warning(
                "discarded %d bytes %s sent in plaintext after its 220 to STARTTLS"
                " (command injection?)",
                injected,
                ep,
            )
        try:
            async with asyncio.timeout(self.connect_timeout):
                await session.writer.start_tls(
                    self._tls_context(ep), server_hostname=ep.tls_name or ep.address
                )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise TlsUnavailable(f"TLS handshake with {ep} failed: {exc}") from exc
        session.tls = True

    async def _ehlo(self, session: Session) -> None:
        session.send(f"EHLO {self.local_hostname}\r\n".encode())
        code, lines = await session.reply_lines()
        session.check("EHLO", code, " ".join(lines))
        if code == 250:
            session.extensions = _parse_ehlo(lines)
            return
        code, reply = await session.command(f"HELO {self.local_hostname}")
        session.check("HELO", code, reply)
        if code != 250:
            raise RefusedGreeting(code, reply)
        session.extensions = {}

    def close(self) -> None:
        for idle in self._idle.values():
            for session in idle:
                session.close()
        self._idle.clear()


async def send(
    pool: ConnectionPool,
    ep: Endpoint,
    mail_from: str,
    rcpts: list[str],
    raw: bytes,
    *,
    body_8bit: bool = False,
    smtputf8: bool = False,
) -> dict[str, Reply]:
    """One transaction to `ep` for `rcpts`; a Reply per recipient (code 0: no session).

    Reuses an idle session when there is one, and retries once on a fresh session if the
    reused one turns out to be dead.
    """
    remote = str(ep)
    data = prepare_data(raw)
    async with pool.limit(ep):
        session = pool.take_idle(ep)
        for _attempt in range(2):
            reused = session is not None
            if session is None:
                try:
                    session = await pool.connect(ep)
                except TlsUnavailable as exc:
                    if ep.tls != "opportunistic":
                        return {r: Reply(0, f"4.7.5 {exc}", remote) for r in rcpts}
                    try:
                        session = await pool.connect(ep, plaintext=True)
                    except SessionError as exc2:
                        return {r: Reply(0, f"4.4.1 {exc2}", remote) for r in rcpts}
                except RefusedGreeting as exc:
                    # a 4xx/5xx greeting: try the next address (RFC 5321 §5.1)
                    return {r: Reply(0, f"4.4.1 {ep} refused us: {exc}", remote) for r in rcpts}
                except (SessionError, OSError, TimeoutError) as exc:
                    return {r: Reply(0, f"4.4.1 {exc}", remote) for r in rcpts}
            try:
                result = await session.transaction(
                    mail_from, rcpts, data, body_8bit=body_8bit, smtputf8=smtputf8
                )
            except ProtocolViolation as exc:
                session.close(polite=False)
                return {r: Reply(0, f"4.5.0 {exc}", remote) for r in rcpts}
            except SessionError as exc:
                session.close(polite=False)
                session = None
                if reused:
                    continue  # an idle session the server had dropped: once more, fresh
                return {r: Reply(0, f"4.4.2 {exc}", remote) for r in rcpts}
            except BaseException:
                # anything else (a message we cannot encode, a bug, cancellation): the
                # connection is closed, never leaked, and the caller hears of it
                session.close(polite=False)
                raise
            pool.put_idle(session)
            return result
    return {r: Reply(0, "4.4.2 no session", remote) for r in rcpts}
