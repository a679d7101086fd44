"""Inbound ESMTP: a small server on asyncio streams that spools before it says 250.

Why not aiosmtpd: it reads DATA line by line (one `readuntil` per line), which caps 100 KB
messages at about 200 msg/s on two cores, and its hooks run after it has already decided
what ends the data. This server reads DATA in large chunks into one buffer and finds the
end with one `find` (reader.py), so the cost per message is a few C-level passes
over the bytes, whatever their line count. The protocol surface is small and ours.

SMTP smuggling: only `<CRLF>.<CRLF>` ends the data. Any bare CR or bare LF inside the data
(which every smuggling variant — `<LF>.<LF>`, `<LF>.<CRLF>`, `<CR>.<CR>`, `<CR>.<CRLF>`,
... — needs) makes the whole transmission, up to the real `<CRLF>.<CRLF>`, one rejected
message: `550 5.6.0`. We reject rather than normalise, so what we relay is always exactly
what the client sent, and a downstream that parses line ends differently sees nothing odd.

NUL: a NUL byte anywhere in DATA is refused the same way (550 5.6.0): software that
strips NUL joins lines and can find a second message; BINARYMIME is not offered.

AUTH: the password check (a memory-hard hash) is the node's `Authenticator`, awaited here
(it hashes in a worker thread), never on the event loop; a SASL challenge is sent at
once, whatever the client pipelined, since the client waits for it.

This module is the socket loop only: the command state machine is protocol.py, and what
becomes of a connection, an envelope and a message is the node's intake (`Inbound`),
handed in by the role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from mxflow.config import Limits, Listener
from mxflow.smtp.capacity import ConnectionBudget
from mxflow.smtp.protocol import (
    AuthenticatingScreen,
    Authenticator,
    Features,
    Next,
    Screen,
    Session,
    SmtpProtocol,
    Step,
)
from mxflow.smtp.reader import READ_CHUNK, Closed, InputBuffer, LineTooLong, Spill
from mxflow.smtp.sasl import AuthOutcome
from mxflow.smtp.tls import server_context, tls_info

log = logging.getLogger("mxflow.smtp")


class Inbound(Protocol):
    """What the server asks the node about one connection (intake/pipeline.py's Inbound)."""

    async def connect(self) -> str | None: ...

    async def envelope(self) -> str | None: ...

    def refuse(self, reply: str) -> None: ...

    async def receive(self, data: bytes) -> str: ...

    def close(self) -> None: ...


OpenInbound = Callable[[Session], Inbound]


@dataclass
class _Chunks:
    """The BDAT chunks of one transaction so far (dropped past the size limit)."""

    data: bytearray = field(default_factory=bytearray)
    too_big: bool = False

    def clear(self) -> None:
        self.data.clear()
        self.too_big = False


class SmtpServer:
    """One listener of a node: moves bytes between sockets and the protocol and intake."""

    def __init__(
        self,
        listener: Listener,
        *,
        hostname: str,
        limits: Limits,
        screen: Screen,
        open_inbound: OpenInbound,
        budget: ConnectionBudget | None = None,
        spill: Spill | None = None,
        on_reply: Callable[[str], None] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.listener = listener
        self.hostname = hostname
        self.limits = limits
        self.screen = screen
        self.open_inbound = open_inbound
        self.budget = budget or ConnectionBudget(limits.max_connections)
        self._spill = spill
        self.on_reply = on_reply  # e.g. the node's metrics, by reply code
        self.reuse_port = reuse_port
        self.ssl_context: ssl.SSLContext | None = None
        if listener.tls != "none":
            assert listener.cert is not None and listener.key is not None
            self.ssl_context = server_context(listener.cert, listener.key, listener.client_ca)
        self.features = Features(
            hostname=hostname,
            max_message_size=limits.max_message_size,
            max_recipients=limits.max_recipients,
            max_errors=limits.max_errors,
            starttls=listener.tls == "starttls" and self.ssl_context is not None,
            submission=listener.submission,
        )
        self.authenticator: Authenticator | None = None
        self._use_screen(screen)
        self._server: asyncio.Server | None = None
        self._per_ip: dict[str, int] = {}
        self._sessions: dict[asyncio.Task[None], SmtpProtocol | None] = {}
        self._accepting = True
        self.full_refusals = 0
        self.internal_errors = 0
        self.port = listener.port

    def reconfigure(self, *, screen: Screen, open_inbound: OpenInbound) -> None:
        """New connections use these (a reload); connections in flight keep theirs."""
        if self.listener.tls != "none":
            assert self.listener.cert is not None and self.listener.key is not None
            # a renewed certificate is read again; a bad one raises and the reload is refused
            context = server_context(self.listener.cert, self.listener.key, self.listener.client_ca)
            self.ssl_context = context
        self._use_screen(screen)
        self.open_inbound = open_inbound

    def _use_screen(self, screen: Screen) -> None:
        """The screen, and its logins when it has them and this is a submission listener."""
        self.screen = screen
        self.authenticator = None
        if self.listener.submission and isinstance(screen, AuthenticatingScreen):
            self.authenticator = screen.authenticator
        self.features = replace(self.features, auth=self.authenticator is not None)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle,
            host=self.listener.address,
            port=self.listener.port,
            ssl=self.ssl_context if self.listener.tls == "implicit" else None,
            reuse_address=True,
            reuse_port=self.reuse_port,
            backlog=1024,
            limit=READ_CHUNK,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; let sessions finish their current transaction for `grace` s."""
        self._accepting = False
        if self._server is not None:
            self._server.close()
        for task, proto in list(self._sessions.items()):
            if proto is not None:
                proto.accepting = False
            if proto is None or proto.session.mail_from is None:
                task.cancel()  # idle between transactions: close it now
        if self._sessions:
            _, pending = await asyncio.wait(set(self._sessions), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    # ----------------------------------------------------------------- session

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = Session(peer_ip=str(peer[0]), peer_port=int(peer[1]))
        if not self.budget.admit():
            self._refuse_full(session, writer)
            return
        self._sessions[task] = None
        if self.listener.tls == "implicit":
            session.tls = tls_info(writer.get_extra_info("ssl_object"))
        started = time.monotonic()
        self._per_ip[session.peer_ip] = self._per_ip.get(session.peer_ip, 0) + 1
        inbound: Inbound | None = None
        try:
            refusal = self._opening_refusal(session)
            if refusal is not None:
                writer.write(refusal.encode() + b"\r\n")
                reason = refusal[10:]
            else:
                proto = SmtpProtocol(self.features, self.screen, session, self.authenticator)
                self._sessions[task] = proto
                inbound = self.open_inbound(session)
                inp = InputBuffer(reader, spill=self._spill, idle=self.limits.timeout)
                reason = await self._converse(proto, inbound, inp, writer)
        except (Exception, asyncio.CancelledError) as exc:
            reason, last_words = self._ending(exc)
            if last_words:
                with contextlib.suppress(Exception):
                    writer.write(last_words)
        finally:
            self._per_ip[session.peer_ip] -= 1
            if not self._per_ip[session.peer_ip]:
                del self._per_ip[session.peer_ip]
            with contextlib.suppress(Exception):
                writer.close()
            self._sessions.pop(task, None)
            self.budget.release()
            if inbound is not None:
                inbound.close()
            self._log_session(session, reason, time.monotonic() - started)

    def _opening_refusal(self, session: Session) -> str | None:
        """A 421 for a client this listener will not talk to now, or None."""
        if self._per_ip[session.peer_ip] > self.limits.max_connections_per_ip:
            return "421 4.7.0 Too many connections from your address"
        if not self._accepting:
            return "421 4.3.2 Service shutting down"
        return None

    def _ending(self, exc: BaseException) -> tuple[str, bytes]:
        """Why a session ended early (for the log) and the last words for the client."""
        if isinstance(exc, LineTooLong):
            return "command line too long", b"500 5.5.2 Line too long, closing connection\r\n"
        if isinstance(exc, Closed):
            return "client closed", b""
        if isinstance(exc, TimeoutError):
            return "timeout", b"421 4.4.2 Idle timeout, closing connection\r\n"
        if isinstance(exc, ConnectionError | ssl.SSLError):
            return f"connection error: {exc}", b""
        if isinstance(exc, asyncio.CancelledError):
            return "shutting down", b"421 4.3.2 Service shutting down\r\n"
        self.internal_errors += 1  # a bug: say so in the log, not once per connection
        if self.internal_errors & (self.internal_errors - 1) == 0:
            log.error("session failed (%d so far)", self.internal_errors, exc_info=exc)
        return (
            f"internal error: {type(exc).__name__}",
            b"421 4.3.0 Local error, try again later\r\n",
        )

    def _refuse_full(self, session: Session, writer: asyncio.StreamWriter) -> None:
        """The node is at capacity: say so and close, without reading anything."""
        with contextlib.suppress(Exception):
            writer.write(b"421 4.7.0 Too many connections, try again later\r\n")
            writer.close()
        self.full_refusals += 1
        if self.full_refusals & (self.full_refusals - 1) == 0:  # 1, 2, 4, 8 ...: not a flood
            log.warning(
                "at capacity: %d connections open; refused client=%s (%d refusals so far)",
                self.budget.open,
                session.peer_ip,
                self.full_refusals,
            )

    def _emit(self, out: list[bytes], replies: list[str]) -> None:
        """Queue reply lines for the client (sent together by the next flush)."""
        for reply in replies:
            if self.on_reply is not None:
                self.on_reply(reply)
            out.append(reply.encode("utf-8", "replace") + b"\r\n")

    def _log_session(self, session: Session, reason: str, seconds: float) -> None:
        log.info(
            "session client=%s:%d helo=%s tls=%s connector=%s user=%s queued=%s rejected=%d"
            " end=%r seconds=%.3f",
            session.peer_ip,
            session.peer_port,
            session.helo or "-",
            session.tls.version if session.tls else "-",
            session.connector or "-",
            session.auth_user or "-",
            ",".join(session.queued) or "-",
            session.rejected,
            reason,
            seconds,
        )

    async def _converse(
        self,
        proto: SmtpProtocol,
        inbound: Inbound,
        inp: InputBuffer,
        writer: asyncio.StreamWriter,
    ) -> str:
        out: list[bytes] = []
        chunks = _Chunks()  # BDAT data of the current transaction

        async def flush(force: bool = False) -> None:
            # PIPELINING: replies to a batch of commands go out together.
            if out and (force or inp.buffered() == 0):
                writer.write(b"".join(out))
                out.clear()
                await writer.drain()

        refusal = await inbound.connect()
        if refusal is not None:
            self._emit(out, [refusal])
            await flush(True)
            return f"refused at connect: {refusal}"
        self._emit(out, [proto.greeting()])
        await flush(True)
        while True:
            async with asyncio.timeout(self.limits.timeout):
                line = await inp.readline()
            step = proto.handle(line)
            if step.next is Next.DATA:
                await flush(True)
                step = await self._data(proto, inbound, inp, out, flush)
            elif step.next is Next.CHUNK:
                step = await self._chunk(proto, inbound, inp, step, chunks)
            elif step.next is Next.AUTH:
                step = await self._authenticate(proto, step)
            self._emit(out, step.replies)
            if step.next is Next.STARTTLS:
                await flush(True)
                await self._starttls(proto, inp, writer)
            elif step.next is Next.SASL:
                await flush(True)  # the client waits for the challenge
            elif step.next is Next.CLOSE:
                await flush(True)
                return "quit" if step.replies[-1].startswith("221") else step.replies[-1]
            else:
                await flush()

    async def _starttls(
        self, proto: SmtpProtocol, inp: InputBuffer, writer: asyncio.StreamWriter
    ) -> None:
        assert self.ssl_context is not None
        inp.discard()  # plaintext sent ahead of the handshake is never obeyed
        async with asyncio.timeout(self.limits.timeout):
            await writer.start_tls(self.ssl_context)
        tls = tls_info(writer.get_extra_info("ssl_object"))
        assert tls is not None
        proto.tls_started(tls)

    async def _authenticate(self, proto: SmtpProtocol, step: Step) -> Step:
        """Ask the node whether the credentials are good (the hash runs off the loop)."""
        assert proto.authenticator is not None and step.credentials is not None
        outcome, account = await proto.authenticator.verify(proto.session, step.credentials)
        if outcome is not AuthOutcome.OK:
            log.warning(
                "auth failed client=%s user=%r outcome=%s",
                proto.session.peer_ip,
                step.credentials.username[:80],
                outcome.value,
            )
        return proto.auth_finished(outcome, account)

    async def _data(
        self,
        proto: SmtpProtocol,
        inbound: Inbound,
        inp: InputBuffer,
        out: list[bytes],
        flush: Callable[[bool], Awaitable[None]],
    ) -> Step:
        """From DATA to the reply after the final dot."""
        refusal = await inbound.envelope()
        if refusal is not None:
            return proto.finish(refusal)
        self._emit(out, ["354 End data with <CR><LF>.<CR><LF>"])
        await flush(True)
        async with asyncio.timeout(self.limits.data_timeout):  # each read: the idle timeout
            data, too_big = await inp.read_data(self.limits.max_message_size)
        problem = _framing_problem(data, too_big, self.limits.max_message_size)
        if problem is not None:
            if problem.startswith("550"):
                log.warning("smuggling client=%s %s; rejected", proto.session.peer_ip, problem)
            inbound.refuse(problem)
            return proto.finish(problem)
        if data.startswith(b".") or b"\r\n." in data:  # RFC 5321 4.5.2 transparency
            data = (b"\r\n" + data).replace(b"\r\n.", b"\r\n")[2:]
        return proto.finish(await inbound.receive(data))

    async def _chunk(
        self, proto: SmtpProtocol, inbound: Inbound, inp: InputBuffer, step: Step, chunks: _Chunks
    ) -> Step:
        """One BDAT chunk (RFC 3030): read its octets, then answer it (or the message)."""
        s = proto.session
        max_size = self.limits.max_message_size
        if not s.chunking:
            chunks.clear()  # a new transaction (RSET may have ended the last one)
        chunks.too_big |= len(chunks.data) + step.chunk_size > max_size
        keep = step.refusal is None and not chunks.too_big
        async with asyncio.timeout(self.limits.data_timeout):  # each read: the idle timeout
            data = await inp.read_exact(step.chunk_size, keep=keep)
        if step.refusal is not None:
            chunks.clear()
            return proto.finish(step.refusal)
        if not s.chunking:  # the first chunk: the envelope checks, as at DATA
            refusal = await inbound.envelope()
            if refusal is not None:
                chunks.clear()
                return proto.finish(refusal)
            s.chunking = True
        chunks.data += data
        if not step.last:
            return Step([f"250 2.0.0 {step.chunk_size} octets received"])
        message, too_big = bytes(chunks.data), chunks.too_big
        chunks.clear()
        problem = _framing_problem(message, too_big, max_size)
        if problem is not None:
            inbound.refuse(problem)
            return proto.finish(problem)
        return proto.finish(await inbound.receive(message))


def _framing_problem(data: bytes, too_big: bool, max_size: int) -> str | None:
    """Why the transmitted data cannot be a message (size, bare CR/LF, NUL), or None."""
    if too_big or len(data) > max_size:
        return "552 5.3.4 Message size exceeds fixed maximum message size"
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        return "550 5.6.0 Message rejected: bare CR or LF in DATA (line ends must be CRLF)"
    if b"\x00" in data:
        return "550 5.6.0 Message rejected: NUL in DATA (BINARYMIME is not offered)"
    return None
