"""What counting connections in PostgreSQL adds to each SMTP session (issue 15).

With `[store] url = "postgresql://..."` a node counts every new session in the shared
database before its greeting (one round trip: `mxflow_conn_admit`) and uncounts it after
the client has gone (one round trip, in the background). This measures, on loopback and
in the same run:

* the greeting latency (connect until the 220 arrives) of a gateway node with the rate
  check on, without a shared database (in-memory counts, as before) and with one;
* the two round trips alone (`ConnectionCounters.admit` and `release`).

Rounds alternate between the two nodes, so machine noise hits both alike. A private
PostgreSQL cluster is started (Debian's `postgresql` package; nothing is installed).

    .venv/bin/python bench/shared_counters.py [--sessions 300] [--rounds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mxflow.config import parse_config
from mxflow.lab.postgres import free_port, start_cluster
from mxflow.roles.build import build_node
from mxflow.roles.node import Node
from mxflow.store.counters import ConnectionCounters
from mxflow.store.registry import COMPONENTS
from mxflow.store.schema import migrate
from mxflow.store.sql import open_database


def _node(root: Path, name: str, address: str, url: str | None) -> Node:
    data = {
        "node": {"name": name, "hostname": f"{name}.bench.test"},
        "listeners": [{"address": address, "port": free_port(address), "tls": "none"}],
        "filter": {
            "checks": ["rate"],
            "max_connections_per_ip": 1000,
            "max_connections_per_minute": 1_000_000,
        },
        **({"store": {"url": url}} if url else {}),
    }
    return build_node(parse_config(data, f"<{name}>", data_dir=root / name))


async def _greetings(node: Node, n: int, sources: list[str]) -> list[float]:
    """Milliseconds from connect to the 220, for `n` sequential sessions (from each of
    `sources` in turn)."""
    found = []
    for i in range(n):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(
            node.address, node.port, local_addr=(sources[i % len(sources)], 0)
        )
        line = await reader.readline()
        found.append((time.perf_counter() - started) * 1000)
        assert line.startswith(b"220"), line
        writer.write(b"QUIT\r\n")
        await reader.readline()
        writer.close()
        await writer.wait_closed()
    return found


async def _round_trips(url: str, n: int) -> tuple[list[float], list[float]]:
    db = open_database(url)
    counters = ConnectionCounters(db, "bench/0")
    await counters.start()
    admits, releases = [], []
    for i in range(n):
        key = f"198.51.100.{i % 200}"
        started = time.perf_counter()
        await counters.admit(key, max_open=1000, max_rate=1_000_000)
        admits.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await counters.release(key)
        releases.append((time.perf_counter() - started) * 1000)
    await counters.stop()
    await db.aclose()
    return admits, releases


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 3),
        "n": len(ordered),
    }


async def main(sessions: int, rounds: int) -> dict[str, object]:
    cluster = start_cluster(fsync=True)
    try:
        url = cluster.create_database("bench")
        db = open_database(url)
        migrate(db, COMPONENTS)
        db.close()
        with tempfile.TemporaryDirectory(prefix="mxflow-bench-") as tmp:
            local = _node(Path(tmp), "local", "127.0.0.61", None)
            shared = _node(Path(tmp), "shared", "127.0.0.62", url)
            times: dict[str, list[float]] = {}
            one, many = ["127.0.1.1"], [f"127.0.2.{i}" for i in range(1, 101)]
            async with local, shared:
                for node in (local, shared):  # warm up: pools, prepared statements
                    await _greetings(node, 20, ["127.0.0.63"])
                for _ in range(rounds):
                    for name, node in (("local", local), ("shared", shared)):
                        for clients, sources in (("one client", one), ("100 clients", many)):
                            key = f"{name}, {clients}"
                            times.setdefault(key, [])
                            times[key] += await _greetings(node, sessions, sources)
            admits, releases = await _round_trips(url, sessions * 2)
    finally:
        cluster.remove()
    result: dict[str, object] = {name: _summary(values) for name, values in times.items()}
    result["admit"] = _summary(admits)
    result["release"] = _summary(releases)
    for clients in ("one client", "100 clients"):
        added = statistics.median(times[f"shared, {clients}"]) - statistics.median(
            times[f"local, {clients}"]
        )
        result[f"added_p50_ms, {clients}"] = round(added, 3)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300, help="sessions per round and node")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = parser.parse_args()
    found = asyncio.run(main(args.sessions, args.rounds))
    text = json.dumps(found, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    sys.exit(0)
