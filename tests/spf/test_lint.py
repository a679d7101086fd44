"""SPF lint: each problem found with its position, severity and fix; live lint on loopback."""

from __future__ import annotations

import pytest

from mxflow.errors import MxflowError
from mxflow.records.spf_lint import Finding, Severity, lint_domain, lint_record
from tests.dnsserver import serve_zone_text

REFERENCE = "v=spf1 ipv4: 10.10.10.1 include:spf.protection.outlook.com -all"


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def only(findings: list[Finding], code: str) -> Finding:
    (found,) = [f for f in findings if f.code == code]
    return found


def test_reference_record_ipv4_is_not_a_mechanism_and_the_space_splits_it() -> None:
    report = lint_record(REFERENCE)
    assert report.has_errors
    unknown = only(report.findings, "unknown-mechanism")
    assert unknown.severity == Severity.ERROR
    assert unknown.position == REFERENCE.index("ipv4:") == 7
    assert "'ipv4:' is not an SPF mechanism" in unknown.message
    assert "permerror" in unknown.message
    assert "ip4:10.10.10.1" in unknown.fix
    split = only(report.findings, "split-term")
    assert split.position == REFERENCE.index("10.10.10.1")
    assert "space" in split.message and "ip4:10.10.10.1" in split.fix


def test_a_clean_record_has_no_findings() -> None:
    report = lint_record("v=spf1 ip4:131.107.21.0/24 include:spf.protection.outlook.com -all")
    assert report.findings == []
    assert report.lookups == 1


@pytest.mark.parametrize(
    ("record", "code", "severity", "term"),
    [
        ("v=spf1 mx +all", "pass-all", Severity.ERROR, "+all"),
        ("v=spf1 mx all", "pass-all", Severity.ERROR, "all"),
        ("v=spf1 mx ?all", "neutral-all", Severity.WARNING, "?all"),
        ("v=spf1 mx", "no-all", Severity.WARNING, ""),
        ("v=spf1 ptr -all", "ptr", Severity.WARNING, "ptr"),
        ("v=spf1 ip4:10.1.2.3 -all", "private-address", Severity.WARNING, "ip4:10.1.2.3"),
        ("v=spf1 ip4:127.0.0.1 -all", "private-address", Severity.WARNING, "ip4:127.0.0.1"),
        ("v=spf1 -all mx", "after-all", Severity.WARNING, "mx"),
        ("v=spf1 -all redirect=x.test", "redirect-ignored", Severity.WARNING, "redirect=x.test"),
        ("v=spf1 inclde:x.test -all", "unknown-mechanism", Severity.ERROR, "inclde:x.test"),
        ("v=spf1 ip4:1.2.3.4/33 -all", "syntax", Severity.ERROR, "ip4:1.2.3.4/33"),
        ("v=spf1 192.0.2.1 -all", "bare-address", Severity.ERROR, "192.0.2.1"),
        ("v=spf1 ip4: 192.0.2.1 -all", "split-term", Severity.ERROR, "ip4:"),
        ("v=spf1 a\tmx -all", "control-char", Severity.ERROR, "\t"),
        ("v=spf1 exp=a.test exp=b.test -all", "duplicate-modifier", Severity.ERROR, "exp=b.test"),
        ("v=spf2 -all", "not-spf", Severity.ERROR, "v=spf2 -al"),
        # the next term is a term of its own, so nothing was split off: a missing domain
        ("v=spf1 include: -all", "syntax", Severity.ERROR, "include:"),
        (
            "v=spf1 ip4:192.0.2.0/24 ip4:0.0.0.0/0 -all",
            "wide-network",
            Severity.WARNING,
            "ip4:0.0.0.0/0",
        ),
    ],
)
def test_each_problem(record: str, code: str, severity: Severity, term: str) -> None:
    report = lint_record(record)
    finding = only(report.findings, code)
    assert finding.severity == severity
    assert finding.term == term
    assert finding.fix
    if term and code != "not-spf":
        assert finding.position == record.index(term)
    assert report.has_errors == (severity == Severity.ERROR)


def test_private_address_kinds_and_the_whole_internet_is_not_private() -> None:
    messages = [
        f.message
        for f in lint_record("v=spf1 ip4:0.0.0.0/0 ip4:10.1.0.0/16 ip6:fe80::/64 -all").findings
        if f.code == "private-address"
    ]
    assert messages == [
        "10.1.0.0/16 is a private or reserved address: no Internet sender has it",
        "fe80::/64 is a link-local address: no Internet sender has it",
    ]
    include = lint_record("v=spf1 include: -all")
    assert codes(include.findings) == ["syntax"]  # and '-all' still counts: no 'no-all'


def test_suggestion_for_misspelt_mechanism() -> None:
    finding = only(lint_record("v=spf1 inclde:x.test -all").findings, "unknown-mechanism")
    assert finding.fix == "did you mean 'include:x.test'?"


def test_private_addresses_allowed_for_lab_records() -> None:
    assert lint_record("v=spf1 ip4:127.10.10.1 -all", public=False).findings == []


def test_more_than_ten_lookups_in_one_record() -> None:
    record = "v=spf1 " + " ".join(f"a:h{i}.example.test" for i in range(11)) + " -all"
    report = lint_record(record)
    assert report.lookups == 11
    assert only(report.findings, "too-many-lookups").severity == Severity.ERROR


