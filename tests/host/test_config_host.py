"""The host's keys in the node TOML: enhanced filtering per connector, directory entries."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from mxflow.config import NodeConfig
from mxflow.errors import ConfigError
from tests.engine.helpers import node_config


def host(tmp_path: Path, connector: dict[str, Any], **extra: Any) -> NodeConfig:
    base = {"name": "partner", "from": ["203.0.113.10"]}
    domains = [{"domain": "contoso.com"}]
    return node_config(
        "host", tmp_path, connectors=[base | connector], domains=domains, extra=extra
    )


def test_enhanced_filtering_keys_by_connector(tmp_path: Path) -> None:
    cfg = host(
        tmp_path,
        {
            "skip_ips": ["203.0.113.10", "198.51.100.1-198.51.100.6", "2001:db8::/32"],
            "ef_users": ["Bob@Contoso.com"],
            "ef_test_mode": True,
        },
    )
    ef = cfg.host.ef_for("partner")
    assert ef is not None and ef.test_mode and ef.users == {"bob@contoso.com"}
    ip = ipaddress.ip_address
    assert any(ip("198.51.100.6") in n for n in ef.skip_ips)
    assert not any(ip("198.51.100.7") in n for n in ef.skip_ips)
    assert cfg.host.ef_for(None) is None and cfg.host.ef_for("other") is None
    # the connector itself is parsed as before
    assert cfg.inbound_connectors[0].matches("203.0.113.10", ())


def test_the_callers_dict_is_not_changed(tmp_path: Path) -> None:
    connector = {"name": "partner", "from": ["203.0.113.10"], "skip_last_hop": True}
    node_config("host", tmp_path, connectors=[connector])
    assert connector["skip_last_hop"] is True


@pytest.mark.parametrize(
    ("connector", "extra", "fragment"),
    [
        ({"skip_ips": ["192.168.1.1"]}, {}, "private"),
        ({"skip_ips": ["127.10.10.1"]}, {}, "private"),
        ({"skip_ips": ["nonsense"]}, {}, "an IP, a CIDR block or a range"),
        ({"skip_ips": ["1.2.3.4-::1"]}, {}, "range"),
        ({"skip_last_hop": True, "scl_bypass": True}, {}, "scl_bypass"),
        ({"skip_last_hop": True, "skip_ips": ["203.0.113.1"]}, {}, "EFSkipLastIP is false"),
        ({"skip_last_hop": True, "ef_users": ["not-an-address"]}, {}, "an address"),
        ({"ef_test_mode": True}, {}, "skip_ips"),
        ({"skip_lasthop": True}, {}, "no such key"),
        ({}, {"enhanced_filtering": {"private_ranges": ["x"]}}, "private_ranges"),
        (
            {},
            {"mailboxes": [{"address": "bob@contoso.com"}, {"address": "BOB@contoso.com"}]},
            "declared once",
        ),
        ({}, {"groups": [{"address": "g@contoso.com", "members": []}]}, "non-empty"),
        ({}, {"host": {"lock_down": "yes"}}, "true or false"),
        ({}, {"mailboxes": [{"address": "bob@contoso.com", "name": "B\r\nX: y"}]}, "one line"),
        (
            {},
            {
                "mail_flow_rules": [
                    {"conditions": {"connector": ["typo"]}, "actions": {"set_scl": 6}}
                ]
            },
            "an inbound connector name",
        ),
        ({}, {"mailboxes": [{"address": "bob@fabrikam.test"}]}, "accepted_domains"),
    ],
)
def test_bad_host_keys(
    tmp_path: Path, connector: dict[str, Any], extra: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        host(tmp_path, connector, **extra)
    assert fragment in str(err.value)


def test_lab_private_ranges_let_loopback_be_listed(tmp_path: Path) -> None:
    cfg = host(
        tmp_path,
        {"skip_ips": ["127.10.10.1"]},
        enhanced_filtering={"private_ranges": ["10.0.0.0/8"]},
    )
    assert cfg.host.private_ranges == (ipaddress.ip_network("10.0.0.0/8"),)
    assert cfg.host.ef_for("partner") is not None


def test_scl_bypass_alone_is_a_warning(tmp_path: Path) -> None:
    cfg = host(tmp_path, {"scl_bypass": True})
    assert cfg.host.scl_bypass == {"partner"}
    assert any("scl_bypass" in w for w in cfg.host.warnings)
