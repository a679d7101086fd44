"""A light asyncio SMTP client that times each transaction, for the latency figures.

smtp-source prints no per-message timing, so latency comes from this client, run against
the same server at the same concurrency and message size, one connection per message as
smtp-source does: the time from connect to the 250 reply to the final "." — the whole
transaction a sending MTA waits for, which for a store-and-forward relay includes writing
(and fsyncing) the message to its queue. It speaks plain SMTP (EHLO, MAIL, RCPT, DATA, QUIT)
and nothing else, so its own cost per message stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, one per accepted message
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.latencies)


def make_message(size: int, index: int) -> bytes:
    """A plain message of about `size` bytes of body, dot-stuffing-free, CRLF line ends."""
    head = (
        f"From: <sender@example.org>\r\nTo: <user@contoso.com>\r\n"
        f"Subject: bench message {index}\r\n"
        f"Message-Id: <{index}.{time.time_ns()}@bench.example.org>\r\n\r\n"
    ).encode()
    line = b"X" * 78 + b"\r\n"
    body = line * (size // len(line) + 1)
    return head + body[:size].rstrip(b"X") + b"\r\n"


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)


async def _expect(reader: asyncio.StreamReader, code: int, what: str) -> None:
    got, text = await _reply(reader)
    if got != code:
        raise RuntimeError(f"{what}: {text.decode(errors='replace').strip()}")


async def _one(host: str, port: int, message: bytes, sender: str, rcpt: str) -> float:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await _expect(reader, 220, "greeting")
        writer.write(b"EHLO bench.example.org\r\n")
        await _expect(reader, 250, "EHLO")
        writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
        await _expect(reader, 250, "MAIL")
        writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
        await _expect(reader, 250, "RCPT")
        writer.write(b"DATA\r\n")
        await _expect(reader, 354, "DATA")
        writer.write(message + b".\r\n")
        await _expect(reader, 250, "end of data")
        elapsed = time.perf_counter() - t0
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return elapsed
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(writer.wait_closed(), 5)


async def run_load(
    host: str,
    port: int,
    *,
    count: int,
    concurrency: int,
    size: int,
    sender: str = "sender@example.org",
    rcpt: str = "user@contoso.com",
    limit: float = 600.0,
    message: bytes | None = None,
) -> LoadResult:
    """Send `count` messages over `concurrency` parallel sessions; time each transaction.

    The messages are `make_message(size)`, or `message` (CRLF line ends, dot-stuffed here).
    """
    result = LoadResult()
    if message is not None:
        lines = message.replace(b"\r\n", b"\n").split(b"\n")
        stuffed = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)
        messages = [stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"]
    else:
        messages = [make_message(size, i) for i in range(min(count, 64))]
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            try:
                result.latencies.append(
                    await _one(host, port, messages[i % len(messages)], sender, rcpt)
                )
            except (OSError, RuntimeError, ConnectionError) as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), limit)
    result.seconds = time.perf_counter() - t0
    return result
