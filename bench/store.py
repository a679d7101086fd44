"""The shared store's cost: one gateway with its trace and quarantine on SQLite files vs on
PostgreSQL, in the same run (issue 15).

    client -> mxflow gateway, SQLite store      (127.0.99.8:2525) -> smtp-sink (127.0.99.1:2526)
    client -> mxflow gateway, PostgreSQL store  (127.0.99.9:2525) -> smtp-sink (the same one)

Both nodes are the same config (configs/mxflow-gateway-store.toml: one worker, fsync on,
the bayes check only), the second with `[store] url` on a private PostgreSQL cluster
(`mxflow.lab.postgres`, fsync and synchronous_commit on, under the bench folder: on disk).
Two messages, each one real ham of about 10 KB from the corpus (the first by md5 between 9
and 11 KB, named in the output):

* relay: the ham as is — spooled, relayed to the sink; the trace gets `received` and
  `delivered` (one row each: one recipient);
* quarantine: the same ham with the GTUBE line at the top of its body — held; the
  quarantine gets its row (and, on PostgreSQL, the body as BYTEA; on SQLite a file) and the
  trace `quarantined`.

For each message and concurrency (1 and 20 sessions, one connection per message) the two
nodes run in turn, the order alternating from round to round. Reported per cell: messages
acknowledged per second, transaction latency (connect to the 250 after the dot) p50/p99
and what PostgreSQL adds to it, and per message: rows written (on PostgreSQL also the
TOAST chunks a body is stored in, and the write transactions: transaction ids taken),
table growth (SQLite: page_count x page_size plus the message files; PostgreSQL:
pg_total_relation_size), PostgreSQL's WAL bytes, the bytes node and database processes
wrote to disk (/proc/PID/io write_bytes, the spool included on both sides) and their CPU.
Every relayed message must reach the sink and every row be written, or the cell fails.

    .venv/bin/python bench/store.py                    # 2 rounds, ~3 min
    .venv/bin/python bench/store.py --rounds 3 --profile 10
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lib import corpus, procs, profile, stats
from lib.cpu import tree_cpu_seconds
from lib.sink import Sink
from lib.smtpclient import run_load
from peers.mxflow import CONFIGS, Mxflow, MxflowConfig

SINK = ("127.0.99.1", 2526)
SQLITE = ("127.0.99.8", 2525)
POSTGRES = ("127.0.99.9", 2525)
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
ROOT = procs.BENCH_ROOT / "store"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Snapshot:
    """What a store has written so far (rows, bytes) and what its processes used."""

    rows: int = 0  # rows in events + quarantine
    db_rows: int = 0  # PostgreSQL: the same and their TOAST chunks
    commits: int = 0  # PostgreSQL: the next transaction id (write transactions so far)
    table_bytes: int = 0
    wal_bytes: int = 0
    node_disk: int = 0  # bytes the node process wrote to disk (its spool included)
    db_disk: int = 0  # bytes the PostgreSQL processes wrote
    node_cpu: float = 0.0  # seconds
    db_cpu: float = 0.0


@dataclass
class Cell:
    target: str
    kind: str
    sessions: int
    count: int
    msgs_per_s: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    per_msg: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


# One read-only statement, exact at once (the statistics views lag by up to 10 s): the
# rows of the store's tables and of their TOAST tables (a quarantined body is stored out
# of line, in chunks of ~2 KB), the next transaction id (so write transactions between two
# snapshots, which take an id each), the tables' size and the WAL position.
_PG_SNAPSHOT = """
SELECT
    (SELECT count(*) FROM events) + (SELECT count(*) FROM quarantine),
    {toast},
    pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
    pg_total_relation_size('events') + pg_total_relation_size('quarantine'),
    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')
"""


def write_bytes(pids: list[int]) -> int:
    """Bytes these processes made the kernel write to disk (/proc/PID/io, root only)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


