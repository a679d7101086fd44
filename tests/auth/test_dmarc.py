"""DMARC evaluation against records served by the embedded DNS server."""

from __future__ import annotations

import pytest

from mxflow.auth.dkim import DkimSignatureResult
from mxflow.auth.dmarc import (
    DmarcRecordError,
    DmarcResult,
    FromError,
    evaluate_dmarc,
    from_domain_of,
    organizational_domain,
    parse_record,
)
from tests.auth.zones import quick_resolver, serve_txt

RECORDS: dict[str, str | list[str] | None] = {
    "_dmarc.contoso.com": "v=DMARC1; p=reject; sp=quarantine; adkim=s; rua=mailto:d@contoso.com",
    "_dmarc.fabrikam.co.uk": "v=DMARC1; p=quarantine; pct=50",
    "_dmarc.relaxed.example": "v=DMARC1; p=none",
    "_dmarc.broken.example": "v=DMARC1; p=sometimes",
    "_dmarc.twice.example": ["v=DMARC1; p=none", "v=DMARC1; p=reject"],
    "_dmarc.other.example": "v=spf1 -all",
    "_dmarc.slow.example": None,
}


def passing(domain: str) -> list[DkimSignatureResult]:
    return [DkimSignatureResult("pass", domain, "s1")]


async def dmarc_of(
    author: str,
    spf_result: str,
    spf_domain: str,
    dkim_results: list[DkimSignatureResult] | None = None,
    sample: float | None = None,
) -> DmarcResult:
    """`evaluate_dmarc` for `author` against RECORDS on a fresh embedded server."""
    async with serve_txt(RECORDS) as server:
        return await evaluate_dmarc(
            author,
            spf_result=spf_result,
            spf_domain=spf_domain,
            dkim_results=dkim_results or [],
            resolver=quick_resolver(server),
            sample=sample,
        )


async def test_pass_by_aligned_spf() -> None:
    result = await dmarc_of("contoso.com", "pass", "contoso.com")
    assert (result.result, result.spf_aligned, result.dkim_aligned) == ("pass", True, False)
    assert (
        result.ar_part() == "dmarc=pass (p=reject sp=quarantine dis=none) header.from=contoso.com"
    )


async def test_strict_dkim_alignment_and_subdomain_policy() -> None:
    """adkim=s: a signature by the parent does not align for a subdomain author; sp applies."""
    result = await dmarc_of("mail.contoso.com", "fail", "contoso.com", passing("contoso.com"))
    assert result.result == "fail"
    assert result.policy_domain == "contoso.com"  # found by organisational-domain fallback
    assert (result.policy, result.disposition) == ("quarantine", "quarantine")


async def test_relaxed_dkim_alignment_across_subdomains() -> None:
    result = await dmarc_of(
        "news.fabrikam.co.uk", "none", "bounces.example", passing("fabrikam.co.uk")
    )
    assert result.result == "pass"
    assert result.aligned_dkim_domains == ("fabrikam.co.uk",)


@pytest.mark.parametrize(("sample", "disposition"), [(0.2, "quarantine"), (0.7, "none")])
async def test_pct_sampling_applies_the_milder_policy(sample: float, disposition: str) -> None:
    result = await dmarc_of("fabrikam.co.uk", "fail", "fabrikam.co.uk", [], sample)
    assert (result.result, result.policy, result.disposition) == ("fail", "quarantine", disposition)


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("nowhere.example", "none"),
        ("other.example", "none"),  # a TXT that is not DMARC is no record
        ("twice.example", "none"),  # two DMARC records: no policy (RFC 7489 §6.6.3)
        ("broken.example", "permerror"),
        ("slow.example", "temperror"),
    ],
)
async def test_discovery_outcomes(domain: str, expected: str) -> None:
    result = await dmarc_of(domain, "pass", domain)
    assert result.result == expected
    assert result.ar_part().startswith(f"dmarc={expected}")
    if expected == "temperror":  # what an admin reads, not dnspython's exception name
        assert (
            result.reason == "DNS: TXT _dmarc.slow.example: the resolver did not answer (timed out)"
        )


def test_parse_errors_name_the_tag() -> None:
    with pytest.raises(DmarcRecordError, match=r"p='sometimes'"):
        parse_record("v=DMARC1; p=sometimes")
    record = parse_record("v=DMARC1; p=q; pct=20; adkim=s; fo=1:d; rua=mailto:a@b.example")
    assert (record.p, record.pct, record.adkim, record.fo) == ("quarantine", 20, "s", ("1", "d"))


def test_organizational_domain() -> None:
    assert organizational_domain("a.b.mail.contoso.com") == "contoso.com"
    assert organizational_domain("x.fabrikam.co.uk") == "fabrikam.co.uk"
    assert organizational_domain("co.uk") == "co.uk"


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        (b"To: a@b.example\r\n", "no From"),
        (b"From: a@b.example\r\nFrom: c@d.example\r\n", "more than one"),
        (b"From: a@b.example, c@d.example\r\n", "one author domain"),
    ],
)
def test_from_domain_errors(headers: bytes, problem: str) -> None:
    with pytest.raises(FromError, match=problem):
        from_domain_of(headers + b"\r\nbody\r\n")


def test_from_domain() -> None:
    raw = b'From: "Joe, Q" <Joe@Mail.Contoso.COM>\r\nTo: x@y.example\r\n\r\nhi\r\n'
    assert from_domain_of(raw) == "mail.contoso.com"
