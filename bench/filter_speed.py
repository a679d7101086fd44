"""The latency mxflow's filter adds to one message, with every local check on.

Messages of about 10 KB are taken from the vendored corpus (the ones nearest 10 KB, ham and
spam alike), each evaluated through all three phases (CONNECT with the rate limiter and IP
lists, ENVELOPE with HELO and sender lists, DATA with header anomalies, the classifier and
the attachment policy; clamd too when it answers at MXFLOW_CLAMD). DNS checks are off:
their cost is the resolver's. Reported: median and p99 of the added latency, per-phase
medians, and messages per second of one core.

    .venv/bin/python bench/filter_speed.py [--messages 2000] [--no-clamd] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

from mxflow.checks.clamav import ping
from mxflow.checks.pipeline import FilterPipeline
from mxflow.checks.train import read_corpus
from mxflow.config.filter import ClamdAddress, FilterPolicy
from mxflow.mail import MessageContext, Phase

ROOT = Path(__file__).resolve().parents[1]
CLAMD = os.environ.get("MXFLOW_CLAMD", "unix:/run/mxflow-ci/clamd/clamd.sock")
TARGET = 10 * 1024


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def run(count: int, use_clamd: bool) -> dict[str, object]:
    corpus = sorted(read_corpus(ROOT / "data" / "corpus"), key=lambda m: abs(len(m.raw) - TARGET))
    sample = [crlf(m.raw) for m in corpus[:200]]
    clamd = None
    if use_clamd and await ping(ClamdAddress(CLAMD)):
        clamd = CLAMD
    pipeline = FilterPipeline(FilterPolicy(max_connections_per_minute=10**9), clamd=clamd)
    for raw in sample[:20]:  # warm up (model load, regex compilation)
        await pipeline.evaluate(MessageContext("192.0.2.1", raw=raw), Phase.DATA)
    total: list[float] = []
    phases: dict[str, list[float]] = {p.value: [] for p in Phase}
    for i in range(count):
        raw = sample[i % len(sample)]
        ctx = MessageContext(
            client_ip=f"198.51.100.{i % 250 + 1}",
            helo="mail.example.org",
            mail_from="sender@example.org",
            rcpt_tos=["bob@contoso.com"],
            raw=raw,
        )
        started = time.perf_counter()
        for phase in Phase:
            t0 = time.perf_counter()
            await pipeline.evaluate(ctx, phase)
            phases[phase.value].append(time.perf_counter() - t0)
        total.append(time.perf_counter() - started)
        pipeline.connection_closed(ctx)
    sizes = [len(r) for r in sample]
    return {
        "messages": count,
        "mean_size": round(statistics.mean(sizes)),
        "clamd": clamd or "off",
        "checks": [c.name for c in pipeline.checks],
        "median_ms": round(1000 * statistics.median(total), 3),
        "p99_ms": round(1000 * percentile(total, 99), 3),
        "phase_median_ms": {k: round(1000 * statistics.median(v), 3) for k, v in phases.items()},
        "messages_per_second_one_core": round(count / sum(total), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--no-clamd", action="store_true", help="leave ClamAV out")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.messages, not args.no_clamd))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['messages']} messages of ~{result['mean_size']} bytes, clamd {result['clamd']}")
    print(f"added latency: median {result['median_ms']} ms, p99 {result['p99_ms']} ms")
    print(f"per phase (median ms): {result['phase_median_ms']}")
    print(f"one core: {result['messages_per_second_one_core']} messages/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
