"""Bad input must not hurt: every message gets a verdict, in bounded time, never a crash."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mxflow.checks.pipeline import FilterPipeline
from mxflow.mail import Action, Phase, Verdict
from mxflow.mime import MAX_DEPTH, parse
from tests.filter.helpers import DATA, context, read

CORPUS = sorted(
    [p for p in (DATA / "mime").rglob("*") if p.is_file() and p.suffix in (".msg", ".txt")]
    + [p for p in (DATA / "spamassassin").rglob("*") if p.is_file() and p.parent.name != "cjk"]
)
CORPUS = [p for p in CORPUS if "LICENSE" not in p.name and p.name != "NOTICE"]


def evaluate(raw: bytes) -> tuple[Verdict, float]:
    started = time.perf_counter()
    verdict = asyncio.run(FilterPipeline().evaluate(context(raw), Phase.DATA))
    return verdict, time.perf_counter() - started


def test_every_vendored_test_message_gets_a_verdict() -> None:
    assert len(CORPUS) > 150
    pipeline = FilterPipeline()

    async def run_all() -> list[Verdict]:
        return [await pipeline.evaluate(context(read(p)), Phase.DATA) for p in CORPUS]

    verdicts = asyncio.run(run_all())
    assert all(isinstance(v.action, Action) for v in verdicts)
    crashed = [
        (p.name, s.name)
        for p, v in zip(CORPUS, verdicts, strict=True)
        for s in v.symbols
        if s.name.endswith(("_ERROR", "_TIMEOUT"))
    ]
    assert crashed == []


def test_huge_header_is_handled_quickly() -> None:
    raw = (
        b"From: a@example.org\r\nSubject: "
        + b"A" * 2_000_000
        + b"\r\nX-Long: "
        + (b"b " * 500_000)
        + b"\r\n\r\nbody\r\n"
    )
    verdict, seconds = evaluate(raw)
    assert seconds < 5.0
    assert verdict.action in (Action.DELIVER, Action.JUNK, Action.QUARANTINE)


def test_deeply_nested_multiparts_hit_the_depth_limit() -> None:
    depth = 3000
    head = b"From: a@example.org\r\nSubject: nest\r\nMIME-Version: 1.0\r\n"
    parts = [head]
    for level in range(depth):
        parts.append(
            f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n".encode()
        )
    parts.append(b"Content-Type: text/plain\r\n\r\ninnermost\r\n")
    for level in reversed(range(depth)):
        parts.append(f"--b{level}--\r\n".encode())
    raw = b"".join(parts)
    view = parse(raw)
    assert "depth" in view.limits or view.defects
    verdict, seconds = evaluate(raw)
    assert seconds < 10.0
    names = {s.name for s in verdict.symbols}
    assert "MIME_LIMITS" in names or "MIME_DEFECTS" in names
    assert depth > MAX_DEPTH


def test_many_parts_hit_the_parts_limit() -> None:
    body = b"".join(b"--B\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(2000))
    raw = (
        b"From: a@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + body + b"--B--\r\n"
    )
    verdict, seconds = evaluate(raw)
    assert seconds < 10.0
    assert "MIME_LIMITS" in {s.name for s in verdict.symbols}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"not a message at all \xff\xfe\x00",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
        b"Content-Transfer-Encoding: base64\r\nContent-Type: text/plain; charset=utf-77\r\n\r\n"
        b"!!!not base64!!!\r\n",
        b"Subject: =?x-unknown?B?////?= =?utf-8?q?=ZZ?=\r\nFrom: <<>>@@\r\n\r\nx\r\n",
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n",
        b"Date: Mon, 99 Foo 99999 99:99:99 +9999\r\nMessage-ID: nope\r\n\r\n",
    ],
)
def test_malformed_messages_get_a_verdict(raw: bytes) -> None:
    verdict, seconds = evaluate(raw)
    assert seconds < 2.0
    assert not any(s.name.endswith("_ERROR") for s in verdict.symbols)


def test_cjk_messages_are_tokenised(tmp_path: Path) -> None:
    for path in sorted((DATA / "spamassassin" / "nice" / "cjk").glob("*")):
        verdict, _ = evaluate(read(path))
        assert not any(s.name.endswith("_ERROR") for s in verdict.symbols), path


def test_a_large_message_is_analysed_off_the_event_loop_in_bounded_time() -> None:
    import random

    from tests.filter.helpers import message

    blob = random.Random(1).randbytes(8 * 1024 * 1024)
    raw = message(
        "See the attached dataset.\n", attachments=[("data.bin", "application/octet-stream", blob)]
    )

    async def run() -> tuple[Verdict, float]:
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(heartbeat())
        started = time.perf_counter()
        verdict = await FilterPipeline().evaluate(context(raw), Phase.DATA)
        elapsed = time.perf_counter() - started
        beat.cancel()
        assert ticks >= elapsed / 0.01 * 0.1  # the event loop kept running meanwhile
        return verdict, elapsed

    verdict, elapsed = asyncio.run(run())
    assert elapsed < 10.0
    assert verdict.action is Action.DELIVER
