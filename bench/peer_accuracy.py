"""Spam-filter accuracy of mxflow and its peers, k-fold on the same corpus, in one run.

For each fold (k = 5, fold = int(md5, 16) % 5, the rule bench/filter_accuracy.py shares):
SpamAssassin's Bayes (sa-learn) and rspamd's Bayes (learnt through its controller) are trained
on the other folds, from empty, and score the held-out fold; the held-out scores of all folds
run are pooled. For each tool: spam recall and ham false-positive rate at the tool's default
threshold (SpamAssassin 5.0; rspamd: the score of its first action stronger than no action,
"add header", 6.0), the best recall with at most 0.1 % of ham flagged, and the ROC AUC. In the
same run, bench/filter_accuracy.py (mxflow's filter, its own folds by the same rule) is run
and its JSON read. One table at the end.

    .venv/bin/python bench/peer_accuracy.py            # all 5 folds (~20-30 min on 2 cores)
    .venv/bin/python bench/peer_accuracy.py --folds 1  # fold 0 only (~5 min)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lib import corpus, procs, stats
from peers.rspamd import Rspamd, RspamdConfig
from peers.spamassassin import SpamAssassin, SpamAssassinConfig

ROOT = procs.BENCH_ROOT / "accuracy"


@dataclass
class Scores:
    """Held-out scores of one tool, pooled over the folds run."""

    name: str
    threshold: float
    spam: list[float] = field(default_factory=list)
    ham: list[float] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    def row(self) -> dict[str, float | str | int]:
        recall, fp = stats.rates_at(self.spam, self.ham, self.threshold)
        r01, bar = stats.recall_at_fp(self.spam, self.ham, 0.001)
        return {
            "tool": self.name,
            "spam": len(self.spam),
            "ham": len(self.ham),
            "threshold": self.threshold,
            "recall": recall,
            "fp_rate": fp,
            "recall_at_fp_0.1%": r01,
            "threshold_at_fp_0.1%": bar,
            "auc": stats.auc(self.spam, self.ham),
            "seconds": round(self.seconds, 1),
            "note": self.note,
        }


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def score_all(
    items: Sequence[corpus.Item], fn: Callable[[bytes], float], workers: int, out: Scores
) -> None:
    def one(item: corpus.Item) -> tuple[bool, float]:
        raw = item.path.read_bytes()
        for attempt in range(3):  # a transient socket error must not cost the whole run
            try:
                return item.spam, fn(raw)
            except (OSError, RuntimeError) as exc:
                if attempt == 2:
                    raise RuntimeError(f"{item.member}: {exc}") from exc
                time.sleep(1)
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(workers) as pool:
        for spam, score in pool.map(one, items):
            (out.spam if spam else out.ham).append(score)


def run_spamassassin(
    sa: SpamAssassin, fold: int, train: list[corpus.Item], test: list[corpus.Item], out: Scores
) -> None:
    t0 = time.monotonic()
    sa.stop()
    sa.reset_bayes()
    folder = ROOT / "train"
    for spam in (True, False):
        sub = procs.fresh_dir(folder / f"fold{fold}-{'spam' if spam else 'ham'}")
        for item in train:
            if item.spam == spam:
                (sub / item.path.name).symlink_to(item.path)
        log(f"SpamAssassin fold {fold}: {sa.learn(sub, spam)}")
    sa.start()
    log(f"SpamAssassin fold {fold}: scoring {len(test)} held-out messages")
    score_all(test, lambda raw: sa.score(raw)[0], sa.cfg.children, out)
    sa.stop()
    out.seconds += time.monotonic() - t0
    log(f"SpamAssassin fold {fold}: done in {time.monotonic() - t0:.0f} s")


def run_rspamd(
    rs: Rspamd, fold: int, train: list[corpus.Item], test: list[corpus.Item], out: Scores
) -> None:
    t0 = time.monotonic()
    rs.flush_bayes()
    # Learn in md5 order (spam and ham interleaved, as mail arrives): learnt class by class,
    # rspamd's default learn condition skips most of the second class as "already in class".
    train = sorted(train, key=lambda it: it.md5)
    declined = 0
    with ThreadPoolExecutor(4) as pool:
        for ok in pool.map(lambda it: rs.learn(it.path.read_bytes(), it.spam), train):
            declined += not ok
    log(f"rspamd fold {fold}: learnt {len(train) - declined} of {len(train)} ({declined} declined)")
    score_all(test, lambda raw: rs.scan(raw)[0], 2, out)
    out.seconds += time.monotonic() - t0
    log(f"rspamd fold {fold}: done in {time.monotonic() - t0:.0f} s")


def run_mxflow(corpus_dir: Path, folds: int, timeout: float) -> tuple[list[dict[str, object]], str]:
    """Run bench/filter_accuracy.py and read the JSON it prints (rows, or a note why not)."""
    script = Path(__file__).with_name("filter_accuracy.py")
    if not script.exists():
        return [], "bench/filter_accuracy.py does not exist yet"
    argv = [sys.executable, str(script), "--corpus", str(corpus_dir), "--json"]
    if folds < corpus.K:
        argv += ["--folds", str(folds)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return [], f"filter_accuracy.py took more than {timeout:.0f} s"
    if proc.returncode != 0:
        return [], f"filter_accuracy.py exited {proc.returncode}: {proc.stderr.strip()[-400:]}"
    text = proc.stdout.strip()
    start = text.find("{") if "{" in text else text.find("[")
    try:
        data = json.loads(text[start:])
    except ValueError:
        return [], f"filter_accuracy.py printed no JSON: {text[-300:]}"
    rows = data if isinstance(data, list) else data.get("rows", data.get("results", [data]))
    return [r for r in rows if isinstance(r, dict)], ""


def fmt(v: object, pct: bool = False) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{100 * v:.2f} %" if pct else f"{v:.4f}" if v < 1.5 else f"{v:.1f}"
    return "n/a" if v is None else str(v)


def pick(row: dict[str, object], *keys: str) -> object:
    for key in keys:
        if key in row:
            return row[key]
    return None


def table(rows: list[dict[str, object]]) -> str:
    head = [
        "tool",
        "held-out spam/ham",
        "threshold",
        "recall",
        "FP rate",
        "recall @ FP≤0.1 %",
        "AUC",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    str(pick(r, "tool", "name", "filter") or "mxflow"),
                    f"{pick(r, 'spam', 'n_spam')}/{pick(r, 'ham', 'n_ham')}",
                    fmt(pick(r, "threshold")),
                    fmt(pick(r, "recall", "spam_recall"), pct=True),
                    fmt(pick(r, "fp_rate", "ham_fp_rate", "fp"), pct=True),
                    fmt(
                        pick(r, "recall_at_fp_0.1%", "recall_at_fp_0_1", "recall_at_fp01"), pct=True
                    ),
                    fmt(pick(r, "auc", "AUC")),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="corpus folder (default data/corpus, else /work/shared/corpus)",
    )
    parser.add_argument(
        "--folds", type=int, default=corpus.K, help="run folds 0..N-1 only (default all 5)"
    )
    parser.add_argument(
        "--tools", default="spamassassin,rspamd,mxflow", help="comma-separated subset"
    )
    parser.add_argument(
        "--rspamd-offline-neutral",
        action="store_true",
        help="turn off rspamd's hfilter checks that read NXDOMAIN as evidence (offline artefact)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args()
    procs.exit_on_sigterm()
    corpus_dir = args.corpus or corpus.default_corpus()
    tools = set(args.tools.split(","))
    folds = range(max(1, min(args.folds, corpus.K)))

    procs.fresh_dir(ROOT)
    log(f"corpus {corpus_dir}; folds {list(folds)}; machine: {procs.machine()}")
    items = corpus.load(corpus_dir, ROOT / "corpus")
    log(f"{len(items)} messages ({sum(i.spam for i in items)} spam)")

    sa = (
        SpamAssassin(SpamAssassinConfig(ROOT / "spamassassin")) if "spamassassin" in tools else None
    )
    # Offline, every lookup is NXDOMAIN: hfilter then scores the From domain "no A/MX"
    # (HFILTER_FROMHOST_NORES_A_OR_MX) and the client "hostname unknown" on ham and spam alike.
    neutral = (
        {"hfilter.conf": "helo_enabled = false;\nhostname_enabled = false;\n"
         "from_enabled = false;\nmid_enabled = false;\n"}
        if args.rspamd_offline_neutral else {}
    )  # fmt: skip
    rs = Rspamd(RspamdConfig(ROOT / "rspamd", local_d=neutral)) if "rspamd" in tools else None
    sa_scores = Scores("SpamAssassin 4.0 (Bayes + local rules)", 5.0)
    rs_name = "rspamd 3.4 (Bayes + default rules" + (", hfilter DNS off)" if neutral else ")")
    rs_scores = Scores(rs_name, 6.0)
    mx_rows: list[dict[str, object]] = []
    mx_note = ""
    mx_thread: threading.Thread | None = None

    def mx() -> None:
        nonlocal mx_rows, mx_note
        t0 = time.monotonic()
        mx_rows, mx_note = run_mxflow(corpus_dir, len(folds), 3600)
        log(f"mxflow filter_accuracy.py: {time.monotonic() - t0:.0f} s {mx_note}")

    try:
        if sa is not None:
            sa.setup()
        if rs is not None:
            rs.start()
        if "mxflow" in tools:
            mx_thread = threading.Thread(target=mx)
            mx_thread.start()
        for fold in folds:
            train = [i for i in items if i.fold != fold]
            test = [i for i in items if i.fold == fold]
            threads = []
            if sa is not None:
                threads.append(
                    threading.Thread(
                        target=run_spamassassin, args=(sa, fold, train, test, sa_scores)
                    )
                )
            if rs is not None:
                threads.append(
                    threading.Thread(target=run_rspamd, args=(rs, fold, train, test, rs_scores))
                )
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if mx_thread is not None:
            mx_thread.join()
    finally:
        if sa is not None:
            sa.stop()
        if rs is not None:
            rs.stop()

    rows: list[dict[str, object]] = []
    rows.extend(mx_rows)
    if sa is not None:
        rows.append(dict(sa_scores.row()))
    if rs is not None:
        rows.append(dict(rs_scores.row()))
    day = time.strftime("%Y-%m-%d")
    print(f"\nHeld-out accuracy, folds {list(folds)} of {corpus.K}, {day}, {procs.machine()}")
    print(table(rows))
    if mx_note:
        print(f"\nmxflow: {mx_note}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
