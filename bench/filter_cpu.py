"""CPU per check, on a dense 10 KB text+HTML message and on a 100 KB one, and the latency the
whole local filter adds (DNS checks off: with the node's cache they cost a lookup once per
TTL, see src/mxflow/dns/resolver.py).

The messages are built here, deterministically, so the figure names what it measured:
multipart/alternative, a text part and an HTML part with the same prose, a link or two
per paragraph, formatting tags, a signature; `dense` because every line has words, links
and markup for the tokenizer and the content rules to chew (unlike smtp-source's filler).

    .venv/bin/python bench/filter_cpu.py [--runs 200] [--json FILE]

Per check: the median wall time of its work on an already parsed message (the MIME walk
is its own row, done once per message and shared; the HTML's tag list, which the tokenizer
and the content rules share within a message, is dropped before every run, so each row
pays for one walk of the tags), and `check()` on the event loop for the
classifier with and without the worker-thread hop. Then the median and p99 of
`FilterPipeline.evaluate` over the three phases with every local check on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mxflow import mime
from mxflow.checks import textscan
from mxflow.checks.attachments import inspect_attachments
from mxflow.checks.bayes import BayesCheck
from mxflow.checks.classifier import default_model
from mxflow.checks.content import analyse
from mxflow.checks.headers import HeaderCheck
from mxflow.checks.pipeline import FilterPipeline
from mxflow.checks.tokens import tokenize
from mxflow.checks.uribl import url_domains
from mxflow.config.filter import FilterPolicy
from mxflow.mail import MessageContext, Phase

PARAGRAPH = (
    "Thanks for sending the draft of the {n} quarterly review. I read through the figures "
    "for the northern region and the numbers for travel and training look higher than the "
    "plan we agreed in March; could you check them against the ledger before Thursday? "
    "The full sheet is at https://docs.example.org/reviews/q{n}/sheet?id={n}7 and the "
    "notes from the call are on the wiki. Priya suggested we move the workshop to the week "
    "of the 14th, which works for me if the room is free."
)


def dense_message(size: int) -> bytes:
    """A multipart/alternative message of about `size` bytes, text and HTML of one prose."""
    text: list[str] = []
    html: list[str] = []
    n = 0
    while sum(map(len, text)) + sum(map(len, html)) < size - 900:
        n += 1
        para = PARAGRAPH.format(n=n)
        text.append(para + "\r\n\r\n")
        url = f"https://docs.example.org/reviews/q{n}/sheet?id={n}7"
        html.append(
            f'<p style="font-family:Arial">{para.replace(url, f"<a href={url!r}>the sheet</a>")}'
            f" <b>Owner:</b> <i>finance</i> &ndash; <span>item {n}</span></p>\r\n"
        )
    boundary = "b1_dense_example"
    return (
        "Received: from mail.example.org (mail.example.org [192.0.2.25]) by mx.contoso.com "
        "with ESMTPS id 4F1; Tue, 24 Nov 2026 10:00:01 +0000\r\n"
        "From: Ann Example <ann@example.org>\r\nTo: Bob <bob@contoso.com>\r\n"
        "Subject: Q3 review: figures for the northern region\r\n"
        "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <dense.1@example.org>\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n'
        f"\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{''.join(text)}"
        f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"<html><body>{''.join(html)}</body></html>\r\n--{boundary}--\r\n"
    ).encode()


def median_ms(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        textscan.forget()  # each run reads the HTML as a new message would
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return 1000 * statistics.median(samples)


def per_check(raw: bytes, runs: int) -> dict[str, float]:
    view = mime.parse(raw)
    policy = FilterPolicy()
    model = default_model()
    headers = HeaderCheck(policy)
    return {
        "MIME walk (shared)": median_ms(lambda: mime.parse(raw), runs),
        "bayes: tokenize": median_ms(lambda: tokenize(view), runs),
        "bayes: tokenize + score": median_ms(lambda: model.score(tokenize(view)), runs),
        "headers": median_ms(lambda: headers.inspect(view, ""), runs),
        "content rules": median_ms(lambda: analyse(view, raw, ["bob@contoso.com"]), runs),
        "uribl: find hosts": median_ms(lambda: url_domains(view, 20), runs),
        "attachments": median_ms(lambda: inspect_attachments(view, policy), runs),
    }


async def loop_costs(raw: bytes, runs: int) -> dict[str, float]:
    """BayesCheck.check inline and through the worker thread, on the event loop."""
    from mxflow.checks import bayes

    check = BayesCheck(FilterPolicy(), default_model())
    out: dict[str, float] = {}
    for label, big in (("bayes check() inline", 1 << 40), ("bayes check() via thread", 0)):
        saved = bayes.BIG
        bayes.BIG = big
        samples = []
        try:
            for _ in range(runs):
                ctx = MessageContext("192.0.2.1", raw=raw)
                mime.view(ctx)
                textscan.forget()
                started = time.perf_counter()
                await check.check(ctx)
                samples.append(time.perf_counter() - started)
        finally:
            bayes.BIG = saved
        out[label] = 1000 * statistics.median(samples)
    return out


async def pipeline_latency(raw: bytes, runs: int) -> dict[str, float]:
    pipeline = FilterPipeline(FilterPolicy())
    samples = []
    for _ in range(runs):
        ctx = MessageContext("192.0.2.1", helo="mail.example.org", raw=raw,
                             mail_from="ann@example.org", rcpt_tos=["bob@contoso.com"])  # fmt: skip
        textscan.forget()
        started = time.perf_counter()
        for phase in (Phase.CONNECT, Phase.ENVELOPE, Phase.DATA):
            await pipeline.evaluate(ctx, phase)
        samples.append(time.perf_counter() - started)
        pipeline.connection_closed(ctx)
    samples.sort()
    return {
        "filter median": 1000 * statistics.median(samples),
        "filter p99": 1000 * samples[min(len(samples) - 1, int(0.99 * len(samples)))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    default_model()  # loaded once, as a node does at start
    result: dict[str, dict[str, float]] = {}
    for label, size in (("dense 10 KB", 10 * 1024), ("dense 100 KB", 100 * 1024)):
        raw = dense_message(size)
        runs = args.runs if size < 50_000 else max(20, args.runs // 5)
        row = per_check(raw, runs)
        row.update(asyncio.run(loop_costs(raw, runs)))
        row.update(asyncio.run(pipeline_latency(raw, runs)))
        result[f"{label} ({len(raw)} bytes)"] = row
    names = list(next(iter(result.values())))
    print("| ms (median) | " + " | ".join(result) + " |")
    print("|---|" + "---|" * len(result))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[name]:.2f}" for r in result.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
