"""The intake runner: connection and envelope checks, then the DATA stages in order.

`Intake` is built once per node (roles/) from the stages its role lists; the SMTP server
opens one `Inbound` per connection and asks it three things: may this client talk
(`connect`), may this envelope send data (`envelope`, before the 354), and what becomes
of this message (`receive`, after the final dot). Every refusal is traced here, in one
place, one row per recipient; a stage that fails unexpectedly answers 451 (the client
keeps the message) rather than dropping the connection. While the trace cannot record
(`TraceStore.refusal`: its database is down or far behind) new mail is refused with 421
at connect and 451 at DATA; the store stage asks once more just before its 250.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mxflow.intake.base import Filter, Stage, Transaction
from mxflow.intake.filtering import refusal
from mxflow.intake.limits import SharedLimits
from mxflow.mail import Action, MessageContext, Phase, message_id_of
from mxflow.queue.spool import Spool
from mxflow.smtp.protocol import Session
from mxflow.smtp.received import received_header
from mxflow.smtp.replies import reply_line
from mxflow.store.trace import STATUS_FAILED, STATUS_PENDING, TraceStore

log = logging.getLogger("mxflow.intake")


class Intake:
    """A node's way in: its filter for the early phases and its DATA stages."""

    def __init__(
        self,
        *,
        hostname: str,
        stages: Sequence[Stage],
        spool: Spool,
        trace: TraceStore,
        filter: Filter | None = None,
        limits: SharedLimits | None = None,
    ) -> None:
        self.hostname = hostname
        self.stages = list(stages)
        self.spool = spool
        self.trace = trace
        self.filter = filter
        self.limits = limits  # per-client limits counted in the shared database, if any

    def open(self, session: Session) -> Inbound:
        return Inbound(self, session)


