"""The intake seam: one message in transit (`Transaction`) and the `Stage` interface.

A stage looks at the transaction and may change it: add headers on top of the message,
set the verdict, or end the transaction with a reply (a refusal, or the final 250 once
the message is stored). Stages run in the order a role lists them (pipeline.py); the
first that sets `reply` ends the run. What a stage learns about the message it keeps on
the transaction it was given, in the field it owns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from mxflow.mail import MessageContext, Phase, Verdict, subject_of
from mxflow.smtp.protocol import Session


class Disposition(enum.Enum):
    """Where the message goes once the stages have run."""

    SPOOL = "spool"  # relay or deliver it
    QUARANTINE = "quarantine"


@dataclass
class Transaction:
    """One message on its way in: what the wire delivered and what the stages made of it.

    `raw` starts as our Received line + the message as received (dot-unstuffed); stages
    prepend their headers to it, so it is always the message exactly as it will be stored.
    """

    session: Session
    queue_id: str
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    ctx: MessageContext
    smtputf8: bool = False
    body_8bit: bool = False
    message_id: str = ""
    sender_ip: str = ""  # whom the checks judge: the client, or the original sender (EF)
    verdict: Verdict | None = None  # set by the filtering stage
    scl: int | None = None  # the SCL as it stands (filter, then mail flow rules)
    disposition: Disposition = Disposition.SPOOL
    action: str = ""  # as stored with the message: "junk" files it in Junk at the mailbox
    reply: str | None = None  # set by the stage that ends the transaction
    stored: bool = False  # the spool holds it under `queue_id`
    notes: list[str] = field(default_factory=list)  # for the trace

    def trace_facts(self) -> dict[str, Any]:
        """What the trace keeps of this hop besides the event: who sent it from where,
        its size and subject, and the verdict when there is one."""
        facts: dict[str, Any] = {
            "sender": self.mail_from,
            "from_ip": self.session.peer_ip,
            "size": len(self.raw),
            "subject": subject_of(self.raw),
        }
        if self.verdict is not None:
            facts |= {
                "scl": self.scl if self.scl is not None else self.verdict.scl,
                "score": self.verdict.score,
                "symbols": self.verdict.symbols,
                "auth_results": self.verdict.auth_results,
            }
        return facts

    def set_scl(self, scl: int) -> None:
        """A new SCL (a mail flow rule): 5 and above is junk, below it is the Inbox."""
        self.scl = scl
        self.action = "junk" if scl >= 5 else "deliver"

    def prepend(self, header: bytes) -> None:
        """Add header lines (wire bytes, CRLF-terminated) on top of the message."""
        self.raw = header + self.raw


class Stage(Protocol):
    """One step of intake after DATA: a name (for logs and errors) and `run`."""

    name: str

    async def run(self, tx: Transaction) -> None: ...


class Filter(Protocol):
    """The checks of a node as one object (checks/pipeline.py implements it).

    `evaluate` runs the checks of one phase and returns the verdict; intake turns REJECT
    into a 5xx and TEMPFAIL into a 4xx naming `reason`, QUARANTINE into the quarantine,
    and spools DELIVER / JUNK with `headers` added. A filter that counts connections
    (rate limits) also has `connection_closed(ctx)`, called with the connection's context
    when it ends.
    """

    async def evaluate(self, ctx: MessageContext, phase: Phase) -> Verdict: ...


class QuarantineSink(Protocol):
    """Where a quarantined message goes; returns the quarantine id.

    It must have the message durably on disk before it returns: the client gets its 250
    only then.
    """

    async def quarantine(self, ctx: MessageContext, verdict: Verdict) -> str: ...
