"""The lab's internet peers on the wire: senders that find the MX like a real MTA, and the
recipients' MX hosts that record what arrives and judge it as a receiver would.

A sender walks the MX list as RFC 5321 §5.1 says: lowest preference first, equal ones in
random order (`delivery.mx.resolve_mx`), each host's addresses in turn. It goes on to the
next when a host cannot be reached, greets with anything but 2xx, answers EHLO with 4xx,
says 421 (closing) at any step, or drops the session; a 5xx or another 4xx reply ends the
attempt. When every host failed it keeps the message and tries the list again later,
for as long as it is told to (an MTA's queue, shortened). Each try is recorded, so the
lab can show which MX took a message and which fallbacks happened.

A recipient MX accepts every message and evaluates SPF, DKIM and DMARC on arrival (the
client IP and HELO as it saw them), plus SPF against the reference's literal record, so
the report can show what contoso.com's outbound mail looks like to the world. Bounces
(null sender) are kept apart: they tell the report that a relay refused a message after
accepting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.asyncresolver

from mxflow.auth.authenticate import authenticate
from mxflow.auth.spf import check_host
from mxflow.delivery.mx import MxError, resolve_mx
from mxflow.lab.client import LabClient, dot_stuff
from mxflow.lab.world import LITERAL_SPF_DOMAIN

log = logging.getLogger("mxflow.lab")
LAB_ID = re.compile(rb"^X-Lab-Id: *(\S+)", re.MULTILINE | re.IGNORECASE)


@dataclass
class Arrival:
    """One message at a recipient MX and how the receiver judged it."""

    lab_id: str
    client_ip: str
    mail_from: str
    spf: str
    dkim: bool  # a valid signature aligned with the From domain... or any valid one
    dmarc: str
    literal_spf: str
    bounce: bool


@dataclass
class RecipientMx:
    """A minimal receiving MTA on one loopback address (the lab's port)."""

    ip: str
    port: int
    resolver: dns.asyncresolver.Resolver
    arrivals: list[Arrival] = field(default_factory=list)
    pending: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, self.ip, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        helo, mail_from = "", ""
        writer.write(b"220 recipient MX (mxflow lab) ESMTP\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            while line := await asyncio.wait_for(reader.readline(), 30):
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    helo = line[5:].strip().decode("ascii", "replace")
                    writer.write(b"250-recipient MX\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    mail_from = line.partition(b"<")[2].partition(b">")[0].decode()
                    writer.write(b"250 ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    raw = await self._data(reader)
                    self.pending += 1
                    writer.write(b"250 ok: recorded\r\n")
                    task = asyncio.create_task(self._judge(raw, peer, helo, mail_from))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:  # RCPT, RSET, NOOP
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        writer.close()

    @staticmethod
    async def _data(reader: asyncio.StreamReader) -> bytes:
        lines = []
        while (line := await reader.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)

    async def _judge(self, raw: bytes, ip: str, helo: str, mail_from: str) -> None:
        try:
            found = LAB_ID.search(raw)
            lab_id = found.group(1).decode() if found else ""
            outcome = await authenticate(
                raw, ip=ip, helo=helo, mail_from=mail_from, resolver=self.resolver
            )
            literal = await check_host(
                ip, LITERAL_SPF_DOMAIN, mail_from or f"postmaster@{helo}", resolver=self.resolver
            )
            dkim = any(r.result == "pass" for r in outcome.dkim)
            self.arrivals.append(
                Arrival(lab_id, ip, mail_from, outcome.spf.result, dkim,
                        outcome.dmarc.result, literal.result, not mail_from)
            )  # fmt: skip
        finally:
            self.pending -= 1


@dataclass
class Attempt:
    """One session with one MX host's address, and how it ended."""

    mx: str  # the MX host's name
    address: str
    result: str  # the reply that ended it, or what went wrong on the wire
    next_mx: bool = False  # a failure that sends the message on to the next MX host
    after_data: bool = False  # it broke after the message was sent: it may have been taken
    at: float = field(default_factory=time.time)  # wall clock of the reply that ended it


@dataclass
class Sent:
    """A message's journey from one sender: its final reply and every try on the way."""

    reply: str = ""
    mx: str = ""  # the MX host that gave the final reply ("" when none did)
    attempts: list[Attempt] = field(default_factory=list)
    at: float = 0.0  # wall clock of the final reply

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("2")

    @property
    def fell_back(self) -> bool:
        """Taken by a host other than the first one tried."""
        return self.accepted and bool(self.attempts) and self.attempts[0].mx != self.mx

    @property
    def maybe_twice(self) -> bool:
        """A session broke after the message was sent and another host took it: the first
        may have stored it too (the 250 was lost with the connection, RFC 1047)."""
        return self.accepted and any(a.after_data for a in self.attempts[:-1])


async def _targets(
    resolver: dns.asyncresolver.Resolver, rcpt: str, host: str | None
) -> list[tuple[str, str]]:
    """(host name, address) in the order to try; raises MxError without a host."""
    if host is not None:
        answer = await resolver.resolve(host, "A")
        return [(host, answer[0].to_text())]
    hosts = await resolve_mx(resolver, rcpt.rpartition("@")[2])
    return [(h.name, address) for h in hosts for address in h.addresses]


@dataclass(frozen=True)
class _Outgoing:
    """What a sender sends in every session: from where, as whom, to whom, which bytes."""

    source: str
    helo: str
    mail_from: str
    rcpt: str
    data: bytes  # dot-stuffed, with its terminator
    on_accept: Callable[[str], None] | None = None  # called with the MX host at its 2xx


async def _session(mx: str, address: str, port: int, out: _Outgoing) -> Attempt:
    """One SMTP session: EHLO and one transaction."""
    try:
        client = await LabClient.open(address, port, source=out.source)
    except OSError as exc:
        return Attempt(mx, address, f"cannot connect: {exc.strerror or exc}", next_mx=True)
    try:
        if not client.greeting.startswith("2"):  # 421 / 4xx / 554 instead of a greeting
            return Attempt(mx, address, client.greeting, next_mx=True)
        reply = await client.cmd(f"EHLO {out.helo}")
        if not reply.startswith("250"):
            return Attempt(mx, address, reply, next_mx=not reply.startswith("5"))
        reply = await client.transaction(out.mail_from, [out.rcpt], out.data)
        at = time.time()
        if reply.startswith("2") and out.on_accept is not None:
            out.on_accept(mx)  # before QUIT: the lab's kill lands right after this 250
        lost = reply.startswith("000")
        closing = reply.startswith("421") or lost
        after_data = lost and client.data_sent
        return Attempt(mx, address, reply, next_mx=closing, after_data=after_data, at=at)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        text = f"connection lost: {exc!r}"
        return Attempt(mx, address, text, next_mx=True, after_data=client.data_sent)
    finally:
        await client.close()


async def send_mx(
    resolver: dns.asyncresolver.Resolver,
    port: int,
    *,
    source: str,
    helo: str,
    mail_from: str,
    rcpt: str,
    raw: bytes,
    host: str | None = None,
    retry_for: float = 0.0,
    retry_every: float = 1.0,
    on_accept: Callable[[str], None] | None = None,
) -> Sent:
    """Send one message as an MTA would: the MX hosts of the recipient's domain (or
    `host`) in order, from `source`; the list again every `retry_every` s for `retry_for`
    s when no host took it nor refused it for good. `on_accept(mx)` runs as the 250 is
    read, before the session ends."""
    sent = Sent()
    out = _Outgoing(source, helo, mail_from, rcpt, dot_stuff(raw), on_accept)
    give_up = time.monotonic() + retry_for
    while True:
        try:
            targets = await _targets(resolver, rcpt, host)
        except MxError as exc:
            sent.reply = f"{exc.status} {exc.text}"
            targets = []
            if exc.permanent:
                sent.at = time.time()
                return sent
        for mx, address in targets:
            attempt = await _session(mx, address, port, out)
            sent.attempts.append(attempt)
            if not attempt.next_mx:
                sent.reply, sent.mx, sent.at = attempt.result, mx, attempt.at
                break
        else:
            tried = "; ".join(f"{a.mx}: {a.result}" for a in sent.attempts[-len(targets) :])
            sent.reply = f"451 4.4.1 no MX host took it ({tried})" if targets else sent.reply
            sent.mx, sent.at = "", 0.0
        if sent.reply[:1] in ("2", "5") or time.monotonic() >= give_up:
            sent.at = sent.at or time.time()
            return sent
        await asyncio.sleep(retry_every)


async def deliver(
    resolver: dns.asyncresolver.Resolver,
    port: int,
    *,
    source: str,
    helo: str,
    mail_from: str,
    rcpt: str,
    raw: bytes,
    host: str | None = None,
) -> str:
    """`send_mx` without retries: the final reply (a refusal at any step ends it)."""
    sent = await send_mx(
        resolver, port, source=source, helo=helo, mail_from=mail_from, rcpt=rcpt, raw=raw,
        host=host,
    )  # fmt: skip
    return sent.reply
