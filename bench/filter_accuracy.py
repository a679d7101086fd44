"""mxflow's spam-filter accuracy by k-fold cross-validation on the vendored corpus.

For each fold (k = 5, fold = int(md5, 16) % 5 — the rule bench/peer_accuracy.py shares) the
classifier is trained from empty on the other four folds and the held-out fold is scored by
the whole local filter (classifier, header anomalies, attachment policy; the DNS checks need
a live resolver and are off, as the peers' network tests are). Held-out scores of all folds
run are pooled. Reported: spam recall and ham false-positive rate at the default threshold
(the junk score, SCL 5), the best recall with at most 0.1 % of ham flagged, ROC AUC, and
the same for the classifier's probability alone.

    .venv/bin/python bench/filter_accuracy.py              # table
    .venv/bin/python bench/filter_accuracy.py --json       # {"rows": [...]} for peer_accuracy.py
    .venv/bin/python bench/filter_accuracy.py --folds 1    # fold 0 only
    .venv/bin/python bench/filter_accuracy.py --inner      # for tuning: fold 0 left out

`--inner` is the validation to tune on (hyperparameters, the score curve, which tokens to
keep): fold 0 is neither trained on nor scored, each of folds 1-4 is scored by a model
trained on the other three, so the 5-fold figures stay an honest estimate of what tuning
never saw. (Inner scores come from 60 % of the corpus instead of 80 %, so they run a
little lower.)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mxflow.checks.pipeline import FilterPipeline
from mxflow.checks.tokens import tokenize
from mxflow.checks.train import FOLDS, read_corpus, train_tokens
from mxflow.config.filter import FilterPolicy
from mxflow.mail import MessageContext, Phase
from mxflow.mime import parse

ROOT = Path(__file__).resolve().parents[1]


def auc(spam: Sequence[float], ham: Sequence[float]) -> float:
    """P(a spam scores above a ham), ties counting half."""
    ordered = sorted(ham)
    total = 0.0
    for s in spam:
        lo = bisect.bisect_left(ordered, s)
        hi = bisect.bisect_right(ordered, s)
        total += lo + 0.5 * (hi - lo)
    return total / (len(spam) * len(ham))


def recall_at_fp(spam: Sequence[float], ham: Sequence[float], max_fp: float) -> tuple[float, float]:
    """Best recall with at most max_fp of ham strictly above the bar, and the bar."""
    allowed = math.floor(max_fp * len(ham) + 1e-9)
    ham_desc = sorted(ham, reverse=True)
    bar = ham_desc[allowed] if allowed < len(ham_desc) else -math.inf
    return sum(1 for s in spam if s > bar) / len(spam), bar


def row(name: str, spam: list[float], ham: list[float], threshold: float) -> dict[str, object]:
    recall = sum(s >= threshold for s in spam) / len(spam)
    fp = sum(h >= threshold for h in ham) / len(ham)
    r01, bar = recall_at_fp(spam, ham, 0.001)
    return {
        "tool": name,
        "spam": len(spam),
        "ham": len(ham),
        "threshold": threshold,
        "recall": recall,
        "fp_rate": fp,
        "recall_at_fp_0.1%": r01,
        "threshold_at_fp_0.1%": bar,
        "auc": auc(spam, ham),
    }


async def run(
    corpus: Path,
    folds: int,
    dump: list[tuple[str, bool, float, float]] | None = None,
    inner: bool = False,
) -> tuple[list[dict[str, object]], float]:
    started = time.monotonic()
    messages = list(read_corpus(corpus))
    tokens = [tokenize(parse(m.raw)) for m in messages]
    policy = FilterPolicy()
    full: dict[bool, list[float]] = {True: [], False: []}
    bayes: dict[bool, list[float]] = {True: [], False: []}
    left_out = {0} if inner else set()
    for fold in range(1, FOLDS) if inner else range(folds):
        model = train_tokens(
            [
                (toks, message.is_spam)
                for message, toks in zip(messages, tokens, strict=True)
                if message.fold != fold and message.fold not in left_out
            ]
        )
        pipeline = FilterPipeline(policy, model=model)
        for message, toks in zip(messages, tokens, strict=True):
            if message.fold != fold:
                continue
            verdict = await pipeline.evaluate(
                MessageContext("192.0.2.1", raw=message.raw), Phase.DATA
            )
            full[message.is_spam].append(verdict.score)
            bayes[message.is_spam].append(model.score(toks).probability)
            if dump is not None:
                score = model.score(toks)
                dump.append((message.member, message.is_spam, verdict.score, score.probability))
    rows = [
        row("mxflow", full[True], full[False], policy.junk_score),
        row("mxflow (classifier only)", bayes[True], bayes[False], 0.9),
    ]
    return rows, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--folds", type=int, default=FOLDS, help="run folds 0..N-1 (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON for peer_accuracy.py")
    parser.add_argument(
        "--inner", action="store_true", help="validate inside folds 1-4 (to tune on)"
    )
    parser.add_argument("--dump", metavar="FILE", help="write each held-out score (TSV)")
    args = parser.parse_args(argv)
    dump: list[tuple[str, bool, float, float]] | None = [] if args.dump else None
    folds = max(1, min(args.folds, FOLDS))
    rows, seconds = asyncio.run(run(args.corpus, folds, dump, args.inner))
    if args.dump and dump is not None:
        with open(args.dump, "w", encoding="utf-8") as f:
            for member, is_spam, score, probability in dump:
                f.write(f"{member}\t{int(is_spam)}\t{score}\t{probability}\n")
    if args.json:
        print(json.dumps({"rows": rows, "seconds": round(seconds, 1), "folds": args.folds}))
        return 0
    print(f"{'filter':28} {'recall':>8} {'FP':>8} {'recall@FP<=0.1%':>16} {'AUC':>8}")
    for r in rows:
        print(
            f"{r['tool']!s:28} {100 * float(r['recall']):7.2f}% {100 * float(r['fp_rate']):7.2f}%"  # type: ignore[arg-type]
            f" {100 * float(r['recall_at_fp_0.1%']):15.2f}% {float(r['auc']):8.5f}"  # type: ignore[arg-type]
        )
    print(f"({rows[0]['spam']} spam, {rows[0]['ham']} ham, {seconds:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
