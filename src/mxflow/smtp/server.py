"""Inbound ESMTP: a small server on asyncio streams that spools before it says 250.

Why not aiosmtpd: it reads DATA line by line (one `readuntil` per line), which caps 100 KB
messages at about 200 msg/s on two cores, and its hooks run after it has already decided
what ends the data. This server reads DATA in large chunks into one buffer and finds the
end with `bytearray.find(b"\\r\\n.\\r\\n")`, so the cost per message is a few C-level passes
over the bytes, whatever their line count. The protocol surface is small and ours.

SMTP smuggling: only `<CRLF>.<CRLF>` ends the data. Any bare CR or bare LF inside the data
(which every smuggling variant — `<LF>.<LF>`, `<LF>.<CRLF>`, `<CR>.<CR>`, `<CR>.<CRLF>`,
... — needs) makes the whole transmission, up to the real `<CRLF>.<CRLF>`, one rejected
message: `550 5.6.0`. We reject rather than normalise, so what we relay is always exactly
what the client sent, and a downstream that parses line ends differently sees nothing odd.

Extensions: SIZE, 8BITMIME, SMTPUTF8, PIPELINING, ENHANCEDSTATUSCODES, STARTTLS.
Relay control: a recipient outside the accepted domains is taken only from a client that
an inbound connector with `relay = true` matches (by IP/CIDR or TLS certificate name);
MAIL FROM plays no part, so mxflow is never an open relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mxflow import metrics
from mxflow.auth.policy import AuthPolicy
from mxflow.auth.results import format_authentication_results, strip_our_results
from mxflow.checks.sender_auth import dkim_sign_outbound, seal_after_checks
from mxflow.config import InboundConnector, Listener, NodeConfig
from mxflow.mail import (
    Action,
    Filter,
    MessageContext,
    Phase,
    QuarantineSink,
    TlsInfo,
    Verdict,
    header_section,
    message_id_of,
)
from mxflow.queue.spool import Envelope, Spool
from mxflow.smtp.received import received_header
from mxflow.smtp.tls import server_context, tls_info
from mxflow.store.trace import STATUS_FAILED, STATUS_PENDING, STATUS_QUARANTINED, TraceStore

log = logging.getLogger("mxflow.smtp")

READ_CHUNK = 256 * 1024
MAX_COMMAND = 4096
_PATH = re.compile(r"^\s*<([^<>]*)>\s*(.*)$")
_AUTH_RESULTS = re.compile(rb"(?im)^authentication-results[ \t]*:")

QueuedCallback = Callable[[Envelope, bytes], None]


def _headers(fields: list[tuple[str, str]]) -> bytes:
    """Header fields as wire bytes, in the order given (values may hold CRLF folds)."""
    return b"".join(
        f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in fields
    )


class _Closed(Exception):
    """The client went away (or must be dropped)."""


class _LineTooLong(_Closed):
    """A command line longer than any SMTP command may be."""


class _Input:
    """Our own read buffer over a StreamReader: lines for commands, big chunks for DATA.

    Owning the buffer lets DATA read far ahead without losing pipelined commands that
    follow the end of data, and lets STARTTLS discard plaintext sent ahead of the handshake.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()

    async def _fill(self) -> None:
        chunk = await self.reader.read(READ_CHUNK)
        if not chunk:
            raise _Closed
        self.buf += chunk

    def buffered(self) -> int:
        inner = getattr(self.reader, "_buffer", b"")
        return len(self.buf) + len(inner)

    def discard(self) -> None:
        self.buf.clear()
        inner = getattr(self.reader, "_buffer", None)
        if isinstance(inner, bytearray):
            inner.clear()

    async def readline(self) -> bytes:
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > MAX_COMMAND:
                raise _LineTooLong
            start = len(self.buf)
            await self._fill()

    async def read_data(self, max_size: int) -> tuple[bytes, bool]:
        """Everything up to `<CRLF>.<CRLF>` (not dot-unstuffed); True when it was too big.

        The data is searched with a virtual CRLF in front, so an empty message (".\\r\\n")
        and a first line of "." end it too. Too-big data is discarded as it arrives.
        """
        self.buf[0:0] = b"\r\n"
        pos = 0
        too_big = False
        while True:
            i = self.buf.find(b"\r\n.\r\n", pos)
            if i >= 0:
                break
            if len(self.buf) > max_size + 8:
                too_big = True
                del self.buf[:-4]
            pos = max(0, len(self.buf) - 4)
            await self._fill()
        if too_big:
            data = b""
        else:
            with memoryview(self.buf) as view:
                data = bytes(view[2 : i + 2])
        del self.buf[: i + 5]
        return data, too_big


