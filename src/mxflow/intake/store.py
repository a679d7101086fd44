"""Store: the message goes to the quarantine or to the spool, and the client hears so.

Nothing is acknowledged before it is on disk: the spool fsyncs (group commit) before
`enqueue` returns, the quarantine before `quarantine` returns; only then the 250. A spool
that cannot write answers 451, so the client keeps the message and tries again; so do a
quarantine whose database cannot be reached (`StoreUnavailable`) and a trace that cannot
record (`TraceStore.refusal`: asked again here, at the last moment before the 250).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mxflow.intake.base import Disposition, QuarantineSink, Transaction
from mxflow.queue.spool import Envelope, Spool
from mxflow.store.sql import StoreUnavailable
from mxflow.store.trace import STATUS_FAILED, STATUS_PENDING, STATUS_QUARANTINED, TraceStore

log = logging.getLogger("mxflow.intake")

QueuedCallback = Callable[[Envelope, bytes], None]


class StoreStage:
    name = "store"

    def __init__(
        self,
        spool: Spool,
        trace: TraceStore,
        *,
        quarantine: QuarantineSink | None = None,
        on_queued: QueuedCallback | None = None,
    ) -> None:
        self.spool = spool
        self.trace = trace
        self.quarantine = quarantine
        self.on_queued = on_queued

    async def run(self, tx: Transaction) -> None:
        if (why := self.trace.refusal()) is not None:
            tx.reply = f"451 4.3.0 Local error: {why}, try again later"
            return
        if tx.disposition is Disposition.QUARANTINE:
            await self._quarantine(tx)
        else:
            await self._spool(tx)

    async def _quarantine(self, tx: Transaction) -> None:
        if self.quarantine is None or tx.verdict is None:
            tx.reply = "550 5.7.1 Message refused by policy"
            return
        try:
            qid = await self.quarantine.quarantine(tx.ctx, tx.verdict)
        except StoreUnavailable as exc:
            log.warning("quarantine unavailable id=%s: %s", tx.queue_id, exc)
            tx.reply = "451 4.3.0 Local error: quarantine unavailable, try again later"
            return
        facts = tx.trace_facts()
        for rcpt in tx.rcpt_tos:
            self.trace.record(
                tx.queue_id,
                "quarantined",
                message_id=tx.message_id,
                recipient=rcpt,
                status=STATUS_QUARANTINED,
                detail=f"quarantine id {qid}: {tx.verdict.reason}",
                **facts,
            )
        tx.reply = f"250 2.0.0 Ok: quarantined as {qid}"

    async def _spool(self, tx: Transaction) -> None:
        s = tx.session
        try:
            env = await self.spool.enqueue(
                tx.mail_from,
                tx.rcpt_tos,
                tx.raw,
                queue_id=tx.queue_id,
                message_id=tx.message_id,
                client_ip=s.peer_ip,
                helo=s.helo,
                smtputf8=tx.smtputf8,
                body_8bit=tx.body_8bit,
                action=tx.action,
            )
        except Exception as exc:
            log.error("spool write failed id=%s: %s", tx.queue_id, exc)
            for rcpt in tx.rcpt_tos:
                self.trace.record(
                    tx.queue_id,
                    "refused",
                    recipient=rcpt,
                    status=STATUS_FAILED,
                    detail=f"spool write failed: {exc}",
                )
            tx.reply = "451 4.3.0 Local error: could not store message, try again later"
            return
        tx.stored = True
        facts = tx.trace_facts()
        for rcpt in tx.rcpt_tos:
            self.trace.record(
                tx.queue_id,
                "received",
                message_id=tx.message_id,
                recipient=rcpt,
                status=STATUS_PENDING,
                detail=f"from {s.peer_ip} helo={s.helo} sender=<{tx.mail_from}>"
                f" size={len(tx.raw)}" + "".join(f"; {note}" for note in tx.notes),
                **facts,
            )
        tx.reply = f"250 2.0.0 Ok: queued as {tx.queue_id}"
        if self.on_queued is not None:
            self.on_queued(env, tx.raw)
