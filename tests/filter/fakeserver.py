"""Scanner servers that lie: real asyncio listeners on a fresh loopback address that answer
with garbage, floods, a drip or silence, for the rspamd and spamd clients' bounds."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from tests.conftest import unique_loopback

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """Run `handler` for each connection; yields "HOST:PORT". Handlers still running at the
    end (a drip, a flood) are cancelled, so the test never waits for them."""
    running: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            await handler(reader, writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            running.discard(task)

    host = unique_loopback()
    server = await asyncio.start_server(tracked, host, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{host}:{port}"
    finally:
        server.close()
        for task in list(running):
            task.cancel()
        await asyncio.sleep(0)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    """One request of either protocol (HTTP or SPAMC): its head as text and its body, by
    its Content-Length."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("utf-8", "replace")
    length = re.search(r"(?im)^content-length:\s*(\d+)", head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    return head, body


def answering(answer: bytes, requests: list[tuple[str, bytes]] | None = None) -> Handler:
    """Read the request (kept in `requests`), send `answer`, close."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if requests is not None:
            requests.append(request)
        writer.write(answer)
        await writer.drain()

    return handle


def flooding(prefix: bytes, block: bytes = b"A" * 65536) -> Handler:
    """Read the request, send `prefix`, then `block` for as long as anyone reads."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(prefix)
        for _ in range(100_000):  # 6.5 GB of 64 KB blocks: far more than a client may read
            writer.write(block)
            await writer.drain()

    return handle


def dripping(prefix: bytes, every: float = 0.05) -> Handler:
    """Read the request, then send `prefix` and more bytes one at a time, never finishing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for byte in prefix + b"x" * 100_000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Take the request and never answer."""
    await read_request(reader)
    await asyncio.sleep(3600)
