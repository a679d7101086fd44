"""The composite verdict and its reason codes, from the results it combines."""

from __future__ import annotations

import pytest

from mxflow.auth.arc import ArcResult, ArcSetInfo
from mxflow.auth.compauth import composite, trusted_arc_pass
from mxflow.auth.dkim import DkimSignatureResult
from mxflow.auth.dmarc import DmarcRecord, DmarcResult

NO_ARC = ArcResult("none")


def dmarc(result: str, policy: str = "none") -> DmarcResult:
    record = DmarcRecord(p=policy) if result in {"pass", "fail"} else None
    return DmarcResult(result, "contoso.com", "contoso.com", record, policy, policy)


def sealed(*sets: tuple[str, str]) -> ArcResult:
    """A passing chain, newest first, of (sealer, dmarc result recorded in its AAR)."""
    infos = tuple(
        ArcSetInfo(
            instance=len(sets) - i,
            seal_domain=domain,
            seal_selector="arc",
            signature_domain=domain,
            cv="pass" if i < len(sets) - 1 else "none",
            aar=f"mx.{domain}; spf=pass; dmarc={verdict} header.from=contoso.com",
            seal_valid=True,
            signature_valid=True,
        )
        for i, (domain, verdict) in enumerate(sets)
    )
    return ArcResult("pass", "", infos)


@pytest.mark.parametrize(
    ("dmarc_result", "spf", "spf_domain", "dkim_domain", "expected"),
    [
        (dmarc("pass", "reject"), "pass", "contoso.com", None, ("pass", "100")),
        (dmarc("fail", "reject"), "fail", "contoso.com", None, ("fail", "000")),
        (dmarc("fail", "quarantine"), "pass", "other.example", None, ("fail", "000")),
        (dmarc("fail", "none"), "pass", "other.example", None, ("softpass", "201")),
        (dmarc("fail", "none"), "fail", "contoso.com", None, ("fail", "001")),
        (dmarc("none"), "pass", "bounce.contoso.com", None, ("pass", "102")),
        (dmarc("none"), "none", "x.example", "mail.contoso.com", ("pass", "102")),
        (dmarc("none"), "none", "x.example", "esp.example", ("softpass", "201")),
        (dmarc("none"), "softfail", "x.example", None, ("fail", "001")),
        (dmarc("temperror"), "pass", "contoso.com", None, ("none", "301")),
        (dmarc("permerror"), "pass", "contoso.com", None, ("none", "302")),
    ],
)
def test_reason_codes(
    dmarc_result: DmarcResult,
    spf: str,
    spf_domain: str,
    dkim_domain: str | None,
    expected: tuple[str, str],
) -> None:
    dkim = [DkimSignatureResult("pass", dkim_domain, "s")] if dkim_domain else []
    verdict = composite(
        dmarc=dmarc_result, spf_result=spf, spf_domain=spf_domain, dkim=dkim, arc=NO_ARC
    )
    assert (verdict.result, verdict.code) == expected
    assert verdict.ar_part() == f"compauth={expected[0]} reason={expected[1]}"


def test_trusted_sealer_overrides_dmarc_fail() -> None:
    chain = sealed(("gateway.example", "pass"))
    verdict = composite(
        dmarc=dmarc("fail", "reject"),
        spf_result="fail",
        spf_domain="contoso.com",
        dkim=[],
        arc=chain,
        trusted_sealers=["Gateway.Example"],
    )
    assert (verdict.result, verdict.code) == ("pass", "130")


@pytest.mark.parametrize(
    ("chain", "trusted", "expected"),
    [
        (sealed(("gateway.example", "pass")), ["gateway.example"], "gateway.example"),
        (sealed(("gateway.example", "fail")), ["gateway.example"], None),  # it saw a failure
        (sealed(("gateway.example", "pass")), ["other.example"], None),  # not trusted
        (  # an untrusted hop after the trusted one could have changed the message
            sealed(("list.example", "fail"), ("gateway.example", "pass")),
            ["gateway.example"],
            None,
        ),
        (  # two trusted hops: the older one's verdict counts
            sealed(("relay.example", "fail"), ("gateway.example", "pass")),
            ["gateway.example", "relay.example"],
            "gateway.example",
        ),
        (ArcResult("fail", "seal did not verify"), ["gateway.example"], None),
    ],
)
def test_which_sealers_count(chain: ArcResult, trusted: list[str], expected: str | None) -> None:
    assert trusted_arc_pass(chain, trusted) == expected
