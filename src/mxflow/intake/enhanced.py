"""Enhanced filtering for connectors, as a stage: the checks see the original sender.

When the matched inbound connector skip-lists the hops in front of the host (a
non-filtering archiver: scenario 2), the host walks the Received chain (skiplist.py) to
the last untrusted external hop and runs SPF, DMARC and IP reputation against that IP
and HELO instead of the archiver's. The stamps the reference writes
(`X-MS-Exchange-SkipListedInternetSender`, `...-ExternalOriginalInternetSender`) are put
on top; any a sender brought along is removed first, whatever the connector.
"""

from __future__ import annotations

from mxflow.config import HostConfig
from mxflow.intake.base import Transaction
from mxflow.intake.skiplist import apply_stamps, recover_sender
from mxflow.mail import header_section


class EnhancedFilteringStage:
    name = "enhanced-filtering"

    def __init__(self, host: HostConfig, hostname: str) -> None:
        self.host = host
        self.hostname = hostname

    async def run(self, tx: Transaction) -> None:
        s = tx.session
        result = recover_sender(
            header_section(tx.raw),
            client_ip=s.peer_ip,
            client_helo=s.helo,
            settings=self.host.ef_for(s.connector),
            private_ranges=self.host.private_ranges,
            rcpt_tos=tx.rcpt_tos,
            own_hostname=self.hostname,
        )
        tx.raw = apply_stamps(tx.raw, result)
        tx.ctx.raw = tx.raw
        if result.acted:
            tx.sender_ip = result.sender_ip
            tx.ctx.client_ip, tx.ctx.helo = result.sender_ip, result.sender_helo
            tx.ctx.client_hostname = None  # the connecting hop's name is not the sender's
            skipped = ", ".join(result.skipped) or "-"
            tx.notes.append(
                f"enhanced filtering: original sender {result.sender_ip}"
                f" ({result.sender_helo or '-'}), skipped {skipped}"
            )
        elif result.applied or result.reason:
            tx.notes.append(f"enhanced filtering: {result.reason or 'no hop recovered'}")
