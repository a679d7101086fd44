"""One inbound SMTP connection as an `asyncio.Protocol`: a plain command never wakes a task.

Why not asyncio streams: a command round trip there (a StreamReader line read waking the
session's task, a timeout context, a write and a drain) cost 30-40 µs of event-loop
machinery, and a lone sender makes about seven round trips a message: that put one
connection's throughput at 0.8x Postfix's while the receiving worker's own critical path,
not the number of workers, was the limit. Here `data_received` cuts the complete command
lines out of the connection's buffer (reader.py), hands each to the state machine
(protocol.py) and writes the replies with one `transport.write` per batch, all within the
same callback: EHLO, MAIL, RCPT, RSET, NOOP and QUIT run as plain function calls.

Only what truly awaits runs as a task, one at a time: the node's connect and envelope
checks when it has any that may wait (a filter asks DNS, shared counters ask the
database; without them the greeting and the 354 come within the callback), the end-of-data
intake (its spool fsync comes before the 250),
a login check (the hash runs in a worker thread), the STARTTLS handshake, and parking
DATA on disk. While it runs, input is only appended to the buffer, in order — reading is
paused as soon as anything arrives, so memory stays bounded — and handled when it ends.
Replies to pipelined commands go out together; so does everything when writing is
paused (a client that does not read its replies is not read either).

Time limits (RFC 5321 4.5.3.2): one timer per connection, moved lazily. Waiting for a
command, the deadline is `timeout` after the previous command (a line trickled in is not
given more time per byte); within DATA or a BDAT chunk, `timeout` after the last bytes and
at most `data_timeout` for the whole. A deadline that moves only stores a number; the
timer, when it fires early, sleeps again until the deadline.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from mxflow.smtp.protocol import Next, Session, SmtpProtocol, Step
from mxflow.smtp.reader import Closed, DataTransfer, Scan, take_line
from mxflow.smtp.sasl import AuthOutcome
from mxflow.smtp.tls import tls_info

if TYPE_CHECKING:
    from mxflow.smtp.server import Inbound, SmtpServer

log = logging.getLogger("mxflow.smtp")

# What the end of a message comes to: a reply at once, or one the intake must await.
Answer = Step | Coroutine[Any, Any, Step]


class _Mode(enum.Enum):
    LINE = "line"  # the next command
    DATA = "data"  # message data up to <CRLF>.<CRLF>
    CHUNK = "chunk"  # the octets of a BDAT chunk


class _Chunks:
    """The BDAT chunks of one transaction so far (dropped past the size limit)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.too_big = False
        self.step = Step()  # the BDAT command being read
        self.keep = False  # its octets are kept (not refused, not too big)
        self.left = 0  # its octets still to come
        self.parts: list[bytes] = []

    def clear(self) -> None:
        self.data.clear()
        self.too_big = False


