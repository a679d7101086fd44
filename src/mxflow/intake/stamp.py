"""Stamp: what this node adds on top of the message once the verdict is known.

Modifiers, not checks (they decide nothing): our Authentication-Results and the
verdict's headers, then our DKIM signature (outbound mail of a domain we sign for, from
our own senders only: a relay connector, or a user logged in on the submission port
whose From: the sender-ownership stage has checked), then our ARC set. Top down the
message reads [ARC set] [DKIM-Signature] Authentication-Results, the verdict's headers,
our Received, the message — sealing comes last, over the message exactly as it will be
relayed (RFC 8617 5.1). A signing failure (a header dkimpy cannot parse) is logged and
the message goes unsigned rather than lost.
"""

from __future__ import annotations

import logging

from mxflow.auth.arc import arc_seal
from mxflow.auth.dkim import dkim_sign
from mxflow.auth.dmarc import FromError, from_domain_of
from mxflow.auth.policy import AuthPolicy, SigningConfig
from mxflow.auth.results import format_authentication_results, method_result
from mxflow.intake.base import Transaction

log = logging.getLogger("mxflow.intake")


def header_bytes(fields: list[tuple[str, str]]) -> bytes:
    """Header fields as wire bytes, in the order given (values may hold CRLF folds)."""
    return b"".join(
        f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in fields
    )


def signer_for(raw: bytes, policy: AuthPolicy) -> SigningConfig | None:
    """The DKIM key for this message's author domain or its nearest configured parent."""
    try:
        domain = from_domain_of(raw)
    except FromError:
        return None
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        found = policy.signing_for(".".join(labels[i:]))
        if found is not None:
            return found
    return None


async def dkim_sign_outbound(raw: bytes, policy: AuthPolicy) -> list[tuple[str, str]]:
    """The DKIM-Signature to prepend to outbound mail, or [] when we do not sign for it."""
    signer = signer_for(raw, policy)
    if signer is None:
        return []
    return [await dkim_sign(raw, signer.domain, signer.selector, signer.key)]


async def seal_after_checks(
    raw: bytes, policy: AuthPolicy, auth_results: list[str]
) -> list[tuple[str, str]]:
    """The ARC set to prepend when this node seals (empty when it has no `arc_seal` key).

    `auth_results` are the parts of our Authentication-Results (all checks' parts); the
    `arc=` part among them is the chain status that goes into cv=.
    """
    seal = policy.arc_seal
    if seal is None:
        return []
    value = format_authentication_results(policy.authserv_id, auth_results)
    cv = method_result(value, "arc")
    return await arc_seal(
        raw,
        auth_results=value,
        domain=seal.domain,
        selector=seal.selector,
        key=seal.key,
        cv=cv if cv in {"pass", "fail", "none"} else None,
    )


class VerdictHeadersStage:
    """Our Authentication-Results and the verdict's headers (when the filter ran)."""

    name = "verdict-headers"

    def __init__(self, authserv_id: str) -> None:
        self.authserv_id = authserv_id

    async def run(self, tx: Transaction) -> None:
        if tx.verdict is None:
            return
        ar = format_authentication_results(self.authserv_id, tx.verdict.auth_results)
        tx.prepend(header_bytes([("Authentication-Results", ar), *tx.verdict.headers]))


class SclStage:
    """The host's own `X-MS-Exchange-Organization-SCL` with the final SCL (after the rules):
    what the mailbox files by, and what a person reads to know why."""

    name = "scl"
    HEADER = "X-MS-Exchange-Organization-SCL"

    async def run(self, tx: Transaction) -> None:
        if tx.scl is not None:
            tx.prepend(header_bytes([(self.HEADER, str(tx.scl))]))


class SignStage:
    """DKIM-sign mail from our own senders (a relay connector or a logged-in user), then
    ARC-seal what we checked."""

    name = "sign"

    def __init__(self, policy: AuthPolicy) -> None:
        self.policy = policy

    async def run(self, tx: Transaction) -> None:
        policy = self.policy
        try:
            own = tx.session.relay or tx.session.auth_user is not None
            if policy.dkim_sign and own:
                # never sign what the Internet sends in our domain's name
                tx.prepend(header_bytes(await dkim_sign_outbound(tx.raw, policy)))
            if policy.arc_seal is not None and tx.verdict is not None:
                sealed = await seal_after_checks(tx.raw, policy, tx.verdict.auth_results)
                tx.prepend(header_bytes(sealed))
        except ValueError as exc:
            log.warning("signing skipped client=%s: %s", tx.session.peer_ip, exc)
