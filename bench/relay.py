"""Relay throughput and latency: mxflow gateway vs a Postfix relay, in the same run (issue 2).

    smtp-source -> mxflow gateway (127.0.99.3:2525) -> smtp-sink (127.0.99.1:2526)
    smtp-source -> Postfix relay  (127.0.0.1:2625) -> smtp-sink (the same one)

For every message size (KB) and number of concurrent sessions, each target gets, in turn
(the order alternates from cell to cell):

* throughput: `smtp-source -s SESSIONS -m COUNT -l SIZE` (one connection per message), timed
  from its start until smtp-sink has counted every message — end to end, so a relay that
  queues faster than it delivers gets no credit for the backlog;
* latency: the asyncio client of bench/lib/smtpclient.py at the same sessions and size,
  timing every transaction (connect to the 250 after the final "."), p50 and p99;
* check: smtp-sink's counter grew by exactly the number of messages accepted.

Prints one table with messages/s, latencies and the ratio mxflow/Postfix. Installs nothing;
says what is missing (bench/README.md has the set-up).

    .venv/bin/python bench/relay.py                 # 2/10/100 KB x 1/20/100 sessions
    .venv/bin/python bench/relay.py --quick         # fewer messages per cell
    .venv/bin/python bench/relay.py --sizes 10 --sessions 20 --count 3000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lib import procs, profile, stats, steps
from lib.cpu import tree_cpu_seconds
from lib.sink import Sink
from lib.smtpclient import make_message, run_load
from peers.mxflow import CONFIGS, Mxflow, MxflowConfig
from peers.postfix import Postfix, PostfixConfig

SINK = ("127.0.99.1", 2526)
# Postfix insists that inet_interfaces be an address of an interface: lo has only 127.0.0.1.
POSTFIX = ("127.0.0.1", 2625)
MXFLOW = ("127.0.99.3", 2525)
SENDER = "sender@example.org"
RCPT = "user@contoso.com"


@dataclass
class Cell:
    target: str
    size_kb: int
    sessions: int
    count: int = 0  # messages smtp-source sent
    seconds: float = math.nan  # smtp-source start -> last message in the sink
    accept_seconds: float = math.nan  # smtp-source start -> smtp-source exit
    msgs_per_s: float = math.nan
    cpu_ms: float = math.nan  # CPU of the relay's process tree per message (throughput run)
    lat_count: int = 0
    lat_p50_ms: float = math.nan
    lat_p99_ms: float = math.nan
    lat_msgs_per_s: float = math.nan
    sink_expected: int = 0
    sink_got: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.sink_got == self.sink_expected


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure(
    target: str,
    addr: tuple[str, int],
    *,
    sink: Sink,
    size_kb: int,
    sessions: int,
    count: int,
    lat_count: int,
    timeout: float,
    message: Path | None = None,
    pid: int | None = None,
) -> Cell:
    """One target, one cell: smtp-source throughput, client latency, sink check.

    With `message`, that file is sent (smtp-source -F) instead of smtp-source's -l filler.
    """
    cell = Cell(target, size_kb, sessions, count)
    start_count = sink.received()
    # 1. Throughput with smtp-source, end to end into the sink.
    argv = [
        "smtp-source", "-s", str(sessions), "-m", str(count),
        *(["-F", str(message)] if message else ["-l", str(size_kb * 1024)]),
        "-f", SENDER, "-t", RCPT, "-M", "bench.example.org", f"{addr[0]}:{addr[1]}",
    ]  # fmt: skip
    cpu0 = tree_cpu_seconds(pid) if pid else math.nan
    t0 = time.monotonic()
    try:
        src = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        cell.accept_seconds = time.monotonic() - t0
        if src.returncode != 0:
            cell.errors.append(f"smtp-source exit {src.returncode}: {src.stderr.strip()[-300:]}")
    except subprocess.TimeoutExpired:
        cell.errors.append(f"smtp-source did not finish in {timeout:.0f} s")
    done = sink.wait_for(start_count + count, timeout)
    if done is not None:
        cell.seconds = done - t0
        cell.msgs_per_s = count / cell.seconds
        if pid:
            cell.cpu_ms = 1000 * (tree_cpu_seconds(pid) - cpu0) / count
    else:
        cell.errors.append(f"sink got {sink.received() - start_count} of {count} in time")
    # 2. Latency with the asyncio client, same sessions and size.
    if lat_count > 0:
        mid_count = sink.received()
        try:
            load = asyncio.run(
                run_load(
                    addr[0],
                    addr[1],
                    count=lat_count,
                    concurrency=sessions,
                    size=size_kb * 1024,
                    limit=timeout,
                    message=message.read_bytes() if message else None,
                )
            )
            cell.lat_count = load.sent
            cell.lat_p50_ms = 1000 * stats.percentile(load.latencies, 50)
            cell.lat_p99_ms = 1000 * stats.percentile(load.latencies, 99)
            cell.lat_msgs_per_s = load.sent / load.seconds if load.seconds else math.nan
            if load.errors:
                cell.errors.append(f"{len(load.errors)} client errors, e.g. {load.errors[0]}")
        except TimeoutError:
            cell.errors.append(f"latency client did not finish in {timeout:.0f} s")
        if sink.wait_for(mid_count + cell.lat_count, timeout) is None:
            cell.errors.append("sink missed messages of the latency run")
    # 3. Every accepted message reached the sink, and nothing more.
    time.sleep(0.2)
    cell.sink_expected = count + cell.lat_count
    cell.sink_got = sink.received() - start_count
    status = "ok" if cell.ok else "; ".join(cell.errors) or "sink count differs"
    log(
        f"{target:8} {size_kb:4d} KB x{sessions:4d}: {cell.msgs_per_s:8.1f} msg/s "
        f"(accepted in {cell.accept_seconds:.2f} s), CPU {cell.cpu_ms:.2f} ms/msg, "
        f"p50 {cell.lat_p50_ms:.1f} ms "
        f"p99 {cell.lat_p99_ms:.1f} ms, sink {cell.sink_got}/{cell.sink_expected} {status}"
    )
    return cell


def warm_up(addr: tuple[str, int], sink: Sink, timeout: float, message: Path | None = None) -> None:
    """40 messages over 4 sessions, not counted: process pools spawned, caches filled."""
    before = sink.received()
    argv = [
        "smtp-source", "-s", "4", "-m", "40",
        *(["-F", str(message)] if message else ["-l", "10240"]),
        "-f", SENDER, "-t", RCPT, "-M", "bench.example.org", f"{addr[0]}:{addr[1]}",
    ]  # fmt: skip
    src = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if src.returncode != 0:  # e.g. the message refused: the sink would wait in vain
        raise RuntimeError(
            f"warm-up through {addr[0]}:{addr[1]}: smtp-source exit {src.returncode}: "
            f"{src.stderr.strip()[-300:]}"
        )
    if sink.wait_for(before + 40, timeout) is None:
        raise RuntimeError(f"warm-up through {addr[0]}:{addr[1]} did not reach the sink")


def profile_mxflow(
    pid: int,
    sink: Sink,
    *,
    seconds: float,
    timeout: float,
    sessions: int,
    addr: tuple[str, int] = MXFLOW,
    message: Path | None = None,
    name: str = "mxflow",
    size_kb: int = 10,
) -> None:
    """py-spy record on mxflow (and its workers) while smtp-source keeps it busy."""
    out = procs.BENCH_ROOT / f"{name}-profile.txt"
    spy = profile.start(pid, seconds, out)
    if spy is None:
        log("--profile: py-spy not found (see bench/README.md); skipped")
        return
    time.sleep(1.0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and spy.poll() is None:
        count = 25 * sessions if sessions < 20 else 500
        measure(name, addr, sink=sink, size_kb=size_kb, sessions=sessions, count=count,
                lat_count=0, timeout=timeout, message=message)  # fmt: skip
    spy.wait(timeout)
    summary = profile.summarise(out)
    (procs.BENCH_ROOT / f"{name}-profile-summary.txt").write_text(summary + "\n")
    load = f"{size_kb} KB x {sessions}-session load"
    print(f"\n{name} under {load}, py-spy ({out}):\n{summary}\n")


def fmt(v: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def median_cell(cells: list[Cell]) -> Cell | None:
    """The run with the median msg/s (the lower middle for an even number of runs)."""
    ranked = sorted(cells, key=lambda c: -math.inf if math.isnan(c.msgs_per_s) else c.msgs_per_s)
    return ranked[(len(ranked) - 1) // 2] if ranked else None


def table(cells: list[Cell]) -> str:
    keys = sorted({(c.size_kb, c.sessions) for c in cells})
    per_key = Counter((c.target, c.size_kb, c.sessions) for c in cells)
    runs = max(per_key.values(), default=1)
    lines = [
        "| size | sessions | Postfix msg/s | mxflow msg/s | **mxflow/Postfix** "
        "| Postfix p50 / p99 ms | mxflow p50 / p99 ms | CPU ms/msg Postfix / mxflow "
        "| sink check |" + (f" ratio of each of the {runs} rounds |" if runs > 1 else ""),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|" + ("---|" if runs > 1 else ""),
    ]
    for size, sessions in keys:
        ps = [c for c in cells if (c.target, c.size_kb, c.sessions) == ("postfix", size, sessions)]
        ms = [c for c in cells if (c.target, c.size_kb, c.sessions) == ("mxflow", size, sessions)]
        p, m = median_cell(ps), median_cell(ms)
        pl = next((c for c in ps if c.lat_count), p)  # latency: the round that measured it
        ml = next((c for c in ms if c.lat_count), m)
        ratio = m.msgs_per_s / p.msgs_per_s if p and m else math.nan
        check = "ok" if all(c.ok for c in ps + ms) else "FAIL"
        rounds = " / ".join(
            fmt(b.msgs_per_s / a.msgs_per_s, 2) for a, b in zip(ps, ms, strict=False)
        )
        lines.append(
            f"| {size} KB | {sessions} "
            f"| {fmt(p.msgs_per_s) if p else '-'} | {fmt(m.msgs_per_s) if m else '-'} "
            f"| **{fmt(ratio, 2)}** "
            f"| {fmt(pl.lat_p50_ms, 1) + ' / ' + fmt(pl.lat_p99_ms, 1) if pl else '-'} "
            f"| {fmt(ml.lat_p50_ms, 1) + ' / ' + fmt(ml.lat_p99_ms, 1) if ml else '-'} "
            f"| {fmt(p.cpu_ms, 2) if p else '-'} / {fmt(m.cpu_ms, 2) if m else '-'} "
            f"| {check} |" + (f" {rounds} |" if runs > 1 else "")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="2,10,100", help="message sizes in KB (default 2,10,100)"
    )
    parser.add_argument(
        "--sessions", default="1,20,100", help="concurrent sessions (default 1,20,100)"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=2000,
        help="smtp-source messages per cell (default 2000; a quarter at 1 session)",
    )
    parser.add_argument(
        "--latency-count",
        type=int,
        default=500,
        help="messages timed per cell (default 500; 0: skip)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds per cell (targets alternate); the table shows the median round",
    )
    parser.add_argument("--quick", action="store_true", help="300 messages per cell, 150 timed")
    parser.add_argument("--targets", default="postfix,mxflow", help="comma-separated subset")
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIGS / "mxflow-gateway.toml",
        help="mxflow node config (template)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="override [server] workers of the mxflow config"
    )
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="diagnosis only: mxflow with [server] fsync = false (Postfix always fsyncs)",
    )
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default=None,
        help="set mxflow's [server] event_loop (default: the node's default, uvloop)",
    )
    parser.add_argument(
        "--mxflow-exe",
        type=Path,
        default=None,
        help="run this `mxflow` (e.g. another checkout's .venv/bin/mxflow) instead of ours",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on each step, seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the cells to this file")
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the table, sample mxflow with py-spy under 10 KB load",
    )
    parser.add_argument(
        "--profile-sessions", type=int, default=20, help="sessions of the --profile load"
    )
    parser.add_argument("--profile-size", type=int, default=10, help="KB of the --profile load")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        metavar="N",
        help="after the table, N one-at-a-time sessions to each target, alternating, "
        "timing every SMTP step (10 KB make_message)",
    )
    args = parser.parse_args()
    procs.exit_on_sigterm()
    if args.quick:
        args.count, args.latency_count = 300, 150
    sizes = [int(s) for s in args.sizes.split(",")]
    sessions_list = [int(s) for s in args.sessions.split(",")]
    targets = [t for t in args.targets.split(",") if t]

    try:
        procs.require(
            {"smtp-source": "apt-get install postfix", "smtp-sink": "apt-get install postfix"}
        )
        pf = (
            Postfix(PostfixConfig("postfix-relay", *POSTFIX, *SINK))
            if "postfix" in targets
            else None
        )
        mx = (
            Mxflow(
                MxflowConfig(
                    args.config, procs.BENCH_ROOT / "mxflow-relay", *MXFLOW,
                    replace={
                        "127.0.99.3": MXFLOW[0],
                        "127.0.99.1:2526": f"{SINK[0]}:{SINK[1]}",
                        **({"workers = 2": f"workers = {args.workers}"} if args.workers else {}),
                        "fsync = true": f"fsync = {'false' if args.no_fsync else 'true'}"
                        + (f'\nevent_loop = "{args.event_loop}"' if args.event_loop else ""),
                    },
                    exe=args.mxflow_exe,
                )
            )
            if "mxflow" in targets else None
        )  # fmt: skip
        if pf is not None:
            pf.check_alternate()
    except procs.Missing as exc:
        print(f"relay.py: {exc}", file=sys.stderr)
        return 2

    lock = procs.bench_lock()
    log(f"machine: {procs.machine()}")
    sink = Sink(*SINK, procs.BENCH_ROOT / "smtp-sink.log")
    cells: list[Cell] = []
    steps_table = ""
    exit_status: int | None = None
    try:
        sink.start()
        if pf is not None:
            pf.start()
            log(f"Postfix relay on {POSTFIX[0]}:{POSTFIX[1]} ({pf.root})")
        if mx is not None:
            mx.start()
            log(f"mxflow on {MXFLOW[0]}:{MXFLOW[1]} (pid {mx.pid}, {mx.config_file})")
        addrs = {"postfix": POSTFIX, "mxflow": MXFLOW}
        pids = {
            "postfix": pf.master_pid() if pf is not None else None,
            "mxflow": mx.pid if mx is not None else None,
        }
        order = [t for t in ("postfix", "mxflow") if t in targets]
        for target in order:
            warm_up(addrs[target], sink, args.timeout)
        grid = itertools.product(sizes, sessions_list, range(args.repeat))
        for n, (size, sessions, rnd) in enumerate(grid):
            count = args.count if sessions > 1 else max(50, args.count // 4)
            lat = args.latency_count if sessions > 1 else max(0, args.latency_count // 2)
            if rnd > 0:
                lat = 0  # latency from the first round only
            for target in order if n % 2 == 0 else order[::-1]:
                cell = measure(
                    target,
                    addrs[target],
                    sink=sink,
                    size_kb=size,
                    sessions=sessions,
                    count=count,
                    lat_count=lat,
                    timeout=args.timeout,
                    pid=pids[target],
                )
                cells.append(cell)
        if args.steps > 0:
            message = make_message(10 * 1024, 0)
            per_step = steps.compare({t: addrs[t] for t in order}, message, RCPT, args.steps)
            sink.wait_for(sink.received(), args.timeout)
            steps_table = steps.table(per_step)
        if args.profile > 0 and mx is not None and mx.pid is not None:
            profile_mxflow(
                mx.pid,
                sink,
                seconds=args.profile,
                timeout=args.timeout,
                sessions=args.profile_sessions,
                size_kb=args.profile_size,
            )
    finally:
        if mx is not None:
            exit_status = mx.stop()
            if exit_status not in (0, None, -15):
                log(f"mxflow exited with {exit_status}; log tail:\n{mx.log_tail()}")
        if pf is not None:
            if not pf.queue_empty():
                log("Postfix queue not empty at the end")
            pf.stop()
        sink.stop()
        del lock

    day = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"\nRelay throughput (end to end into smtp-sink) and transaction latency, {day}")
    print(f"machine: {procs.machine()}")
    print(table(cells))
    if steps_table:
        print(f"\nOne session at a time, {args.steps} each, alternating (10 KB make_message):")
        print(steps_table)
    return finish(cells, args.json, day)


def finish(cells: list[Cell], json_path: Path | None, day: str) -> int:
    """Name every failed cell, write the JSON record if asked; exit status 1 on a failure."""
    failed = [c for c in cells if not c.ok]
    for c in failed:
        what = f"{c.target} {c.size_kb} KB x{c.sessions}"
        print(f"FAIL {what}: sink {c.sink_got}/{c.sink_expected}; {'; '.join(c.errors)}")
    if json_path:
        json_path.write_text(
            json.dumps(
                {"date": day, "machine": procs.machine(), "cells": [asdict(c) for c in cells]},
                indent=2,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
