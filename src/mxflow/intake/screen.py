"""Screen: who may send what, decided at MAIL and RCPT, before any data is read.

The first stage of intake, and the one the SMTP protocol asks directly (the `Screen`
interface of smtp/protocol.py): match the client to an inbound connector (by IP/CIDR and
TLS certificate name), apply relay control and recipient validation. A recipient outside
the accepted domains is taken only from a client that a connector with `relay = true`
matches; MAIL FROM plays no part, so the node is never an open relay.
"""

from __future__ import annotations

from mxflow.config import NodeConfig
from mxflow.smtp.protocol import Session


class RelayScreen:
    """Relay control and recipient validation from the node's accepted domains and connectors."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config

    def mail(self, session: Session, address: str) -> str | None:
        cert_names = session.tls.peer_cert_names if session.tls else ()
        connector = next(
            (c for c in self.config.inbound_connectors if c.matches(session.peer_ip, cert_names)),
            None,
        )
        session.connector = connector.name if connector else None
        session.relay = bool(connector and connector.relay)
        if connector is not None and connector.require_tls and session.tls is None:
            return "530 5.7.0 Must issue a STARTTLS command first"
        return None

    def rcpt(self, session: Session, address: str) -> tuple[str | None, str]:
        if address.lower() == "postmaster":
            # RFC 5321 4.5.1: <postmaster> without a domain must be accepted; it is the
            # postmaster of our first accepted domain
            if not self.config.accepted_domains:
                return (
                    "550 5.1.1 <postmaster>: Recipient address rejected: no local domain",
                    address,
                )
            address = f"postmaster@{self.config.accepted_domains[0].domain}"
        local, _, domain = address.rpartition("@")
        accepted = self.config.accepted_domain(domain)
        if accepted is not None and not session.relay and any(c in local for c in "%!@"):
            # "user%elsewhere@our.domain": a downstream that honours the percent hack or
            # bang path would relay it onward (Postfix: allow_untrusted_routing = no)
            return (
                f"550 5.7.1 <{address}>: Relay access denied (routing in the local part)",
                address,
            )
        if accepted is None:
            if not session.relay:
                return f"550 5.7.1 <{address}>: Relay access denied", address
        elif not accepted.knows(address) and local.lower() != "postmaster":
            # postmaster@ every domain we accept mail for is always taken (RFC 5321 4.5.1)
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown", address
        return None, address