class Store:
    """One node under test and a view of its store's counters."""

    def __init__(self, name: str, node: Mxflow, addr: tuple[str, int], url: str | None) -> None:
        self.name, self.node, self.addr, self.url = name, node, addr, url
        self.data = node.cfg.root / "data"
        self.pg_pid = 0

    def db_pids(self) -> list[int]:
        return [self.pg_pid, *children(self.pg_pid)] if self.url else []

    def snapshot(self) -> Snapshot:
        if self.url is None:
            return self._sqlite()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            toast = " + ".join(
                f"(SELECT count(*) FROM {name})"
                for (name,) in conn.execute(
                    "SELECT reltoastrelid::regclass::text FROM pg_class"
                    " WHERE relname IN ('events', 'quarantine') AND reltoastrelid <> 0"
                )
            )
            query = _PG_SNAPSHOT.format(toast=toast or "0")
            rows, chunks, xid, size, wal = conn.execute(query).fetchone()  # type: ignore[misc]
        return Snapshot(
            rows=int(rows),
            db_rows=int(rows) + int(chunks),
            commits=int(xid),
            table_bytes=int(size),
            wal_bytes=int(wal),
            node_disk=write_bytes([self.node.pid or 0]),
            db_disk=write_bytes(self.db_pids()),
            node_cpu=tree_cpu_seconds(self.node.pid or 0),
            db_cpu=tree_cpu_seconds(self.pg_pid),
        )

    def _sqlite(self) -> Snapshot:
        rows = pages = 0
        for file, table in (
            ("trace.sqlite", "events"),
            ("quarantine/quarantine.sqlite", "quarantine"),
        ):
            path = self.data / file
            if not path.exists():
                continue
            with sqlite3.connect(path) as db:
                rows += db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                pages += (
                    db.execute("PRAGMA page_count").fetchone()[0]
                    * db.execute("PRAGMA page_size").fetchone()[0]
                )
            db.close()
        messages = self.data / "quarantine" / "messages"
        files = sum(p.stat().st_size for p in messages.glob("*.eml")) if messages.is_dir() else 0
        return Snapshot(
            rows=rows,
            table_bytes=pages + files,
            node_disk=write_bytes([self.node.pid or 0]),
            node_cpu=tree_cpu_seconds(self.node.pid or 0),
        )

    def settled(self, before: Snapshot, rows: int, timeout: float) -> Snapshot:
        """The snapshot once the expected rows are written (the trace writer is ~50 ms
        behind the 250)."""
        deadline = time.monotonic() + timeout
        last = self.snapshot()
        while last.rows < before.rows + rows and time.monotonic() < deadline:
            time.sleep(0.1)
            last = self.snapshot()
        time.sleep(0.3)  # an unexpected extra row would show now
        return self.snapshot()


def start_postgres() -> tuple[object, str, int]:
    """A private cluster with fsync on, in the bench folder; migrated; (cluster, url, pid)."""
    from mxflow.lab.postgres import start_cluster
    from mxflow.store.registry import COMPONENTS
    from mxflow.store.schema import migrate
    from mxflow.store.sql import open_database

    procs.fresh_dir(ROOT / "pg")
    tempfile.tempdir = str(ROOT / "pg")  # start_cluster's folder: on disk, not /tmp
    cluster = start_cluster(fsync=True)
    db = open_database(cluster.url)
    try:
        migrate(db, COMPONENTS)
    finally:
        db.close()
    pid = int((cluster.root / "data" / "postmaster.pid").read_text().split()[0])
    return cluster, cluster.url, pid


def messages(corpus_dir: Path) -> dict[str, bytes]:
    """The ham, and the same ham held for GTUBE; CRLF line ends."""
    ham = corpus.pick(corpus_dir, spam=False, low=9000, high=11000)
    ham = ham.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head, _, body = ham.partition(b"\r\n\r\n")
    return {"relay": ham, "quarantine": head + b"\r\n\r\n" + GTUBE + body}


