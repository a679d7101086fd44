"""Composite authentication: one verdict from SPF, DKIM, DMARC and ARC, as the reference
host's `compauth=` (pass / fail / softpass / none, with a three-digit reason).

The reason codes mirror the reference where it documents them; mxflow implements this
subset (the last two digits of 1xx/2xx/3xx/4xx are mxflow's own):

| code | result   | meaning |
|------|----------|---------|
| 000  | fail     | explicit fail: DMARC fail with p (or sp) quarantine/reject |
| 001  | fail     | implicit fail: no DMARC enforcement (no record, or p=none) and no passing
|      |          | SPF or DKIM for the author's domain |
| 100  | pass     | DMARC pass |
| 102  | pass     | implicit pass: no DMARC record, but SPF or DKIM passes aligned with From |
| 130  | pass     | ARC override: DMARC failed, but a valid ARC chain from a trusted sealer
|      |          | recorded dmarc=pass when it received the message |
| 201  | softpass | implicit softpass: no DMARC enforcement, something passed but not aligned |
| 301  | none     | not checked: DNS failed temporarily (DMARC temperror) |
| 302  | none     | not checked: the author domain or the DMARC record is unusable |

A trusted sealer only counts when every seal newer than its own is also trusted: a hop
we do not trust after it could have changed the message the trusted one vouched for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mxflow.auth.arc import ArcResult
from mxflow.auth.dkim import DkimSignatureResult
from mxflow.auth.dmarc import DmarcResult, aligned


@dataclass(frozen=True)
class CompAuth:
    result: str  # pass / fail / softpass / none
    reason: int
    detail: str = ""

    @property
    def code(self) -> str:
        return f"{self.reason:03d}"

    def ar_part(self) -> str:
        return f"compauth={self.result} reason={self.code}"


def trusted_arc_pass(arc: ArcResult, trusted_sealers: Iterable[str]) -> str | None:
    """The trusted sealer whose AAR recorded dmarc=pass on a valid chain, if there is one."""
    trusted = {d.lower().rstrip(".") for d in trusted_sealers}
    if arc.cv != "pass" or not trusted:
        return None
    for info in arc.sets:  # newest first
        if info.seal_domain not in trusted:
            return None
        if info.aar_result("dmarc") == "pass":
            return info.seal_domain
    return None


def composite(
    *,
    dmarc: DmarcResult,
    spf_result: str,
    spf_domain: str,
    dkim: Sequence[DkimSignatureResult],
    arc: ArcResult,
    trusted_sealers: Iterable[str] = (),
) -> CompAuth:
    """The composite verdict for one message (see the module table for the codes)."""
    if dmarc.result == "pass":
        return CompAuth("pass", 100, "DMARC pass")
    if dmarc.result == "temperror":
        return CompAuth("none", 301, dmarc.reason)
    if dmarc.result == "permerror" or not dmarc.from_domain:
        return CompAuth("none", 302, dmarc.reason)
    if dmarc.result == "fail":
        sealer = trusted_arc_pass(arc, trusted_sealers)
        if sealer is not None:
            return CompAuth("pass", 130, f"trusted ARC sealer {sealer} recorded dmarc=pass")
        if dmarc.policy in {"quarantine", "reject"}:
            return CompAuth("fail", 0, f"DMARC fail, p={dmarc.policy}")
    author = dmarc.from_domain
    spf_pass = spf_result == "pass"
    spf_aligned = spf_pass and aligned(author, spf_domain, "r")
    dkim_pass = [r for r in dkim if r.result == "pass"]
    dkim_aligned = any(aligned(author, r.domain, "r") for r in dkim_pass)
    if dmarc.result == "none" and (spf_aligned or dkim_aligned):
        return CompAuth("pass", 102, "no DMARC record; aligned SPF or DKIM pass")
    if spf_pass or dkim_pass:
        return CompAuth("softpass", 201, "SPF or DKIM pass, not aligned with From")
    return CompAuth("fail", 1, "no passing authentication for the author domain")
