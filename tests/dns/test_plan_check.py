"""Plan -> zone fragment -> embedded server -> `check` and SPF: the lab's DNS round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxflow.auth.spf import check_host
from mxflow.dns.zone import parse_zone
from mxflow.errors import ConfigError, MxflowError
from mxflow.records.check import check_domain, classify_mx
from mxflow.records.plan import lab_zones, plan_records, spf_record
from mxflow.records.spf_lint import Severity
from mxflow.records.topology import Topology, load_topology, parse_topology
from tests.dnsserver import serve_zone_text, serve_zones

TOPOLOGY = Path(__file__).resolve().parents[2] / "examples" / "topology.toml"


def topology() -> Topology:
    return load_topology(TOPOLOGY)


def test_plan_scenario_1_records() -> None:
    plan = plan_records(topology(), 1)
    by_type: dict[tuple[str, str], list[str]] = {(r.name, r.rdtype): [] for r in plan.records}
    for r in plan.records:
        by_type[(r.name, r.rdtype)].append(r.value)
    assert by_type[("contoso.com", "MX")] == [
        "10 mx1.gateway.mxflow.test.",
        "20 mx2.gateway.mxflow.test.",
    ]
    assert all(r.ttl <= 3600 for r in plan.records if r.rdtype == "MX")
    assert (
        '"v=spf1 include:spf.protection.outlook.com ip4:127.10.10.1 -all"'
        in by_type[("contoso.com", "TXT")]
    )
    assert '"MS=ms12345678"' in by_type[("contoso.com", "TXT")]
    assert by_type[("_dmarc.contoso.com", "TXT")] == [
        '"v=DMARC1; p=none; rua=mailto:dmarc-reports@contoso.com"'
    ]
    assert ("selector1._domainkey.contoso.com", "CNAME") in by_type
    assert ("_smtp._tls.contoso.com", "TXT") in by_type
    assert ("_mta-sts.contoso.com", "TXT") in by_type
    assert any("3600 s or less" in line for line in plan.advice)
    assert any("p=quarantine, then to p=reject" in line for line in plan.advice)
    (mta_sts,) = [line for line in plan.advice if line.startswith("MTA-STS")]
    assert "'max_age: 86400'" in mta_sts  # RFC 8461 §3.2: required in the policy
    assert "mta-sts.contoso.com (A/AAAA or CNAME" in mta_sts
    table = plan.table()
    assert "selector2._domainkey.contoso.com" in table and "WHY" in table


def test_spf_names_the_third_party_only_when_outbound_passes_it() -> None:
    data = {
        "domain": {"name": "contoso.com"},
        "host": {"inbound": "contoso-com.mail.protection.outlook.com", "spf_include": "spf.h.test"},
        "gateway": {"mx": ["mx.g.test"], "ips": ["127.10.10.1"], "outbound": False},
    }
    assert spf_record(parse_topology(data), 1) == "v=spf1 include:spf.h.test -all"
    data["gateway"]["outbound"] = True  # type: ignore[index]
    assert spf_record(parse_topology(data), 1) == ("v=spf1 include:spf.h.test ip4:127.10.10.1 -all")


def test_fragment_loads_as_zone() -> None:
    plan = plan_records(topology(), 2)
    zone = parse_zone(plan.zone_fragment(), filename="plan.zone")
    assert str(zone.origin) == "contoso.com."
    assert len(zone) == len(plan.records)


def test_topology_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"gateway\.mxx: .*no such key"):
        parse_topology(
            {
                "domain": {"name": "c.test"},
                "host": {"inbound": "h.test", "spf_include": "s.test"},
                "gateway": {"mxx": ["a"], "mx": ["a"], "ips": ["127.0.0.1"]},
            }
        )
    with pytest.raises(ConfigError, match=r"gateway\.ips\[0\]"):
        parse_topology(
            {
                "domain": {"name": "c.test"},
                "host": {"inbound": "h.test", "spf_include": "s.test"},
                "gateway": {"mx": ["a"], "ips": ["not-an-ip"]},
            }
        )
    with pytest.raises(ConfigError, match=r"domain\.name: .*a domain name"):
        parse_topology(
            {"domain": {"name": "contoso com"}, "host": {"inbound": "h.test", "spf_include": "s"}}
        )
    no_archiver = parse_topology(
        {"domain": {"name": "c.test"}, "host": {"inbound": "h.test", "spf_include": "s.test"}}
    )
    with pytest.raises(MxflowError, match=r"scenario 2 needs a \[archiver\]"):
        plan_records(no_archiver, 2)


@pytest.mark.parametrize("scenario", [1, 2])
async def test_plan_serve_check_round_trip(scenario: int) -> None:
    topo = topology()
    plan = plan_records(topo, scenario)
    async with serve_zones([plan.zone(), *lab_zones(topo)]) as server:
        resolver = server.resolver()
        report = await check_domain("contoso.com", resolver, public=False)
        assert report.scenario.startswith(f"{scenario}: ")
        assert not report.has_errors, [str(f) for f in report.all_findings]
        assert report.dkim_selectors == ["selector1", "selector2"]
        assert report.verification == ["MS=ms12345678"]
        assert report.dmarc["p"] == "none"
        assert report.mx_ttl == 3600
        assert report.spf is not None and report.spf.lookups == 1
        codes = {f.code for f in report.findings}
        assert "bypass-risk" in codes  # the host's endpoint resolves in the lab
        assert ("enhanced-filtering" in codes) == (scenario == 2)
        data = report.as_dict()
        assert data["errors"] == 0 and data["scenario"] == report.scenario

        host = await check_host("127.40.1.25", "contoso.com", "a@contoso.com", resolver=resolver)
        third = "127.10.10.1" if scenario == 1 else "127.10.20.1"
        party = await check_host(third, "contoso.com", "a@contoso.com", resolver=resolver)
        stranger = await check_host("127.99.0.1", "contoso.com", "a@contoso.com", resolver=resolver)
        assert (host.result, party.result, stranger.result) == ("pass", "pass", "fail")


CHECKED = """\
$ORIGIN checked.test.
mixed               MX  10 mx1.gateway.mxflow.test.
mixed               MX  20 mixed-checked-test.mail.protection.outlook.com.
mixed               TXT "v=spf1 ipv4: 10.10.10.1 include:spf.protection.outlook.com -all"
nomx                TXT "v=spf1 -all"
dangling            MX  10 mail.checked.test.
dangling            TXT "v=spf1 mx -all"
mail                A   131.107.21.231
selector1._domainkey.dangling CNAME selector1.keys.checked.test.
_dmarc.dangling     TXT "v=DMARC1; p=reject"
elsewhere   86400   MX  10 mx.somewhere.test.
_dmarc.elsewhere    TXT "v=DMARC1; p=rejct; rua=mailto:d@checked.test"
_dmarc.nomx         TXT "v=DMARC1; p=reject; pct=10; rua=mailto:d@checked.test"
"""
LAB = """\
$ORIGIN mxflow.test.
mx1.gateway A 127.10.10.1
"""


async def test_check_finds_problems() -> None:
    async with serve_zone_text(CHECKED, LAB) as server:
        resolver = server.resolver()
        mixed = await check_domain("mixed.checked.test", resolver)
        codes = {f.code: f for f in mixed.all_findings}
        assert mixed.scenario.startswith("mixed")
        assert codes["mx-bypass"].severity == Severity.ERROR
        assert codes["mx-no-address"].severity == Severity.ERROR
        assert codes["dns-error"].severity == Severity.WARNING  # REFUSED: not our zone
        assert codes["unknown-mechanism"].severity == Severity.ERROR
        assert codes["no-dmarc"].severity == Severity.WARNING
        assert mixed.has_errors

        nomx = await check_domain("nomx.checked.test", resolver)
        assert "no-mx" in {f.code for f in nomx.findings}
        (pct,) = [f for f in nomx.findings if f.code == "dmarc-pct"]
        assert "applies to 10% of failing mail" in pct.message

        dangling = await check_domain("dangling.checked.test", resolver)
        found = {f.code for f in dangling.findings}
        assert "dkim-dangling" in found and "dmarc-rua" in found
        assert dangling.dmarc["p"] == "reject"
        assert dangling.scenario.startswith("unknown")
        assert not dangling.has_errors

        elsewhere = await check_domain("elsewhere.checked.test", resolver)
        assert "mx-ttl" in {f.code for f in elsewhere.findings}
        assert "no-spf" in {f.code for f in elsewhere.all_findings}
        (syntax,) = [f for f in elsewhere.findings if f.code == "dmarc-syntax"]
        assert syntax.severity == Severity.ERROR and "p='rejct'" in syntax.message


def test_known_mx_services() -> None:
    assert classify_mx("contoso-com.mail.protection.outlook.com")[1] == "host"
    assert classify_mx("eu-smtp-inbound-1.mimecast.com.")[1] == "filter"
    assert classify_mx("mx0a-0012345.pphosted.com")[1] == "filter"
    assert classify_mx("mx.archive.mxflow.test")[1] == "archiver"
    assert classify_mx("mail.example.org") == ("unknown service", "other")


async def test_check_with_silent_resolver_is_one_clear_error() -> None:
    async with serve_zone_text(CHECKED) as server:
        server.silence("mixed.checked.test")
        with pytest.raises(
            MxflowError, match=r"cannot look up MX mixed\.checked\.test: .*timed out"
        ):
            await check_domain("mixed.checked.test", server.resolver(timeout=0.2, lifetime=0.4))
