"""`mxflow config check`: the example validates; every error names file, key, found, expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mxflow.config import load_config
from mxflow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gateway.toml"

MINIMAL = """
[node]
name = "n1"

[[listeners]]
address = "127.0.0.1"
port = 2525
tls = "none"
"""


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxflow", "config", "check", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_example_gateway_config_is_valid(tmp_path: Path) -> None:
    result = check(str(EXAMPLE), "--data-dir", str(tmp_path))
    assert check(str(EXAMPLE.with_name("sink.toml")), "--data-dir", str(tmp_path)).returncode == 0
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1:2525 (starttls)" in result.stdout
    assert "contoso.com -> 127.0.0.1:2526 (tls opportunistic)" in result.stdout
    config = load_config(EXAMPLE, data_dir=tmp_path)
    assert config.spool_dir == tmp_path / "spool"
    assert config.trace_db == tmp_path / "trace.sqlite"
    assert config.accepted_domain("CONTOSO.com") is not None
    assert config.accepted_domains[0].knows("anyone@contoso.com")
    assert config.delivery.lifetime == 2 * 86400


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ("[limits]\nmax_recipents = 5\n", "limits.max_recipents", "no such key"),
        (
            '[[routes]]\ndomains = ["x.test"]\nsmart_hosts = ["h:99999"]\n',
            "routes[0].smart_hosts[0]",
            "HOST[:PORT]",
        ),
        ('[[routes]]\ndomains = ["x.test"]\nmx = true\n', "dns.resolver", "IP[:PORT]"),
        ('[dns]\nresolver = "ns.example"\n', "dns.resolver", "nameserver"),
        ('[dns]\nresolvers = "127.0.0.1"\n', "dns.resolvers", "no such key"),
        (
            '[dns]\nresolver = "127.0.0.1:53"\n[delivery]\ndns = "127.0.0.2"\n',
            "delivery.dns",
            "same as dns.resolver",
        ),
        ('[[routes]]\ndomains = ["x.test"]\n', "routes[0].smart_hosts", "exactly one of"),
        (
            '[[routes]]\ndomains = ["x.test"]\nsmart_hosts = ["1.2.3.4"]\ntls = "maybe"\n',
            "routes[0].tls",
            "one of 'none'",
        ),
        (
            '[[accepted_domains]]\ndomain = "c.test"\ntype = "relay"\n',
            "accepted_domains[0].type",
            "'authoritative'",
        ),
        (
            '[[accepted_domains]]\ndomain = "c.test"\nrecipients = 5\n',
            "accepted_domains[0].recipients",
            '"any"',
        ),
        (
            '[[inbound_connectors]]\nname = "x"\nfrom = ["10.0.0.0/33"]\n',
            "inbound_connectors[0].from[0]",
            "CIDR",
        ),
        ('[[inbound_connectors]]\nname = "x"\n', "inbound_connectors[0].from", "at least one"),
        ('[limits]\nmax_message_size = "lots"\n', "limits.max_message_size", "size in bytes"),
        ('[delivery]\nlifetime = "forever"\n', "delivery.lifetime", "duration"),
        ("[server]\nworkers = true\n", "server.workers", "an integer"),
        ("[bogus]\nx = 1\n", "bogus", "no such key"),
    ],
)
def test_errors_name_file_key_found_and_expected(
    tmp_path: Path, extra: str, key: str, expected: str
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(MINIMAL + extra)
    with pytest.raises(ConfigError) as info:
        load_config(path, data_dir=tmp_path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert expected in err.expected
    assert str(path) in str(err) and key in str(err)


def test_listener_errors_and_cli_exit_status(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(MINIMAL.replace('tls = "none"', 'tls = "starttls"'))
    result = check(str(path))
    assert result.returncode == 2
    assert "listeners[0].cert" in result.stderr
    assert "Traceback" not in result.stderr
    path.write_text(MINIMAL.replace("port = 2525", 'port = "x"'))
    result = check(str(path))
    assert result.returncode == 2
    assert "listeners[0].port: found 'x'; expected an integer" in result.stderr
    path.write_text("[node\n")
    result = check(str(path))
    assert result.returncode == 2 and "valid TOML" in result.stderr


def test_recipients_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "users.txt").write_text("# staff\nbob\ncarol@c.test  # comment\n")
    path = tmp_path / "node.toml"
    path.write_text(
        MINIMAL + '[[accepted_domains]]\ndomain = "c.test"\nrecipients = { file = "users.txt" }\n'
    )
    config = load_config(path, data_dir=tmp_path)
    domain = config.accepted_domains[0]
    assert domain.knows("Bob@c.test") and domain.knows("carol@c.test")
    assert not domain.knows("dave@c.test")
