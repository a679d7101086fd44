"""The [filter] section: typed values, and errors that name file, key and fix."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mxflow.checks.pipeline import parse_filter_section
from mxflow.config.filter import FilterPolicy
from mxflow.errors import ConfigError
from mxflow.mail import Action


def test_full_section_is_typed() -> None:
    policy = parse_filter_section(
        {
            "checks": ["bayes", "headers", "dnsbl"],
            "dnsbl_zones": {"bl.lab.test.": 6},
            "uribl_zones": {"uribl.lab.test": 4.5},
            "junk_score": 4,
            "quarantine_score": 9.5,
            "reject_score": 20,
            "high_spam_action": "junk",
            "malware_action": "reject",
            "allow_senders": ["Boss@Contoso.com", "@partner.example"],
            "block_ips": ["127.66.0.0/16"],
            "scores": {"BAYES_SPAM": 3.0},
            "quarantine_dir": "q",
            "retention_spam_days": 20,
            "clamd": "unix:/run/clamd.sock",
            "return_codes": {"Zen.Lab.Test.": {"127.0.0.4": 6, "127.0.0.10": 0.5}},
        },
        "node.toml",
    )
    assert policy.checks == ("bayes", "headers", "dnsbl")
    assert policy.dnsbl_zones == {"bl.lab.test": 6.0}
    assert policy.junk_score == 4.0 and policy.reject_score == 20.0
    assert policy.high_spam_action is Action.JUNK
    assert policy.malware_action is Action.REJECT
    assert policy.allow_senders == ("boss@contoso.com", "@partner.example")
    assert policy.block_ips == (ipaddress.ip_network("127.66.0.0/16"),)
    assert policy.score("BAYES_SPAM", 9.0) == 3.0
    assert policy.score("OTHER", 9.0) == 9.0
    assert policy.quarantine_dir == Path("q")
    assert policy.retention_spam_days == 20
    assert policy.return_codes == {"zen.lab.test": {"127.0.0.4": 6.0, "127.0.0.10": 0.5}}


def test_empty_section_is_the_default_policy() -> None:
    assert parse_filter_section({}, "n.toml") == FilterPolicy()


@pytest.mark.parametrize(
    ("table", "key", "expected"),
    [
        ({"colour": "red"}, "filter.colour", "one of:"),
        ({"checks": ["bayes", "magic"]}, "filter.checks", "check names"),
        ({"junk_score": "high"}, "filter.junk_score", "a number"),
        ({"junk_score": True}, "filter.junk_score", "a number"),
        ({"malware_action": "deliver"}, "filter.malware_action", "quarantine, reject"),
        ({"spam_action": "bounce"}, "filter.spam_action", "one of"),
        ({"block_ips": ["not-an-ip"]}, "filter.block_ips", "CIDR"),
        ({"dnsbl_zones": {"bl.test": "yes"}}, "filter.dnsbl_zones.bl.test", "a number"),
        ({"dnsbl_zones": ["bl.test"]}, "filter.dnsbl_zones", "a table"),
        ({"retention_spam_days": 0}, "filter.retention_spam_days", "a positive integer"),
        ({"check_timeout": 0}, "filter.check_timeout", "> 0"),
        ({"archive_max_ratio": 0.5}, "filter.archive_max_ratio", ">= 1"),
        ({"junk_score": 12, "quarantine_score": 10}, "filter.junk_score", "<="),
        ({"clamd": "clamd-host"}, "filter.clamd", "HOST:PORT"),
        ({"clamd": "host:99999"}, "filter.clamd", "HOST:PORT"),
        ({"clamd": 3310}, "filter.clamd", "HOST:PORT"),
        (
            {"return_codes": {"z.test": {"10.0.0.1": 1}}},
            "filter.return_codes.z.test.10.0.0.1",
            "127",
        ),
        ({"return_codes": {"z.test": {"bad": 1}}}, "filter.return_codes.z.test.bad", "127"),
        ({"return_codes": {"z.test": 5}}, "filter.return_codes.z.test", "127.0.0.N"),
    ],
)
def test_bad_values_name_file_key_and_fix(
    table: dict[str, object], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_filter_section(table, "gw.toml")
    assert info.value.file == "gw.toml"
    assert info.value.key == key
    assert expected in info.value.expected
    assert str(info.value).startswith("gw.toml: filter.")