class Inbound:
    """One connection's intake: its check context lives as long as the connection."""

    def __init__(self, intake: Intake, session: Session) -> None:
        self.intake = intake
        self.session = session
        self.ctx = MessageContext(client_ip=session.peer_ip, local_hostname=intake.hostname)
        self.queue_id = ""

    def _context(self) -> MessageContext:
        """The connection's check context, brought up to date with the session."""
        s, ctx = self.session, self.ctx
        ctx.client_ip = s.peer_ip  # enhanced filtering may have judged another for a message
        ctx.helo = s.helo
        ctx.mail_from = s.mail_from or ""
        ctx.rcpt_tos = list(s.rcpt_tos)
        ctx.tls = s.tls
        ctx.connector = s.connector
        ctx.start_message()
        return ctx

    @property
    def waits(self) -> bool:
        """Whether `connect` / `envelope` may wait: only a filter and shared counters do."""
        return self.intake.filter is not None or self.intake.limits is not None

    def connect_now(self) -> str | None:
        """`connect` without what may wait: the trace's own refusal (see `connect`)."""
        if (why := self.intake.trace.refusal()) is not None:
            return reply_line(421, "4.3.0", f"Service temporarily unavailable: {why}")
        return None

    async def connect(self) -> str | None:
        """A refusal for the whole connection (554 / 421), or None.

        While the trace cannot record (its database is down or far behind) the client
        hears 421 before it sends anything: mail it would send could not be traced."""
        if (refused := self.connect_now()) is not None:
            return refused
        ctx = self._context()
        if self.intake.limits is not None:
            refused = await self.intake.limits.admit(ctx)
            if refused is not None:
                return refused
        filter = self.intake.filter
        if filter is None:
            return None
        verdict = await filter.evaluate(ctx, Phase.CONNECT)
        if verdict.action is Action.REJECT:
            return reply_line(554, "5.7.1", verdict.reason or "Connection refused")
        if verdict.action is Action.TEMPFAIL:
            return reply_line(421, "4.7.1", verdict.reason or "Connection refused")
        return None

    def envelope_now(self) -> str | None:
        """`envelope` without what may wait: the queue id, and the trace's 451."""
        self.queue_id = self.intake.spool.new_queue_id()
        if (why := self.intake.trace.refusal()) is not None:
            busy = reply_line(451, "4.3.0", f"{why}, try again later")
            self.refuse(busy)
            return busy
        return None

    async def envelope(self) -> str | None:
        """Before the 354: a queue id for the transaction, and the envelope checks (and
        451 while the trace cannot record, so the client does not send the data in vain)."""
        if (busy := self.envelope_now()) is not None:
            return busy
        filter = self.intake.filter
        if filter is None:
            return None
        ctx = self._context()
        ctx.queue_id = self.queue_id
        reply = refusal(await filter.evaluate(ctx, Phase.ENVELOPE))
        if reply is not None:
            self.refuse(reply)
        return reply

    def refuse(self, reply: str, *, message_id: str = "") -> None:
        """Trace a refusal of the current transaction and end it."""
        s = self.session
        s.rejected += 1
        self._trace_refusal(reply, list(s.rcpt_tos), s.mail_from or "", message_id)
        self._end(stored=False)

    def _end(self, *, stored: bool) -> None:
        if not stored and self.queue_id:
            self.intake.spool.release_id(self.queue_id)
        self.queue_id = ""
        self.session.reset()

    def _trace_refusal(
        self,
        reply: str,
        rcpts: list[str],
        sender: str,
        message_id: str,
        facts: dict[str, Any] | None = None,
    ) -> None:
        status = STATUS_FAILED if reply.startswith("5") else STATUS_PENDING
        facts = facts or {"sender": sender, "from_ip": self.session.peer_ip}
        for rcpt in rcpts:
            self.intake.trace.record(
                self.queue_id,
                "rejected",
                message_id=message_id,
                recipient=rcpt,
                status=status,
                detail=f"{reply} (client {self.session.peer_ip}, sender <{sender}>)",
                reply=reply,
                **facts,
            )

    def _transaction(self, data: bytes) -> Transaction:
        s = self.session
        assert s.mail_from is not None
        received = received_header(
            helo=s.helo,
            client_ip=s.peer_ip,
            client_hostname=self.ctx.client_hostname,  # verified by the FCrDNS check
            by_hostname=self.intake.hostname,
            esmtp=s.esmtp,
            tls=s.tls,
            queue_id=self.queue_id,
            rcpt_tos=s.rcpt_tos,
            authenticated=s.auth_user is not None,
        )
        ctx = self._context()
        ctx.queue_id = self.queue_id
        ctx.raw = received + data
        return Transaction(
            session=s,
            queue_id=self.queue_id,
            mail_from=s.mail_from,
            rcpt_tos=list(s.rcpt_tos),
            raw=ctx.raw,
            ctx=ctx,
            smtputf8=s.smtputf8,
            body_8bit=s.body_8bit,
            message_id=message_id_of(data),
            sender_ip=s.peer_ip,
        )

    async def receive(self, data: bytes) -> str:
        """Run the DATA stages over the message (dot-unstuffed); the reply for the client."""
        tx = self._transaction(data)
        try:
            for stage in self.intake.stages:
                await stage.run(tx)
                if tx.reply is not None:
                    break
        except Exception:
            log.exception("intake stage failed id=%s client=%s", tx.queue_id, tx.session.peer_ip)
            tx.reply = "451 4.3.0 Local error in processing, try again later"
        reply = tx.reply or "451 4.3.0 Local error: message not stored, try again later"
        if reply[:1] in ("4", "5"):
            self.session.rejected += 1
            self._trace_refusal(reply, tx.rcpt_tos, tx.mail_from, tx.message_id, tx.trace_facts())
        if tx.stored:
            self.session.queued.append(tx.queue_id)
            self.session.errors = 0  # the limit is on errors without mail, as in Postfix
        self._end(stored=tx.stored)
        return reply

    def close(self) -> None:
        """The connection has ended: the filter's per-connection accounting ends with it."""
        if self.intake.limits is not None:
            self.intake.limits.release(self.ctx)
        closed = getattr(self.intake.filter, "connection_closed", None)
        if closed is not None:
            self.ctx.client_ip = self.session.peer_ip  # what the rate limiter counted
            closed(self.ctx)
