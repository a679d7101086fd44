"""The sender-authentication check: SPF, DKIM, DMARC, ARC and compauth as symbols, an
Authentication-Results part for each, and the action DMARC asks for.

DMARC p=reject rejects (5xx at DATA) and p=quarantine quarantines, each configurable in
`[auth]`; a DMARC failure that a trusted ARC sealer vouches for (compauth reason 130)
asks for nothing. Intake adds our Authentication-Results (after removing forged ones)
and ARC-seals the message (intake/stamp.py): those are modifiers, not checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import dns.asyncresolver
from publicsuffixlist import PublicSuffixList

from mxflow.auth.authenticate import AuthOutcome, authenticate
from mxflow.auth.dmarc import default_psl
from mxflow.auth.policy import AuthPolicy
from mxflow.mail import Action, CheckResult, MessageContext, Phase

SPF_SYMBOLS = {
    "pass": ("SPF_PASS", -0.2),
    "fail": ("SPF_FAIL", 1.0),
    "softfail": ("SPF_SOFTFAIL", 0.5),
    "neutral": ("SPF_NEUTRAL", 0.0),
    "none": ("SPF_NONE", 0.0),
    "permerror": ("SPF_PERMERROR", 0.5),
    "temperror": ("SPF_TEMPERROR", 0.0),
}
DKIM_SYMBOLS = {
    "pass": ("DKIM_VALID", -0.2),
    "fail": ("DKIM_INVALID", 1.0),
    "permerror": ("DKIM_PERMERROR", 0.5),
    "neutral": ("DKIM_NEUTRAL", 0.0),
    "policy": ("DKIM_POLICY", 0.3),
    "temperror": ("DKIM_TEMPFAIL", 0.0),
}
ARC_SYMBOLS = {
    "pass": ("ARC_VALID", -0.1),
    "fail": ("ARC_INVALID", 0.5),
    "none": ("ARC_NA", 0.0),
}
COMPAUTH_SYMBOLS = {
    "pass": ("COMPAUTH_PASS", 0.0),
    "softpass": ("COMPAUTH_SOFTPASS", 0.5),
    "fail": ("COMPAUTH_FAIL", 2.0),
    "none": ("COMPAUTH_NONE", 0.0),
}

SenderOf = Callable[[MessageContext], tuple[str, str]]
"""(client IP, HELO) to authenticate against; the host passes the IP it recovered."""


def _connection_sender(ctx: MessageContext) -> tuple[str, str]:
    return ctx.client_ip, ctx.helo


class SenderAuthCheck:
    """A DATA-phase `Check` running all sender authentication for one message."""

    name = "sender_auth"
    phase = Phase.DATA

    def __init__(
        self,
        policy: AuthPolicy,
        resolver: dns.asyncresolver.Resolver,
        *,
        sender_of: SenderOf = _connection_sender,
        psl: PublicSuffixList | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.sender_of = sender_of
        self.psl = psl

    async def authenticate(self, ctx: MessageContext) -> AuthOutcome:
        ip, helo = self.sender_of(ctx)
        if self.psl is None:  # parsed once, off the loop; not a thread hop per message
            self.psl = await asyncio.to_thread(default_psl)
        return await authenticate(
            ctx.raw,
            ip=ip,
            helo=helo,
            mail_from=ctx.mail_from,
            resolver=self.resolver,
            trusted_arc_sealers=self.policy.trusted_arc_sealers,
            receiver=self.policy.authserv_id,
            min_key_bits=self.policy.min_key_bits,
            psl=self.psl,
        )

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        if ctx.authenticated_user is not None:
            return result  # authenticated submission: the user is the authentication
        outcome = await self.authenticate(ctx)
        result.auth_results = outcome.ar_parts()
        add_symbols(result, outcome)
        decide_action(result, outcome, self.policy)
        return result


def add_symbols(result: CheckResult, outcome: AuthOutcome) -> None:
    """One symbol per mechanism (one per DKIM signature), then the composite verdict.

    When a trusted ARC sealer vouches for the message (compauth reason 130), the SPF, DKIM
    and DMARC failures are those of the hop it sealed: they are still shown, but score
    nothing, or legitimate mail through a modifying gateway would land in Junk.
    """
    overridden = outcome.compauth.reason == 130

    def add(name: str, score: float, detail: str) -> None:
        if overridden and score > 0:
            score, detail = 0.0, f"{detail} (vouched for by a trusted ARC sealer)"
        result.add(name, score, detail)

    spf = outcome.spf
    name, score = SPF_SYMBOLS.get(spf.result, ("SPF_NONE", 0.0))
    add(name, score, f"{spf.domain}: {spf.reason}" if spf.reason else spf.domain)
    if not outcome.dkim:
        result.add("DKIM_NA", 0.0, "not signed")
    for sig in outcome.dkim:
        name, score = DKIM_SYMBOLS.get(sig.result, ("DKIM_PERMERROR", 0.5))
        add(name, score, f"d={sig.domain} s={sig.selector} {sig.reason}".strip())
    dmarc = outcome.dmarc
    detail = f"{dmarc.from_domain} {dmarc.reason}".strip()
    if dmarc.result == "pass":
        result.add("DMARC_PASS", -0.5, detail)
    elif dmarc.result == "fail":
        names = {
            "reject": ("DMARC_POLICY_REJECT", 3.0),
            "quarantine": ("DMARC_POLICY_QUARANTINE", 2.0),
            "none": ("DMARC_POLICY_SOFTFAIL", 0.5),
        }
        name, score = names[dmarc.policy]
        add(name, score, f"{detail} (p={dmarc.policy} dis={dmarc.disposition})")
    elif dmarc.result == "temperror":
        result.add("DMARC_TEMPFAIL", 0.0, detail)
    elif dmarc.result == "permerror":
        result.add("DMARC_BAD_POLICY", 0.5, detail)
    else:
        result.add("DMARC_NA", 0.0, detail)
    name, score = ARC_SYMBOLS.get(outcome.arc.cv, ("ARC_INVALID", 0.5))
    result.add(name, score, outcome.arc.reason)
    comp = outcome.compauth
    name, score = COMPAUTH_SYMBOLS[comp.result]
    result.add(name, score, f"reason={comp.code} {comp.detail}".strip())
    if comp.reason == 130:
        result.add("ARC_TRUSTED_OVERRIDE", 0.0, comp.detail)


def decide_action(result: CheckResult, outcome: AuthOutcome, policy: AuthPolicy) -> None:
    """DMARC's disposition as an action, unless a trusted ARC sealer overrode the failure."""
    dmarc = outcome.dmarc
    if dmarc.result != "fail" or outcome.compauth.result == "pass":
        return
    action: Action | None = None
    if dmarc.disposition == "reject":
        action = policy.dmarc_reject
    elif dmarc.disposition == "quarantine":
        action = policy.dmarc_quarantine
    if action is None:
        return
    result.action = action
    result.reason = (
        f"5.7.1 DMARC policy of {dmarc.policy_domain} ({dmarc.policy}): "
        f"message from {dmarc.from_domain} failed authentication"
    )
