"""Gateway throughput with filtering on: mxflow's filter vs Postfix + rspamd, in one run (issue 5).

    smtp-source -> mxflow gateway, [filter] on   (127.0.99.4:2525) -> smtp-sink (127.0.99.1:2526)
    smtp-source -> Postfix + rspamd milter       (127.0.0.1:2626)  -> smtp-sink

rspamd (bench/peers/rspamd.py) runs as a milter on a UNIX socket (over loopback TCP, Postfix +
rspamd stall ~40 ms a message: rspamd issue #1790), Debian defaults otherwise (one scanner),
its Bayes trained on the whole corpus first so it classifies as in production; both sides get
the same NXDOMAIN DNS stub. The load is one real ham message of about 10 KB from the corpus
(so tokenizers and Bayes have real text to chew), 20 sessions, one connection per message.
Measured as in bench/relay.py: smtp-source end to end into smtp-sink, transaction latency from
the asyncio client, sink count checked. With --plain, the same load also goes through the
plain Postfix relay and mxflow without filter, for the cost of filtering on each side.

    .venv/bin/python bench/peer_filter_throughput.py
    .venv/bin/python bench/peer_filter_throughput.py --count 3000 --plain
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from filter_cpu import dense_message
from lib import corpus, procs, steps
from lib.sink import Sink
from peers.mxflow import CONFIGS, Mxflow, MxflowConfig
from peers.postfix import Postfix, PostfixConfig
from peers.rspamd import Rspamd, RspamdConfig, start_nxdns
from relay import MXFLOW, POSTFIX, RCPT, SINK, Cell, finish, log, measure, profile_mxflow, warm_up

MILTER_POSTFIX = ("127.0.0.1", 2626)
MXFLOW_FILTER = ("127.0.99.4", 2525)
# Not the addresses bench/peer_accuracy.py uses, so both can run at once.
DNS = "127.0.99.54:53"
RSPAMD_HOST = "127.0.99.6"


def train_rspamd(rs: Rspamd, corpus_dir: Path) -> str:
    from concurrent.futures import ThreadPoolExecutor

    items = corpus.load(corpus_dir, procs.BENCH_ROOT / "filter-throughput" / "corpus")
    items.sort(key=lambda it: it.md5)
    with ThreadPoolExecutor(4) as pool:
        learnt = sum(pool.map(lambda it: rs.learn(it.path.read_bytes(), it.spam), items))
    return f"rspamd Bayes learnt {learnt} of {len(items)} corpus messages"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=2000, help="smtp-source messages (default 2000)"
    )
    parser.add_argument(
        "--latency-count", type=int, default=500, help="messages timed (default 500)"
    )
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument(
        "--message",
        type=Path,
        default=None,
        help="message file to send (default: a ~10 KB ham of the corpus)",
    )
    parser.add_argument(
        "--dense",
        action="store_true",
        help="send filter_cpu.py's dense 10 KB text+HTML message (issue 16's figure)",
    )
    parser.add_argument(
        "--corpus", type=Path, default=None, help="corpus folder (default data/corpus)"
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="send smtp-source's 10 KB filler (-l 10240) instead of a real message "
        "(mxflow's filter rejects it as spam: a mode for the peers only)",
    )
    parser.add_argument("--no-train", action="store_true", help="leave rspamd's Bayes empty")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        metavar="N",
        help="after the runs, N one-at-a-time sessions to each target, alternating, "
        "timing every SMTP step (the same message)",
    )
    parser.add_argument(
        "--plain", action="store_true", help="also Postfix alone and mxflow without filter"
    )
    parser.add_argument(
        "--targets", default="postfix+rspamd,mxflow+filter", help="comma-separated subset"
    )
    parser.add_argument("--config", type=Path, default=CONFIGS / "mxflow-gateway-filter.toml")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="then sample mxflow+filter with py-spy under the same load",
    )
    args = parser.parse_args()
    procs.exit_on_sigterm()
    corpus_dir = args.corpus or corpus.default_corpus()
    targets = [t for t in args.targets.split(",") if t]
    if args.plain:
        targets += ["postfix", "mxflow"]

    lock = procs.bench_lock()
    root = procs.fresh_dir(procs.BENCH_ROOT / "filter-throughput")
    message: Path | None = args.message
    if message is None and args.dense:
        # smtp-source -F turns each LF into CRLF: the file is written with bare LFs.
        message = root / "dense-10k.eml"
        message.write_bytes(dense_message(10 * 1024).replace(b"\r\n", b"\n"))
    if message is None and not args.synthetic:
        message = root / "message.eml"
        message.write_bytes(corpus.pick(corpus_dir, spam=False, low=9 * 1024, high=11 * 1024))
    size_kb = round(message.stat().st_size / 1024) if message else 10

    sock = root / "rspamd-milter.sock"
    addrs: dict[str, tuple[str, int]] = {}
    try:
        procs.require(
            {"smtp-source": "apt-get install postfix", "smtp-sink": "apt-get install postfix"}
        )
        rs = (
            Rspamd(RspamdConfig(
                    root / "rspamd", host=RSPAMD_HOST, redis_port=6391,
                    dns=DNS, milter_socket=sock, start_dns=False,
                ))
            if "postfix+rspamd" in targets else None
        )  # fmt: skip
        pf_milter = (
            Postfix(
                PostfixConfig(
                    "postfix-milter", *MILTER_POSTFIX, *SINK,
                    extra=f"smtpd_milters = unix:{sock}\nmilter_default_action = tempfail\n",
                )
            )
            if "postfix+rspamd" in targets else None
        )  # fmt: skip
        pf = (
            Postfix(PostfixConfig("postfix-relay", *POSTFIX, *SINK))
            if "postfix" in targets
            else None
        )
        mxf = (
            Mxflow(MxflowConfig(args.config, procs.BENCH_ROOT / "mxflow-filter", *MXFLOW_FILTER))
            if "mxflow+filter" in targets else None
        )  # fmt: skip
        mx = (
            Mxflow(MxflowConfig(CONFIGS / "mxflow-gateway.toml", procs.BENCH_ROOT / "mxflow-relay",
                                *MXFLOW))
            if "mxflow" in targets else None
        )  # fmt: skip
        for p in (pf_milter, pf):
            if p is not None:
                p.check_alternate()
    except procs.Missing as exc:
        print(f"peer_filter_throughput.py: {exc}", file=sys.stderr)
        return 2

    what = f"{message} ({message.stat().st_size} bytes)" if message else "smtp-source -l 10240"
    log(f"machine: {procs.machine()}; message {what}")
    sink = Sink(*SINK, procs.BENCH_ROOT / "smtp-sink.log")
    cells: list[Cell] = []
    steps_table = ""
    dns_stub = None
    notes: list[str] = []
    try:
        dns_stub = start_nxdns(DNS, root / "nxdns.log")
        sink.start()
        if rs is not None and pf_milter is not None:
            rs.start()
            if not args.no_train:
                notes.append(train_rspamd(rs, corpus_dir))
                log(notes[-1])
            pf_milter.start()
            addrs["postfix+rspamd"] = MILTER_POSTFIX
        if pf is not None:
            pf.start()
            addrs["postfix"] = POSTFIX
        for name, node, addr in (("mxflow+filter", mxf, MXFLOW_FILTER), ("mxflow", mx, MXFLOW)):
            if node is not None:
                node.start()
                addrs[name] = addr
                log(f"{name} on {addr[0]}:{addr[1]} (pid {node.pid}, {node.config_file})")
        order = [t for t in ("postfix+rspamd", "mxflow+filter", "postfix", "mxflow") if t in addrs]
        for target in order:
            warm_up(addrs[target], sink, args.timeout, message)
        for i, target in enumerate(order + order[::-1]):
            # Each target twice, in mirrored order (A B B A): drift in the machine's load
            # falls on both sides alike. The cell kept is the faster of the two.
            cells.append(
                measure(
                    target,
                    addrs[target],
                    sink=sink,
                    size_kb=size_kb,
                    sessions=args.sessions,
                    count=args.count,
                    lat_count=args.latency_count if i < len(order) else 0,
                    timeout=args.timeout,
                    message=message,
                )
            )
        if args.steps > 0 and message is not None:
            per_step = steps.compare(
                {t: addrs[t] for t in order}, steps.wire(message.read_bytes()), RCPT, args.steps
            )
            steps_table = steps.table(per_step)
        if args.profile > 0 and mxf is not None and mxf.pid is not None:
            profile_mxflow(
                mxf.pid, sink, seconds=args.profile, timeout=args.timeout,
                sessions=args.sessions, addr=MXFLOW_FILTER, message=message, name="mxflow+filter",
            )  # fmt: skip
    finally:
        for node in (mxf, mx):
            if node is not None:
                status = node.stop()
                if status not in (0, None, -15):
                    log(f"mxflow exited with {status}:\n{node.log_tail()}")
        for p in (pf_milter, pf):
            if p is not None:
                p.stop()
        if rs is not None:
            rs.stop()
        sink.stop()
        procs.stop(dns_stub)
        del lock

    best: dict[str, Cell] = {}
    lat: dict[str, Cell] = {}
    for c in cells:
        if c.lat_count:
            lat[c.target] = c
        if c.target not in best or c.msgs_per_s > best[c.target].msgs_per_s:
            best[c.target] = c
    day = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    kind = (
        "dense text+HTML message"
        if args.dense
        else "real message"
        if message
        else "smtp-source filler"
    )
    what = f"{size_kb} KB {kind}, {args.sessions} sessions"
    print(f"\nGateway throughput with filtering, {what}, {day}")
    print(f"machine: {procs.machine()}")
    print("| target | msg/s (best of 2) | both runs | p50 / p99 ms | sink check |")
    print("|---|---:|---:|---:|---|")
    for t in order:
        runs = [c for c in cells if c.target == t]
        both = " / ".join(f"{c.msgs_per_s:.0f}" for c in runs)
        ok = "ok" if all(c.ok for c in runs) else "FAIL"
        lc = lat.get(t)
        latency = f"{lc.lat_p50_ms:.1f} / {lc.lat_p99_ms:.1f}" if lc else "n/a"
        print(f"| {t} | {best[t].msgs_per_s:.0f} | {both} | {latency} | {ok} |")
    for a, b in (
        ("mxflow+filter", "postfix+rspamd"),
        ("mxflow", "postfix"),
        ("mxflow+filter", "mxflow"),
    ):
        if a in best and b in best:
            ratio = best[a].msgs_per_s / best[b].msgs_per_s
            print(
                f"ratio {a} / {b}: {ratio:.2f}"
                if not math.isnan(ratio)
                else f"ratio {a} / {b}: n/a"
            )
    for note in notes:
        print(note)
    if steps_table:
        print(f"\nOne session at a time, {args.steps} each, alternating ({what}):")
        print(steps_table)
    return finish(cells, args.json, day)


if __name__ == "__main__":
    sys.exit(main())
