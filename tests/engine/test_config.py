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
        ('[server]\nevent_loop = "tokio"\n', "server.event_loop", "one of 'uvloop'"),
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


# --------------------------------------------------------------------------- issue 10


def test_every_error_is_reported_with_file_and_key(tmp_path: Path) -> None:
    from mxflow.errors import ConfigErrors

    path = tmp_path / "node.toml"
    path.write_text(
        MINIMAL
        + "[limits]\nmax_recipents = 5\ntimeout = 0\n"
        + '[delivery]\nretry_intervals = ["0s"]\nconnect_timeout = -1\n'
        + '[[accepted_domains]]\ndomain = "contoso..com"\n'
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path, data_dir=tmp_path)
    keys = sorted(e.key for e in info.value.errors)
    assert keys == [
        "accepted_domains[0].domain",
        "delivery.connect_timeout",
        "delivery.retry_intervals[0]",
        "limits.max_recipents",
        "limits.timeout",
    ]
    result = check(str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 5, result.stderr
    assert all(line.startswith(f"mxflow: {path}: ") for line in lines)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ("[limits]\ntimeout = 0\n", "limits.timeout", "greater than 0"),
        ('[limits]\ntimeout = "0s"\n', "limits.timeout", "greater than 0"),
        ("[limits]\ntimeout = -5\n", "limits.timeout", "greater than 0"),
        ("[limits]\ntimeout = nan\n", "limits.timeout", "finite"),
        ("[limits]\ntimeout = inf\n", "limits.timeout", "finite"),
        ("[delivery]\ncommand_timeout = -inf\n", "delivery.command_timeout", "finite"),
        ("[delivery]\nconnect_timeout = 0.0\n", "delivery.connect_timeout", "greater than 0"),
        ("[delivery]\nlifetime = 0\n", "delivery.lifetime", "greater than 0"),
        ('[delivery]\nretry_intervals = ["0s"]\n', "delivery.retry_intervals[0]", "at least"),
        (
            '[delivery]\nretry_intervals = ["1m", 0.01]\n',
            "delivery.retry_intervals[1]",
            "at least 0.25s",
        ),
        ('[limits]\nmax_message_size = "0M"\n', "limits.max_message_size", "positive"),
        (
            '[[accepted_domains]]\ndomain = "contoso..com"\n',
            "accepted_domains[0].domain",
            "domain name",
        ),
        (
            '[[routes]]\ndomains = ["ok.test", "bad..test"]\nsmart_hosts = ["127.0.0.1"]\n',
            "routes[0].domains[1]",
            "domain name",
        ),
        ('[node]\nname = "n"\nhostname = "a..b"\n', "node.hostname", "domain name"),
        (
            '[[routes]]\ndomains = ["x.test"]\nsmart_hosts = ["h:\u00b2"]\n',
            "routes[0].smart_hosts[0]",
            "HOST[:PORT]",
        ),
        ('[node]\nname = "n"\nrole = "mailbox"\n', "node.role", "one of"),
    ],
)
def test_values_that_would_misbehave_are_refused(
    tmp_path: Path, extra: str, key: str, expected: str
) -> None:
    path = tmp_path / "node.toml"
    text = MINIMAL + extra
    if extra.startswith("[node]"):
        text = extra + MINIMAL.split('name = "n1"\n', 1)[1]
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, data_dir=tmp_path)
    assert info.value.key == key, str(info.value)
    assert expected in info.value.expected
    assert check(str(path)).returncode == 2


def test_roles_follow_the_implemented_set(tmp_path: Path) -> None:
    from mxflow.config import IMPLEMENTED_ROLES, ROLES

    assert set(ROLES) >= IMPLEMENTED_ROLES
    assert {"gateway", "sink", "host", "archiver"} <= IMPLEMENTED_ROLES
    for role in ROLES:
        path = tmp_path / f"{role}.toml"
        path.write_text(f'[node]\nname = "n"\nrole = "{role}"\n' + MINIMAL.split("\n\n", 1)[1])
        result = check(str(path))
        assert (result.returncode == 0) == (role in IMPLEMENTED_ROLES), result.stderr


def test_sane_values_still_pass(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        MINIMAL
        + '[delivery]\nretry_intervals = ["1m", 0.3]\nconnect_timeout = 0.5\n'
        + '[[accepted_domains]]\ndomain = "Contoso.com."\n'
        + '[[routes]]\ndomains = ["*.contoso.com", "*"]\nsmart_hosts = ["127.0.0.1"]\n'
    )
    config = load_config(path, data_dir=tmp_path)
    assert config.delivery.retry_intervals == (60.0, 0.3)
    assert config.accepted_domains[0].domain == "contoso.com"
    assert config.routes[0].domains == ("*.contoso.com", "*")


def test_warnings_for_an_open_relay_and_a_filter_without_malware_scanner(
    tmp_path: Path,
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        MINIMAL
        + '[[inbound_connectors]]\nname = "anyone"\nfrom = ["0.0.0.0/0", "::/0"]\nrelay = true\n'
        + "[filter]\n"
    )
    result = check(str(path))
    assert result.returncode == 0, result.stderr
    assert "inbound_connectors[0].from: 0.0.0.0/0, ::/0" in result.stderr
    assert "open relay" in result.stderr
    assert "filter.clamd: not set" in result.stderr
    # Not relaying, or with a scanner: no warning.
    path.write_text(
        MINIMAL
        + '[[inbound_connectors]]\nname = "anyone"\nfrom = ["0.0.0.0/0"]\n'
        + '[filter]\nclamd = "127.0.0.1:3310"\n'
    )
    result = check(str(path))
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    result = check(str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "UTF-8" in result.stderr and "0xe9" in result.stderr


def test_every_exception_class_derives_from_mxflow_error() -> None:
    """One root for mxflow's exceptions."""
    import importlib
    import inspect
    import pkgutil

    import mxflow
    from mxflow.errors import MxflowError

    strays = []
    for info in pkgutil.walk_packages(mxflow.__path__, "mxflow."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != info.name or not issubclass(cls, BaseException):
                continue
            if not issubclass(cls, MxflowError):
                strays.append(f"{info.name}.{name}")
    assert strays == []
