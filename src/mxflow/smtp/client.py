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
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from mxflow.config import TlsPolicy

IDLE_SECONDS = 30.0
_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")


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


class SessionError(Exception):
    """The session broke (connection lost, timeout, garbage): try again, maybe elsewhere."""


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
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    line = await self.reader.readline()
                    if not line:
                        raise SessionError(f"{self.endpoint} closed the connection")
                    text = line.decode("utf-8", "replace").rstrip("\r\n")
                    if len(text) < 3 or not text[:3].isdigit():
                        raise SessionError(f"{self.endpoint} sent a malformed reply {text!r}")
                    lines.append(text[4:])
                    if text[3:4] != "-":
                        return int(text[:3]), " ".join(lines).strip()
        except TimeoutError:
            self.broken = True
            raise SessionError(f"{self.endpoint} did not reply in {self.timeout:.0f}s") from None
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            self.broken = True
            raise SessionError(f"connection to {self.endpoint} lost: {exc}") from None

    def send(self, *chunks: bytes) -> None:
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
        replies: list[tuple[int, str]] = []
        if "PIPELINING" in self.extensions:
            self.send(*encoded)
            for _ in encoded:
                replies.append(await self.reply())
        else:
            self.send(encoded[0])
            replies.append(await self.reply())
            if replies[0][0] == 250:
                for line in encoded[1:-1]:
                    self.send(line)
                    replies.append(await self.reply())
                if any(code in (250, 251) for code, _ in replies[1:]):
                    self.send(encoded[-1])
                    replies.append(await self.reply())
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
        for rcpt in accepted:
            result[rcpt] = Reply(code, text, remote)
        if code == 421:
            self.broken = True
        return result

    async def _abort_data(self) -> None:
        self.send(b".\r\n")
        await self.reply()

    async def _rset(self) -> None:
        code, _ = await self.command("RSET")
        if code != 250:
            self.broken = True

    def close(self, *, polite: bool = True) -> None:
        self.broken = True
        if polite:
            with contextlib.suppress(Exception):
                self.writer.write(b"QUIT\r\n")
        with contextlib.suppress(Exception):
            self.writer.close()


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
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        except (OSError, TimeoutError) as exc:
            raise SessionError(f"connection to {ep} failed: {exc}") from None
        self.connects += 1
        session = Session(reader, writer, ep, self.connect_timeout)
        try:
            code, text = await session.reply()
            if code != 220:
                raise RefusedGreeting(code, text)
            await self._ehlo(session)
            if ep.tls != "none" and not plaintext:
                if "STARTTLS" in session.extensions:
                    code, text = await session.command("STARTTLS")
                    if code != 220:
                        raise TlsUnavailable(f"{ep} refused STARTTLS: {code} {text}")
                    try:
                        async with asyncio.timeout(self.connect_timeout):
                            await writer.start_tls(
                                self._tls_context(ep), server_hostname=ep.tls_name or ep.address
                            )
                    except (ssl.SSLError, OSError, TimeoutError) as exc:
                        raise TlsUnavailable(f"TLS handshake with {ep} failed: {exc}") from exc
                    session.tls = True
                    await self._ehlo(session)
                elif ep.tls in ("required", "verify"):
                    raise TlsUnavailable(f"{ep} does not offer STARTTLS (TLS policy {ep.tls})")
        except BaseException:
            session.close(polite=False)
            raise
        session.timeout = self.command_timeout
        return session

    async def _ehlo(self, session: Session) -> None:
        session.send(f"EHLO {self.local_hostname}\r\n".encode())
        lines: list[str] = []
        async with asyncio.timeout(session.timeout):
            while True:
                raw = await session.reader.readline()
                if not raw:
                    raise SessionError(f"{session.endpoint} closed the connection")
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(text[4:])
                if text[3:4] != "-":
                    break
        if text[:3] == "250":
            session.extensions = _parse_ehlo(lines)
            return
        code, reply = await session.command(f"HELO {self.local_hostname}")
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
            except SessionError as exc:
                session.close(polite=False)
                session = None
                if reused:
                    continue  # an idle session the server had dropped: once more, fresh
                return {r: Reply(0, f"4.4.2 {exc}", remote) for r in rcpts}
            pool.put_idle(session)
            return result
    return {r: Reply(0, "4.4.2 no session", remote) for r in rcpts}
