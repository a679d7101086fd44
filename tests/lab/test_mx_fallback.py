"""The lab's senders walk the MX list like a real MTA (RFC 5321 §5.1), against real
listeners on loopback and the embedded DNS server: lowest preference first, the next host
on a refused connection, a 421 greeting or a dropped session, none on a 5xx, equal
preferences in random order, and the whole list again later when every host failed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator

from mxflow.lab.peers import Sent, send_mx
from tests.conftest import unique_loopback
from tests.dnsserver import serve_zone_text

RAW = b"From: a@fabrikam.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


class Mx:
    """A scripted SMTP listener: `accept`, `421` (greeting), `550` (to RCPT), `451` (to
    RCPT) or `drop` (closes after reading the data, without a reply)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.address = unique_loopback()
        self.received = 0
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._session, self.address, port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.behaviour == "421":
            writer.write(b"421 4.3.2 Service shutting down\r\n")
            writer.close()
            return
        writer.write(b"220 mx ESMTP\r\n")
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"RCPT" and self.behaviour in ("550", "451"):
                    writer.write(f"{self.behaviour} no\r\n".encode())
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    while (await reader.readline()) not in (b".\r\n", b""):
                        pass
                    self.received += 1
                    if self.behaviour == "drop":
                        break
                    writer.write(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        writer.close()


def common_port(addresses: list[str]) -> int:
    """One port free on every address (the lab's listeners share one port)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = int(s.getsockname()[1])
        try:
            for address in addresses[1:]:
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise OSError("no common port")


@contextlib.asynccontextmanager
async def mx_world(
    *hosts: tuple[int, Mx, bool],
) -> AsyncIterator[tuple[object, int]]:
    """example.test's MX records (preference, listener, up?) served; (resolver, port)."""
    port = common_port([mx.address for _, mx, _ in hosts])
    lines = ["$ORIGIN example.test."]
    for i, (preference, mx, _) in enumerate(hosts):
        lines += [f"@ 300 IN MX {preference} mx{i}", f"mx{i} 300 IN A {mx.address}"]
    for _, mx, up in hosts:
        if up:
            await mx.start(port)
    try:
        async with serve_zone_text("\n".join(lines) + "\n") as dns_server:
            yield dns_server.resolver(), port
    finally:
        for _, mx, _ in hosts:
            await mx.stop()


async def send(resolver: object, port: int, **kwargs: float) -> Sent:
    return await send_mx(
        resolver,  # type: ignore[arg-type]
        port,
        source="127.0.0.1",
        helo="mail.fabrikam.test",
        mail_from="a@fabrikam.test",
        rcpt="bob@example.test",
        raw=RAW,
        **kwargs,
    )


async def test_a_down_host_and_a_421_send_the_message_to_the_next_mx() -> None:
    down, closing, good = Mx("accept"), Mx("421"), Mx("accept")
    async with mx_world((10, down, False), (20, closing, True), (30, good, True)) as (r, port):
        sent = await send(r, port)
    assert sent.accepted and sent.mx == "mx2.example.test"
    assert [a.mx for a in sent.attempts] == [f"mx{i}.example.test" for i in range(3)]
    assert sent.attempts[0].result.startswith("cannot connect")
    assert sent.attempts[1].result.startswith("421")
    assert sent.fell_back and not sent.maybe_twice
    assert good.received == 1


async def test_the_lowest_preference_takes_the_mail_when_it_is_up() -> None:
    first, second = Mx("accept"), Mx("accept")
    async with mx_world((20, second, True), (10, first, True)) as (r, port):
        results = [await send(r, port) for _ in range(5)]
    assert {s.mx for s in results} == {"mx1.example.test"}
    assert first.received == 5 and second.received == 0
    assert not any(s.fell_back for s in results)


async def test_equal_preferences_share_the_mail_in_random_order() -> None:
    a, b = Mx("accept"), Mx("accept")
    async with mx_world((10, a, True), (10, b, True)) as (r, port):
        taken = Counter([(await send(r, port)).mx for _ in range(40)])
    assert set(taken) == {"mx0.example.test", "mx1.example.test"}, taken


async def test_a_session_dropped_after_the_data_goes_on_and_may_deliver_twice() -> None:
    dropping, good = Mx("drop"), Mx("accept")
    async with mx_world((10, dropping, True), (20, good, True)) as (r, port):
        sent = await send(r, port)
    assert sent.accepted and sent.mx == "mx1.example.test"
    assert sent.attempts[0].after_data and sent.maybe_twice
    assert dropping.received == good.received == 1  # both have it: SMTP's at-least-once


async def test_a_5xx_or_4xx_to_the_transaction_ends_the_attempt_without_fallback() -> None:
    refusing, deferring, good = Mx("550"), Mx("451"), Mx("accept")
    async with mx_world((10, refusing, True), (20, good, True)) as (r, port):
        sent = await send(r, port)
    assert sent.reply.startswith("550") and sent.mx == "mx0.example.test"
    assert len(sent.attempts) == 1 and good.received == 0
    async with mx_world((10, deferring, True), (20, good, True)) as (r, port):
        sent = await send(r, port)
    assert sent.reply.startswith("451") and len(sent.attempts) == 1 and good.received == 0


async def test_when_every_mx_fails_the_sender_tries_the_list_again_later() -> None:
    late = Mx("accept")
    async with mx_world((10, late, False)) as (r, port):
        sent = await send(r, port)  # no retries: a temporary failure, reported
        assert sent.reply.startswith("451 4.4.1") and not sent.mx

        async def comes_up() -> None:
            await asyncio.sleep(0.8)
            await late.start(port)

        starter = asyncio.create_task(comes_up())
        sent = await send(r, port, retry_for=10.0, retry_every=0.2)
        await starter
    assert sent.accepted and sent.mx == "mx0.example.test"
    assert len(sent.attempts) >= 2 and sent.attempts[0].result.startswith("cannot connect")
    assert not sent.fell_back  # the same host, later: a retry, not a fallback
