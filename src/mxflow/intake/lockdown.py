"""The mailbox host's screen: its directory decides recipients; connectors lock it down.

What the reference host does at MAIL and RCPT (Exchange Online's vocabulary):

* recipients come from the directory (`store/directory.py`): a mailbox, alias or group of
  an accepted domain is taken; an unknown one of an authoritative domain is refused
  `550 5.1.1`; any address of an internal-relay domain is taken and routed onward;
* lock-down: with `[host] lock_down`, mail for an accepted domain is taken only from a
  client an inbound connector matches (the partner connector from the gateway, by IP or
  certificate name) — anyone else, say a spammer who found the host's own address and
  skips the filtering gateway, gets `550 5.7.51 TenantInboundAttribution`;
* direct send: anonymous mail whose MAIL FROM is an accepted domain, from a client no
  connector matches, is refused `550 5.7.68` (`[host] reject_direct_send`, on by default):
  nobody outside may speak as the organisation through the front door.

Directory lookups are indexed SQLite reads of a local file (microseconds), done inline.
"""

from __future__ import annotations

from mxflow.config import NodeConfig
from mxflow.intake.screen import RelayScreen
from mxflow.smtp.protocol import Session
from mxflow.store.directory import Directory


class HostScreen(RelayScreen):
    """Connector matching as the gateway's; recipients, lock-down and direct send by the host."""

    def __init__(self, config: NodeConfig, directory: Directory) -> None:
        super().__init__(config)
        self.directory = directory

    def mail(self, session: Session, address: str) -> str | None:
        refusal = super().mail(session, address)
        if refusal is not None or session.connector is not None:
            return refusal
        domain = address.rpartition("@")[2]
        if address and self.config.host.reject_direct_send and self.directory.accepted(domain):
            return (
                f"550 5.7.68 TenantInboundAttribution; direct send as {domain} is not allowed"
                f" from {session.peer_ip}: no inbound connector matches this client"
            )
        return None

    def rcpt(self, session: Session, address: str) -> tuple[str | None, str]:
        if address.lower() == "postmaster":
            return super().rcpt(session, address)
        expansion = self.directory.expand(address)
        routed = any(c in address.rpartition("@")[0] for c in "%!@")
        if routed and expansion.status != "not_accepted" and not session.relay:
            refusal = f"550 5.7.1 <{address}>: Relay access denied (routing in the local part)"
            return refusal, address
        if expansion.status == "not_accepted":
            if session.relay:
                return None, address
            return f"550 5.7.1 <{address}>: Relay access denied", address
        if self.config.host.lock_down and session.connector is None:
            domain = address.rpartition("@")[2]
            return (
                f"550 5.7.51 TenantInboundAttribution; mail for {domain} is accepted only"
                f" through its inbound connector; {session.peer_ip} matches none",
                address,
            )
        if expansion.status == "unknown" and address.partition("@")[0].lower() != "postmaster":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown", address
        return None, expansion.address