def measure(
    store: Store, sink: Sink, kind: str, message: bytes, *, sessions: int, count: int,
    timeout: float,
) -> Cell:  # fmt: skip
    """One node, one cell: acknowledged msg/s and latency, then what the store wrote."""
    cell = Cell(store.name, kind, sessions, count)
    before, sunk = store.snapshot(), sink.received()
    load = asyncio.run(
        run_load(*store.addr, count=count, concurrency=sessions, size=0, limit=timeout,
                 message=message)
    )  # fmt: skip
    if load.errors:
        cell.errors.append(f"{len(load.errors)} client errors, e.g. {load.errors[0]}")
    cell.msgs_per_s = load.sent / load.seconds
    cell.p50_ms = 1000 * stats.percentile(load.latencies, 50)
    cell.p99_ms = 1000 * stats.percentile(load.latencies, 99)
    if kind == "relay" and sink.wait_for(sunk + load.sent, timeout) is None:
        cell.errors.append(f"sink got {sink.received() - sunk} of {load.sent}")
    after = store.settled(before, 2 * load.sent, timeout)  # two rows a message
    if after.rows - before.rows != 2 * load.sent:
        cell.errors.append(f"{after.rows - before.rows} rows for {load.sent} messages, not 2 each")
    n = max(1, load.sent)
    cell.per_msg = {
        "rows": (after.rows - before.rows) / n,
        "db_rows": (after.db_rows - before.db_rows) / n,
        "commits": (after.commits - before.commits) / n,
        "table_bytes": (after.table_bytes - before.table_bytes) / n,
        "wal_bytes": (after.wal_bytes - before.wal_bytes) / n,
        "node_disk": (after.node_disk - before.node_disk) / n,
        "db_disk": (after.db_disk - before.db_disk) / n,
        "node_cpu_ms": 1000 * (after.node_cpu - before.node_cpu) / n,
        "db_cpu_ms": 1000 * (after.db_cpu - before.db_cpu) / n,
    }
    log(
        f"{store.name:10} {kind:10} x{sessions:3d}: {cell.msgs_per_s:7.1f} msg/s, p50 "
        f"{cell.p50_ms:6.1f} ms, p99 {cell.p99_ms:6.1f} ms, "
        + ", ".join(f"{k} {v:.1f}" for k, v in cell.per_msg.items())
        + ("" if not cell.errors else "  FAILED: " + "; ".join(cell.errors))
    )
    return cell


