"""`mxflow dns ...` and `mxflow spf ...` as an admin runs them: real processes, real sockets."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from mxflow.dns.server import EmbeddedDnsServer
from mxflow.dns.zone import Zone, load_zone_file
from tests.clirun import ROOT, assert_one_line_error, mxflow
from tests.conftest import unique_loopback
from tests.dnsserver import serve_zone_text, serve_zones

TOPOLOGY = ROOT / "examples" / "topology.toml"
REFERENCE = "v=spf1 ipv4: 10.10.10.1 include:spf.protection.outlook.com -all"

ZONE = """\
$ORIGIN contoso.test.
@     MX  10 mail
@     TXT "v=spf1 ip4:131.107.21.231 -all"
mail  A   131.107.21.231
"""


async def test_spf_lint_reference_record() -> None:
    code, out, _ = await mxflow("spf", "lint", REFERENCE)
    assert code == 1
    assert "'ipv4:' is not an SPF mechanism" in out
    assert "did you mean 'ip4:10.10.10.1'?" in out
    assert "splits the term" in out
    assert "error   at 7 'ipv4:'" in out
    assert out.endswith(
        "DNS lookups 1/10 in this record, before its includes (--domain follows them)\n"
    )


async def test_spf_lint_clean_record_and_json() -> None:
    code, out, _ = await mxflow("spf", "lint", "--json", "v=spf1 ip4:131.107.21.231 -all")
    assert code == 0
    assert json.loads(out)["findings"] == []


async def test_spf_eval_and_lint_domain_against_the_embedded_server() -> None:
    async with serve_zone_text(ZONE) as server:
        endpoint = f"{server.host}:{server.port}"
        code, out, _ = await mxflow(
            "spf", "eval", "--ip", "131.107.21.231", "--sender", "a@contoso.test",
            "--resolver", endpoint, "--headers",
        )  # fmt: skip
        assert code == 0
        assert out.split()[0] == "pass"
        assert "Received-SPF: pass " in out and "spf=pass" in out
        code, out, _ = await mxflow(
            "spf", "eval", "--ip", "192.0.2.9", "--sender", "a@contoso.test", "--resolver", endpoint
        )
        assert code == 1 and out.split()[0] == "fail"
        code, out, _ = await mxflow(
            "spf", "eval", "--ip", "131.107.21.231", "--sender", "<>", "--helo", "contoso.test",
            "--resolver", endpoint, "--headers",
        )  # fmt: skip
        assert code == 0 and out.split()[0] == "pass"  # the null sender: HELO is checked
        assert "spf=pass" in out and "smtp.helo=contoso.test" in out
        code, out, _ = await mxflow(
            "spf", "lint", "--domain", "contoso.test", "--resolver", endpoint
        )
        assert code == 0 and "0 error(s)" in out


async def test_dns_plan_prints_fragment_and_table(tmp_path: Path) -> None:
    code, out, _ = await mxflow(
        "dns", "plan", "--topology", str(TOPOLOGY), "--scenario", "1", "--zone-dir", str(tmp_path)
    )
    assert code == 0
    assert "$ORIGIN contoso.com." in out
    assert "NAME" in out and "_dmarc.contoso.com" in out
    assert (tmp_path / "contoso.com.zone").exists()
    assert load_zone_file(tmp_path / "contoso.com.zone").origin.to_text() == "contoso.com."


def load_zones(directory: Path) -> list[Zone]:
    return [load_zone_file(path) for path in sorted(directory.glob("*.zone"))]


async def test_dns_check_plan_zones_json_and_table(tmp_path: Path) -> None:
    code, _, _ = await mxflow(
        "dns", "plan", "--topology", str(TOPOLOGY), "--zone-dir", str(tmp_path)
    )
    assert code == 0
    async with serve_zones(load_zones(tmp_path)) as server:
        endpoint = f"{server.host}:{server.port}"
        code, out, _ = await mxflow("dns", "check", "contoso.com", "--resolver", endpoint, "--json")
        assert code == 0
        data = json.loads(out)
        assert data["scenario"].startswith("1: ")
        assert data["errors"] == 0
        assert data["dkim_selectors"] == ["selector1", "selector2"]
        code, out, _ = await mxflow("dns", "check", "contoso.com", "--resolver", endpoint)
        assert code == 0
        assert "scenario" in out and "warning" in out and "0 error(s)" in out


async def test_dns_check_reference_record_fails() -> None:
    zone = ZONE.replace("ip4:131.107.21.231 -all", "ipv4: 10.10.10.1 -all")
    async with serve_zone_text(zone) as server:
        code, out, _ = await mxflow(
            "dns", "check", "contoso.test", "--resolver", f"{server.host}:{server.port}"
        )
    assert code == 1
    assert "ipv4:" in out and "error" in out


async def test_dns_serve_answers_and_bad_input_is_one_line(tmp_path: Path) -> None:
    zone_file = tmp_path / "contoso.zone"
    zone_file.write_text(ZONE)
    host = unique_loopback()
    probe = EmbeddedDnsServer([], host=host)
    await probe.start()
    port = probe.port
    await probe.stop()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mxflow", "dns", "serve", "--zone", str(zone_file),
        "--listen", f"{host}:{port}", stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert f"on {host}:{port}" in line.decode()
        resolver = EmbeddedDnsServer([], host=host, port=port).resolver()
        answer = await resolver.resolve("mail.contoso.test", "A")
        assert answer[0].address == "131.107.21.231"
        tcp = await resolver.resolve("contoso.test", "MX", tcp=True)
        assert tcp[0].exchange.to_text() == "mail.contoso.test."
    finally:
        process.terminate()
        await process.wait()

    bad = tmp_path / "bad.zone"
    bad.write_text("$ORIGIN bad.test.\n@ IN MX not-a-number\n")
    code, _, err = await mxflow("dns", "serve", "--zone", str(bad), "--listen", f"{host}:0")
    assert_one_line_error(code, err, "bad.zone:2")
    code, _, err = await mxflow(
        "dns", "serve", "--zone", str(zone_file), "--zone", str(zone_file), "--listen", f"{host}:0"
    )
    assert_one_line_error(code, err, "zone contoso.test. is given more than once")


@pytest.mark.parametrize(
    "args",
    [
        ("dns", "check", "contoso.test", "--resolver", "{endpoint}"),
        ("spf", "lint", "--domain", "contoso.test", "--resolver", "{endpoint}"),
    ],
)
async def test_resolver_that_does_not_answer_is_one_line(args: tuple[str, ...]) -> None:
    async with serve_zone_text(ZONE) as server:
        server.silence("contoso.test")
        endpoint = f"{server.host}:{server.port}"
        code, _, err = await mxflow(*(a.format(endpoint=endpoint) for a in args))
    assert_one_line_error(code, err, "contoso.test", "did not answer")


async def test_bad_topology_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "topology.toml"
    path.write_text('[domain]\nname = "c.test"\n[host]\ninbound = "h.test"\n')
    code, _, err = await mxflow("dns", "plan", "--topology", str(path))
    assert_one_line_error(code, err, "host.spf_include")


async def test_bad_endpoints_and_domains_are_one_line() -> None:
    """Typos an admin makes: each one clear line, no traceback, no query sent anywhere."""
    cases = {
        ("dns", "check", "contoso.test", "--resolver", "127.0.0.1:99999"): "--resolver",
        ("spf", "eval", "--ip", "192.0.2.1", "--sender", "a@b.test", "--resolver", "x"): "IP",
        ("dns", "serve", "--zone", "examples/topology.toml", "--listen", "nohost"): "--listen",
        ("dns", "check", "conto so.com", "--resolver", "127.0.0.1:53"): "not a domain name",
        ("spf", "lint", "--domain", "a..b", "--resolver", "127.0.0.1:53"): "not a domain name",
    }
    results = await asyncio.gather(*(mxflow(*args) for args in cases))
    for (code, _, err), fragment in zip(results, cases.values(), strict=True):
        assert_one_line_error(code, err, fragment)
