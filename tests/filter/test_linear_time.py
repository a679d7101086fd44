"""Every content check is linear in the message's size (issue 10, item 5).

One 100 KB message of long unbroken runs once stalled a node for 27 s: patterns that could
start at every position of a run and scan to its end. Here each check is timed on 1 MB
messages built to hit such patterns (one long run, thousands of `<` without `>`, unclosed
comments and style blocks, `a.a.a.…` for address patterns …) against the same check on a
clean 1 MB message of ordinary text and HTML; a quadratic pattern takes minutes on these,
a linear one about as long as on the clean message.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from mxflow import mime
from mxflow.checks.attachments import inspect_attachments
from mxflow.checks.classifier import default_model
from mxflow.checks.content import analyse
from mxflow.checks.headers import HeaderCheck
from mxflow.checks.tokens import tokenize
from mxflow.checks.uribl import url_domains
from mxflow.config.filter import FilterPolicy

SIZE = 1_000_000
SLACK = 0.25  # seconds, for a shared and noisy machine
FACTOR = 5.0


def _message(body: str, ctype: str, subject: str = "Report") -> bytes:
    return (
        f"From: Ann <ann@example.org>\r\nTo: bob@contoso.com\r\nSubject: {subject}\r\n"
        "Message-ID: <t1@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {ctype}; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def _clean(ctype: str) -> bytes:
    line = (
        '<p>The quarterly <b>report</b> is <a href="https://www.example.org/r/q3">online</a>; '
        "send comments to ann@example.org by Friday, 10.0.0.1 is the test box.</p>\r\n"
    )
    return _message(line * (SIZE // len(line)), ctype)


RUNS = {
    "one long run": "A" * SIZE,
    "long url": "http://" + "a" * SIZE,
    "urls in urls": "http://" * (SIZE // 7),
    "address-like": "a." * (SIZE // 2),
    "domain-like": "x@" + "a-" * (SIZE // 2),
    "dotted digits": "1." * (SIZE // 2),
    "www runs": "www." * (SIZE // 4),
    "tags without end": "<a" * (SIZE // 2),
    "lone <": "<" * SIZE,
    "open comments": "<!--" * (SIZE // 4),
    "open styles": "<style>" * (SIZE // 7),
    "open anchors": '<a href="http://x.example/">' * (SIZE // 28),
    "nested hiding": '<div style="display:none">' * (SIZE // 26),
    "unclosed quotes": '<a href="' * (SIZE // 9),
    "zero width": "a\u200b" * (SIZE // 2),
    "mixed script": ("pаypal" * (SIZE // 6)),
    "word salad": "the of with by " * (SIZE // 15),
    "headings in sentences": "born <h5>June</h5> " * (SIZE // 19),
    "glued words": "YourPenisRolexWatches" * (SIZE // 21),
    "swapped capitals": "Rep1icaWatchesL0SS " * (SIZE // 19),
    "made-up hosts": "".join(f"http://{n}a.x.example/ " for n in range(SIZE // 22)),
}
CHECKS: dict[str, Callable[[bytes], object]] = {
    "parse": mime.parse,
    "bayes": lambda raw: default_model().score(tokenize(mime.parse(raw))),
    "headers": lambda raw: HeaderCheck(FilterPolicy()).inspect(mime.parse(raw), ""),
    "content": lambda raw: analyse(mime.parse(raw), raw, ["bob@contoso.com"]),
    "uribl hosts": lambda raw: url_domains(mime.parse(raw), 20),
    "attachments": lambda raw: inspect_attachments(mime.parse(raw), FilterPolicy()),
}


def _seconds(fn: Callable[[bytes], object], raw: bytes) -> float:
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        fn(raw)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("ctype", ["text/plain", "text/html"])
def test_each_check_is_linear_on_hostile_megabytes(check: str, ctype: str) -> None:
    fn = CHECKS[check]
    bound = FACTOR * _seconds(fn, _clean(ctype)) + SLACK
    slow = {}
    for name, body in RUNS.items():
        took = _seconds(fn, _message(body, ctype))
        if took > bound:
            slow[name] = round(took, 2)
    assert slow == {}, f"{check} on {ctype}: bound {bound:.2f} s"


def test_long_header_values_are_linear() -> None:
    clean = _message("Hello.", "text/plain", subject="A fine subject " * 20_000)
    fn = CHECKS["bayes"]
    bound = FACTOR * _seconds(fn, clean) + SLACK
    for subject in ("a." * 150_000, "<" * 300_000, "AB" * 150_000, "=?" * 150_000):
        assert _seconds(fn, _message("Hello.", "text/plain", subject=subject)) < bound


async def test_big_messages_are_analysed_off_the_event_loop() -> None:
    """While the classifier and the content rules work on a 1 MB message, the loop keeps
    turning (other sessions are served), and the pipeline's timeout cuts the wait short."""
    import asyncio

    from mxflow.checks.pipeline import FilterPipeline
    from mxflow.mail import MessageContext, Phase

    raw = _clean("text/html")
    gaps: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    stop = asyncio.Event()
    ticking = asyncio.create_task(ticker(stop))
    started = time.perf_counter()
    pipeline = FilterPipeline(FilterPolicy(check_timeout=0.05))
    verdict = await pipeline.evaluate(MessageContext("192.0.2.1", raw=raw), Phase.DATA)
    took = time.perf_counter() - started
    stop.set()
    await ticking
    names = {s.name for s in verdict.symbols}
    assert {"BAYES_TIMEOUT", "CONTENT_TIMEOUT"} & names  # given up, the message kept
    assert max(gaps) < 0.25 and took < 2.0
