"""Filtering: the node's checks, combined into one verdict, decide the message's fate.

REJECT becomes a 5xx and TEMPFAIL a 4xx at the end of DATA (before-queue: a refusal is
never a bounce); QUARANTINE sends the message to the quarantine instead of the spool;
DELIVER and JUNK go on to be stamped and spooled.
"""

from __future__ import annotations

from mxflow.intake.base import Disposition, Filter, Transaction
from mxflow.mail import Action, Phase, Symbol, Verdict
from mxflow.smtp.replies import reply_line


def refusal(verdict: Verdict) -> str | None:
    """The SMTP reply for a REJECT or TEMPFAIL verdict (None for the others)."""
    if verdict.action is Action.REJECT:
        return reply_line(550, "5.7.1", verdict.reason or "Message refused by policy")
    if verdict.action is Action.TEMPFAIL:
        return reply_line(451, "4.7.1", verdict.reason or "Try again later")
    return None


class FilterStage:
    """The checks' verdict; a connector in `bypass` (the discouraged "SCL -1 for this
    connector") skips them: everything it sends is delivered unfiltered."""

    name = "filter"

    def __init__(self, filter: Filter, *, bypass: frozenset[str] = frozenset()) -> None:
        self.filter = filter
        self.bypass = bypass

    async def run(self, tx: Transaction) -> None:
        tx.ctx.raw = tx.raw
        connector = tx.session.connector
        if connector is not None and connector in self.bypass:
            tx.verdict = Verdict(
                scl=-1,
                reason=f"connector {connector} bypasses filtering (SCL -1)",
                symbols=[Symbol("CONNECTOR_SCL_BYPASS", 0.0, connector)],
            )
            tx.scl, tx.action = -1, Action.DELIVER.value
            return
        verdict = await self.filter.evaluate(tx.ctx, Phase.DATA)
        tx.verdict = verdict
        tx.scl = verdict.scl
        tx.reply = refusal(verdict)
        if tx.reply is None:
            if verdict.action is Action.QUARANTINE:
                tx.disposition = Disposition.QUARANTINE
            else:
                tx.action = verdict.action.value
