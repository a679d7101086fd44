"""Inbound ESMTP: a listener of our own that spools before it says 250.

Why not aiosmtpd: it reads DATA line by line (one `readuntil` per line), which caps 100 KB
messages at about 200 msg/s on two cores, and its hooks run after it has already decided
what ends the data. This server finds the end of DATA with one `find` over a buffer
(reader.py), so the cost per message is a few C-level passes over the bytes, whatever
their line count; and each connection is an `asyncio.Protocol` (connection.py) that
answers plain commands within the callback that read them, without waking a task. The
protocol surface is small and ours.

SMTP smuggling: only `<CRLF>.<CRLF>` ends the data. Any bare CR or bare LF inside the data
(which every smuggling variant — `<LF>.<LF>`, `<LF>.<CRLF>`, `<CR>.<CR>`, `<CR>.<CRLF>`,
... — needs) makes the whole transmission, up to the real `<CRLF>.<CRLF>`, one rejected
message: `550 5.6.0`. We reject rather than normalise, so what we relay is always exactly
what the client sent, and a downstream that parses line ends differently sees nothing odd.

NUL: a NUL byte anywhere in DATA is refused the same way (550 5.6.0): software that
strips NUL joins lines and can find a second message; BINARYMIME is not offered.

AUTH: the password check (a memory-hard hash) is the node's `Authenticator`, awaited
(it hashes in a worker thread), never on the event loop; a SASL challenge is sent at
once, whatever the client pipelined, since the client waits for it.

This module is the listener (admission, the per-address and global limits, shutdown, the
session log); connection.py moves one client's bytes; the command state machine is
protocol.py, and what becomes of a connection, an envelope and a message is the node's
intake (`Inbound`), handed in by the role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from mxflow.config import Limits, Listener
from mxflow.smtp.capacity import ConnectionBudget
from mxflow.smtp.connection import Connection
from mxflow.smtp.protocol import (
    AuthenticatingScreen,
    Authenticator,
    Features,
    Screen,
    Session,
    SmtpProtocol,
)
from mxflow.smtp.reader import Closed, LineTooLong, Spill
from mxflow.smtp.tls import server_context

log = logging.getLogger("mxflow.smtp")


class Inbound(Protocol):
    """What the server asks the node about one connection (intake/pipeline.py's Inbound)."""

    @property
    def waits(self) -> bool:
        """Whether connect and envelope checks may wait (a filter, shared counters); if
        not, the connection takes `connect_now` / `envelope_now` in its callback, no task."""
        ...

    def connect_now(self) -> str | None: ...

    def envelope_now(self) -> str | None: ...

    async def connect(self) -> str | None: ...

    async def envelope(self) -> str | None: ...

    def refuse(self, reply: str) -> None: ...

    async def receive(self, data: bytes) -> str: ...

    def close(self) -> None: ...


OpenInbound = Callable[[Session], Inbound]


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
        self._sessions: dict[Connection, None] = {}  # admitted, in the order they came
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

    @property
    def spill(self) -> Spill | None:
        return self._spill

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self),
            host=self.listener.address,
            port=self.listener.port,
            ssl=self.ssl_context if self.listener.tls == "implicit" else None,
            reuse_address=True,
            reuse_port=self.reuse_port,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; let sessions finish their current transaction for `grace` s."""
        self._accepting = False
        if self._server is not None:
            self._server.close()
        for conn in list(self._sessions):
            conn.shutdown()  # idle between transactions: closed now
        if self._sessions:
            finished = {conn.finished for conn in self._sessions}
            await asyncio.wait(finished, timeout=grace)
            for conn in list(self._sessions):
                conn.cancel()
            await asyncio.gather(*finished, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    # ----------------------------------------------------------------- session

    def new_protocol(self, session: Session) -> SmtpProtocol:
        return SmtpProtocol(self.features, self.screen, session, self.authenticator)

    def session_started(self, conn: Connection) -> None:
        """A connection was admitted: count it (per address too) until `session_ended`."""
        self._sessions[conn] = None
        ip = conn.session.peer_ip
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1

    def session_ended(self, conn: Connection, reason: str, seconds: float) -> None:
        ip = conn.session.peer_ip
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]
        self._sessions.pop(conn, None)
        self.budget.release()
        self._log_session(conn.session, reason, seconds)

    def opening_refusal(self, session: Session) -> str | None:
        """A 421 for a client this listener will not talk to now, or None."""
        if self._per_ip[session.peer_ip] > self.limits.max_connections_per_ip:
            return "421 4.7.0 Too many connections from your address"
        if not self._accepting:
            return "421 4.3.2 Service shutting down"
        return None

    def ending(self, exc: BaseException) -> tuple[str, bytes]:
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

    def refuse_full(self, session: Session, transport: asyncio.Transport) -> None:
        """The node is at capacity: say so and close, without reading anything."""
        with contextlib.suppress(Exception):
            transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
        self.full_refusals += 1
        if self.full_refusals & (self.full_refusals - 1) == 0:  # 1, 2, 4, 8 ...: not a flood
            log.warning(
                "at capacity: %d connections open; refused client=%s (%d refusals so far)",
                self.budget.open,
                session.peer_ip,
                self.full_refusals,
            )

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
