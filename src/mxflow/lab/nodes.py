"""The lab's node configurations: gateway (scenario 1), archiver (2) and host (all).

Each is the TOML table an administrator would write, as a dict, so the lab runs the same
parser and composition root as `mxflow serve`. What differs per scenario is only what the
reference says should differ: which third party is in the MX, the host's connector from
it (trusting the gateway's verdict in 1; nothing in 2; enhanced filtering in 2-ef) and
where the host's outbound mail goes (the Internet in 1, the archiver in 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mxflow.config import NodeConfig, parse_config
from mxflow.lab.world import BLOCKLIST_ZONE, CONTOSO_MAILBOXES, CONTOSO_USERS_IP, World

# The loopback ranges are the lab's Internet: only the RFC 1918 ranges stay private.
LAB_PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
FAST_DELIVERY = {"retry_intervals": ["1s"], "lifetime": "20s", "connect_timeout": "5s"}


def filter_table() -> dict[str, Any]:
    """The filter the gateway and the host run: reputation, authentication and content."""
    return {
        "checks": ["dnsbl", "sender_auth", "headers", "bayes", "attachments"],
        "dnsbl_zones": {BLOCKLIST_ZONE: 6.0},
        "check_timeout": 5.0,
    }


def _base(
    name: str,
    hostname: str,
    role: str,
    ip: str,
    *,
    port: int,
    dns: str,
    root: Path,
    store_url: str | None = None,
) -> dict[str, Any]:
    return {
        "node": {"name": name, "hostname": hostname, "role": role},
        "listeners": [{"address": ip, "port": port, "tls": "none"}],
        "dns": {"resolver": dns},
        "delivery": {"source_address": ip, **FAST_DELIVERY},
        # one trace for every node of the lab: a message is one row across its hops
        "store": {"url": store_url or str(root / "trace.sqlite")},
    }


def gateway_table(
    world: World,
    root: Path,
    port: int,
    dns: str,
    *,
    node: tuple[str, str, str] | None = None,
    store_url: str | None = None,
) -> dict[str, Any]:
    """The gateway's TOML as a dict; `node` = (name, hostname, address) of one node of
    several (`--nodes 2`), which share everything else of it."""
    topo = world.topology
    party = topo.third_party(1)
    host_ip = topo.host.inbound_ips[0]
    name, hostname, ip = node or ("gateway", party.mx[0], party.ips[0])
    data = _base(name, hostname, "gateway", ip, port=port, dns=dns, root=root, store_url=store_url)
    data |= {
        "accepted_domains": [{"domain": topo.domain, "type": "internal_relay"}],
        "routes": [
            {"domains": [topo.domain], "smart_hosts": [f"{host_ip}:{port}"], "tls": "none"},
            {"domains": ["*"], "mx": True, "port": port, "tls": "none"},
        ],
        "filter": filter_table(),
        # one authserv-id for the service, whichever node checked the message
        "auth": {"authserv_id": party.mx[0]},
    }
    return data


def gateway_config(world: World, root: Path, port: int, dns: str) -> NodeConfig:
    data = gateway_table(world, root, port, dns)
    return parse_config(data, "<lab gateway>", data_dir=root / "gateway")


def archiver_config(world: World, root: Path, port: int, dns: str) -> NodeConfig:
    topo = world.topology
    party = topo.third_party(2)
    host_ip = topo.host.inbound_ips[0]
    data = _base("archiver", party.mx[0], "archiver", party.ips[0], port=port, dns=dns, root=root)
    data |= {
        "accepted_domains": [{"domain": topo.domain, "type": "internal_relay"}],
        "inbound_connectors": [
            {"name": "from-host", "from": list(topo.host.outbound_ips), "relay": True}
        ],
        "routes": [
            {"domains": [topo.domain], "smart_hosts": [f"{host_ip}:{port}"], "tls": "none"},
            {"domains": ["*"], "mx": True, "port": port, "tls": "none"},
        ],
        "archive": {"retention": "30d"},
    }
    return parse_config(data, "<lab archiver>", data_dir=root / "archiver")


def _third_party_connector(world: World, scenario: str) -> dict[str, Any]:
    party = world.topology.third_party(1 if scenario == "1" else 2)
    name = "from-gateway" if scenario == "1" else "from-archiver"
    connector: dict[str, Any] = {"name": name, "from": [f"{ip}/32" for ip in party.ips]}
    if scenario == "1":
        connector["scl_bypass"] = True  # the gateway filtered: its verdict decides (rule below)
    if scenario == "2-ef":
        connector["skip_last_hop"] = True
    return connector


def host_config(
    world: World,
    root: Path,
    port: int,
    dns: str,
    *,
    scenario: str,
    outbound_ip: str,
    store_url: str | None = None,
) -> NodeConfig:
    topo = world.topology
    key_file = root / "host-dkim.key"
    from mxflow.lab.world import HOST_DKIM_SEED

    key_file.write_text(HOST_DKIM_SEED + "\n")
    outbound: dict[str, Any] = {"domains": ["*"], "mx": True, "port": port, "tls": "none"}
    if scenario != "1":
        archiver_ip = topo.third_party(2).ips[0]
        outbound = {"domains": ["*"], "smart_hosts": [f"{archiver_ip}:{port}"], "tls": "none"}
    ip = topo.host.inbound_ips[0]
    data = _base("host", topo.host.inbound, "host", ip, port=port, dns=dns, root=root)
    data["store"]["url"] = store_url or data["store"]["url"]
    data["delivery"]["source_address"] = outbound_ip
    data |= {
        "host": {"lock_down": True},
        "enhanced_filtering": {"private_ranges": LAB_PRIVATE_RANGES},
        "accepted_domains": [{"domain": topo.domain}],
        "mailboxes": [{"address": f"{box}@{topo.domain}"} for box in CONTOSO_MAILBOXES],
        "inbound_connectors": [
            _third_party_connector(world, scenario),
            {
                "name": "contoso-users",
                "from": [f"{CONTOSO_USERS_IP}/32"],
                "relay": True,
                "scl_bypass": True,
            },
        ],
        "routes": [{"domains": [topo.domain], "maildir": "maildir"}, outbound],
        "filter": filter_table(),
        "auth": {
            "authserv_id": topo.host.inbound,
            "dkim_sign": {topo.domain: {"selector": "selector1", "key_file": str(key_file)}},
        },
    }
    if scenario == "1":
        data["mail_flow_rules"] = [
            {
                "name": "gateway-spam-flag",
                "priority": 10,
                "conditions": {"connector": ["from-gateway"], "header": "X-Spam-Flag",
                               "matches": "YES"},
                "actions": {"set_scl": 6},
            }
        ]  # fmt: skip
    return parse_config(data, "<lab host>", data_dir=root / "host")
