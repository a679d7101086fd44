"""The Mail::DKIM verifier corpus: 79 messages, their fake DNS and expected results.

Keys are served by the embedded DNS server; the corpus's DNS errors (a timeout and a
SERVFAIL) are names that never answer. The corpus predates RFC 8301, so it runs with
512-bit keys and rsa-sha1 accepted (`min_key_bits=512, allow_sha1=True`); the defaults
refuse both, which `test_rfc8301_defaults` checks.

Mail::DKIM's `invalid` is any of our permerror / temperror / neutral / policy. Two groups
of the corpus are outside RFC 6376 and are checked for what mxflow does with them:

* DomainKeys (RFC 4870, historic): `DomainKey-Signature` is not DKIM, so these give no
  DKIM result at all;
* pre-RFC 4871 drafts (no v= tag, or v=0.5): RFC 6376 §3.5 requires v=1, so none of
  them may pass.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator

import pytest

from mxflow.auth.dkim import DkimSignatureResult, verify_dkim
from mxflow.dns.server import EmbeddedDnsServer
from tests.auth.zones import DATA, quick_resolver, serve_txt

CORPUS = DATA / "mail-dkim"
INVALID = {"permerror", "temperror", "neutral", "policy"}
DOMAINKEYS = {
    "good_dk_gmail.txt",
    "good_dk_yahoo.txt",
    *(f"good_dk_{i}.txt" for i in range(1, 8)),
    "dk_headers_1.txt",
    "dk_headers_2.txt",
    *(f"bad_dk_{i}.txt" for i in range(1, 6)),
    "dk_multiple_1.txt",
}
DRAFTS = {
    *(f"good_ietf00_{i}.txt" for i in range(1, 6)),
    *(f"mine_ietf01_{i}.txt" for i in range(1, 5)),
    "mine_ietf05_1.txt",
    "good_ietf01_1.txt",
    "good_ietf01_2.txt",
    *(f"bad_ietf01_{i}.txt" for i in range(1, 4)),
    "bad_1.txt",
    "multiple_1.txt",
    *(f"no_body_{i}.txt" for i in range(1, 4)),
}


def fake_dns() -> dict[str, str | None]:
    """FAKE_DNS.dat: `name TXT`; NXDOMAIN means absent, `~~...~~` a DNS error."""
    records: dict[str, str | None] = {}
    for line in (CORPUS / "FAKE_DNS.dat").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.strip().partition(" ")
        value = value.strip()
        if value == "NXDOMAIN":
            continue
        records[name] = None if value.startswith("~~") else value.strip('"')
    return records


def expectations() -> list[tuple[str, str, str]]:
    with (CORPUS / "expected-results.tsv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    return [(row[0], row[1], row[2] if len(row) > 2 else "") for row in rows[1:]]


CASES = expectations()


def overall(results: list[DkimSignatureResult]) -> str:
    """Mail::DKIM's message-level result: pass if any passes, else fail if any fails."""
    kinds = {r.result for r in results}
    if "pass" in kinds:
        return "pass"
    if "fail" in kinds:
        return "fail"
    return "invalid" if kinds else "none"


@pytest.fixture
async def server() -> AsyncIterator[EmbeddedDnsServer]:
    async with serve_txt(fake_dns()) as running:
        yield running


def test_corpus_is_complete() -> None:
    assert len(CASES) == 79
    assert all((CORPUS / "corpus" / name).exists() for name, _, _ in CASES)
    assert {name for name, _, _ in CASES} >= DOMAINKEYS | DRAFTS


@pytest.mark.parametrize(
    ("name", "expected"),
    [(n, e) for n, e, _ in CASES if n not in DOMAINKEYS | DRAFTS],
)
async def test_rfc6376_case(server: EmbeddedDnsServer, name: str, expected: str) -> None:
    raw = (CORPUS / "corpus" / name).read_bytes()
    results = await verify_dkim(raw, quick_resolver(server), min_key_bits=512, allow_sha1=True)
    assert overall(results) == expected, [(r.result, r.reason) for r in results]
    if expected == "invalid":
        assert {r.result for r in results} <= INVALID


async def test_per_signature_results(server: EmbeddedDnsServer) -> None:
    """multiple_2: the 1st signature is invalid, the 2nd passes, the 3rd fails."""
    raw = (CORPUS / "corpus" / "multiple_2.txt").read_bytes()
    results = await verify_dkim(raw, server.resolver(), min_key_bits=512, allow_sha1=True)
    assert [r.result for r in results][:3] == ["permerror", "pass", "fail"]
    assert results[1].domain == "messiah.edu"
    assert results[1].ar_part().startswith("dkim=pass")


async def test_dns_errors_are_temperror(server: EmbeddedDnsServer) -> None:
    for name in ("badkey_14.txt", "badkey_15.txt"):
        raw = (CORPUS / "corpus" / name).read_bytes()
        results = await verify_dkim(raw, quick_resolver(server), min_key_bits=512)
        assert [r.result for r in results] == ["temperror"]


@pytest.mark.parametrize("name", sorted(DOMAINKEYS))
async def test_domainkeys_is_not_dkim(server: EmbeddedDnsServer, name: str) -> None:
    raw = (CORPUS / "corpus" / name).read_bytes()
    assert await verify_dkim(raw, server.resolver(), min_key_bits=512, allow_sha1=True) == []


@pytest.mark.parametrize("name", sorted(DRAFTS))
async def test_draft_signatures_never_pass(server: EmbeddedDnsServer, name: str) -> None:
    raw = (CORPUS / "corpus" / name).read_bytes()
    results = await verify_dkim(raw, server.resolver(), min_key_bits=512, allow_sha1=True)
    assert results
    assert all(r.result in {"permerror", "neutral"} for r in results)


async def test_rfc8301_defaults(server: EmbeddedDnsServer) -> None:
    """With the defaults, a 512-bit key or rsa-sha1 verifies but is refused: dkim=policy."""
    raw = (CORPUS / "corpus" / "goodkey_1.txt").read_bytes()
    lenient = await verify_dkim(raw, server.resolver(), min_key_bits=512, allow_sha1=True)
    strict = await verify_dkim(raw, server.resolver())
    assert [r.result for r in lenient] == ["pass"]
    assert [r.result for r in strict] == ["policy"]
