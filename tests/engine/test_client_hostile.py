"""The outbound client against lying servers, over real loopback sockets.

Each test starts a small SMTP server (asyncio streams) that breaks the protocol the way
an attacker or a broken next hop would, and checks that the client neither reports a
delivery it did not make, nor believes injected replies, nor waits or buffers without
bound.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mxflow.smtp.client import (
    ConnectionPool,
    Endpoint,
    Reply,
    send,
)
from mxflow.smtp.tls import generate_self_signed, server_context
from tests.conftest import unique_loopback

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MESSAGE = b"From: a@fabrikam.test\r\nTo: b@contoso.com\r\nSubject: hi\r\n\r\nbody\r\n"


async def _serve(handler: Handler) -> tuple[asyncio.Server, str, int]:
    address = unique_loopback()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, address, 0)
    port = server.sockets[0].getsockname()[1]
    return server, address, port


def _pool(timeout: float = 5.0) -> ConnectionPool:
    return ConnectionPool(
        local_hostname="client.test",
        source_address=None,
        connect_timeout=timeout,
        command_timeout=timeout,
    )


async def _send(address: str, port: int, *, tls: str = "none", limit: float = 5.0) -> Reply:
    pool = _pool(limit)
    try:
        result = await send(
            pool,
            Endpoint(address, port, tls),  # type: ignore[arg-type]
            "a@fabrikam.test",
            ["b@contoso.com"],
            MESSAGE,
        )
    finally:
        pool.close()
    return result["b@contoso.com"]


async def _line(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\n")


async def test_250_to_data_is_a_temporary_failure_not_a_delivery() -> None:
    """A server that answers DATA with 250 (not 354): the message must stay queued."""
    received: list[bytes] = []

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 liar.test ESMTP\r\n")
        while line := await _line(reader):
            received.append(line)
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-liar.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"250 2.0.0 queued as 12345\r\n")  # the lie
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                return
            else:
                writer.write(b"250 ok\r\n")

    server, address, port = await _serve(liar)
    async with server:
        reply = await _send(address, port)
    assert not reply.ok and not reply.permanent
    assert "4.5.0" in str(reply) and "DATA" in str(reply)
    assert not any(b"Subject: hi" in line for line in received)


async def test_pipelined_250_to_data_is_a_temporary_failure() -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 liar.test ESMTP\r\n")
        await _line(reader)
        writer.write(b"250-liar.test\r\n250 PIPELINING\r\n")
        for _ in range(3):  # MAIL, RCPT, DATA arrive in one write
            await _line(reader)
        writer.write(b"250 ok\r\n250 ok\r\n250 2.0.0 fake delivery\r\n")
        await reader.read(1000)

    server, address, port = await _serve(liar)
    async with server:
        reply = await _send(address, port)
    assert not reply.ok and not reply.permanent
    assert "answered DATA with 250" in str(reply)


async def test_354_to_the_end_of_data_is_not_a_delivery() -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 liar.test ESMTP\r\n")
        while line := await _line(reader):
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250 liar.test\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                while await _line(reader) != b".\r\n":
                    pass
                writer.write(b"354 again?\r\n")
            else:
                writer.write(b"250 ok\r\n")

    server, address, port = await _serve(liar)
    async with server:
        reply = await _send(address, port)
    assert not reply.ok and not reply.permanent
    assert "end of data" in str(reply)


async def test_plaintext_injected_after_starttls_220_is_discarded(tmp_path: Path) -> None:
    """The STARTTLS injection on clients: replies sent in plaintext with the 220 must not
    be read as the first replies inside TLS."""
    cert, key = tmp_path / "s.crt", tmp_path / "s.key"
    generate_self_signed(cert, key, "liar.test")
    ctx = server_context(cert, key)
    got: list[bytes] = []

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 liar.test ESMTP\r\n")
        await _line(reader)
        writer.write(b"250-liar.test\r\n250 STARTTLS\r\n")
        assert (await _line(reader)).upper().startswith(b"STARTTLS")
        # One write: the 220, then replies the client must never see as TLS replies.
        writer.write(b"220 go ahead\r\n250-injected.test\r\n250 PIPELINING\r\n250 ok\r\n")
        await writer.drain()
        await writer.start_tls(ctx)
        while line := await _line(reader):
            got.append(line)
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250 liar.test\r\n")  # inside TLS: no PIPELINING offered
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                while await _line(reader) != b".\r\n":
                    pass
                writer.write(b"250 2.0.0 accepted inside TLS\r\n")
            elif verb == b"QUIT":
                return
            else:
                writer.write(b"250 ok\r\n")

    server, address, port = await _serve(liar)
    async with server:
        reply = await _send(address, port, tls="required")
    assert reply.ok, reply
    assert "accepted inside TLS" in str(reply)
    # The client sent EHLO again inside TLS and read the real answer, not the injected one.
    assert got[0].upper().startswith(b"EHLO")


async def test_endless_multiline_reply_is_cut_at_the_size_limit() -> None:
    """The server floods one multi-line reply forever; only the client hanging up ends it."""
    hung_up = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 flood.test ESMTP\r\n")
        await _line(reader)
        chunk = (b"250-" + b"x" * 70 + b"\r\n") * 100
        try:
            for _ in range(100_000):  # 740 MB: far more than any buffer between us
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            hung_up.set()

    server, address, port = await _serve(flood)
    async with server:
        reply = await _send(address, port)
        async with asyncio.timeout(10):
            await hung_up.wait()
    assert not reply.ok and not reply.permanent
    assert "oversized reply" in str(reply)


async def test_one_endless_reply_line_is_refused() -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 " + b"y" * 200_000)  # never a line end
        await writer.drain()
        await reader.read(100)

    server, address, port = await _serve(flood)
    async with server:
        reply = await _send(address, port)
    assert not reply.ok and not reply.permanent
    assert "without end" in str(reply)


async def test_a_trickled_multiline_reply_is_cut_at_the_time_limit() -> None:
    """One line every 0.1 s keeps each read short; the whole reply still has one limit."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow.test ESMTP\r\n")
        await _line(reader)
        for _ in range(200):
            writer.write(b"250-still thinking\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)

    server, address, port = await _serve(trickle)
    async with server:
        started = time.monotonic()
        reply = await _send(address, port, limit=1.0)
        elapsed = time.monotonic() - started
    assert not reply.ok and not reply.permanent
    assert "did not reply in" in str(reply)
    assert elapsed < 5.0


async def test_a_malformed_code_is_refused() -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 liar.test ESMTP\r\n")
        await _line(reader)
        writer.write(b"250-liar.test\r\n354 mixed codes\r\n")
        await reader.read(100)

    server, address, port = await _serve(liar)
    async with server:
        reply = await _send(address, port)
    assert not reply.ok and not reply.permanent
    assert "malformed reply" in str(reply)


async def test_a_code_of_non_ascii_digits_is_refused() -> None:
    """'2²0' passes str.isdigit() but not int(): a broken session, not a crash."""

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write("2²0 liar.test ESMTP\r\n".encode())
        await reader.read(100)

    server, address, port = await _serve(liar)
    async with server:
        reply = await _send(address, port)
    assert not reply.ok and not reply.permanent
    assert "malformed reply" in str(reply)


async def test_a_node_keeps_the_message_queued_when_the_next_hop_lies(tmp_path: Path) -> None:
    """End to end: a gateway relaying to a smart host that answers DATA with 250 keeps the
    message in its spool (deferred, 4.5.0) and never traces it as delivered."""
    from mxflow.roles.build import build_node
    from mxflow.store.trace import TraceStore
    from tests.engine.helpers import RawSmtp, gateway_config, message, stuffed, wait_for

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 liar.test ESMTP\r\n")
        while line := await _line(reader):
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-liar.test\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                writer.write(b"250 2.0.0 delivered, honest\r\n")
            elif verb != b"QUIT":
                writer.write(b"250 ok\r\n")

    server, address, port = await _serve(liar)
    cfg = gateway_config(tmp_path, address, port, tls="none", delivery={"retry_intervals": ["1h"]})
    async with server, build_node(cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO c.fabrikam.test")
        code, text = await client.mail(
            "alice@fabrikam.test", ["bob@contoso.com"], stuffed(message("lied to"))
        )
        await client.close()
        assert code == 250, text
        queue_id = text.rsplit(" ", 1)[1]
        await wait_for(lambda: gw.spool.load_state(queue_id).attempts == 1)
        state = gw.spool.load_state(queue_id)
        assert gw.spool.exists(queue_id)
        assert state.rcpts["bob@contoso.com"].status == "deferred"
        assert "4.5.0" in state.rcpts["bob@contoso.com"].reply
    store = TraceStore(cfg.trace_db)
    events = [e.event for e in store.by_queue_id(queue_id)]
    store.close()
    assert "deferred" in events and "delivered" not in events


async def test_replies_nobody_asked_for_end_the_session() -> None:
    """A server that sends replies ahead (to desynchronise commands and replies) is out of
    step: the session ends before the next command, nothing is delivered."""
    got: list[bytes] = []

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 liar.test ESMTP\r\n250 answer to a command not yet sent\r\n")
        while line := await _line(reader):
            got.append(line)
            writer.write(b"250 ok\r\n")

    server, address, port = await _serve(liar)
    async with server:
        reply = await _send(address, port)
    assert not reply.ok and not reply.permanent
    assert "did not ask for" in str(reply)
    assert not any(line.upper().startswith(b"MAIL") for line in got)