@dataclass
class Session:
    """State of one SMTP connection and its current transaction."""

    peer_ip: str
    peer_port: int
    helo: str = ""
    esmtp: bool = False
    tls: TlsInfo | None = None
    connector: InboundConnector | None = None
    mail_from: str | None = None
    rcpt_tos: list[str] = field(default_factory=list)
    smtputf8: bool = False
    body_8bit: bool = False
    queued: list[str] = field(default_factory=list)
    rejected: int = 0
    errors: int = 0  # 4xx/5xx replies since the last queued message (smtpd_hard_error_limit)
    ctx: MessageContext | None = None  # the filter's context, kept from CONNECT to close

    def reset(self) -> None:
        self.mail_from = None
        self.rcpt_tos = []
        self.smtputf8 = False
        self.body_8bit = False


class SmtpServer:
    """One listener of a node: speaks ESMTP, applies relay control and filters, spools."""

    def __init__(
        self,
        config: NodeConfig,
        listener: Listener,
        spool: Spool,
        trace: TraceStore,
        *,
        on_queued: QueuedCallback | None = None,
        filter: Filter | None = None,
        quarantine: QuarantineSink | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self.listener = listener
        self.spool = spool
        self.trace = trace
        self.on_queued = on_queued
        self.filter = filter
        self.quarantine = quarantine
        self.reuse_port = reuse_port
        self.hostname = config.hostname
        self.limits = config.limits
        self.ssl_context: ssl.SSLContext | None = None
        if listener.tls != "none":
            assert listener.cert is not None and listener.key is not None
            self.ssl_context = server_context(listener.cert, listener.key, listener.client_ca)
        self._server: asyncio.Server | None = None
        self._per_ip: dict[str, int] = {}
        self._sessions: dict[asyncio.Task[None], Session] = {}
        self._accepting = True
        self.port = listener.port
        auth = config.auth
        self.auth_policy: AuthPolicy | None = auth if isinstance(auth, AuthPolicy) else None
        # who we are in Authentication-Results; the filter uses the same default
        self.authserv_id = self.auth_policy.authserv_id if self.auth_policy else self.hostname

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
        for task, session in list(self._sessions.items()):
            if session.mail_from is None:  # idle between transactions: close it now
                task.cancel()
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
        self._sessions[task] = session
        if self.listener.tls == "implicit":
            session.tls = tls_info(writer.get_extra_info("ssl_object"))
        started = time.monotonic()
        count = self._per_ip.get(session.peer_ip, 0) + 1
        self._per_ip[session.peer_ip] = count
        reason = "quit"
        try:
            if count > self.limits.max_connections_per_ip:
                writer.write(b"421 4.7.0 Too many connections from your address\r\n")
                reason = "too many connections"
                return
            if not self._accepting:
                writer.write(b"421 4.3.2 Service shutting down\r\n")
                reason = "shutting down"
                return
            reason = await self._converse(session, _Input(reader), writer)
        except _LineTooLong:
            reason = "command line too long"
            with contextlib.suppress(Exception):
                writer.write(b"500 5.5.2 Line too long, closing connection\r\n")
        except _Closed:
            reason = "client closed"
        except TimeoutError:
            reason = "timeout"
            with contextlib.suppress(Exception):
                writer.write(b"421 4.4.2 Idle timeout, closing connection\r\n")
        except (ConnectionError, ssl.SSLError) as exc:
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            reason = "shutting down"
            with contextlib.suppress(Exception):
                writer.write(b"421 4.3.2 Service shutting down\r\n")
        finally:
            self._per_ip[session.peer_ip] -= 1
            if not self._per_ip[session.peer_ip]:
                del self._per_ip[session.peer_ip]
            with contextlib.suppress(Exception):
                writer.close()
            self._sessions.pop(task, None)
            closed = getattr(self.filter, "connection_closed", None)
            if closed is not None and session.ctx is not None:
                # the context the filter saw at CONNECT: it knows whether it counted it
                closed(session.ctx)
            log.info(
                "session client=%s:%d helo=%s tls=%s connector=%s queued=%s rejected=%d"
                " end=%r seconds=%.3f",
                session.peer_ip,
                session.peer_port,
                session.helo or "-",
                session.tls.version if session.tls else "-",
                session.connector.name if session.connector else "-",
                ",".join(session.queued) or "-",
                session.rejected,
                reason,
                time.monotonic() - started,
            )

    def _ctx(self, s: Session) -> MessageContext:
        """The session's filter context, brought up to date (one per session, so the
        filter's per-phase results and its rate-limit accounting follow the session)."""
        if s.ctx is None:
            s.ctx = MessageContext(client_ip=s.peer_ip, local_hostname=self.hostname)
        ctx = s.ctx
        ctx.helo = s.helo
        ctx.mail_from = s.mail_from or ""
        ctx.rcpt_tos = list(s.rcpt_tos)
        ctx.tls = s.tls
        ctx.connector = s.connector.name if s.connector else None
        ctx.raw = b""
        ctx.queue_id = ""
        ctx._parsed = None
        return ctx

    async def _converse(self, s: Session, inp: _Input, writer: asyncio.StreamWriter) -> str:
        out: list[bytes] = []

        def reply(text: str) -> None:
            metrics.smtp_reply(self.config.name, text)
            if text[:1] in ("4", "5"):
                s.errors += 1
            out.append(text.encode("utf-8", "replace") + b"\r\n")

        async def flush(force: bool = False) -> None:
            # PIPELINING: replies to a batch of commands go out together.
            if out and (force or inp.buffered() == 0):
                writer.write(b"".join(out))
                out.clear()
                await writer.drain()

        if self.filter is not None:
            verdict = await self.filter.evaluate(self._ctx(s), Phase.CONNECT)
            if verdict.action in (Action.REJECT, Action.TEMPFAIL):
                code = "554 5.7.1" if verdict.action is Action.REJECT else "421 4.7.1"
                reply(f"{code} {verdict.reason or 'Connection refused'}")
                await flush(True)
                return f"refused at connect: {verdict.reason}"
        reply(f"220 {self.hostname} ESMTP mxflow")
        await flush(True)
        timeout = self.limits.timeout
        while True:
            async with asyncio.timeout(timeout):
                line = await inp.readline()
            text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                if not arg.strip():
                    reply(f"501 5.5.4 Syntax: {verb} hostname")
                else:
                    s.helo = arg.strip()
                    s.esmtp = verb == "EHLO"
                    s.reset()
                    if s.esmtp:
                        ext = [
                            f"{self.hostname} Hello {s.helo} [{s.peer_ip}]",
                            f"SIZE {self.limits.max_message_size}",
                            "8BITMIME",
                            "SMTPUTF8",
                            "PIPELINING",
                            "ENHANCEDSTATUSCODES",
                        ]
                        if self.listener.tls == "starttls" and s.tls is None:
                            ext.append("STARTTLS")
                        for i, e in enumerate(ext):
                            reply(("250 " if i == len(ext) - 1 else "250-") + e)
                    else:
                        reply(f"250 {self.hostname} Hello {s.helo} [{s.peer_ip}]")
            elif verb == "STARTTLS":
                if self.listener.tls != "starttls" or self.ssl_context is None:
                    reply("502 5.5.1 STARTTLS not available")
                elif s.tls is not None:
                    reply("503 5.5.1 TLS already active")
                else:
                    reply("220 2.0.0 Ready to start TLS")
                    await flush(True)
                    inp.discard()  # plaintext sent ahead of the handshake is never obeyed
                    async with asyncio.timeout(timeout):
                        await writer.start_tls(self.ssl_context)
                    s.tls = tls_info(writer.get_extra_info("ssl_object"))
                    s.helo, s.esmtp = "", False
                    s.reset()
                    continue
            elif verb == "MAIL":
                self._mail(s, arg, reply)
            elif verb == "RCPT":
                self._rcpt(s, arg, reply)
            elif verb == "DATA":
                await flush(True)
                await self._data(s, inp, reply, flush)
            elif verb == "RSET":
                s.reset()
                reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                reply(f"221 2.0.0 {self.hostname} closing connection")
                await flush(True)
                return "quit"
            elif verb == "VRFY":
                reply("252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery")
            elif verb in ("BDAT", "AUTH", "ETRN", "EXPN", "TURN"):
                reply(f"502 5.5.1 {verb} not implemented")
            else:
                reply("500 5.5.2 Command not recognized")
            if not self._accepting and s.mail_from is None:
                reply("421 4.3.2 Service shutting down")
                await flush(True)
                return "shutting down"
            if s.errors >= self.limits.max_errors:
                # address harvesting and broken clients: drop them as Postfix does
                reply("421 4.7.0 Too many errors, closing connection")
                await flush(True)
                return "too many errors"
            await flush()

    def _mail(self, s: Session, arg: str, reply: Callable[[str], None]) -> None:
        if not s.helo:
            reply("503 5.5.1 Send EHLO/HELO first")
            return
        if s.mail_from is not None:
            reply("503 5.5.1 Nested MAIL command")
            return
        if arg[:5].upper() != "FROM:":
            reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        m = _PATH.match(arg[5:])
        if not m:
            reply("501 5.1.7 Bad sender address syntax")
            return
        address, params = m.group(1).strip(), m.group(2).split()
        cert_names = s.tls.peer_cert_names if s.tls else ()
        s.connector = next(
            (c for c in self.config.inbound_connectors if c.matches(s.peer_ip, cert_names)),
            None,
        )
        if s.connector is not None and s.connector.require_tls and s.tls is None:
            reply("530 5.7.0 Must issue a STARTTLS command first")
            return
        smtputf8 = body_8bit = False
        for p in params:
            key, _, value = p.partition("=")
            key = key.upper()
            if key == "SIZE":
                if not value.isdigit():
                    reply("501 5.5.4 Bad SIZE parameter")
                    return
                if int(value) > self.limits.max_message_size:
                    reply("552 5.3.4 Message size exceeds fixed maximum message size")
                    s.rejected += 1
                    return
            elif key == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    reply("501 5.5.4 Bad BODY parameter")
                    return
                body_8bit = value.upper() == "8BITMIME"
            elif key == "SMTPUTF8":
                smtputf8 = True
            else:
                reply(f"555 5.5.4 Unsupported MAIL parameter {key}")
                return
        if not address.isascii() and not smtputf8:
            reply("553 5.6.7 Non-ASCII address needs SMTPUTF8")
            return
        if address and ("@" not in address or address.startswith("@")):
            reply("501 5.1.7 Bad sender address syntax")
            return
        s.mail_from = address
        s.smtputf8, s.body_8bit = smtputf8, body_8bit
        reply("250 2.1.0 Ok")

    def _rcpt(self, s: Session, arg: str, reply: Callable[[str], None]) -> None:
        if s.mail_from is None:
            reply("503 5.5.1 Need MAIL before RCPT")
            return
        if arg[:3].upper() != "TO:":
            reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        m = _PATH.match(arg[3:])
        if not m:
            reply("501 5.1.3 Bad recipient address syntax")
            return
        if m.group(2).strip():  # e.g. NOTIFY= / ORCPT=: DSN is not advertised
            key = m.group(2).split()[0].partition("=")[0].upper()
            reply(f"555 5.5.4 Unsupported RCPT parameter {key}")
            return
        address = m.group(1).strip()
        if address.startswith("@"):  # obsolete source route: keep only the mailbox
            address = address.partition(":")[2]
        if address.lower() == "postmaster":
            # RFC 5321 4.5.1: <postmaster> without a domain must be accepted; it is the
            # postmaster of our first accepted domain
            if not self.config.accepted_domains:
                reply("550 5.1.1 <postmaster>: Recipient address rejected: no local domain")
                return
            address = f"postmaster@{self.config.accepted_domains[0].domain}"
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain or (not address.isascii() and not s.smtputf8):
            reply("501 5.1.3 Bad recipient address syntax")
            return
        if len(s.rcpt_tos) >= self.limits.max_recipients:
            reply("452 4.5.3 Too many recipients")
            return
        accepted = self.config.accepted_domain(domain)
        relay_client = s.connector is not None and s.connector.relay
        if accepted is not None and not relay_client and any(c in local for c in "%!@"):
            # "user%elsewhere@our.domain": a downstream that honours the percent hack or
            # bang path would relay it onward (Postfix: allow_untrusted_routing = no)
            s.rejected += 1
            reply(f"550 5.7.1 <{address}>: Relay access denied (routing in the local part)")
            return
        if accepted is None:
            if not relay_client:
                s.rejected += 1
                reply(f"550 5.7.1 <{address}>: Relay access denied")
                return
        elif not accepted.knows(address) and local.lower() != "postmaster":
            # postmaster@ every domain we accept mail for is always taken (RFC 5321 4.5.1)
            s.rejected += 1
            reply(f"550 5.1.1 <{address}>: Recipient address rejected: User unknown")
            return
        s.rcpt_tos.append(address)
        reply("250 2.1.5 Ok")

    async def _data(
        self,
        s: Session,
        inp: _Input,
        reply: Callable[[str], None],
        flush: Callable[[bool], Awaitable[None]],
    ) -> None:
        if s.mail_from is None:
            reply("503 5.5.1 Need MAIL command")
            return
        if not s.rcpt_tos:
            reply("554 5.5.1 No valid recipients")
            return
        queue_id = self.spool.new_queue_id()
        stored = False
        try:
            stored = await self._receive(s, inp, reply, flush, queue_id)
        finally:
            if not stored:
                self.spool.release_id(queue_id)

    async def _receive(
        self,
        s: Session,
        inp: _Input,
        reply: Callable[[str], None],
        flush: Callable[[bool], Awaitable[None]],
        queue_id: str,
    ) -> bool:
        """DATA from the 354 on; True once the message is spooled under `queue_id`."""
        assert s.mail_from is not None
        ctx = self._ctx(s)
        ctx.queue_id = queue_id
        if self.filter is not None:
            verdict = await self.filter.evaluate(ctx, Phase.ENVELOPE)
            refusal = self._refusal(verdict)
            if refusal:
                self._reject(s, reply, refusal, queue_id, s.rcpt_tos)
                s.reset()
                return False
        reply("354 End data with <CR><LF>.<CR><LF>")
        await flush(True)
        async with asyncio.timeout(self.limits.timeout):
            data, too_big = await inp.read_data(self.limits.max_message_size)
        mail_from, rcpt_tos = s.mail_from, list(s.rcpt_tos)
        if too_big or len(data) > self.limits.max_message_size:
            too_big_text = "552 5.3.4 Message size exceeds fixed maximum message size"
            self._reject(s, reply, too_big_text, queue_id, rcpt_tos)
            s.reset()
            return False
        crlf = data.count(b"\r\n")
        if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
            log.warning("smuggling client=%s bare CR or LF in DATA; rejected", s.peer_ip)
            bare = "550 5.6.0 Message rejected: bare CR or LF in DATA (line ends must be CRLF)"
            self._reject(s, reply, bare, queue_id, rcpt_tos)
            s.reset()
            return False
        s.reset()
        if data.startswith(b".") or b"\r\n." in data:  # RFC 5321 4.5.2 transparency
            data = (b"\r\n" + data).replace(b"\r\n.", b"\r\n")[2:]
        # RFC 8601 5: nobody else may speak in our name. Only the header section can hold
        # the field (a case-insensitive search of a 100 KB body costs ~0.4 ms a message).
        if _AUTH_RESULTS.search(header_section(data)):
            data = strip_our_results(data, self.authserv_id)
        received = received_header(
            helo=s.helo,
            client_ip=s.peer_ip,
            client_hostname=None,
            by_hostname=self.hostname,
            esmtp=s.esmtp,
            tls=s.tls,
            queue_id=queue_id,
            rcpt_tos=rcpt_tos,
        )
        extra = b""
        action = ""
        auth_results: list[str] | None = None  # our findings, when the filter ran
        if self.filter is not None:
            ctx.raw = received + data
            verdict = await self.filter.evaluate(ctx, Phase.DATA)
            refusal = self._refusal(verdict)
            if refusal:
                return self._reject(
                    s,
                    reply,
                    refusal,
                    queue_id,
                    rcpt_tos,
                    message_id=message_id_of(data),
                    sender=mail_from,
                )
            if verdict.action is Action.QUARANTINE:
                if self.quarantine is None:
                    policy = "550 5.7.1 Message refused by policy"
                    return self._reject(
                        s,
                        reply,
                        policy,
                        queue_id,
                        rcpt_tos,
                        message_id=message_id_of(data),
                        sender=mail_from,
                    )
                qid = await self.quarantine.quarantine(ctx, verdict)
                for rcpt in rcpt_tos:
                    self.trace.record(
                        queue_id,
                        "quarantined",
                        message_id=message_id_of(data),
                        recipient=rcpt,
                        status=STATUS_QUARANTINED,
                        detail=f"quarantine id {qid}: {verdict.reason}",
                    )
                reply(f"250 2.0.0 Ok: quarantined as {qid}")
                return False
            ar = format_authentication_results(self.authserv_id, verdict.auth_results)
            extra = _headers([("Authentication-Results", ar), *verdict.headers])
            action = verdict.action.value
            auth_results = verdict.auth_results
        # top down: [ARC set] [DKIM-Signature] Authentication-Results, the verdict's headers,
        # our Received, the message (the checks saw Received + message)
        raw = await self._sign_and_seal(s, extra + received + data, auth_results)
        message_id = message_id_of(data)
        try:
            env = await self.spool.enqueue(
                mail_from,
                rcpt_tos,
                raw,
                queue_id=queue_id,
                message_id=message_id,
                client_ip=s.peer_ip,
                helo=s.helo,
                smtputf8=s.smtputf8,
                body_8bit=s.body_8bit,
                action=action,
            )
        except Exception as exc:
            log.error("spool write failed id=%s: %s", queue_id, exc)
            for rcpt in rcpt_tos:
                self.trace.record(
                    queue_id,
                    "refused",
                    recipient=rcpt,
                    status=STATUS_FAILED,
                    detail=f"spool write failed: {exc}",
                )
            reply("451 4.3.0 Local error: could not store message, try again later")
            return False
        s.queued.append(queue_id)
        s.errors = 0  # the limit is on errors without delivering mail, as in Postfix
        for rcpt in rcpt_tos:
            self.trace.record(
                queue_id,
                "received",
                message_id=message_id,
                recipient=rcpt,
                status=STATUS_PENDING,
                detail=f"from {s.peer_ip} helo={s.helo} sender=<{mail_from}> size={len(raw)}",
            )
        reply(f"250 2.0.0 Ok: queued as {queue_id}")
        if self.on_queued is not None:
            self.on_queued(env, raw)
        return True

    async def _sign_and_seal(self, s: Session, raw: bytes, auth_results: list[str] | None) -> bytes:
        """`raw` with our DKIM signature (outbound mail of a domain we sign for) and then
        our ARC set (a node that seals, after its checks) prepended; sealing comes last,
        over the message exactly as it will be relayed (RFC 8617 5.1). A signing failure
        (a header dkimpy cannot parse) is logged and the message goes unsigned."""
        policy = self.auth_policy
        if policy is None:
            return raw
        try:
            if policy.dkim_sign and s.connector is not None and s.connector.relay:
                # only mail from our own senders (a relay connector): never sign what the
                # Internet sends in our domain's name
                raw = _headers(await dkim_sign_outbound(raw, policy)) + raw
            if policy.arc_seal is not None and auth_results is not None:
                raw = _headers(await seal_after_checks(raw, policy, auth_results)) + raw
        except ValueError as exc:
            log.warning("signing skipped client=%s: %s", s.peer_ip, exc)
        return raw

    @staticmethod
    def _refusal(verdict: Verdict) -> str | None:
        """The SMTP reply for a REJECT or TEMPFAIL verdict (None for the others)."""
        if verdict.action is Action.REJECT:
            return f"550 5.7.1 {verdict.reason or 'Message refused by policy'}"
        if verdict.action is Action.TEMPFAIL:
            return f"451 4.7.1 {verdict.reason or 'Try again later'}"
        return None

    def _reject(
        self,
        s: Session,
        reply: Callable[[str], None],
        text: str,
        queue_id: str,
        rcpt_tos: list[str],
        *,
        message_id: str = "",
        sender: str | None = None,
    ) -> bool:
        """Refuse the message in DATA with `text`, and trace it (one row per recipient)."""
        sender = s.mail_from if sender is None else sender
        s.rejected += 1
        reply(text)
        status = STATUS_FAILED if text.startswith("5") else STATUS_PENDING
        for rcpt in rcpt_tos:
            self.trace.record(
                queue_id,
                "rejected",
                message_id=message_id,
                recipient=rcpt,
                status=status,
                detail=f"{text} (client {s.peer_ip}, sender <{sender or ''}>)",
            )
        return False
