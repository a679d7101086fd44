"""Run SPF, DKIM, ARC, DMARC and compauth for one message: what `auth check` prints and
what the sender-auth check turns into symbols.

The client IP and HELO are parameters, not read from the connection, so the host role's
enhanced filtering can pass the IP it recovered from the Received chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import dns.asyncresolver
from publicsuffixlist import PublicSuffixList

from mxflow.auth import spf as spf_module
from mxflow.auth.arc import ArcResult, validate_arc
from mxflow.auth.compauth import CompAuth, composite
from mxflow.auth.dkim import DkimSignatureResult, verify_dkim
from mxflow.auth.dmarc import (
    DmarcResult,
    FromError,
    default_psl,
    evaluate_dmarc,
    from_domain_of,
)
from mxflow.auth.results import format_authentication_results
from mxflow.auth.txt import ResolverTxtLookup


@dataclass(frozen=True)
class AuthOutcome:
    """Every authentication result for one message."""

    spf: spf_module.SpfResult
    spf_identity: str  # "mailfrom" or "helo"
    dkim: tuple[DkimSignatureResult, ...]
    arc: ArcResult
    dmarc: DmarcResult
    compauth: CompAuth

    def ar_parts(self) -> list[str]:
        """The Authentication-Results parts, in the order a reader wants them."""
        parts = [spf_module.auth_results_part(self.spf, identity=self.spf_identity)]
        if self.dkim:
            parts += [r.ar_part() for r in self.dkim]
        else:
            parts.append("dkim=none (message not signed)")
        parts.append(self.dmarc.ar_part())
        parts.append(self.arc.ar_part())
        parts.append(self.compauth.ar_part())
        return parts

    def header(self, authserv_id: str) -> str:
        """The Authentication-Results value this node adds."""
        return format_authentication_results(authserv_id, self.ar_parts())


def spf_identity(mail_from: str, helo: str) -> tuple[str, str]:
    """(identity, domain) SPF checks and DMARC aligns: MAIL FROM's domain, else HELO."""
    if mail_from:
        return "mailfrom", mail_from.rpartition("@")[2].lower()
    return "helo", helo.lower()


async def authenticate(
    raw: bytes,
    *,
    ip: str,
    helo: str,
    mail_from: str,
    resolver: dns.asyncresolver.Resolver,
    trusted_arc_sealers: Iterable[str] = (),
    receiver: str = "unknown",
    min_key_bits: int = 1024,
    psl: PublicSuffixList | None = None,
    sample: float | None = None,
) -> AuthOutcome:
    """SPF, DKIM and ARC concurrently, then DMARC and the composite verdict."""
    lookup = ResolverTxtLookup(resolver)
    if psl is None:  # parsing the bundled list takes a moment: not on the event loop
        psl = await asyncio.to_thread(default_psl)
    identity, spf_domain = spf_identity(mail_from, helo)
    spf_result, dkim_results, arc_result = await asyncio.gather(
        spf_module.check_mail_from(ip, mail_from, helo=helo, resolver=resolver, receiver=receiver),
        verify_dkim(raw, lookup, min_key_bits=min_key_bits),
        validate_arc(raw, lookup, min_key_bits=min_key_bits),
    )
    try:
        author = from_domain_of(raw)
    except FromError as exc:
        dmarc = DmarcResult("permerror", reason=str(exc))
    else:
        dmarc = await evaluate_dmarc(
            author,
            spf_result=spf_result.result,
            spf_domain=spf_domain,
            dkim_results=dkim_results,
            resolver=lookup,
            psl=psl,
            sample=sample,
        )
    comp = composite(
        dmarc=dmarc,
        spf_result=spf_result.result,
        spf_domain=spf_domain,
        dkim=dkim_results,
        arc=arc_result,
        trusted_sealers=trusted_arc_sealers,
    )
    return AuthOutcome(spf_result, identity, tuple(dkim_results), arc_result, dmarc, comp)