def median(values: list[float]) -> float:
    values = sorted(v for v in values if not math.isnan(v))
    return values[len(values) // 2] if values else math.nan


def table(cells: list[Cell]) -> str:
    """Per message and concurrency: both stores side by side (median of the rounds)."""
    out = [
        "| message | sessions | store | msg/s | p50 / p99 ms | added p50 / p99 ms |"
        " rows/msg (+TOAST) | write txn/msg | table B/msg | WAL B/msg | disk B/msg node / db |"
        " CPU ms/msg node / db |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(c.kind, c.sessions) for c in cells}, key=lambda k: (k[0] != "relay", k[1]))
    for kind, sessions in keys:
        mine = {t: [c for c in cells if (c.kind, c.sessions, c.target) == (kind, sessions, t)]
                for t in ("sqlite", "postgresql")}  # fmt: skip
        base = {m: median([getattr(c, m) for c in mine["sqlite"]]) for m in ("p50_ms", "p99_ms")}
        for target, group in mine.items():
            if not group:
                continue
            per = {k: median([c.per_msg.get(k, math.nan) for c in group]) for k in group[0].per_msg}
            p50, p99 = median([c.p50_ms for c in group]), median([c.p99_ms for c in group])
            added = (
                ""
                if target == "sqlite"
                else (f"{p50 - base['p50_ms']:+.2f} / {p99 - base['p99_ms']:+.2f}")
            )
            db_rows = f" ({per['db_rows']:.1f})" if target == "postgresql" else ""
            wal = f"{per['wal_bytes']:.0f}" if target == "postgresql" else "-"
            txn = f"{per['commits']:.2f}" if target == "postgresql" else "-"
            disk = f"{per['node_disk']:.0f} / {per['db_disk']:.0f}"
            out.append(
                f"| {kind} | {sessions} | {target} | {median([c.msgs_per_s for c in group]):.0f} |"
                f" {p50:.2f} / {p99:.2f} | {added} | {per['rows']:.1f}{db_rows} | {txn} |"
                f" {per['table_bytes']:.0f} | {wal} | {disk} |"
                f" {per['node_cpu_ms']:.2f} / {per['db_cpu_ms']:.2f} |"
            )
    return "\n".join(out)


SHARES = {  # what the sample was spent on: any of these frames on its stack
    "bayes check": ("BayesCheck.check (",),
    "spool (write, fsync, remove)": ("(mxflow/queue/spool.py",),
    "quarantine store (SMTP path)": ("Quarantine.quarantine (", "Quarantine.store ("),
    "trace writer thread": ("TraceStore._writer (",),
    "psycopg, any thread": ("(psycopg/", "(psycopg_pool/"),
    "SQLite calls, any thread": ("SqliteDatabase.transaction (", "_SqliteCursor."),
}


def shares(collapsed: Path) -> str:
    """Share of the node's samples whose stack holds each of SHARES' frames."""
    total = 0
    found = dict.fromkeys(SHARES, 0)
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for name, frames in SHARES.items():
            if any(frame in stack for frame in frames):
                found[name] += int(count)
    if not total:
        return "no samples"
    return "\n".join(f"  {100 * n / total:5.1f} %  {name}" for name, n in found.items())


def profile_both(stores: list[Store], message: bytes, seconds: float, timeout: float) -> None:
    """py-spy on each node while `message` keeps it busy at 20 sessions."""
    for store in stores:
        out = ROOT / f"{store.name}-profile.txt"
        spy = profile.start(store.node.pid or 0, seconds, out)
        if spy is None:
            log("--profile: py-spy not found (see bench/README.md); skipped")
            return
        time.sleep(1.0)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and spy.poll() is None:
            asyncio.run(run_load(*store.addr, count=200, concurrency=20, size=0,
                                 limit=timeout, message=message))  # fmt: skip
        spy.wait(timeout)
        summary = profile.summarise(out, top=12)
        (ROOT / f"{store.name}-profile-summary.txt").write_text(summary + "\n")
        print(f"\n{store.name}: quarantined message x 20 sessions, py-spy ({out}):")
        print(f"{shares(out)}\n{summary}\n")


def run(args: argparse.Namespace, msgs: dict[str, bytes]) -> list[Cell]:
    cluster, url, pg_pid = start_postgres()
    sink = Sink(*SINK, ROOT / "sink.log")
    stores: list[Store] = []
    try:
        sink.start()
        for name, addr, store_url in (("sqlite", SQLITE, None), ("postgresql", POSTGRES, url)):
            replace = {'address = "127.0.99.8"': f'address = "{addr[0]}"'}
            node = Mxflow(MxflowConfig(CONFIGS / "mxflow-gateway-store.toml", ROOT / name,
                                       *addr, replace=replace))  # fmt: skip
            if store_url is not None:
                node.cfg.replace["[filter]"] = f'[store]\nurl = "{store_url}"\n\n[filter]'
            node.start()
            store = Store(name, node, addr, store_url)
            store.pg_pid = pg_pid
            stores.append(store)
            for kind in ("relay", "quarantine"):  # warm-up: pools, caches, the model
                asyncio.run(run_load(*addr, count=40, concurrency=4, size=0, limit=args.timeout,
                                     message=msgs[kind]))  # fmt: skip
        cells: list[Cell] = []
        for r in range(args.rounds):
            for i, (kind, sessions) in enumerate(
                (k, s) for k in ("relay", "quarantine") for s in args.sessions
            ):
                count = args.count if sessions > 1 else max(50, args.count // 5)
                order = stores if (r + i) % 2 == 0 else stores[::-1]
                for store in order:
                    cells.append(measure(store, sink, kind, msgs[kind], sessions=sessions,
                                         count=count, timeout=args.timeout))  # fmt: skip
        if args.profile:
            profile_both(stores, msgs["quarantine"], args.profile, args.timeout)
        return cells
    finally:
        for store in stores:
            store.node.stop()
        procs.stop(sink.proc)
        cluster.remove()  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds (order alternates)")
    parser.add_argument("--count", type=int, default=1500, help="messages a cell at >1 session"
                        " (a fifth at one)")  # fmt: skip
    parser.add_argument("--sessions", type=lambda t: [int(x) for x in t.split(",")],
                        default=[1, 20])  # fmt: skip
    parser.add_argument("--corpus", type=Path, default=corpus.default_corpus())
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy seconds per node")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    procs.exit_on_sigterm()
    procs.require({"smtp-sink": "apt-get install postfix (see bench/README.md)"})
    lock = procs.bench_lock()
    msgs = messages(args.corpus)
    log(f"machine: {procs.machine()}")
    log(f"message: the first ham by md5 of 9-11 KB in {args.corpus} ({len(msgs['relay'])} B);"
        f" quarantined: the same with GTUBE ({len(msgs['quarantine'])} B)")  # fmt: skip
    cells = run(args, msgs)
    print(table(cells))
    del lock
    return 1 if any(c.errors for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
