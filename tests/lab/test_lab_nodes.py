"""`mxflow lab run --nodes 2`: two gateway nodes behind two MX records on one PostgreSQL,
one killed with SIGKILL mid-run; nothing acknowledged is lost.

The end-to-end test runs the real command (a private PostgreSQL cluster, two `mxflow
serve` processes, the senders walking the MX list) on a small corpus. The others check
the pieces it is made of: the node configurations written as TOML, the DNS the senders
see, and the exit status without PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import dns.name
import dns.rdatatype
import pytest

from mxflow import cli
from mxflow.config import load_config
from mxflow.lab import nodes, tomlfile
from mxflow.lab.cluster import cluster_topology, cluster_zones
from mxflow.lab.postgres import server_binaries
from mxflow.lab.run import default_topology
from mxflow.lab.world import World
from mxflow.records.topology import load_topology
from tests.conftest import require
from tests.lab.test_lab import small_corpus


def test_two_nodes_one_killed_lose_nothing(tmp_path: Path) -> None:
    require(server_binaries() is not None, "PostgreSQL's server (Debian's postgresql)")
    corpus = small_corpus(tmp_path / "corpus")
    out = tmp_path / "lab.json"
    result = subprocess.run(
        [sys.executable, "-m", "mxflow", "lab", "run", "--nodes", "2", "--corpus", str(corpus),
         "--json", str(out), "--dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert all(claim["ok"] for claim in data["story"]), data["story"]
    c = data["cluster"]
    assert c["database"].startswith("postgresql://127.0.0.1:")
    assert c["mx"][0].startswith("10 mx1.") and c["mx"][1].startswith("20 mx2.")
    m = c["messages"]
    assert m["sent"] == 30 and m["acknowledged"] + m["rejected"] == 30
    assert m["lost"] == m["never_acknowledged"] == 0
    assert m["delivered"] == m["acknowledged"]  # each in a mailbox (or quarantine)
    assert c["duplicates"]["unexplained"] == []
    first, second = c["nodes"]
    assert first["name"] == "gateway-1" and second["name"] == "gateway-2"
    assert first["took"] > 0 and second["took"] > 0 and first["took_after_restart"] > 0
    kill = c["kill"]
    assert kill["node"] == "gateway-1" and kill["spooled"] >= 1
    assert kill["spooled_in_a_mailbox"] == kill["spooled"]
    assert first["recovered_at_start"] == [kill["spooled"]]  # what its restart found
    assert c["fallback"]["from_the_killed_node"] > 0
    assert c["fallback"]["to"].get("mx2.gateway.mxflow.test", 0) > 0
    assert [(d["status"], d["node_status"]) for d in c["drain"]] == [(0, 0), (0, 0)]
    trace = c["trace"]
    assert {"gateway-1", "gateway-2", "host"} <= set(trace["events"])
    assert trace["untraced"] == 0 and trace["end_to_end"] >= m["delivered"] - kill["spooled"]
    assert "kill -9 gateway-1" in result.stdout and "FAIL" not in result.stdout
    # each node kept its own data dir, spool and log; both share one config but for names
    run = tmp_path / "run" / "nodes-2"
    for name in ("gateway-1", "gateway-2"):
        assert (run / name / "spool" / "queue").is_dir() and (run / f"{name}.log").exists()


def test_without_postgresql_it_exits_3_naming_the_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("mxflow.lab.postgres.server_binaries", lambda: None)
    assert cli.main(["lab", "run", "--nodes", "2", "--dir", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "apt-get install postgresql" in err and "Traceback" not in err


def test_nodes_2_refuses_other_scenarios_and_keep(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["lab", "run", "--nodes", "2", "--scenario", "2"]) == 2
    assert cli.main(["lab", "run", "--equal-mx"]) == 2
    assert "--equal-mx needs --nodes 2" in capsys.readouterr().err


def test_each_node_config_is_toml_that_differs_only_in_name_and_addresses(
    tmp_path: Path,
) -> None:
    world = World(cluster_topology(load_topology(default_topology()), 2))
    party = world.topology.third_party(1)
    assert party.mx == ("mx1.gateway.mxflow.test", "mx2.gateway.mxflow.test")
    assert party.ips == ("127.10.10.1", "127.10.10.2")
    tables = []
    for i in range(2):
        data = nodes.gateway_table(
            world, tmp_path, 2525, "127.53.0.1:53",
            node=(f"gateway-{i + 1}", party.mx[i], party.ips[i]),
            store_url="postgresql://mxflow@127.0.0.1:5432/mxflow",
        )  # fmt: skip
        path = tmp_path / f"gateway-{i + 1}.toml"
        tomlfile.write(path, data, "a comment\nover two lines")
        assert tomllib.loads(path.read_text()) == json.loads(json.dumps(data))
        config = load_config(path, data_dir=tmp_path / f"gateway-{i + 1}")
        assert config.shared_database == "postgresql://mxflow@127.0.0.1:5432/mxflow"
        assert config.data_dir == tmp_path / f"gateway-{i + 1}"
        tables.append(data)
    one, two = tables
    for data in tables:
        data.pop("node")
        data.pop("listeners")
        data["delivery"].pop("source_address")
    assert one == two  # the rest of the configuration is shared


def test_the_senders_see_each_mx_host_at_its_own_node() -> None:
    world = World(cluster_topology(load_topology(default_topology()), 2))
    apex = dns.name.from_text("contoso.com")
    for equal, preferences in ((False, [10, 20]), (True, [10, 10])):
        zones = cluster_zones(world, equal=equal)
        mx = sorted(
            (int(r.preference), r.exchange.to_text())
            for z in zones
            for r in z.get(apex, dns.rdatatype.MX) or []
        )
        assert [p for p, _ in mx] == preferences
        assert [h for _, h in mx] == ["mx1.gateway.mxflow.test.", "mx2.gateway.mxflow.test."]
        for host, ip in (("mx1", "127.10.10.1"), ("mx2", "127.10.10.2")):
            owner = dns.name.from_text(f"{host}.gateway.mxflow.test")
            found = [r.to_text() for z in zones for r in z.get(owner, dns.rdatatype.A) or []]
            assert found == [ip]