def test_long_record_must_be_split_into_strings() -> None:
    record = "v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(30)) + " -all"
    finding = only(lint_record(record).findings, "long-record")
    assert finding.severity == Severity.WARNING and "several quoted strings" in finding.fix


ZONE = """\
$ORIGIN example.test.
good        TXT "v=spf1 include:host.example.test ip4:131.107.21.231 -all"
host        TXT "v=spf1 ip4:131.107.22.0/24 -all"
deep        TXT "v=spf1 include:d1.example.test include:d2.example.test -all"
d1          TXT "v=spf1 a:x1.example.test a:x2.example.test a:x3.example.test mx -all"
d2          TXT ( "v=spf1 a:x4.example.test a:x5.example.test a:x6.example.test"
                  " a:x7.example.test a:x8.example.test -all" )
x1          A 192.0.2.9
x2          A 192.0.2.9
x3          A 192.0.2.9
x4          A 192.0.2.9
x5          A 192.0.2.9
x6          A 192.0.2.9
x7          A 192.0.2.9
x8          A 192.0.2.9
missing     TXT "v=spf1 include:nospf.example.test a:void1.example.test -all"
nospf       TXT "just some text"
voids       TXT "v=spf1 a:v1.example.test a:v2.example.test exists:v3.example.test -all"
two         TXT "v=spf1 -all"
two         TXT "v=spf1 mx -all"
big         TXT "v=spf1 ip4:131.107.21.231 -all"
big         TXT "a{pad}"
big         TXT "b{pad}"
big         TXT "c{pad}"
split       TXT ( "v=spf1 ip4:131.107.21.231 ip4:131.107.21.232 " "{ips}"
                  " include:host.example.test -all" )
twice       TXT "v=spf1 include:d1.example.test include:again.example.test -all"
again       TXT "v=spf1 include:d1.example.test -all"
""".format(pad="x" * 200, ips=" ".join(f"ip4:131.107.22.{i}" for i in range(12)))


async def test_live_lint_clean_domain_follows_includes() -> None:
    async with serve_zone_text(ZONE) as server:
        report = await lint_domain("good.example.test", server.resolver())
    assert report.findings == []
    assert report.record == "v=spf1 include:host.example.test ip4:131.107.21.231 -all"
    assert report.lookups == 1
    assert report.lookup_chain == {"host.example.test": 0, "good.example.test": 1}


async def test_live_lint_counts_lookups_per_include_chain() -> None:
    async with serve_zone_text(ZONE) as server:
        report = await lint_domain("deep.example.test", server.resolver())
    assert report.lookups == 11
    assert report.lookup_chain == {
        "d1.example.test": 4,
        "d2.example.test": 5,
        "deep.example.test": 2,
    }
    finding = only(report.findings, "too-many-lookups")
    assert finding.severity == Severity.ERROR and "d1.example.test 4" in finding.message


async def test_live_lint_include_without_spf_and_void_lookups() -> None:
    async with serve_zone_text(ZONE) as server:
        missing = await lint_domain("missing.example.test", server.resolver())
        voids = await lint_domain("voids.example.test", server.resolver())
    include = only(missing.findings, "include-without-spf")
    assert include.severity == Severity.ERROR and include.term == "include:nospf.example.test"
    assert codes(missing.findings).count("void-lookup") == 1
    severities = [f.severity for f in voids.findings if f.code == "void-lookup"]
    assert severities == [Severity.WARNING, Severity.WARNING, Severity.ERROR]


async def test_live_lint_multiple_records_no_record_and_large_answer() -> None:
    async with serve_zone_text(ZONE) as server:
        two = await lint_domain("two.example.test", server.resolver())
        none = await lint_domain("x1.example.test", server.resolver())
        big = await lint_domain("big.example.test", server.resolver())
    assert only(two.findings, "multiple-records").severity == Severity.ERROR
    assert only(none.findings, "no-spf").severity == Severity.ERROR
    large = only(big.findings, "large-answer")
    assert large.severity == Severity.WARNING and "512" in large.message


async def test_live_lint_resolver_that_does_not_answer_is_one_clear_error() -> None:
    async with serve_zone_text(ZONE) as server:
        server.silence("good.example.test")
        with pytest.raises(MxflowError, match="did not answer"):
            await lint_domain("good.example.test", server.resolver(timeout=0.2, lifetime=0.4))


async def test_live_lint_published_long_record_in_several_strings_is_fine() -> None:
    async with serve_zone_text(ZONE) as server:
        report = await lint_domain("split.example.test", server.resolver())
    assert report.record is not None and len(report.record) > 255
    assert report.findings == []  # it is published as strings of at most 255 bytes


async def test_live_lint_chain_counts_a_record_included_twice() -> None:
    async with serve_zone_text(ZONE) as server:
        report = await lint_domain("twice.example.test", server.resolver())
    # d1 (4 lookups) is evaluated twice, as check_host() would: the chain sums to the total
    assert report.lookup_chain["d1.example.test"] == 8
    assert report.lookups == sum(report.lookup_chain.values()) == 11


async def test_live_lint_rejects_a_mistyped_domain_before_asking() -> None:
    async with serve_zone_text(ZONE) as server:
        with pytest.raises(MxflowError, match=r"'good example\.test' is not a domain name"):
            await lint_domain("good example.test", server.resolver())
        assert server.queries == 0
        report = await lint_domain("Bücher.Example.Test.", server.resolver())
    assert report.domain == "xn--bcher-kva.example.test"  # what is published and queried
