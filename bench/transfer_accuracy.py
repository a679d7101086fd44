"""How mxflow's filter holds on mail of a source it was never trained on, and how fast it
learns a site's own mail.

Leave one source out: the classifier is trained on one source only and the whole local
filter (classifier, header anomalies, the corpus-independent `content` rules, attachment
policy; DNS checks off, as in bench/filter_accuracy.py) scores every message of the other.

    spamassassin -> csdmc2010   the shipped model (trained on data/corpus by `make model`)
                                scores data/corpus/csdmc2010-dev
    csdmc2010 -> spamassassin   a model trained from empty on csdmc2010-dev scores
                                data/corpus

Per direction and source: spam recall and ham false positives at the default policy (junk
score 5), the best recall with at most 0.1 % of ham flagged, ROC AUC, ms per message (the
filter's evaluate, tokenization included, one core); rows for the whole filter, the
classifier alone (its probability) and the content rules alone (their score sum).

`--curve` adds the learning curve: csdmc2010-dev in md5 order, the first 500 kept for
learning and the other 490 for testing; after the shipped model learns the first k (k = 0,
50, 200, 500, as `mxflow filter learn` does: counts plus online steps) the test part is
scored. Nothing of the test part is ever learnt.

    .venv/bin/python bench/transfer_accuracy.py [--curve] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from filter_accuracy import row
from mxflow.checks.classifier import BayesModel, default_model
from mxflow.checks.content import DEFAULT_SCORES
from mxflow.checks.pipeline import FilterPipeline
from mxflow.checks.tokens import tokenize
from mxflow.checks.train import CorpusMessage, read_corpus, train_tokens
from mxflow.config.filter import FilterPolicy
from mxflow.mail import MessageContext, Phase
from mxflow.mime import parse

ROOT = Path(__file__).resolve().parents[1]
SPAMASSASSIN = ROOT / "data" / "corpus"
CSDMC = ROOT / "data" / "corpus" / "csdmc2010-dev"
CURVE = (0, 50, 200, 500)
LEARN_POOL = 500


@dataclass
class Scored:
    """Scores of one test set: whole filter, classifier, content rules; and the time."""

    full: dict[bool, list[float]]
    bayes: dict[bool, list[float]]
    content: dict[bool, list[float]]
    seconds: float = 0.0

    @classmethod
    def empty(cls) -> Scored:
        return cls({True: [], False: []}, {True: [], False: []}, {True: [], False: []})


async def score(model: BayesModel, messages: Sequence[CorpusMessage]) -> Scored:
    """Every message through the local filter with `model`; the per-component scores too."""
    policy = FilterPolicy()
    pipeline = FilterPipeline(policy, model=model)
    out = Scored.empty()
    for message in messages:
        ctx = MessageContext("192.0.2.1", raw=message.raw)
        started = time.perf_counter()
        verdict = await pipeline.evaluate(ctx, Phase.DATA)
        out.seconds += time.perf_counter() - started
        out.full[message.is_spam].append(verdict.score)
        content = sum(s.score for s in verdict.symbols if s.name in DEFAULT_SCORES)
        out.content[message.is_spam].append(content)
        out.bayes[message.is_spam].append(model.score(tokenize(parse(message.raw))).probability)
    return out


def rows(direction: str, scored: Scored, n: int) -> list[dict[str, object]]:
    ms = 1000 * scored.seconds / max(1, n)
    out = [
        row("mxflow", scored.full[True], scored.full[False], FilterPolicy().junk_score),
        row("mxflow classifier only (p)", scored.bayes[True], scored.bayes[False], 0.96),
        row("mxflow content rules only", scored.content[True], scored.content[False], 5.0),
    ]
    for r in out:
        r["direction"] = direction
        r["ms_per_message"] = round(ms, 2) if r["tool"] == "mxflow" else None
    return out


async def transfer() -> list[dict[str, object]]:
    spamassassin = list(read_corpus(SPAMASSASSIN))
    csdmc = list(read_corpus(CSDMC))
    out = rows("spamassassin -> csdmc2010", await score(default_model(), csdmc), len(csdmc))
    model = train_tokens([(tokenize(parse(m.raw)), m.is_spam) for m in csdmc])
    scored = await score(model, spamassassin)
    out += rows("csdmc2010 -> spamassassin", scored, len(spamassassin))
    return out


async def curve() -> list[dict[str, object]]:
    csdmc = sorted(read_corpus(CSDMC), key=lambda m: m.md5)
    pool, test = csdmc[:LEARN_POOL], csdmc[LEARN_POOL:]
    out: list[dict[str, object]] = []
    for k in CURVE:
        model = BayesModel.from_bytes(default_model().to_bytes())  # a private copy
        for message in pool[:k]:
            model.learn(tokenize(parse(message.raw)), message.is_spam)
        scored = await score(model, test)
        r = row("mxflow", scored.full[True], scored.full[False], FilterPolicy().junk_score)
        r["learnt"] = k
        r["learnt_spam"] = sum(m.is_spam for m in pool[:k])
        out.append(r)
    return out


def pct(value: object) -> str:
    return f"{100 * float(value):6.2f} %"  # type: ignore[arg-type]


def print_table(table: list[dict[str, object]]) -> None:
    print("| direction | filter | spam/ham | recall | FP | recall @ FP≤0.1 % | AUC | ms/msg |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        ms = r.get("ms_per_message")
        print(
            f"| {r['direction']} | {r['tool']} | {r['spam']}/{r['ham']} | {pct(r['recall'])} "
            f"| {pct(r['fp_rate'])} | {pct(r['recall_at_fp_0.1%'])} | {float(r['auc']):.4f} "  # type: ignore[arg-type]
            f"| {'' if ms is None else ms} |"
        )


def print_curve(table: list[dict[str, object]]) -> None:
    print("\n| learnt k (spam) | test spam/ham | recall | FP | recall @ FP≤0.1 % | AUC |")
    print("|---|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['learnt']} ({r['learnt_spam']}) | {r['spam']}/{r['ham']} | {pct(r['recall'])} "
            f"| {pct(r['fp_rate'])} | {pct(r['recall_at_fp_0.1%'])} | {float(r['auc']):.4f} |"  # type: ignore[arg-type]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curve", action="store_true", help="also the learning curve")
    parser.add_argument("--no-transfer", action="store_true", help="only the learning curve")
    parser.add_argument("--json", type=Path, help="write the rows to this file")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result: dict[str, object] = {}
    if not args.no_transfer:
        table = asyncio.run(transfer())
        result["transfer"] = table
        print_table(table)
    if args.curve or args.no_transfer:
        points = asyncio.run(curve())
        result["curve"] = points
        print_curve(points)
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
