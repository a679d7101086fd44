"""`mxflow host ...` as an admin runs it: real processes, the embedded DNS server, real files."""

from __future__ import annotations

import json
from pathlib import Path

from mxflow.dns.zone import parse_zone
from mxflow.roles.build import build_node
from tests.clirun import ROOT, assert_one_line_error, mxflow
from tests.dnsserver import serve_zone_text
from tests.engine.helpers import RawSmtp, node_config
from tests.host.helpers import write_host_toml


async def test_domain_add_then_verify_through_the_embedded_dns(tmp_path: Path) -> None:
    async with serve_zone_text("$ORIGIN test.\n@ SOA ns hostmaster 1 60 60 60 60\n") as server:
        toml = write_host_toml(tmp_path, f'\n[dns]\nresolver = "{server.host}:{server.port}"\n')
        base = ("--config", str(toml), "--data-dir", str(tmp_path / "data"))
        code, out, err = await mxflow("host", "domain", "add", "fabrikam.test", *base)
        assert code == 0, err
        token = next(w for w in out.split() if w.startswith("MS=ms"))
        code, out, _ = await mxflow("host", "domain", "verify", "fabrikam.test", *base)
        assert code == 1 and "pending" in out
        server.add_zone(
            parse_zone(
                f'$ORIGIN fabrikam.test.\n@ SOA ns hostmaster 1 60 60 60 60\n@ TXT "{token}"\n'
            )
        )
        code, out, _ = await mxflow("host", "domain", "verify", "fabrikam.test", *base)
        assert code == 0 and "verified" in out
        code, out, _ = await mxflow("host", "domain", "list", "--json", *base)
    domains = {d["domain"]: d for d in json.loads(out)}
    assert domains["fabrikam.test"]["accepts_mail"] is True
    assert domains["contoso.com"]["source"] == "config"


async def test_mailbox_alias_group_commands(tmp_path: Path) -> None:
    toml = write_host_toml(tmp_path)
    base = ("--config", str(toml), "--data-dir", str(tmp_path / "data"))
    code, out, err = await mxflow(
        "host", "mailbox", "add", "carol@contoso.com", "--name", "Carol", *base
    )
    assert code == 0, err
    code, out, _ = await mxflow("host", "mailbox", "list", "--json", *base)
    assert [m["address"] for m in json.loads(out)] == [
        "alice@contoso.com",
        "bob@contoso.com",
        "carol@contoso.com",
    ]
    assert (await mxflow("host", "group", "add", "ops@contoso.com", "carol@contoso.com", *base))[
        0
    ] == 0
    code, out, _ = await mxflow(
        "host", "group", "members", "ops@contoso.com", "--add", "team@contoso.com", "--json", *base
    )
    assert json.loads(out) == ["carol@contoso.com", "team@contoso.com"]
    code, out, _ = await mxflow("host", "mailbox", "show", "ops@contoso.com", *base)
    assert code == 0
    assert "team@contoso.com expands to" in out and "relays to: partner@fabrikam.test" in out
    assert (await mxflow("host", "alias", "add", "c@contoso.com", "carol@contoso.com", *base))[
        0
    ] == 0
    code, out, _ = await mxflow("host", "mailbox", "show", "nobody@contoso.com", *base)
    assert code == 1 and "unknown" in out
    code, _, err = await mxflow("host", "mailbox", "remove", "bob@contoso.com", *base)
    assert_one_line_error(code, err, "config file")
    code, _, err = await mxflow("host", "mailbox", "add", "x@contoso.com\nRCPT", *base)
    assert_one_line_error(code, err, "not an address")
    assert (await mxflow("host", "mailbox", "remove", "carol@contoso.com", *base))[0] == 0


async def test_export_makes_the_gateway_refuse_unknown_recipients_at_rcpt(tmp_path: Path) -> None:
    toml = write_host_toml(tmp_path)
    export = tmp_path / "recipients.txt"
    code, out, err = await mxflow(
        "host", "directory", "export", str(export), "--config", str(toml),
        "--data-dir", str(tmp_path / "host"),
    )  # fmt: skip
    assert code == 0 and "4 valid recipient(s)" in out, err
    gateway = node_config(
        "gateway",
        tmp_path / "gw",
        domains=[{"domain": "contoso.com", "recipients": {"file": str(export)}}],
        routes=[{"domains": ["contoso.com"], "maildir": "mail"}],
    )
    async with build_node(gateway) as gw:
        client = await RawSmtp.open(gw.servers[0].listener.address, gw.port)
        await client.cmd("EHLO mail.fabrikam.test")
        await client.cmd("MAIL FROM:<a@fabrikam.test>")
        code, text = await client.cmd("RCPT TO:<nobody@contoso.com>")
        assert (code, text[:5]) == (550, "5.1.1")
        assert (await client.cmd("RCPT TO:<team@contoso.com>"))[0] == 250
        assert (await client.cmd("RCPT TO:<robert@contoso.com>"))[0] == 250
        await client.close()


async def test_rule_test_shows_matches_and_json(tmp_path: Path) -> None:
    example = ROOT / "examples" / "host.toml"
    msg = tmp_path / "spam.eml"
    msg.write_bytes(b"X-Spam-Flag: YES\r\nFrom: a@fabrikam.test\r\nSubject: x\r\n\r\nbody\r\n")
    base = ("--config", str(example), "--data-dir", str(tmp_path / "data"))
    code, out, err = await mxflow(
        "host", "rule", "test", str(msg), "--client-ip", "127.10.10.1", *base
    )
    assert code == 0, err
    assert "gateway-spam-flag: matched -> set SCL 6" in out and "result: SCL 6" in out
    code, out, _ = await mxflow(
        "host", "rule", "test", str(msg), "--client-ip", "127.66.6.6", "--json", *base
    )
    report = json.loads(out)
    assert report["connector"] is None and report["decision"]["scl"] is None
    assert report["rules"][0]["status"] == "no match"
    code, _, err = await mxflow("host", "rule", "test", str(tmp_path / "missing.eml"), *base)
    assert_one_line_error(code, err, "cannot read")
    code, _, err = await mxflow("host", "rule", "test", str(msg), "--connector", "nope", *base)
    assert_one_line_error(code, err, "no such connector")


async def test_config_check_on_bypass_enhanced_filtering_and_lock_down(tmp_path: Path) -> None:
    connector = '\n[[inbound_connectors]]\nname = "gw"\nfrom = ["203.0.113.10"]\n'
    cases = {
        "bypass": (connector + "scl_bypass = true\n", 0, "scl_bypass = true sets SCL -1"),
        "both": (connector + "scl_bypass = true\nskip_last_hop = true\n", 2, "scl_bypass"),
        "private": (connector + 'skip_ips = ["10.0.0.1"]\n', 2, "private"),
        "lab": (
            connector + 'skip_ips = ["127.10.10.1"]\n'
            '[enhanced_filtering]\nprivate_ranges = ["10.0.0.0/8"]\n',
            0,
            "OK",
        ),
        "lock": ("\n[host]\nlock_down = true\n", 0, "every message for the accepted domains"),
        "lock-ok": (connector + "[host]\nlock_down = true\n", 0, "OK"),
        "users-alone": (connector + 'ef_users = ["bob@contoso.com"]\n', 2, "skip_ips"),
    }
    for name, (extra, want, fragment) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        toml = write_host_toml(folder, extra)
        code, out, err = await mxflow("config", "check", str(toml), "--data-dir", str(folder))
        if want == 2:
            assert_one_line_error(code, err, fragment)
        else:
            assert code == 0 and fragment in out, (name, out, err)
