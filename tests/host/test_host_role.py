"""The host role over real sockets: lock-down, direct send, mail flow rules into Junk, the
host's own filter into Junk with its SCL, alias and group expansion, Return-Path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mxflow.config import NodeConfig, parse_config
from mxflow.delivery.mailbox import JUNK, read_maildir
from mxflow.roles.build import build_node
from tests.conftest import unique_loopback
from tests.dnsserver import serve_zone_text
from tests.engine.helpers import RawSmtp, message, node_config, stuffed, wait_for


def host_config(data_dir: Path, gateway_ip: str, **tables: Any) -> NodeConfig:
    data: dict[str, Any] = {
        "node": {"name": "host", "hostname": "mailbox.contoso.test", "role": "host"},
        "listeners": [{"address": unique_loopback(), "port": 0, "tls": "none"}],
        "host": {"lock_down": True},
        "accepted_domains": [{"domain": "contoso.com"}],
        "mailboxes": [{"address": "bob@contoso.com"}, {"address": "alice@contoso.com"}],
        "aliases": [{"address": "robert@contoso.com", "target": "bob@contoso.com"}],
        "groups": [
            {"address": "team@contoso.com", "members": ["bob@contoso.com", "alice@contoso.com"]}
        ],
        "inbound_connectors": [{"name": "from-gateway", "from": [f"{gateway_ip}/32"]}],
        "routes": [{"domains": ["contoso.com"], "maildir": "maildir"}],
        **tables,
    }
    return parse_config(data, "<host>", data_dir=data_dir)


def box(cfg: NodeConfig, rcpt: str, folder: str = "INBOX") -> list[bytes]:
    return read_maildir(cfg.data_dir / "maildir", rcpt, folder)


async def send(
    cfg_host: Any, source: str, sender: str, rcpts: list[str], raw: bytes
) -> tuple[int, str]:
    client = await RawSmtp.open(cfg_host.address, cfg_host.port, source=source)
    await client.cmd("EHLO client.example")
    result = await client.mail(sender, rcpts, stuffed(raw))
    await client.close()
    return result


async def test_lock_down_refuses_the_internet_and_takes_the_gateway(tmp_path: Path) -> None:
    gateway, attacker = unique_loopback(), unique_loopback()
    cfg = host_config(tmp_path / "host", gateway)
    spoof = message("wire the money").replace(b"From: ", b"From: finance@contoso.com\r\nX-Old: ", 1)
    async with build_node(cfg) as host:
        # direct send: MAIL FROM an accepted domain, from a client no connector matches
        code, text = await send(host, attacker, "finance@contoso.com", ["bob@contoso.com"], spoof)
        assert (code, text[:6]) == (550, "5.7.68"), text
        # lock-down: any other sender, straight to the host, is refused at RCPT
        code, text = await send(host, attacker, "x@fabrikam.test", ["bob@contoso.com"], spoof)
        assert (code, text[:6]) == (550, "5.7.51"), text
        assert "TenantInboundAttribution" in text
        # the gateway's connector: taken; unknown recipients refused
        code, text = await send(host, gateway, "x@fabrikam.test", ["nobody@contoso.com"], spoof)
        assert (code, text[:5]) == (550, "5.1.1")
        code, text = await send(host, gateway, "x@fabrikam.test", ["bob@contoso.com"], spoof)
        assert code == 250, text
        await wait_for(lambda: len(box(cfg, "bob@contoso.com")) == 1)
    (stored,) = box(cfg, "bob@contoso.com")
    assert stored.startswith(b"Return-Path: <x@fabrikam.test>\r\nDelivered-To: bob@contoso.com\r\n")


async def test_a_rule_files_what_the_gateway_junked_in_junk(tmp_path: Path) -> None:
    """The shipped example rule: from the gateway's connector with X-Spam-Flag: YES -> SCL 6.
    A forged X-MS-Exchange-Organization-SCL from outside is removed on the way in."""
    gateway = unique_loopback()
    rule = {
        "name": "gateway-spam-flag",
        "priority": 10,
        "conditions": {"connector": ["from-gateway"], "header": "X-Spam-Flag", "matches": "YES"},
        "actions": {"set_scl": 6},
    }
    cfg = host_config(tmp_path / "host", gateway, mail_flow_rules=[rule])
    junked = b"X-Spam-Flag: YES\r\nX-MS-Exchange-Organization-SCL: -1\r\n" + message("pills")
    async with build_node(cfg) as host:
        assert (await send(host, gateway, "x@fabrikam.test", ["bob@contoso.com"], junked))[0] == 250
        clean = message("lunch")
        assert (await send(host, gateway, "x@fabrikam.test", ["bob@contoso.com"], clean))[0] == 250
        await wait_for(lambda: len(box(cfg, "bob@contoso.com", JUNK)) == 1)
        await wait_for(lambda: len(box(cfg, "bob@contoso.com")) == 1)
    (spam,) = box(cfg, "bob@contoso.com", JUNK)
    assert b"X-MS-Exchange-Organization-SCL: 6\r\n" in spam
    assert b"SCL: -1" not in spam
    (ham,) = box(cfg, "bob@contoso.com")
    assert b"X-MS-Exchange-Organization-SCL" not in ham  # no filter, no rule: no SCL


async def test_the_hosts_own_filter_files_spam_in_junk_with_its_scl(tmp_path: Path) -> None:
    gateway = unique_loopback()
    policy = {"checks": ["headers"], "junk_score": 0.5, "quarantine_score": 50, "reject_score": 60}
    cfg = host_config(tmp_path / "host", gateway, filter=policy)
    no_ids = b"From: x@fabrikam.test\r\nTo: bob@contoso.com\r\nSubject: hi\r\n\r\nbody\r\n"
    async with build_node(cfg) as host:
        assert (await send(host, gateway, "x@fabrikam.test", ["bob@contoso.com"], no_ids))[0] == 250
        await wait_for(lambda: len(box(cfg, "bob@contoso.com", JUNK)) == 1)
    (spam,) = box(cfg, "bob@contoso.com", JUNK)
    scl = int(spam.split(b"X-MS-Exchange-Organization-SCL: ")[1].split(b"\r\n")[0])
    assert 5 <= scl <= 9
    assert box(cfg, "bob@contoso.com") == []


async def test_an_alias_and_a_group_expand_and_are_traced(tmp_path: Path) -> None:
    gateway = unique_loopback()
    cfg = host_config(tmp_path / "host", gateway)
    async with build_node(cfg) as host:
        raw = message("to the team")
        code, _ = await send(host, gateway, "x@fabrikam.test", ["robert@contoso.com"], raw)
        assert code == 250
        code, _ = await send(host, gateway, "x@fabrikam.test", ["team@contoso.com"], raw)
        assert code == 250
        await wait_for(lambda: len(box(cfg, "bob@contoso.com")) == 2)
        await wait_for(lambda: len(box(cfg, "alice@contoso.com")) == 1)
        host.trace.flush()
        expanded = [e for e in host.trace.all() if e.status == "Expanded"]
    assert {e.recipient for e in expanded} == {"robert@contoso.com", "team@contoso.com"}


async def _scenario_2(tmp_path: Path, *, enhanced: bool) -> tuple[list[bytes], Any]:
    """fabrikam.test (SPF -all, DMARC p=reject) -> a non-filtering relay -> the host."""
    sender, archiver_ip = unique_loopback(), unique_loopback()
    zone = (
        "$ORIGIN fabrikam.test.\n"
        f'@ IN TXT "v=spf1 ip4:{sender} -all"\n'
        '_dmarc IN TXT "v=DMARC1; p=reject"\n'
    )
    async with serve_zone_text(zone) as dns_server:
        connector: dict[str, Any] = {"name": "from-archiver", "from": [archiver_ip]}
        if enhanced:
            connector["skip_last_hop"] = True
        cfg = host_config(
            tmp_path / "host",
            archiver_ip,
            inbound_connectors=[connector],
            enhanced_filtering={"private_ranges": ["10.0.0.0/8"]},
            dns={"resolver": f"{dns_server.host}:{dns_server.port}"},
            filter={"checks": ["sender_auth"]},
        )
        async with build_node(cfg) as host:
            archiver_cfg = node_config(
                "archiver",
                tmp_path / "archiver",
                address=archiver_ip,
                domains=[{"domain": "contoso.com", "type": "internal_relay"}],
                routes=[
                    {"domains": ["contoso.com"], "tls": "none",
                     "smart_hosts": [f"{host.address}:{host.port}"]}
                ],
                delivery={"retry_intervals": [60]},
            )  # fmt: skip
            async with build_node(archiver_cfg) as archiver:
                raw = message("quarterly report")
                code, _ = await send(
                    archiver, sender, "alice@fabrikam.test", ["bob@contoso.com"], raw
                )
                assert code == 250
                await wait_for(lambda: archiver.spool.ids() == [])  # delivered or bounced
                await wait_for(lambda: not host.spool.ids())
                host.trace.flush()
                return box(cfg, "bob@contoso.com"), host.trace.all()


async def test_scenario_2_without_enhanced_filtering_fails_dmarc(tmp_path: Path) -> None:
    """The reference's warning: the host checks SPF against the relay's IP, so a legitimate
    sender with DMARC p=reject is refused."""
    inbox, events = await _scenario_2(tmp_path, enhanced=False)
    assert inbox == []
    refused = [e for e in events if e.event == "rejected"]
    assert refused and "DMARC" in refused[0].detail


async def test_scenario_2_with_enhanced_filtering_passes(tmp_path: Path) -> None:
    inbox, _ = await _scenario_2(tmp_path, enhanced=True)
    (stored,) = inbox
    assert b"X-MS-Exchange-SkipListedInternetSender: ip=[" in stored
    assert b"spf=pass" in stored and b"dmarc=pass" in stored


def test_connector_certificate_names_take_wildcards() -> None:
    from mxflow.config import InboundConnector

    connector = InboundConnector("partner", tls_cert_names=("*.contoso.com",))
    assert connector.matches("127.9.9.9", ("mail.contoso.com",))
    assert connector.matches("127.9.9.9", ("a.b.CONTOSO.com",))
    assert not connector.matches("127.9.9.9", ("contoso.com",))
    assert not connector.matches("127.9.9.9", ("evilcontoso.com",))
    assert not connector.matches("127.9.9.9", ("*.contoso.com",))  # presented, not matched
    exact = InboundConnector("gw", tls_cert_names=("gateway.fabrikam.test",))
    assert exact.matches("127.9.9.9", ("Gateway.Fabrikam.Test",))
    assert not exact.matches("127.9.9.9", ("other.fabrikam.test",))
