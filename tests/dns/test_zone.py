"""Zone files and programmatic zones: parsed, kept exact, and bad input named clearly."""

from __future__ import annotations

from pathlib import Path

import dns.name
import dns.rdatatype
import pytest

from mxflow.dns.zone import Zone, ZoneError, load_zone_file, parse_zone
from mxflow.errors import MxflowError

ZONE = """\
$ORIGIN contoso.test.
$TTL 600
@       IN SOA ns1 hostmaster 2026112701 3600 600 86400 300
@       IN NS  ns1
@       IN MX  10 mx1.gateway.test.
@       IN TXT "v=spf1 " "ip4:127.10.10.1 -all"
ns1     IN A   127.0.0.53
www 300 IN CNAME @
"""


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def test_parse_zone_keeps_records_ttls_and_txt_strings() -> None:
    zone = parse_zone(ZONE)
    assert zone.origin == name("contoso.test")
    mx = zone.get(name("contoso.test"), dns.rdatatype.MX)
    assert mx is not None and mx.ttl == 600
    assert mx[0].exchange == name("mx1.gateway.test")
    txt = zone.get(name("contoso.test"), dns.rdatatype.TXT)
    assert txt is not None and txt[0].strings == (b"v=spf1 ", b"ip4:127.10.10.1 -all")
    www = zone.get(name("WWW.contoso.test"), dns.rdatatype.CNAME)
    assert www is not None and www.ttl == 300
    assert len(zone) == 6


def test_origin_can_be_given_instead_of_dollar_origin() -> None:
    zone = parse_zone("@ IN A 127.0.0.1\n", "example.test")
    assert zone.get(name("example.test"), dns.rdatatype.A) is not None


def test_from_records_builds_zone_and_timeouts() -> None:
    zone = Zone.from_records(
        "example.test",
        [
            ("@", "TXT", ["v=spf1 ", b"-all"]),
            ("mx", "A", "127.0.0.9"),
            ("@", "MX", "5 mx"),
            ("slow", "TIMEOUT", ""),
        ],
    )
    mx = zone.get(name("example.test"), dns.rdatatype.MX)
    assert mx is not None and mx[0].exchange == name("mx.example.test")
    assert name("slow.example.test") in zone.timeouts
    assert zone.has_name(name("slow.example.test"))
    assert zone.soa()[0].mname == name("ns.example.test")


def test_malformed_zone_names_file_and_line() -> None:
    with pytest.raises(MxflowError, match=r"bad\.zone:[34]: .*integer"):
        parse_zone("$ORIGIN x.test.\n@ IN A 127.0.0.1\n@ IN MX bogus\n", filename="bad.zone")


def test_missing_origin_says_how_to_fix() -> None:
    with pytest.raises(ZoneError, match=r"\$ORIGIN"):
        parse_zone("www IN A 127.0.0.1\n", filename="f.zone")


def test_bad_record_in_code_is_a_zone_error() -> None:
    with pytest.raises(ZoneError, match="bad A record"):
        Zone.from_records("x.test", [("@", "A", "not-an-ip")])
    with pytest.raises(ZoneError, match="not inside the zone"):
        Zone.from_records("x.test", [("other.test.", "A", "127.0.0.1")])


def test_load_zone_file(tmp_path: Path) -> None:
    path = tmp_path / "contoso.zone"
    path.write_text(ZONE)
    assert load_zone_file(path).origin == name("contoso.test")
    with pytest.raises(ZoneError, match=r"missing\.zone: cannot read"):
        load_zone_file(tmp_path / "missing.zone")
