"""Leave one source out for mxflow and its peers in one run: train on one source, score the
other, and print one table (bench/transfer_accuracy.py's rows beside SpamAssassin's and
rspamd's).

    spamassassin -> csdmc2010   trained on data/corpus, scoring data/corpus/csdmc2010-dev
    csdmc2010 -> spamassassin   (with --both) trained on csdmc2010-dev, scoring data/corpus

SpamAssassin 4.0 (sa-learn, then a private spamd) and rspamd 3.4 (Bayes learnt through its
controller, in md5 order) are set up as bench/peer_accuracy.py does (see bench/README.md),
on their own addresses and ports and under $MXFLOW_BENCH_ROOT/transfer so a peer_accuracy.py
run beside this one does not collide. Each is trained from empty on the training source only.
Their thresholds are their defaults (SpamAssassin 5.0, rspamd's "add header" 6.0). The peers
run one after the other and mxflow after them, so no tool's ms per message is measured while
another is busy; a peer's ms per message is scoring wall time over messages, through its
daemon with the workers given (SpamAssassin 2 children, rspamd Debian's default).

    .venv/bin/python bench/peer_transfer.py [--both] [--tools spamassassin,rspamd,mxflow]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from lib import corpus, procs
from peer_accuracy import Scores, log, score_all
from peers.rspamd import Rspamd, RspamdConfig
from peers.spamassassin import SpamAssassin, SpamAssassinConfig
from transfer_accuracy import CSDMC, SPAMASSASSIN, print_table, transfer

ROOT = procs.BENCH_ROOT / "transfer"
DIRECTIONS = {
    "spamassassin -> csdmc2010": (SPAMASSASSIN, CSDMC),
    "csdmc2010 -> spamassassin": (CSDMC, SPAMASSASSIN),
}


def peer_row(scores: Scores, direction: str, ms: float) -> dict[str, object]:
    row: dict[str, object] = dict(scores.row())
    row.update(direction=direction, ms_per_message=round(ms, 2))
    return row


def run_sa(direction: str, train: list[corpus.Item], test: list[corpus.Item]) -> dict[str, object]:
    sa = SpamAssassin(SpamAssassinConfig(ROOT / "spamassassin", host="127.0.99.17", port=7831))
    sa.setup()
    try:
        sa.reset_bayes()
        for spam in (True, False):
            sub = procs.fresh_dir(ROOT / "train" / ("spam" if spam else "ham"))
            for item in train:
                if item.spam == spam:
                    (sub / item.path.name).symlink_to(item.path)
            log(f"SpamAssassin {direction}: {sa.learn(sub, spam)}")
        sa.start()
        out = Scores("SpamAssassin 4.0 (Bayes + local rules)", 5.0)
        started = time.monotonic()
        score_all(test, lambda raw: sa.score(raw)[0], sa.cfg.children, out)
        ms = 1000 * (time.monotonic() - started) / len(test)
    finally:
        sa.stop()
    return peer_row(out, direction, ms)


def run_rs(direction: str, train: list[corpus.Item], test: list[corpus.Item]) -> dict[str, object]:
    cfg = RspamdConfig(
        ROOT / "rspamd", host="127.0.99.15", normal_port=11343, controller_port=11344,
        redis_port=6391, dns="127.0.99.63:53",
    )  # fmt: skip
    rs = Rspamd(cfg)
    rs.start()
    try:
        rs.flush_bayes()
        declined = sum(not rs.learn(i.path.read_bytes(), i.spam) for i in sorted(train, key=_md5))
        log(f"rspamd {direction}: learnt {len(train) - declined} of {len(train)}")
        out = Scores("rspamd 3.4 (Bayes + default rules)", 6.0)
        started = time.monotonic()
        score_all(test, lambda raw: rs.scan(raw)[0], 2, out)
        ms = 1000 * (time.monotonic() - started) / len(test)
    finally:
        rs.stop()
    return peer_row(out, direction, ms)


def _md5(item: corpus.Item) -> str:
    return item.md5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--both", action="store_true", help="also csdmc2010 -> spamassassin")
    parser.add_argument("--tools", default="spamassassin,rspamd,mxflow")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    procs.exit_on_sigterm()
    tools = set(args.tools.split(","))
    procs.fresh_dir(ROOT)
    log(f"machine: {procs.machine()}")
    rows: list[dict[str, object]] = []
    for direction, (source, target) in DIRECTIONS.items():
        if direction != "spamassassin -> csdmc2010" and not args.both:
            continue
        train = corpus.load(source, ROOT / "corpus" / source.name)
        test = corpus.load(target, ROOT / "corpus" / target.name)
        if "spamassassin" in tools:
            rows.append(run_sa(direction, train, test))
        if "rspamd" in tools:
            rows.append(run_rs(direction, train, test))
    if "mxflow" in tools:
        mx = asyncio.run(transfer())
        rows = [r for r in mx if args.both or r["direction"] == "spamassassin -> csdmc2010"] + rows
    print(f"\nLeave one source out, {time.strftime('%Y-%m-%d')}, {procs.machine()}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
