"""The `[auth]` section of a node's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxflow.auth.keys import generate_key
from mxflow.auth.policy import parse_auth_section
from mxflow.errors import ConfigError
from mxflow.mail import Action


@pytest.fixture
def config(tmp_path: Path) -> Path:
    rsa, _ = generate_key("rsa", 1024)
    ed, _ = generate_key("ed25519")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "arc.pem").write_bytes(rsa)
    (tmp_path / "keys" / "ed.pem").write_bytes(ed)
    return tmp_path / "gateway.toml"


def test_full_section(config: Path) -> None:
    policy = parse_auth_section(
        {
            "authserv_id": "mx.gateway.example",
            "trusted_arc_sealers": ["Gateway.Example."],
            "dmarc_reject": "quarantine",
            "dmarc_quarantine": "junk",
            "arc_seal": {
                "domain": "gateway.example",
                "selector": "arc",
                "key_file": "keys/arc.pem",
            },
            "dkim_sign": {"Contoso.com": {"selector": "s1", "key_file": "keys/ed.pem"}},
        },
        str(config),
    )
    assert policy.authserv_id == "mx.gateway.example"
    assert policy.trusted_arc_sealers == ("gateway.example",)
    assert (policy.dmarc_reject, policy.dmarc_quarantine) == (Action.QUARANTINE, Action.JUNK)
    assert policy.arc_seal is not None and policy.arc_seal.key.key_type == "rsa"
    signer = policy.signing_for("contoso.com")
    assert signer is not None and signer.key.algorithm == "ed25519-sha256"


def test_defaults(config: Path) -> None:
    policy = parse_auth_section({"authserv_id": "mx.host.example"}, str(config))
    assert (policy.dmarc_reject, policy.dmarc_quarantine) == (Action.REJECT, Action.QUARANTINE)
    assert policy.arc_seal is None and policy.trusted_arc_sealers == ()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({}, "auth.authserv_id"),
        ({"authserv_id": "a b"}, "auth.authserv_id"),
        ({"authserv_id": "mx", "colour": "red"}, "auth.colour"),
        ({"authserv_id": "mx", "trusted_arc_sealers": "gw.example"}, "auth.trusted_arc_sealers"),
        ({"authserv_id": "mx", "trusted_arc_sealers": [3]}, "auth.trusted_arc_sealers[0]"),
        ({"authserv_id": "mx", "dmarc_reject": "bounce"}, "auth.dmarc_reject"),
        ({"authserv_id": "mx", "dmarc_quarantine": "reject"}, "auth.dmarc_quarantine"),
        ({"authserv_id": "mx", "min_key_bits": 100}, "auth.min_key_bits"),
        (
            {"authserv_id": "mx", "arc_seal": {"domain": "g.example", "selector": "a"}},
            "auth.arc_seal.key_file",
        ),
        (
            {
                "authserv_id": "mx",
                "arc_seal": {"domain": "g.example", "selector": "a", "key_file": "nope.pem"},
            },
            "auth.arc_seal.key_file",
        ),
        (
            {
                "authserv_id": "mx",
                "arc_seal": {"domain": "g.example", "selector": "a", "key_file": "keys/ed.pem"},
            },
            "auth.arc_seal.key_file",
        ),
        (
            {"authserv_id": "mx", "dkim_sign": {"c.example": {"selector": "s", "key": "x"}}},
            "auth.dkim_sign.c.example.key",
        ),
    ],
)
def test_bad_values_name_the_key(config: Path, table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_auth_section(table, str(config))
    assert caught.value.key == key
    assert str(config) in str(caught.value)
