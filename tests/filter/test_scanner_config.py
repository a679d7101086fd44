"""[filter.rspamd] and [filter.spamd]: off when absent, typed, wired into the node's filter,
and every bad value refused by `mxflow config check` naming file, key and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mxflow.checks.node import node_pipeline
from mxflow.checks.rspamd import RspamdCheck
from mxflow.checks.spamd import SpamdCheck
from mxflow.config import load_config
from mxflow.config.filter import (
    RSPAMD_DEFAULTS,
    SPAMD_DEFAULTS,
    ScannerSettings,
    parse_filter_section,
    rspamd_endpoint,
)
from mxflow.errors import ConfigError

NODE = """
[node]
name = "gw"
role = "gateway"

[[listeners]]
address = "127.0.0.1"
port = 2525
tls = "none"

[filter]
clamd = "127.0.0.1:3310"
"""


def test_absent_tables_leave_the_scanners_off() -> None:
    policy = parse_filter_section({}, "n.toml")
    assert policy.rspamd is None and policy.spamd is None


def test_empty_tables_turn_them_on_with_the_defaults() -> None:
    policy = parse_filter_section({"rspamd": {}, "spamd": {}}, "n.toml")
    assert policy.rspamd == RSPAMD_DEFAULTS
    assert policy.rspamd.address == "http://127.0.0.1:11333"
    assert policy.spamd == SPAMD_DEFAULTS
    assert policy.spamd.address == "127.0.0.1:783"


def test_full_tables_are_typed() -> None:
    policy = parse_filter_section(
        {
            "rspamd": {
                "url": "http://[::1]:11333/scan",
                "timeout": 2,
                "weight": 0.5,
                "max_size": "10M",
                "on_failure": "tempfail",
            },
            "spamd": {"address": "unix:/run/spamd.sock", "weight": 0, "max_size": 65536},
        },
        "n.toml",
    )
    assert policy.rspamd == ScannerSettings(
        "http://[::1]:11333/scan", 2.0, 10 * 1024**2, 0.5, "tempfail"
    )
    assert policy.spamd == ScannerSettings("unix:/run/spamd.sock", 10.0, 65536, 0.0, "continue")


def test_rspamd_urls() -> None:
    address, host, prefix = rspamd_endpoint("http://[::1]:11333/scan/")
    assert (address.host_port(), host, prefix) == (("::1", 11333), "[::1]:11333", "/scan")
    address, host, prefix = rspamd_endpoint("http://rspamd.internal")
    assert (address.host_port(), host, prefix) == (("rspamd.internal", 80), "rspamd.internal", "")
    address, host, prefix = rspamd_endpoint("unix:/run/rspamd/normal.sock")
    assert (address.unix_path, host, prefix) == ("/run/rspamd/normal.sock", "localhost", "")


@pytest.mark.parametrize(
    ("table", "key", "expected"),
    [
        ({"rspamd": "http://127.0.0.1:11333"}, "filter.rspamd", "a table"),
        ({"rspamd": {"url": "https://127.0.0.1:11333"}}, "filter.rspamd.url", "http://HOST:PORT"),
        ({"rspamd": {"url": "127.0.0.1:11333"}}, "filter.rspamd.url", "http://HOST:PORT"),
        ({"rspamd": {"url": "http://h:99999"}}, "filter.rspamd.url", "http://HOST:PORT"),
        ({"rspamd": {"url": "http://u:p@h:1"}}, "filter.rspamd.url", "http://HOST:PORT"),
        ({"rspamd": {"url": 11333}}, "filter.rspamd.url", "http://HOST:PORT"),
        ({"rspamd": {"address": "127.0.0.1:11333"}}, "filter.rspamd.address", "url, timeout"),
        ({"rspamd": {"timeout": 0}}, "filter.rspamd.timeout", "> 0 and <= 120"),
        ({"rspamd": {"timeout": 600}}, "filter.rspamd.timeout", "> 0 and <= 120"),
        ({"rspamd": {"timeout": "5s"}}, "filter.rspamd.timeout", "a number"),
        ({"rspamd": {"weight": -1}}, "filter.rspamd.weight", ">= 0 and <= 10"),
        ({"rspamd": {"weight": float("nan")}}, "filter.rspamd.weight", ">= 0"),
        ({"rspamd": {"weight": True}}, "filter.rspamd.weight", "a number"),
        ({"rspamd": {"max_size": 0}}, "filter.rspamd.max_size", "positive size"),
        ({"rspamd": {"max_size": "big"}}, "filter.rspamd.max_size", '"20M"'),
        ({"rspamd": {"on_failure": "reject"}}, "filter.rspamd.on_failure", '"tempfail"'),
        ({"spamd": {"address": "spamd-host"}}, "filter.spamd.address", "HOST:PORT"),
        ({"spamd": {"address": "h:0"}}, "filter.spamd.address", "HOST:PORT"),
        ({"spamd": {"url": "http://h:783"}}, "filter.spamd.url", "address, timeout"),
        ({"spamd": []}, "filter.spamd", "a table"),
    ],
)
def test_bad_values_name_file_key_and_fix(
    table: dict[str, object], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_filter_section(table, "gw.toml")
    assert (info.value.file, info.value.key) == ("gw.toml", key)
    assert expected in info.value.expected, info.value.expected


def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxflow", "config", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_config_check_refuses_a_bad_value_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(NODE + '\n[filter.rspamd]\nurl = "127.0.0.1:11333"\n')
    result = config_check(path)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert f"{path}: filter.rspamd.url: found '127.0.0.1:11333'; expected" in result.stderr
    assert '"http://HOST:PORT"' in result.stderr


def test_config_check_warns_of_a_scanner_that_checks_leaves_out(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        NODE.replace("[filter]\n", '[filter]\nchecks = ["headers", "spamd"]\n')
        + "\n[filter.rspamd]\n[filter.spamd]\n"
    )
    result = config_check(path)
    assert result.returncode == 0, result.stderr
    assert 'filter.rspamd: configured, but filter.checks does not list "rspamd"' in result.stderr
    assert "filter.spamd" not in result.stderr


def test_the_nodes_filter_runs_the_configured_scanners(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(NODE)
    names = [c.name for c in node_pipeline(load_config(path, data_dir=tmp_path)).checks]
    assert "rspamd" not in names and "spamd" not in names
    path.write_text(NODE + "\n[filter.rspamd]\ntimeout = 2\n[filter.spamd]\nweight = 0.5\n")
    checks = node_pipeline(load_config(path, data_dir=tmp_path)).checks
    rspamd = next(c for c in checks if isinstance(c, RspamdCheck))
    spamd = next(c for c in checks if isinstance(c, SpamdCheck))
    assert rspamd.settings.timeout == 2.0 and rspamd.timeout > 2.0  # the pipeline's budget
    assert spamd.settings.weight == 0.5


def test_the_commented_example_works_uncommented(tmp_path: Path) -> None:
    """examples/gateway.toml shows the scanners commented out: uncommented, they load."""
    example = Path(__file__).resolve().parents[2] / "examples" / "gateway.toml"
    lines = example.read_text().splitlines()
    start = lines.index("# [filter]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    path = tmp_path / "gateway.toml"
    path.write_text(example.read_text() + "\n" + "\n".join(block) + "\n")
    config = load_config(path, data_dir=tmp_path)
    assert config.filter is not None
    assert config.filter.rspamd == RSPAMD_DEFAULTS
    assert config.filter.spamd == SPAMD_DEFAULTS
    names = [c.name for c in node_pipeline(config).checks]
    assert "rspamd" in names and "spamd" in names