class Connection(asyncio.Protocol):
    """Moves one client's bytes between its socket, the protocol and the node's intake."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport = cast(asyncio.Transport, None)
        self.session = Session(peer_ip="0.0.0.0", peer_port=0)
        self.proto: SmtpProtocol | None = None
        self.inbound: Inbound | None = None
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.mode = _Mode.LINE
        self.task: asyncio.Task[None] | None = None  # what is awaited now (one at a time)
        self.transfer: DataTransfer | None = None  # the DATA being read
        self.chunks = _Chunks()
        self.started = time.monotonic()
        self.ended = False
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self._eof = False
        self._lost: Exception | None = None
        self._paused: asyncio.Transport | None = None  # whose reading we paused
        self._write_paused = False
        self._deadline = math.inf  # when the wait for the client ends
        self._data_deadline = math.inf  # the end of this DATA or chunk, whatever arrives
        self._timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        self.session = Session(peer_ip=str(peer[0]), peer_port=int(peer[1]))
        server = self.server
        if not server.budget.admit():
            self.ended = True
            self.finished.set_result(None)
            server.refuse_full(self.session, self.transport)
            return
        server.session_started(self)
        try:
            if server.listener.tls == "implicit":
                self.session.tls = tls_info(transport.get_extra_info("ssl_object"))
            refusal = server.opening_refusal(self.session)
            if refusal is not None:
                self.transport.write(refusal.encode() + b"\r\n")
                self._end(refusal[10:])
                return
            self.proto = server.new_protocol(self.session)
            self.inbound = server.open_inbound(self.session)
        except Exception as exc:
            self._fail(exc)
            return
        if self.inbound.waits:
            self._start(self._open())
            return
        try:  # nothing to wait for: the greeting within this callback
            self._opened(self.inbound.connect_now())
        except Exception as exc:
            self._fail(exc)
            return
        if not self.ended:
            self._pump(fresh=True)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.mode is not _Mode.LINE:  # each read of DATA or BDAT: the idle timeout again
            self._deadline = min(self._data_deadline, self.loop.time() + self.limits.timeout)
        if self.task is not None or self._write_paused:
            self._pause()  # kept, in order, for when the task ends
        elif not self.ended:
            self._pump()

    def eof_received(self) -> bool:
        self._eof = True
        if self.task is None and not self._write_paused and not self.ended:
            self._pump()  # the lines already here are answered, then the session ends
        return self.session.tls is None  # keep writing after a half-close (not over TLS)

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof, self._lost = True, exc
        if not self.ended and self.task is None:  # a task in flight finishes first
            self._fail(exc or Closed())

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause()
        if self._timer is None:
            self._arm()  # a client that reads nothing is still timed out

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.task is None and not self.ended:
            self._resume()
            self._pump()

    # ------------------------------------------------------------ the command loop

    def _pump(self, fresh: bool = False) -> None:
        """Handle what is buffered until something must wait: more input, or a task.

        `fresh`: a command or a message has just been answered, so a wait for the next
        command starts now (a wait already running keeps its deadline).
        """
        try:
            while self.task is None and not self.ended and not self._write_paused:
                if self.mode is _Mode.LINE:
                    line = take_line(self.buf)
                    if line is None:
                        break
                    assert self.proto is not None
                    self._apply(self.proto.handle(line))
                elif self.mode is _Mode.DATA:
                    if not self._data_progress():
                        break
                elif not self._chunk_progress():
                    break
                fresh = True
                if len(self.out) >= 64:  # a long pipeline: let the replies flow meanwhile
                    self._flush()
            if self.task is None and not self.ended and not self._write_paused:
                self._wait(fresh)
        except Exception as exc:  # a line too long, or a bug
            self._fail(exc)

    def _wait(self, fresh: bool) -> None:
        """Nothing more to do until the client sends more: send the replies, set the clock."""
        if self._eof:
            self._fail(self._lost or Closed())
            return
        self._flush()
        if fresh and self.mode is _Mode.LINE:
            self._deadline = self.loop.time() + self.limits.timeout
        if self._timer is None:
            self._arm()

    def _apply(self, step: Step) -> None:
        """Send a step's replies (with the next batch) and do what it asks for next."""
        nxt = step.next
        if nxt is Next.DATA:
            assert self.inbound is not None
            if self.inbound.waits:
                self._start(self._data_begin())
            elif (refused := self._data_started(self.inbound.envelope_now())) is not None:
                self._apply(refused)
            return
        if nxt is Next.CHUNK:
            self._chunk_begin(step)
            return
        if nxt is Next.AUTH:
            self._start(self._authenticate(step))
            return
        self._emit(step.replies)
        if nxt is Next.STARTTLS:
            self._start(self._starttls())
        elif nxt is Next.SASL:
            self._flush()  # the client waits for the challenge
        elif nxt is Next.CLOSE:
            last = step.replies[-1]
            self._end("quit" if last.startswith("221") else last)

    def _answer(self, answer: Answer) -> None:
        if isinstance(answer, Step):
            self._apply(answer)
        else:
            self._start(answer)

    def _emit(self, replies: list[str]) -> None:
        """Queue reply lines for the client (sent together by the next flush)."""
        on_reply = self.server.on_reply
        for reply in replies:
            if on_reply is not None:
                on_reply(reply)
            self.out.append(reply.encode("utf-8", "replace") + b"\r\n")

    def _flush(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    # --------------------------------------------------------------- tasks

    def _start(self, work: Coroutine[Any, Any, Step | None]) -> None:
        """Run `work` as the connection's task: input waits in the buffer until it ends."""
        self._flush()
        self.task = self.loop.create_task(self._run(work))
        self.task.add_done_callback(self._task_done)

    async def _run(self, work: Coroutine[Any, Any, Step | None]) -> None:
        try:
            step = await work
            if self.ended:
                return
            self.task = None
            if step is not None:
                self._apply(step)
        except (Exception, asyncio.CancelledError) as exc:
            self._fail(exc)
            return
        if self.task is None and not self.ended:
            self._resume()
            self._pump(fresh=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # a task cancelled before its first step never ran `_run`'s handler
        if task.cancelled() and not self.ended:
            self._fail(asyncio.CancelledError())

    def _pause(self) -> None:
        if self._paused is None and not self.ended:
            self._paused = self.transport
            self.transport.pause_reading()

    def _resume(self) -> None:
        paused = self._paused
        if paused is not None and self.task is None and not self._write_paused:
            self._paused = None
            paused.resume_reading()

    async def _open(self) -> Step | None:
        """The node's connect checks, then the greeting (or a refusal and the end)."""
        assert self.inbound is not None
        self._opened(await self.inbound.connect())
        return None

    def _opened(self, refusal: str | None) -> None:
        assert self.proto is not None
        if refusal is not None:
            self._emit([refusal])
            self._flush()
            self._end(f"refused at connect: {refusal}")
            return
        self._emit([self.proto.greeting()])

    async def _starttls(self) -> Step | None:
        assert self.server.ssl_context is not None and self.proto is not None
        self.buf.clear()  # plaintext sent ahead of the handshake is never obeyed
        async with asyncio.timeout(self.limits.timeout):
            tls = await self.loop.start_tls(
                self.transport, self, self.server.ssl_context, server_side=True
            )
        assert tls is not None
        self.transport = tls
        info = tls_info(tls.get_extra_info("ssl_object"))
        assert info is not None
        self.proto.tls_started(info)
        return None

    async def _authenticate(self, step: Step) -> Step:
        """Ask the node whether the credentials are good (the hash runs off the loop)."""
        proto = self.proto
        assert proto is not None and proto.authenticator is not None
        assert step.credentials is not None
        outcome, account = await proto.authenticator.verify(proto.session, step.credentials)
        if outcome is not AuthOutcome.OK:
            log.warning(
                "auth failed client=%s user=%r outcome=%s",
                proto.session.peer_ip,
                step.credentials.username[:80],
                outcome.value,
            )
        return proto.auth_finished(outcome, account)

    # ---------------------------------------------------------------- timer

    def _arm(self) -> None:
        """Make sure the timer fires no later than the deadline."""
        timer = self._timer
        if timer is None or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()
            if math.isinf(self._deadline):
                self._timer = None
            else:
                self._timer = self.loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.ended or self.task is not None:
            return  # no clock while the node works; the next wait sets it again
        if self.loop.time() >= self._deadline:
            self._fail(TimeoutError())
        else:
            self._arm()

    def _set_data_clock(self) -> None:
        """DATA or a BDAT chunk begins: `data_timeout` for all of it, `timeout` per read."""
        now = self.loop.time()
        self._data_deadline = now + self.limits.data_timeout
        self._deadline = min(self._data_deadline, now + self.limits.timeout)
        self._arm()

    # ----------------------------------------------------------------- DATA

    async def _data_begin(self) -> Step | None:
        """DATA: the envelope checks, then 354 and the message (read by `_data_progress`)."""
        assert self.inbound is not None
        return self._data_started(await self.inbound.envelope())

    def _data_started(self, refusal: str | None) -> Step | None:
        assert self.proto is not None
        if refusal is not None:
            return self.proto.finish(refusal)
        self._emit(["354 End data with <CR><LF>.<CR><LF>"])
        self._flush()
        self.mode = _Mode.DATA
        self.transfer = DataTransfer(self.buf, self.limits.max_message_size, self.server.spill)
        self._set_data_clock()
        return None

    def _data_progress(self) -> bool:
        """Look at the DATA that has arrived; False when more must come first."""
        transfer = self.transfer
        assert transfer is not None
        found = transfer.scan(self.buf)
        if found is Scan.MORE:
            return False
        if found is Scan.PARK:
            self._start(self._park(transfer, transfer.cut(self.buf)))
            return True
        self.mode, self.transfer = _Mode.LINE, None
        if transfer.parked.file is not None:
            self._start(self._parked_message(transfer))
        else:
            self._answer(self._message(transfer.take(self.buf), transfer.too_big))
        return True

    async def _park(self, transfer: DataTransfer, chunk: bytes) -> Step | None:
        await transfer.parked.write(chunk)
        return None

    async def _parked_message(self, transfer: DataTransfer) -> Step:
        data = await transfer.take_parked(self.buf)
        answer = self._message(data, transfer.too_big)
        return answer if isinstance(answer, Step) else await answer

    def _message(self, data: bytes, too_big: bool) -> Answer:
        """The end of DATA: a refusal of its framing now, or the intake's reply."""
        assert self.inbound is not None and self.proto is not None
        problem = framing_problem(data, too_big, self.limits.max_message_size)
        if problem is not None:
            if problem.startswith("550"):
                log.warning("smuggling client=%s %s; rejected", self.session.peer_ip, problem)
            self.inbound.refuse(problem)
            return self.proto.finish(problem)
        if data.startswith(b".") or b"\r\n." in data:  # RFC 5321 4.5.2 transparency
            data = (b"\r\n" + data).replace(b"\r\n.", b"\r\n")[2:]
        return self._receive(data)

    async def _receive(self, data: bytes) -> Step:
        assert self.inbound is not None and self.proto is not None
        return self.proto.finish(await self.inbound.receive(data))

    # ----------------------------------------------------------------- BDAT

    def _chunk_begin(self, step: Step) -> None:
        """One BDAT chunk (RFC 3030): its octets are read in every case, then answered."""
        chunks = self.chunks
        if not self.session.chunking:
            chunks.clear()  # a new transaction (RSET may have ended the last one)
        chunks.too_big |= len(chunks.data) + step.chunk_size > self.limits.max_message_size
        chunks.step, chunks.left, chunks.parts = step, step.chunk_size, []
        chunks.keep = step.refusal is None and not chunks.too_big
        self.mode = _Mode.CHUNK
        self._set_data_clock()

    def _chunk_progress(self) -> bool:
        """Take the chunk's octets that have arrived; False when more must come first."""
        chunks, buf = self.chunks, self.buf
        take = min(chunks.left, len(buf))
        if take:
            if chunks.keep:
                chunks.parts.append(bytes(buf[:take]))
            del buf[:take]
            chunks.left -= take
        if chunks.left:
            return False
        self.mode = _Mode.LINE
        step, data = chunks.step, b"".join(chunks.parts)
        chunks.parts = []
        assert self.proto is not None
        if step.refusal is not None:
            chunks.clear()
            self._apply(self.proto.finish(step.refusal))
        elif not self.session.chunking:  # the first chunk: the envelope checks, as at DATA
            self._start(self._chunk_envelope(step, data))
        else:
            self._answer(self._chunk_add(step, data))
        return True

    async def _chunk_envelope(self, step: Step, data: bytes) -> Step:
        assert self.inbound is not None and self.proto is not None
        refusal = await self.inbound.envelope()
        if refusal is not None:
            self.chunks.clear()
            return self.proto.finish(refusal)
        self.session.chunking = True
        answer = self._chunk_add(step, data)
        return answer if isinstance(answer, Step) else await answer

    def _chunk_add(self, step: Step, data: bytes) -> Answer:
        chunks = self.chunks
        chunks.data += data
        if not step.last:
            return Step([f"250 2.0.0 {step.chunk_size} octets received"])
        message, too_big = bytes(chunks.data), chunks.too_big
        chunks.clear()
        problem = framing_problem(message, too_big, self.limits.max_message_size)
        assert self.inbound is not None and self.proto is not None
        if problem is not None:
            self.inbound.refuse(problem)
            return self.proto.finish(problem)
        return self._receive(message)

    # ------------------------------------------------------------------ end

    def shutdown(self) -> None:
        """The node stops: no new transaction; a session between transactions ends now."""
        if self.proto is not None:
            self.proto.accepting = False
        if self.proto is None or self.session.mail_from is None:
            self.cancel()

    def cancel(self) -> None:
        """End the session now ("421 4.3.2 Service shutting down")."""
        if self.ended:
            return
        if self.task is not None:
            self.task.cancel()  # its handler ends the session
        else:
            self._fail(asyncio.CancelledError())

    def _fail(self, exc: BaseException) -> None:
        if not self.ended:
            reason, last_words = self.server.ending(exc)
            self._end(reason, last_words)

    def _end(self, reason: str, last_words: bytes = b"") -> None:
        """Say the last words (after every reply queued), close, and account for it."""
        if self.ended:
            return
        self.ended = True
        if last_words:
            self.out.append(last_words)
        self._flush()
        if self._write_paused:
            self.transport.abort()  # a client that reads nothing would hold it open
        else:
            self.transport.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transfer is not None:
            self.transfer.parked.drop()
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self.inbound is not None:
            self.inbound.close()
        self.server.session_ended(self, reason, time.monotonic() - self.started)
        self.finished.set_result(None)


def framing_problem(data: bytes, too_big: bool, max_size: int) -> str | None:
    """Why the transmitted data cannot be a message (size, bare CR/LF, NUL), or None."""
    if too_big or len(data) > max_size:
        return "552 5.3.4 Message size exceeds fixed maximum message size"
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        return "550 5.6.0 Message rejected: bare CR or LF in DATA (line ends must be CRLF)"
    if b"\x00" in data:
        return "550 5.6.0 Message rejected: NUL in DATA (BINARYMIME is not offered)"
    return None
