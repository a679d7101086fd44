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
  nobody outside may speak as the organisation through the front door;
* a logged-in session (AUTH on the submission port) is the organisation's own user: no
  connector, lock-down or direct-send rule applies to it, it may send to any domain, but
  only as an address it owns (its mailbox, its aliases) — else `553 5.7.1` at MAIL.

Directory lookups are indexed SQLite reads of a local file, or with a shared database reads
of the node's copy in memory (microseconds either way), done inline.
"""

from __future__ import annotations

from mxflow.config import NodeConfig
from mxflow.intake.login import DirectoryLogins
from mxflow.intake.screen import RelayScreen
from mxflow.smtp.protocol import Session
from mxflow.store.directory import Directory


class HostScreen(RelayScreen):
    """Connector matching as the gateway's; recipients, lock-down and direct send by the
    host; its logins (`authenticator`) for the submission listener."""

    def __init__(self, config: NodeConfig, directory: Directory) -> None:
        super().__init__(config)
        self.directory = directory
        self.authenticator = DirectoryLogins(directory)

    def mail(self, session: Session, address: str) -> str | None:
        if session.auth_user is not None:
            session.connector, session.relay = None, False
            # the null sender (a read receipt) is allowed: From: is checked after DATA
            if address and address.lower() not in self.directory.owned_addresses(session.auth_user):
                return (
                    f"553 5.7.1 <{address}>: Sender address rejected:"
                    f" not owned by user {session.auth_user}"
                )
            return None
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
        own_user = session.auth_user is not None
        if expansion.status == "not_accepted":
            if session.relay or own_user:
                return None, address
            return f"550 5.7.1 <{address}>: Relay access denied", address
        if self.config.host.lock_down and session.connector is None and not own_user:
            domain = address.rpartition("@")[2]
            return (
                f"550 5.7.51 TenantInboundAttribution; mail for {domain} is accepted only"
                f" through its inbound connector; {session.peer_ip} matches none",
                address,
            )
        if expansion.status == "unknown" and address.partition("@")[0].lower() != "postmaster":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown", address
        return None, expansion.address
