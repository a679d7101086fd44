"""`mxflow lab run`: the scenarios one after another, the report, the JSON, the exit status.

Each scenario gets a fresh directory, DNS server and nodes (the contoso.com zone differs:
the MX and SPF of scenario 1 are not those of 2), so no scenario sees another's mail.
The exit status is 0 when the story holds (report.story) and 1 when a claim fails, so
`make lab` fails loudly rather than printing numbers nobody reads.

`--nodes 2` runs scenario 1 with two gateway nodes instead (lab/cluster.py): it first
starts a private PostgreSQL cluster and migrates it as `mxflow store migrate` would; without
PostgreSQL's server it stops at once with status 3, naming the package to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from mxflow.lab import report
from mxflow.lab.cluster import run_cluster
from mxflow.lab.cluster_report import cluster_json, cluster_text
from mxflow.lab.cluster_report import story as cluster_story
from mxflow.lab.postgres import start_cluster
from mxflow.lab.scenario import ScenarioRun, run_scenario, topology
from mxflow.lab.ui import ADMIN, serve_ui
from mxflow.lab.world import World, reference_spf_literal
from mxflow.records.spf_lint import lint_record
from mxflow.records.topology import Topology, load_topology
from mxflow.roles.node import Node
from mxflow.store.registry import COMPONENTS
from mxflow.store.schema import migrate
from mxflow.store.sql import open_database

SCENARIOS = ("1", "2", "2-ef")


def default_topology() -> Path:
    return Path(str(resources.files("mxflow") / "data" / "lab" / "topology.toml"))


def reference_spf(runs: list[ScenarioRun], topo: Topology) -> dict[str, Any]:
    """The reference's literal record against the corrected one, for the outbound mail."""
    arrivals = [a for r in runs for a in r.arrivals if a.lab_id.startswith("outbound/")]
    literal = {a.literal_spf for a in arrivals}
    corrected = {a.spf for a in arrivals}
    ip = topo.gateway.ips[0] if topo.gateway else "127.10.10.1"
    record = reference_spf_literal(ip)
    findings = lint_record(record, public=False).findings
    return {
        "literal": literal.pop() if len(literal) == 1 else ",".join(sorted(literal)),
        "corrected": corrected.pop() if len(corrected) == 1 else ",".join(sorted(corrected)),
        "literal_record": record,
        "why": str(findings[0]).splitlines()[0] if findings else "",
        "evaluated": len(arrivals),
    }


async def run_lab(
    scenarios: list[str], corpus: Path, workdir: Path, topology_file: Path | None
) -> dict[str, Any]:
    topo = load_topology(topology_file or default_topology())
    world = World(topo)
    runs = []
    for name in scenarios:
        target = workdir / f"scenario-{name}"
        shutil.rmtree(target, ignore_errors=True)
        runs.append(await run_scenario(world, name, corpus, target))
    data: dict[str, Any] = {
        "scenarios": {r.scenario: report.scenario_json(r) for r in runs},
        "reference_spf": reference_spf(runs, topo),
    }
    data["story"] = [{"ok": ok, "claim": claim} for ok, claim in report.story(data["scenarios"])]
    return data


def print_report(data: dict[str, Any]) -> None:
    for name, scenario in data["scenarios"].items():
        print(report.scenario_table(name, scenario))
        print()
    ref = data["reference_spf"]
    print(f"reference SPF record: {ref['literal_record']}")
    print(f"  for contoso.com's outbound mail: {ref['literal']}  ({ref['why']})")
    print(f"  the corrected record (mxflow dns plan): {ref['corrected']}")
    print()
    for claim in data["story"]:
        print(("  ok    " if claim["ok"] else "  FAIL  ") + claim["claim"])


async def keep_running(
    world_topology: Path | None, workdir: Path, scenario: str, ui: tuple[str, int]
) -> None:
    """`--keep`: the last scenario's topology starts again, empty, for exploring until
    Ctrl-C (the run's files stay in --dir), with the admin web UI over it."""
    topo = load_topology(world_topology or default_topology())
    world = World(topo)
    async with topology(world, scenario, workdir / "kept") as env:
        node = env["party"] if scenario == "1" else env["host"]
        assert isinstance(node, Node)
        web = await serve_ui(node.config, ui)
        print(
            f"lab scenario {scenario} running (DNS 127.53.0.1, SMTP port {env['port']});"
            f" web UI {web.url} (user {ADMIN}, password {web.password}); Ctrl-C to stop",
            file=sys.stderr,
        )
        await web.task


def main_nodes(
    corpus: Path,
    workdir: Path,
    *,
    json_file: Path | None = None,
    topology_file: Path | None = None,
    equal_mx: bool = False,
) -> int:
    """`--nodes 2`: PostgreSQL (or exit 3), migrated; the run; the report; the claims."""
    print("  --nodes: starting PostgreSQL", file=sys.stderr, flush=True)
    database = start_cluster()
    try:
        db = open_database(database.url)
        try:
            migrate(db, COMPONENTS)  # what `mxflow store migrate` does before nodes start
        finally:
            db.close()
        world = World(load_topology(topology_file or default_topology()))
        target = workdir / "nodes-2"
        shutil.rmtree(target, ignore_errors=True)
        run = asyncio.run(run_cluster(world, corpus, target, database.url, equal=equal_mx))
    finally:
        database.remove()
    data: dict[str, Any] = {"cluster": cluster_json(run)}
    data["story"] = [{"ok": ok, "claim": c} for ok, c in cluster_story(data["cluster"])]
    print(cluster_text(data["cluster"]))
    print()
    for claim in data["story"]:
        print(("  ok    " if claim["ok"] else "  FAIL  ") + claim["claim"])
    if json_file is not None:
        json_file.write_text(json.dumps(data, indent=2) + "\n")
    return 0 if all(c["ok"] for c in data["story"]) else 1


def main(
    scenarios: list[str],
    corpus: Path,
    workdir: Path,
    *,
    json_file: Path | None = None,
    topology_file: Path | None = None,
    keep: bool = False,
    ui: tuple[str, int] = ("127.0.0.1", 8025),
) -> int:
    data = asyncio.run(run_lab(scenarios, corpus, workdir, topology_file))
    print_report(data)
    if json_file is not None:
        json_file.write_text(json.dumps(data, indent=2) + "\n")
    if keep:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(keep_running(topology_file, workdir, scenarios[-1], ui))
    return 0 if all(c["ok"] for c in data["story"]) else 1
