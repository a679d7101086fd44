"""Expansion: aliases and distribution groups become the mailboxes they stand for.

After the verdict and the rules (which judge the message as addressed), each recipient
the directory knows as an alias or a group is replaced by its mailboxes (and any outside
members, which are relayed), each once; the message trace gets an Expanded row for every
alias and group passed through, as the reference's does.
"""

from __future__ import annotations

from mxflow.intake.base import Transaction
from mxflow.store.directory import Directory, record_expansion
from mxflow.store.trace import TraceStore


class ExpansionStage:
    name = "expand"

    def __init__(self, directory: Directory, trace: TraceStore) -> None:
        self.directory = directory
        self.trace = trace

    async def run(self, tx: Transaction) -> None:
        final: list[str] = []
        for rcpt in tx.rcpt_tos:
            expansion = self.directory.expand(rcpt)
            if expansion.status in ("alias", "group"):
                record_expansion(self.trace, tx.queue_id, expansion, message_id=tx.message_id)
                targets = [*expansion.mailboxes, *expansion.external]
            else:
                targets = [rcpt]
            final += [t for t in targets if t not in final]
        tx.rcpt_tos = final
